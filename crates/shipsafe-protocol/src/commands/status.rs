//! `shipsafe status [ENV]`: is each environment reachable, and what is it.

use serde::Serialize;
use shipsafe_config::{Config, ConfigError, VarSource};
use shipsafe_pg::{connect, server_info};

use crate::error::CoreError;
use crate::source::Source;

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub project: String,
    pub config: String,
    /// Where run history and the audit log are kept.
    pub state_dir: String,
    pub environments: Vec<EnvStatus>,
    /// The team's tool: whether its rehearsal commands run in a network
    /// namespace that cannot reach the target (`available`), or why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_isolation: Option<String>,
    /// Why backups could not be listed, if they could not.
    pub backups_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastBackup {
    pub id: String,
    pub created_at: String,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastVerified {
    pub id: String,
    /// When the restore that proved it happened.
    pub verified_at: String,
    pub restore_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnvStatus {
    pub name: String,
    pub protection: String,
    /// The database URL with any password masked.
    pub url: Option<String>,
    pub reachable: bool,
    pub server_version: Option<String>,
    pub database: Option<String>,
    pub size_bytes: Option<i64>,
    /// `on (TLSv1.3)` or `OFF`, as the server reports this connection
    /// (`pg_stat_ssl`); `None` when not reached.
    pub tls: Option<String>,
    /// Why the URL looks like a transaction-mode pooler (changes are
    /// refused through one), if it does.
    pub pooler: Option<String>,
    /// Why the environment could not be reached or resolved.
    pub error: Option<String>,
    /// Migrations not yet applied (native layouts; external tools are asked
    /// by `plan`).
    pub pending_migrations: Option<usize>,
    /// Why pending migrations could not be counted (drift, a half-applied one).
    pub migrations_error: Option<String>,
    /// The newest complete backup.
    pub last_backup: Option<LastBackup>,
    /// The newest backup proven by a restore.
    pub last_verified: Option<LastVerified>,
    /// Whether the server cancels the statement of a client that died
    /// (`client_connection_check_interval`, PostgreSQL 14+). Without it a
    /// killed shipsafe's statement runs on until the next deploy or
    /// rollback of the environment terminates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancels_dead_clients: Option<bool>,
    /// Backups of this environment's name taken of another database than
    /// the one its URL names now (the URL was changed): not shown as its
    /// last backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backups_of_another_database: Option<usize>,
    #[serde(skip)]
    identity: Option<String>,
}

impl StatusReport {
    /// True when every environment shown answered.
    pub fn all_reachable(&self) -> bool {
        self.environments.iter().all(|e| e.reachable)
    }
}

/// Checks one environment (`only`) or all of them, concurrently.
///
/// Asking for one environment whose URL cannot be resolved is a config
/// error; in the overview it is shown as that environment's problem, so a
/// laptop without production credentials still gets a useful answer.
pub fn status<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    only: Option<&'a str>,
) -> crate::Task<'a, Result<StatusReport, CoreError>> {
    Box::pin(async move {
        let names: Vec<String> = match only {
            Some(name) => vec![config.environment(name)?.name.to_string()],
            None => config.environments().map(|e| e.name.to_string()).collect(),
        };
        let mut resolved = Vec::new();
        for name in &names {
            let env = config.environment(name)?;
            let url = match config.database_url(name, vars) {
                Ok(u) => Ok(u),
                Err(e @ ConfigError::MissingVariable { .. }) if only.is_none() => {
                    Err(e.to_string())
                }
                Err(e) => return Err(e.into()),
            };
            resolved.push((name.clone(), env.protection().as_str().to_string(), url));
        }
        let source = std::sync::Arc::new((config.clone(), Source::of(config)));
        let checks = resolved.into_iter().map(|(name, protection, url)| {
            let source = source.clone();
            async move {
                let mut st = EnvStatus {
                    name,
                    protection,
                    url: None,
                    reachable: false,
                    server_version: None,
                    database: None,
                    size_bytes: None,
                    tls: None,
                    pooler: None,
                    error: None,
                    pending_migrations: None,
                    migrations_error: None,
                    last_backup: None,
                    last_verified: None,
                    cancels_dead_clients: None,
                    backups_of_another_database: None,
                    identity: None,
                };
                match url {
                    Err(msg) => st.error = Some(msg),
                    Ok(url) => {
                        st.url = Some(url.masked());
                        st.pooler = url.conninfo().ok().and_then(|c| c.pooler_hint());
                        let probe = async {
                            let client = connect(&url).await?;
                            server_info(&client, &url).await
                        };
                        match probe.await {
                            Ok(info) => {
                                st.reachable = true;
                                st.tls = Some(match &info.tls {
                                    Some(v) => format!("on ({v})"),
                                    None => "OFF".into(),
                                });
                                if let Ok(client) = connect(&url).await {
                                    st.identity = shipsafe_pg::database_identity(&client).await;
                                    let (config, source) = source.as_ref();
                                    match source.pending_count(config, &url, &client).await {
                                        Ok(n) => st.pending_migrations = n,
                                        Err(e) => st.migrations_error = Some(e),
                                    }
                                }
                                st.cancels_dead_clients = Some(info.major >= 14);
                                st.server_version = Some(info.server_version);
                                st.database = Some(info.database);
                                st.size_bytes = Some(info.size_bytes);
                            }
                            Err(e) => st.error = Some(e.to_string()),
                        }
                    }
                }
                st
            }
        });
        let mut environments = join_all(checks).await;
        let backups = match crate::store::list(config, vars, None).await {
            Ok(all) => Ok(all),
            Err(e) => Err(e.to_string()),
        };
        if let Ok(all) = &backups {
            for env in &mut environments {
                // A backup recorded of another database than the one the URL
                // names now is not this environment's.
                let same =
                    |m: &&shipsafe_backup::Manifest| match (&m.database_identity, &env.identity) {
                        (Some(then), Some(now)) => then == now,
                        _ => true,
                    };
                let named: Vec<&shipsafe_backup::Manifest> = all
                    .iter()
                    .filter(|m| m.env == env.name && m.is_complete())
                    .collect();
                let others = named.iter().filter(|m| !same(m)).count();
                env.backups_of_another_database = (others > 0).then_some(others);
                let mine = named.into_iter().filter(|m| same(m));
                // `list` is newest first.
                env.last_backup = mine.clone().next().map(|m| LastBackup {
                    id: m.id.clone(),
                    created_at: m.created_at.clone(),
                    size_bytes: m.size_bytes,
                });
                env.last_verified = mine
                    .filter_map(|m| m.last_good_verification().map(|v| (m, v)))
                    .max_by(|a, b| a.1.at.cmp(&b.1.at))
                    .map(|(m, v)| LastVerified {
                        id: m.id.clone(),
                        verified_at: v.at.clone(),
                        restore_seconds: v.restore_seconds,
                    });
            }
        }
        Ok(StatusReport {
            project: config.project_name(),
            config: config.path().display().to_string(),
            state_dir: config.state_dir().display().to_string(),
            environments,
            tool_isolation: source.1.tool().map(
                |_| match crate::source::tool::isolation::available() {
                    Ok(()) => "available".to_string(),
                    Err(why) => format!("unavailable: {why}"),
                },
            ),
            backups_error: backups.err(),
        })
    })
}

/// Runs futures concurrently, keeping their order.
async fn join_all<F>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(v) => out.push(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out
}
