//! Data work for shipsafe (SPEC §8, §9): reference data exported, diffed
//! and imported by natural key, wiping all but kept rows, and masking.
//!
//! Everything here is set-based SQL on one connection: rows travel by
//! `COPY` into temporary tables and are matched with joins, never one round
//! trip per row. Callers own the transaction.

pub mod columns;
pub mod error;
pub mod export;
pub mod file;
pub mod import;
pub mod mask;
pub mod set;
pub mod wipe;

pub use error::DataError;
pub use file::DataFile;
pub use import::{Conflict, ImportMode, ImportOptions, SetPlan, Unresolved};
pub use set::SetDef;
