//! The exit codes of SPEC §3, the same for every command.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitKind {
    /// Success, including "nothing to do".
    Success,
    /// Checks, lint or verification found problems; nothing was changed.
    Problems,
    /// Blocked by a gate (protection, window, git, lock, confirmation).
    Blocked,
    /// Failed, and the database is as it was before (rolled back, or never
    /// touched).
    RolledBack,
    /// Failed and could not be rolled back: a person must act.
    RollbackFailed,
    /// The command line is wrong.
    Usage,
    /// The configuration or installation is wrong.
    Config,
}

impl ExitKind {
    pub const fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Problems => 1,
            Self::Blocked => 3,
            Self::RolledBack => 4,
            Self::RollbackFailed => 5,
            Self::Usage => 64,
            Self::Config => 78,
        }
    }
}
