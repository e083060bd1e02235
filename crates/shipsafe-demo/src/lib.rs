//! `shipsafe demo`: a self-contained tour on a scratch cluster. Needs
//! nothing but PostgreSQL's server binaries.
//!
//! The tour: a sample SME database as `staging` (guarded) and `production`
//! (protected); a migration that retires the only superadmin is deployed to
//! staging, fails the "at least one active superadmin" check and is rolled
//! back by restoring the pre-deploy backup; the fixed migrations deploy to
//! staging, then to production after a rehearsal on a clone made from the
//! backup; finally the state: environments, backups, audit chain.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use shipsafe_config::{Config, ProcessEnv};
use shipsafe_pg::{ScratchCluster, connect, quote_ident};

use shipsafe_protocol::CoreError;
use shipsafe_protocol::commands::deploy::{DeployOptions, deploy};
use shipsafe_protocol::commands::status::{StatusReport, status};
use shipsafe_protocol::progress::{Confirm, Progress};

/// The sample application database.
pub const SAMPLE_SQL: &str = include_str!("sample.sql");
pub const SAMPLE_DATABASE: &str = "sme_app";
/// Tables of the sample database, in foreign-key order.
pub const SAMPLE_TABLES: &[&str] = &["users", "employees", "tools", "tool_access"];

#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub cluster: ClusterInfo,
    pub database: String,
    pub tables: Vec<TableRows>,
    /// The deploys of the tour, in order.
    pub tour: Vec<TourStep>,
    /// The tour went as it should: the broken deploy rolled back, the
    /// fixed one deployed to both environments.
    pub as_expected: bool,
    pub status: StatusReport,
    /// Production's readiness scorecard after the tour.
    pub readiness: shipsafe_readiness::Scorecard,
    pub backups: usize,
    pub verified_backups: usize,
    pub audit_entries: i64,
    pub audit_chain_ok: bool,
    pub duration_ms: u64,
}

/// One command of the tour and what it did.
#[derive(Debug, Clone, Serialize)]
pub struct TourStep {
    /// What the step shows.
    pub title: String,
    /// The command a user would type.
    pub command: String,
    pub expected: String,
    pub run: shipsafe_state::RunRecord,
    pub exit_code: i32,
    /// The error message, when the command failed (on purpose or not).
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterInfo {
    pub server_version: String,
    pub port: u16,
    pub start_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableRows {
    pub table: String,
    pub rows: i64,
}

/// Creates the sample database in a running cluster and returns its URL.
pub async fn create_sample_database(
    cluster: &ScratchCluster,
) -> Result<shipsafe_config::DbUrl, CoreError> {
    let admin = connect(&cluster.url("postgres")).await?;
    admin
        .batch_execute(&format!("create database {}", quote_ident(SAMPLE_DATABASE)))
        .await
        .map_err(|e| {
            CoreError::Failed(format!(
                "cannot create the sample database: {}",
                shipsafe_pg::describe(&e)
            ))
        })?;
    let url = cluster.url(SAMPLE_DATABASE);
    let client = connect(&url).await?;
    client.batch_execute(SAMPLE_SQL).await.map_err(|e| {
        CoreError::Failed(format!(
            "cannot load the sample schema: {}",
            shipsafe_pg::describe(&e)
        ))
    })?;
    Ok(url)
}

const CHECKS: &str = r#"
[[checks]]
name = "at least one active superadmin"
sql = "select count(*) from users where role = 'superadmin' and is_active"
expect = ">= 1"

[[checks]]
name = "every grant points at a user"
sql = "select count(*) from tool_access a left join users u on u.id = a.user_id where u.id is null"
expect = "= 0"
"#;

const RETIRE: &str = "20260301090000_retire_default_admin";

/// The broken first version: retires the default admin (password
/// `admin123`) without handing the superadmin role to anybody.
const RETIRE_BROKEN: &str = "-- The default admin account (password admin123) must go.\nupdate users set is_active = false where username = 'admin';\n";
const RETIRE_FIXED: &str = "-- The default admin account (password admin123) must go; the HR lead\n-- takes over the superadmin role first.\nupdate users set role = 'superadmin' where username = 'hr_lead';\nupdate users set is_active = false where username = 'admin';\n";
const RETIRE_DOWN: &str = "update users set is_active = true where username = 'admin';\nupdate users set role = 'hr' where username = 'hr_lead';\n";

fn write(dir: &Path, rel: &str, text: &str) -> Result<(), CoreError> {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| CoreError::io(format!("cannot create {}", parent.display()), e))?;
    }
    std::fs::write(&path, text)
        .map_err(|e| CoreError::io(format!("cannot write {}", path.display()), e))
}

/// The demo confirms production the way `--confirm production` would.
struct ConfirmFlag(&'static str);

impl Confirm for ConfirmFlag {
    fn confirm(&self, env: &str, _what: &str) -> Result<bool, String> {
        Ok(env == self.0)
    }
    fn can_confirm(&self, env: &str) -> Result<bool, String> {
        Ok(env == self.0)
    }
}

async fn tour_deploy(
    config: &Config,
    project: &Path,
    env: &str,
    title: &str,
    expected: &str,
    progress: &Arc<dyn Progress>,
) -> Result<TourStep, CoreError> {
    let confirm = ConfirmFlag("production");
    let protected = env == "production";
    let opts = DeployOptions {
        applied_by: "demo",
        override_reason: None,
        rehearse: false,
        accept_risk: false,
        confirm: &confirm,
    };
    progress.stage(&format!("deploy {env}: {title}"));
    let out = deploy(config, &ProcessEnv, project, env, &opts, progress).await?;
    Ok(TourStep {
        title: title.to_string(),
        command: if protected {
            format!("shipsafe deploy {env} --confirm {env}")
        } else {
            format!("shipsafe deploy {env}")
        },
        expected: expected.to_string(),
        exit_code: out
            .error
            .as_ref()
            .map_or(0, |e| i32::from(e.exit_kind().code())),
        message: out
            .error
            .as_ref()
            .map(|e| shipsafe_config::mask_secrets(&e.to_string())),
        run: out.run,
    })
}

pub fn run<'a>(
    progress: &'a Arc<dyn Progress>,
) -> shipsafe_protocol::Task<'a, Result<DemoReport, CoreError>> {
    Box::pin(async move {
        let tour_started = std::time::Instant::now();
        progress.stage("starting a scratch PostgreSQL cluster");
        let started = std::time::Instant::now();
        let cluster = tokio::task::spawn_blocking(ScratchCluster::start)
            .await
            .map_err(|e| {
                CoreError::Failed(format!("scratch cluster start was interrupted: {e}"))
            })??;
        let start_ms = started.elapsed().as_millis() as u64;

        progress.stage("building the sample SME database (users, employees, tools, tool_access)");
        let url = create_sample_database(&cluster).await?;
        let admin = connect(&cluster.url("postgres")).await?;
        admin
            .batch_execute(&format!(
                "create database sme_staging template {}",
                quote_ident(SAMPLE_DATABASE)
            ))
            .await
            .map_err(|e| {
                CoreError::Failed(format!(
                    "cannot create the staging copy: {}",
                    shipsafe_pg::describe(&e)
                ))
            })?;
        drop(admin);
        let staging_url = cluster.url("sme_staging");

        let project = tempfile::Builder::new()
            .prefix("shipsafe-demo-")
            .tempdir()
            .map_err(|e| CoreError::io("cannot create the demo project folder", e))?;
        let dir = project.path();
        let config_path = dir.join("shipsafe.toml");
        let config_text = format!(
            "[project]\nname = \"shipsafe-demo\"\n\n[environments.staging]\ndatabase_url = \"{}\"\nprotection = \"guarded\"\n\n[environments.production]\ndatabase_url = \"{}\"\nprotection = \"protected\"\n{CHECKS}",
            staging_url.expose(),
            url.expose()
        );
        write(dir, "shipsafe.toml", &config_text)?;
        let config = Config::parse(&config_path, &config_text)?;

        let client = connect(&url).await?;
        let mut tables = Vec::new();
        for t in SAMPLE_TABLES {
            let row = client
                .query_one(&format!("select count(*) from {}", quote_ident(t)), &[])
                .await
                .map_err(|e| {
                    CoreError::Failed(format!("cannot count {t}: {}", shipsafe_pg::describe(&e)))
                })?;
            tables.push(TableRows {
                table: (*t).to_string(),
                rows: row.get(0),
            });
        }
        drop(client);

        // 1. The broken migration: staging's check fails, the deploy is undone.
        write(dir, &format!("migrations/{RETIRE}/up.sql"), RETIRE_BROKEN)?;
        write(dir, &format!("migrations/{RETIRE}/down.sql"), RETIRE_DOWN)?;
        let mut tour = vec![
            tour_deploy(
                &config,
                dir,
                "staging",
                "retire the default admin (broken: leaves no superadmin)",
                "rolled_back",
                progress,
            )
            .await?,
        ];

        // 2. Fixed, plus two more changes; staging first, then production
        //    (protected: rehearsed on a clone of the backup, confirmed).
        write(dir, &format!("migrations/{RETIRE}/up.sql"), RETIRE_FIXED)?;
        write(
            dir,
            "migrations/20260301091000_grant_audit/up.sql",
            "alter table tool_access add column granted_by text;\n",
        )?;
        write(
            dir,
            "migrations/20260301091000_grant_audit/down.sql",
            "alter table tool_access drop column granted_by;\n",
        )?;
        write(
            dir,
            "migrations/20260301092000_users_active_index/up.sql",
            "create index concurrently if not exists users_active_idx on users (is_active);\n",
        )?;
        write(
            dir,
            "migrations/20260301092000_users_active_index/down.sql",
            "drop index concurrently if exists users_active_idx;\n",
        )?;
        tour.push(
            tour_deploy(
                &config,
                dir,
                "staging",
                "the fixed migration and two more",
                "deployed",
                progress,
            )
            .await?,
        );
        tour.push(
            tour_deploy(
                &config,
                dir,
                "production",
                "the same to production: rehearsed on a clone, then confirmed",
                "deployed",
                progress,
            )
            .await?,
        );

        progress.stage("checking the environments");
        let report = status(&config, &ProcessEnv, None).await?;
        progress.stage("measuring production's readiness");
        shipsafe_readiness::runbook::runbook(&config, &ProcessEnv, "production", None).await?;
        let readiness = shipsafe_readiness::readiness(
            &config,
            &ProcessEnv,
            dir,
            "production",
            &shipsafe_readiness::Options::default(),
        )
        .await?;
        let store = shipsafe_protocol::store::open_store(&config, &ProcessEnv)?;
        let backups = store.list().await?;
        let chain = shipsafe_protocol::commands::log::verify(&config)?;
        let as_expected = tour.iter().all(|t| t.run.outcome == t.expected);

        let server_version = report
            .environments
            .first()
            .and_then(|e| e.server_version.clone())
            .unwrap_or_default();
        let port = cluster.port();
        progress.stage("stopping the scratch cluster");
        tokio::task::spawn_blocking(move || cluster.stop())
            .await
            .map_err(|e| {
                CoreError::Failed(format!("scratch cluster stop was interrupted: {e}"))
            })??;
        Ok(DemoReport {
            cluster: ClusterInfo {
                server_version,
                port,
                start_ms,
            },
            database: SAMPLE_DATABASE.to_string(),
            tables,
            tour,
            as_expected,
            status: report,
            readiness,
            backups: backups.len(),
            verified_backups: backups.iter().filter(|b| b.is_verified()).count(),
            audit_entries: chain.entries,
            audit_chain_ok: chain.ok,
            duration_ms: tour_started.elapsed().as_millis() as u64,
        })
    })
}
