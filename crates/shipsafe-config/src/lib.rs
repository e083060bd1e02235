//! `shipsafe.toml`: the typed, strictly parsed project configuration.
//!
//! Parsing is strict (unknown keys are errors with their line) because a
//! misspelled safety setting that is silently ignored is worse than no
//! setting. Secrets are never stored in the file: values reference
//! environment variables with `${VAR}` and are resolved only when used, and
//! every URL prints with its password masked.

pub mod conninfo;
pub mod dburl;
pub mod duration;
pub mod error;
pub mod expect;
pub mod load;
pub mod mask;
pub mod model;
pub mod serve;
pub mod template;
pub mod window;

pub use conninfo::{ConnInfo, ConnInfoError, RootCert, SslMode};
pub use dburl::DbUrl;
pub use duration::Duration;
pub use error::ConfigError;
pub use expect::Expectation;
pub use load::{Config, Environment, LoadOptions, has_literal_password, load, locate};
pub use mask::mask_secrets;
pub use model::*;
pub use serve::{Job, NotifyConfig, NotifyKind, NotifyOn, ScheduleConfig, ServeConfig};
pub use template::{ProcessEnv, Template, VarSource};
pub use window::Window;
