//! The protocol's steps (SPEC §6), one module each, in the order a deploy
//! runs them:
//!
//! ```text
//! preflight → lint → backup → clone → rehearse → confirm → apply → data
//!   → verify → (failure: rollback) → retention → record
//! ```
//!
//! A step uses the engines below the protocol (backup, data, migrate, pg,
//! state, config), the migration [`crate::source`] and the shared pieces of
//! this crate (connections, the backup store, checks); never a command.
//! [`crate::pipeline`] runs them and records each; `lint` is the source's
//! (`Source::lint`) and `record` is the pipeline's `finish`.

pub mod apply;
pub mod backup;
pub mod clone;
pub mod confirm;
pub mod data;
pub mod mask;
pub mod preflight;
pub mod rehearse;
pub mod restore;
pub mod retention;
pub mod rollback;
pub mod settle;
pub mod verify;
