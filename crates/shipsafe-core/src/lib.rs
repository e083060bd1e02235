//! The work behind each shipsafe command. Functions here take typed options
//! and return typed, serializable results; parsing arguments and printing
//! are the binary's job.

pub mod anchor;
pub mod audit;
pub mod commands;
pub mod connection;
pub mod demo;
pub mod error;
pub mod exit;
pub mod files;
pub mod gates;
pub mod notify;
pub mod progress;
pub mod readiness;
pub mod rehearsal_text;
pub mod runs;
pub mod serve;
pub mod smoke;

pub use error::CoreError;
pub use exit::ExitKind;
pub use progress::{Confirm, Progress, Silent};
