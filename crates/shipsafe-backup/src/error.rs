use std::path::PathBuf;

use shipsafe_pg::PgError;

/// Why a backup operation failed. Every message says what happened to the
/// backup (never published, refused, ...) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("interrupted (Ctrl-C): pg_dump was ended and nothing was stored")]
    Interrupted,

    #[error("backup storage {url} is not usable: {reason}")]
    InvalidStorage { url: String, reason: String },

    #[error("backup storage {url}: {message}")]
    Storage { url: String, message: String },

    #[error("no backup with id {id:?} in {storage}: `shipsafe backup list` shows the ids")]
    NotFound { id: String, storage: String },

    #[error("backup {id} cannot be used: its status is {status}{}", error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default())]
    NotComplete {
        id: String,
        status: String,
        error: Option<String>,
    },

    #[error(
        "backup {id} is corrupt: checksum mismatch (manifest says {expected}, the archive at {location} hashes to {actual}); nothing was restored. Use another backup (`shipsafe backup list`)"
    )]
    ChecksumMismatch {
        id: String,
        location: String,
        expected: String,
        actual: String,
    },

    #[error("backup {id} is corrupt: {message}; nothing was restored")]
    Corrupt { id: String, message: String },

    #[error("pg_dump failed ({status}); the backup was not published: {stderr}")]
    Dump { status: String, stderr: String },

    #[error("pg_restore failed ({status}): {stderr}")]
    Restore { status: String, stderr: String },

    #[error(
        "restore into {target} failed and was rolled back (the database is as it was before this restore): {message}"
    )]
    RestoreRolledBack { target: String, message: String },

    #[error(
        "restore into {target} refused before anything was changed: {}",
        reasons.join("; ")
    )]
    RestoreRefused {
        target: String,
        reasons: Vec<String>,
    },

    #[error(
        "restore into {target} stopped after its transaction had ended ({message}): part of the restore may have been committed, so the database's state is unknown. Restore a backup again (the newest safety backup holds the state before this restore)"
    )]
    RestoreNotAtomic { target: String, message: String },

    #[error("{what} in {}: {source}", path.display())]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("not enough free space in {}: {needed} bytes needed, {available} available; set TMPDIR to a larger folder", path.display())]
    NoSpace {
        path: PathBuf,
        needed: u64,
        available: u64,
    },

    #[error(
        "the backup needs PostgreSQL extensions that this machine's PostgreSQL {major} cannot install: {}. Nothing was restored. Install them for PostgreSQL {major} (Debian: {}), or leave them out of backups with [backups] exclude_schemas if they belong to the provider",
        missing.join(", "),
        missing.iter().map(|m| debian_package(m, *major)).collect::<Vec<_>>().join(", ")
    )]
    MissingExtensions { missing: Vec<String>, major: u32 },

    #[error(transparent)]
    Pg(#[from] PgError),

    #[error("manifest {id}: {message}")]
    Manifest { id: String, message: String },
}

impl BackupError {
    pub(crate) fn io(
        what: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            what: what.into(),
            path: path.into(),
            source,
        }
    }

    /// The backup itself is bad (corrupt or unusable), as opposed to the
    /// machinery around it failing.
    pub fn is_bad_backup(&self) -> bool {
        matches!(
            self,
            Self::ChecksumMismatch { .. }
                | Self::Corrupt { .. }
                | Self::NotComplete { .. }
                | Self::MissingExtensions { .. }
        )
    }
}

/// Where Debian ships an extension (the contrib ones come with the server).
fn debian_package(ext: &str, major: u32) -> String {
    let pkg = match ext {
        "postgis" | "postgis_topology" | "postgis_raster" | "postgis_tiger_geocoder" => {
            format!("postgresql-{major}-postgis-3")
        }
        "vector" => format!("postgresql-{major}-pgvector"),
        "timescaledb" => "timescaledb (from Timescale's repository)".into(),
        "pg_cron" => format!("postgresql-{major}-cron"),
        "pg_partman" => format!("postgresql-{major}-partman"),
        "pgrouting" => format!("postgresql-{major}-pgrouting"),
        "hypopg" => format!("postgresql-{major}-hypopg"),
        "pg_repack" => format!("postgresql-{major}-repack"),
        other => format!("the package providing `{other}`"),
    };
    format!("{ext} → {pkg}")
}
