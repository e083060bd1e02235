//! Backups that are standard files and proven by restore (SPEC §7).
//!
//! A backup is a `pg_dump` custom-format archive, zstd-compressed, plus a
//! JSON manifest, in a local folder or S3-compatible storage. Anyone can
//! restore one without shipsafe: `zstd -dc FILE | pg_restore -d URL`.
//!
//! A restore into an existing database is one transaction on shipsafe's
//! connection: `slate` empties the target (refusing, before any change,
//! what it could not replace), `replay` sends pg_restore's script through
//! `script`'s psql-exact statement splitter, and `restore` compares what was
//! loaded with what `archive` read from the archive's bytes before it
//! commits.

pub mod archive;
pub mod dblevel;
pub mod dump;
pub mod error;
pub mod manifest;
mod replay;
pub mod restore;
pub mod retention;
mod script;
mod slate;
pub mod store;
pub mod toc;

pub use archive::ArchiveContents;
pub use dump::{DumpRequest, OnBytes, create};
pub use error::BackupError;
pub use manifest::{Manifest, RecordedCheck, RestoreProof, Status, Verification};
pub use restore::{AtomicRestore, RestoreReport, VerifiedArchive, fetch_verified, restore_atomic};
pub use retention::{Decision, plan};
pub use store::{BackupStore, StorageSpec};
pub use toc::Toc;
