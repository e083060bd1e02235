//! Backups that are standard files and proven by restore (SPEC §7).
//!
//! A backup is a `pg_dump` custom-format archive, zstd-compressed, plus a
//! JSON manifest, in a local folder or S3-compatible storage. Anyone can
//! restore one without shipsafe: `zstd -dc FILE | pg_restore -d URL`.

pub mod dump;
pub mod error;
pub mod manifest;
pub mod restore;
pub mod retention;
pub mod store;
pub mod toc;

pub use dump::{DumpRequest, OnBytes, create};
pub use error::BackupError;
pub use manifest::{Manifest, Status, Verification};
pub use restore::{
    AtomicRestore, RestoreReport, VerifiedArchive, fetch_verified, restore_atomic,
    restore_parallel, restore_parallel_with,
};
pub use retention::{Decision, plan};
pub use store::{BackupStore, StorageSpec};
pub use toc::Toc;
