//! Appending audit entries for commands that change something.

use std::path::Path;

use shipsafe_state::{Actor, AuditEntry, NewAuditEntry, StateStore};

use crate::error::CoreError;

/// Records one entry in the state folder's audit log.
pub fn record(
    state_dir: &Path,
    cwd: &Path,
    command: &str,
    env: Option<&str>,
    outcome: &str,
    detail: serde_json::Value,
) -> Result<AuditEntry, CoreError> {
    record_with(state_dir, cwd, command, env, outcome, Vec::new(), detail)
}

/// Records one entry naming the backups involved.
pub fn record_with(
    state_dir: &Path,
    cwd: &Path,
    command: &str,
    env: Option<&str>,
    outcome: &str,
    backup_ids: Vec<String>,
    detail: serde_json::Value,
) -> Result<AuditEntry, CoreError> {
    let mut store = StateStore::open(state_dir)?;
    Ok(store.append_audit(&NewAuditEntry {
        actor: Actor::detect(cwd),
        command: command.to_string(),
        env: env.map(str::to_string),
        outcome: outcome.to_string(),
        backup_ids,
        run_id: None,
        detail,
    })?)
}
