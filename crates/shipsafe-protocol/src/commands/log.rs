//! `shipsafe log` and `shipsafe log verify`.

use shipsafe_config::Config;
use shipsafe_state::{AuditEntry, ChainReport, StateStore};

use crate::error::CoreError;

/// Audit entries, newest first. No state folder yet means an empty log.
pub fn entries(
    config: &Config,
    env: Option<&str>,
    limit: Option<usize>,
) -> Result<Vec<AuditEntry>, CoreError> {
    if let Some(e) = env {
        config.environment(e)?;
    }
    match StateStore::open_existing(config.state_dir())? {
        Some(store) => Ok(store.audit_entries(env, limit)?),
        None => Ok(Vec::new()),
    }
}

/// Verifies the hash chain.
pub fn verify(config: &Config) -> Result<ChainReport, CoreError> {
    match StateStore::open_existing(config.state_dir())? {
        Some(store) => Ok(store.verify_audit()?),
        None => Ok(ChainReport {
            entries: 0,
            ok: true,
            head_hash: None,
            problems: Vec::new(),
            anchors_checked: Vec::new(),
        }),
    }
}
