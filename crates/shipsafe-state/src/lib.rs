//! shipsafe's local state in `<state_dir>/state.db` (SQLite): run history
//! and the hash-chained audit log (SPEC §12).
//!
//! Backups are deliberately *not* only here: their manifests live next to
//! the archives in backup storage, so losing this folder loses no backup.

pub mod actor;
pub mod audit;
pub mod clock;
pub mod error;
pub mod readiness;
pub mod runs;
pub mod serve;
pub mod store;

pub use actor::Actor;
pub use audit::{AuditEntry, ChainProblem, ChainReport, NewAuditEntry};
pub use clock::now_rfc3339;
pub use error::StateError;
pub use readiness::ReadinessRecord;
pub use runs::{RunRecord, StepRecord};
pub use serve::{Heartbeat, JobState, RunCount};
pub use store::StateStore;
