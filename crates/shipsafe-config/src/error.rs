use std::path::PathBuf;

/// Everything that can be wrong with a configuration. Each message names the
/// file, line and column (where there is one) and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no shipsafe.toml found in {} or any folder above it: run `shipsafe init` in your project, or pass --config PATH (or set SHIPSAFE_CONFIG)",
        start.display()
    )]
    NotFound { start: PathBuf },

    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    #[error(
        "{}:{line}:{column}: {key} uses ${{{var}}}, but the environment variable {var} is not set (or is empty): export {var} before running shipsafe",
        path.display()
    )]
    MissingVariable {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        var: String,
    },

    #[error(
        "no environment named {name:?} in {}: the configured environments are {known}",
        path.display()
    )]
    UnknownEnvironment {
        path: PathBuf,
        name: String,
        known: String,
    },
}

impl ConfigError {
    /// True when the command line, not the file, is at fault.
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::UnknownEnvironment { .. })
    }
}
