//! `[[checks]]` and `[[smoke]]`: running them, and saying what failed.

use shipsafe_backup::Manifest;
use shipsafe_config::{CheckConfig, Config, VarSource};
use shipsafe_pg::run_checks;
pub use shipsafe_pg::{CheckOutcome, CheckStatus};

use crate::error::CoreError;
use crate::smoke::{self, SmokeOutcome};

/// Smoke tests of `env`, or why they cannot run.
pub async fn smoke_for(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
) -> Result<Result<Vec<SmokeOutcome>, String>, CoreError> {
    let tests = &config.file().smoke;
    if tests.is_empty() {
        return Ok(Err("no [[smoke]] tests configured".into()));
    }
    match config.app_url(env, vars) {
        Ok(Some(base)) => Ok(Ok(smoke::run(&base, tests, vars, smoke::READINESS).await)),
        Ok(None) => Ok(Err(format!("environments.{env}.app_url is not set"))),
        // Smoke tests that cannot run are a failure, never a silent pass.
        Err(e) => Ok(Ok(vec![SmokeOutcome {
            name: "app_url".into(),
            method: "-".into(),
            path: "-".into(),
            status: None,
            ok: false,
            attempts: 0,
            duration_ms: 0,
            error: Some(e.to_string()),
        }])),
    }
}

/// Opens a transaction on `client` with the configured lock timeout.
pub async fn begin(client: &tokio_postgres::Client, config: &Config) -> Result<(), CoreError> {
    client
        .batch_execute(&format!(
            "begin; set local lock_timeout = '{}ms'",
            config.file().migrations.lock_timeout.as_std().as_millis()
        ))
        .await
        .map_err(|e| CoreError::Failed(shipsafe_pg::describe(&e)))
}

/// Runs the `[[checks]]` inside the open transaction on `client`, then
/// commits if they pass and `commit` is true, else rolls back. The error
/// (`RolledBack`) says what failed; `what` names the operation ("the wipe
/// of staging").
pub async fn checks_then_commit(
    client: &tokio_postgres::Client,
    config: &Config,
    env: &str,
    what: &str,
    commit: bool,
) -> (Vec<CheckOutcome>, Result<(), CoreError>) {
    let checks = run_checks(client, &config.checks_for(env), true).await;
    let failed = check_failures(&checks);
    if !failed.is_empty() || !commit {
        let _ = client.batch_execute("rollback").await;
    }
    if !failed.is_empty() {
        let e = CoreError::RolledBack(format!(
            "{what} was rolled back because checks failed on the result: {}; the database is as it was before",
            failed.join("; ")
        ));
        return (checks, Err(e));
    }
    if commit && let Err(e) = client.batch_execute("commit").await {
        let e = CoreError::RolledBack(format!(
            "committing {what} failed ({}); the database is as it was before",
            shipsafe_pg::describe(&e)
        ));
        return (checks, Err(e));
    }
    (checks, Ok(()))
}

/// One line per check that did not pass: what was expected and what came,
/// or why its query could not run (the server's message).
pub fn check_failures(checks: &[CheckOutcome]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| !c.ok)
        .map(CheckOutcome::line)
        .collect()
}

/// The checks that verifying or restoring a backup runs.
#[derive(Debug, Clone, Default)]
pub struct BackupChecks {
    /// What decides: the checks recorded in the manifest when the backup
    /// was taken, restored into its own environment; for a manifest without
    /// them, or restored into another environment, the checks configured
    /// now for that environment.
    pub deciding: Vec<CheckConfig>,
    /// The checks configured now for the environment that the backup did
    /// not record: run and reported, never failing it (the backup predates
    /// them, and so may its schema).
    pub current: Vec<CheckConfig>,
}

impl BackupChecks {
    /// For `manifest`, restored as environment `env` (its own for a
    /// verification, the target's for a restore).
    pub fn of(config: &Config, manifest: &Manifest, env: &str) -> Self {
        let now = config.checks_for(env);
        // Into another environment, that environment's checks decide: a
        // staging backup restored into production must hold production's.
        let recorded = manifest.checks.as_ref().filter(|_| manifest.env == env);
        match recorded {
            None => Self {
                deciding: now,
                current: Vec::new(),
            },
            Some(recorded) => {
                let deciding: Vec<CheckConfig> = recorded.iter().map(|r| r.to_check()).collect();
                let current = now
                    .into_iter()
                    .filter(|c| !deciding.iter().any(|d| d.same_as(c)))
                    .collect();
                Self { deciding, current }
            }
        }
    }
}

/// One line per failed smoke test, for error messages.
pub fn smoke_failures(smoke: &[SmokeOutcome]) -> Vec<String> {
    smoke
        .iter()
        .filter(|s| !s.ok)
        .map(|s| {
            format!(
                "smoke {:?} ({} {}): {}",
                s.name,
                s.method,
                s.path,
                s.error.as_deref().unwrap_or("failed")
            )
        })
        .collect()
}
