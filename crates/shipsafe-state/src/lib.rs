//! shipsafe's local state in `<state_dir>/state.db` (SQLite): run history
//! and the hash-chained audit log (SPEC §12).
//!
//! Backups are deliberately *not* only here: their manifests live next to
//! the archives in backup storage, so losing this folder loses no backup.

pub mod actor;
pub mod audit;
pub mod error;
pub mod readiness;
pub mod runs;
pub mod serve;
pub mod store;

pub use actor::Actor;
pub use audit::{AuditEntry, ChainProblem, ChainReport, NewAuditEntry};
pub use error::StateError;
pub use readiness::ReadinessRecord;
pub use runs::{RunRecord, StepRecord};
pub use serve::{Heartbeat, JobState, RunCount};
pub use store::StateStore;

/// Now, as RFC 3339 UTC with millisecond precision.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Millisecond)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_else(|_| jiff::Timestamp::now().to_string())
}
