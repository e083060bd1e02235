use shipsafe_backup::BackupError;
use shipsafe_config::ConfigError;
use shipsafe_pg::PgError;
use shipsafe_state::StateError;

use crate::exit::ExitKind;

/// Why a command failed. Each variant knows its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error(transparent)]
    Pg(#[from] PgError),

    #[error(transparent)]
    State(#[from] StateError),

    #[error(transparent)]
    Backup(#[from] BackupError),

    /// A gate stopped the command before it changed anything.
    #[error("{0}")]
    Blocked(String),

    /// Verification found a problem; nothing was changed.
    #[error("{0}")]
    Problems(String),

    /// The operation failed and was rolled back.
    #[error("{0}")]
    RolledBack(String),

    /// The operation failed and could not be rolled back.
    #[error("{0}")]
    RollbackFailed(String),

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// The connection is not safe for what the command would do (plaintext
    /// to a protected environment, a transaction pooler for changes).
    #[error("{0}")]
    UnsafeConnection(String),

    /// Something the command needs is not set up (exit 78).
    #[error("{0}")]
    Setup(String),

    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),

    /// The operation failed before changing anything.
    #[error("{0}")]
    Failed(String),
}

impl From<shipsafe_migrate::MigrateError> for CoreError {
    fn from(e: shipsafe_migrate::MigrateError) -> Self {
        use shipsafe_migrate::MigrateError;
        match e {
            MigrateError::Locked { .. } => CoreError::Blocked(e.to_string()),
            MigrateError::Drift { .. }
            | MigrateError::Missing { .. }
            | MigrateError::Dirty { .. } => CoreError::Problems(e.to_string()),
            MigrateError::Layout { .. } | MigrateError::Read { .. } => {
                CoreError::Usage(e.to_string())
            }
            other => CoreError::Failed(other.to_string()),
        }
    }
}

impl CoreError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    pub fn exit_kind(&self) -> ExitKind {
        match self {
            Self::Config(e) if e.is_usage() => ExitKind::Usage,
            Self::Config(_) => ExitKind::Config,
            Self::Pg(e) if e.is_installation() => ExitKind::Config,
            Self::Usage(_) => ExitKind::Usage,
            Self::UnsafeConnection(_) | Self::Setup(_) => ExitKind::Config,
            Self::Blocked(_) => ExitKind::Blocked,
            Self::Problems(_) => ExitKind::Problems,
            Self::RolledBack(_) => ExitKind::RolledBack,
            Self::RollbackFailed(_) => ExitKind::RollbackFailed,
            Self::Backup(BackupError::InvalidStorage { .. }) => ExitKind::Config,
            Self::Backup(BackupError::NotFound { .. }) => ExitKind::Usage,
            Self::Backup(BackupError::Pg(e)) if e.is_installation() => ExitKind::Config,
            Self::Backup(e) if e.is_bad_backup() => ExitKind::Problems,
            // Refused before the first change: nothing was changed.
            Self::Backup(BackupError::RestoreRefused { .. }) => ExitKind::Problems,
            // A person must look: the restore's transaction ended early.
            Self::Backup(BackupError::RestoreNotAtomic { .. }) => ExitKind::RollbackFailed,
            // Nothing was changed: the database is as it was before.
            Self::Pg(_) | Self::State(_) | Self::Io { .. } | Self::Failed(_) | Self::Backup(_) => {
                ExitKind::RolledBack
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_errors_exit_by_what_happened_to_the_target() {
        let backup = |e: BackupError| CoreError::Backup(e).exit_kind();
        let target = || "postgres://h/db".to_string();
        assert_eq!(
            backup(BackupError::RestoreRefused {
                target: target(),
                reasons: vec!["why".into()],
            }),
            ExitKind::Problems,
            "refused before any change: exit 1"
        );
        assert_eq!(
            backup(BackupError::RestoreRolledBack {
                target: target(),
                message: "why".into(),
            }),
            ExitKind::RolledBack,
            "as it was before: exit 4"
        );
        assert_eq!(
            backup(BackupError::RestoreNotAtomic {
                target: target(),
                message: "why".into(),
            }),
            ExitKind::RollbackFailed,
            "state unknown, a person must act: exit 5"
        );
    }
}
