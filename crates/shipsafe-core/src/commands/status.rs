//! `shipsafe status [ENV]`: is each environment reachable, and what is it.

use serde::Serialize;
use shipsafe_config::{Config, ConfigError, VarSource};
use shipsafe_pg::{connect, server_info};

use crate::error::CoreError;

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub project: String,
    pub config: String,
    /// Where run history and the audit log are kept.
    pub state_dir: String,
    pub environments: Vec<EnvStatus>,
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
    /// Why the environment could not be reached or resolved.
    pub error: Option<String>,
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
pub async fn status(
    config: &Config,
    vars: &dyn VarSource,
    only: Option<&str>,
) -> Result<StatusReport, CoreError> {
    let names: Vec<String> = match only {
        Some(name) => vec![config.environment(name)?.name.to_string()],
        None => config.environments().map(|e| e.name.to_string()).collect(),
    };
    let mut resolved = Vec::new();
    for name in &names {
        let env = config.environment(name)?;
        let url = match config.database_url(name, vars) {
            Ok(u) => Ok(u),
            Err(e @ ConfigError::MissingVariable { .. }) if only.is_none() => Err(e.to_string()),
            Err(e) => return Err(e.into()),
        };
        resolved.push((name.clone(), env.protection().as_str().to_string(), url));
    }
    let checks = resolved
        .into_iter()
        .map(|(name, protection, url)| async move {
            let mut st = EnvStatus {
                name,
                protection,
                url: None,
                reachable: false,
                server_version: None,
                database: None,
                size_bytes: None,
                error: None,
            };
            match url {
                Err(msg) => st.error = Some(msg),
                Ok(url) => {
                    st.url = Some(url.masked());
                    let probe = async {
                        let client = connect(&url).await?;
                        server_info(&client, &url).await
                    };
                    match probe.await {
                        Ok(info) => {
                            st.reachable = true;
                            st.server_version = Some(info.server_version);
                            st.database = Some(info.database);
                            st.size_bytes = Some(info.size_bytes);
                        }
                        Err(e) => st.error = Some(e.to_string()),
                    }
                }
            }
            st
        });
    let environments = join_all(checks).await;
    Ok(StatusReport {
        project: config.project_name(),
        config: config.path().display().to_string(),
        state_dir: config.state_dir().display().to_string(),
        environments,
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
