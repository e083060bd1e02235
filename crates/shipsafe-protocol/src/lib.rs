//! shipsafe's protocol: the steps every risky operation is made of, the
//! pipeline that runs them, the migration sources behind one interface, and
//! the commands composed from them. Functions here take typed options and
//! return typed, serializable results; parsing arguments and printing are
//! the binary's job.
//!
//! - [`steps`]: one module per step of SPEC §6;
//! - [`pipeline`]: runs steps in order, records them, decides outcomes;
//! - [`source`]: where migrations come from (native folders, the team's
//!   tool), one interface;
//! - [`commands`]: each command, a composition of steps;
//! - the shared pieces below them: connections, the backup store, checks,
//!   lint, reference data, the run record, the audit anchor.

pub mod anchor;
pub mod audit;
pub mod checks;
pub mod commands;
pub mod connection;
pub mod empty_down;
pub mod error;
pub mod exit;
pub mod files;
pub mod gates;
pub mod lint;
pub mod pipeline;
pub mod progress;
pub mod refdata;
pub mod rehearsal;
pub mod rehearsal_text;
pub mod repo;
pub mod runs;
pub mod smoke;
pub mod source;
pub mod steps;
pub mod store;

pub use error::CoreError;

/// What the entry points of the protocol return: the future is boxed here, so
/// its body is compiled once, in this crate, and not again in every crate
/// that awaits it (the CLI's release build took 85 s of code generation
/// before).
pub type Task<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
pub use exit::ExitKind;
pub use progress::{Confirm, Progress, Silent};
