use std::path::PathBuf;

/// Why a migration operation failed. Messages name the migration version,
/// the file and line where there is one, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{}: {message}", path.display())]
    Layout { path: PathBuf, message: String },

    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "migration {version} was changed after it was applied (its up.sql checksum is {file}, the database recorded {applied}): restore the file from version control, or write a new migration for the change"
    )]
    Drift {
        version: String,
        file: String,
        applied: String,
    },

    #[error(
        "migration {version} is recorded as applied but its files are gone: restore them from version control"
    )]
    Missing { version: String },

    #[error(
        "migration {version} is half-applied (it ran outside a transaction and stopped part-way): check the database by hand, finish or undo the change, then delete its row from shipsafe.migrations"
    )]
    Dirty { version: String },

    #[error(
        "another shipsafe run holds the migration lock on this database{}: wait for it to finish",
        holder.as_deref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    Locked { holder: Option<String> },

    #[error("{location}: migration {version} failed: {message}")]
    Apply {
        version: String,
        location: String,
        message: String,
        /// True when the failure left part of the migration applied.
        partial: bool,
    },

    #[error("{location}: verification of migration {version} failed: {message}")]
    Verify {
        version: String,
        location: String,
        message: String,
    },

    /// `[[checks]]` or `[[smoke]]` failed after the migrations.
    #[error("verification after the migrations failed: {message}")]
    Checks { message: String },

    #[error("migration {version} has no down.sql, so it cannot be reverted this way")]
    NoDown { version: String },

    #[error("database error while {doing}: {message}")]
    Db { doing: String, message: String },
}

impl MigrateError {
    pub(crate) fn db(doing: impl Into<String>, e: &tokio_postgres::Error) -> Self {
        Self::Db {
            doing: doing.into(),
            message: shipsafe_pg::describe(e),
        }
    }
}
