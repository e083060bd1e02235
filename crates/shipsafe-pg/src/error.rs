use std::path::PathBuf;

/// Errors from talking to PostgreSQL or running its binaries. Messages name
/// the object and say what to do; URLs in them are always masked.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "PostgreSQL binary `{name}`{} not found (looked in: {}): install the PostgreSQL server package (Debian: `apt-get install postgresql-{}`) or set PG_BIN_DIR to the folder holding it",
        major.map(|m| format!(" for major version {m}")).unwrap_or_default(),
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        major.map(|m| m.to_string()).unwrap_or_else(|| "15".into())
    )]
    BinaryNotFound {
        name: String,
        major: Option<u32>,
        searched: Vec<PathBuf>,
    },

    #[error(
        "{} is PostgreSQL {found}, older than the server's major version {needed}: a dump or restore with an older client can lose data; install the {needed} client tools or set PG_BIN_DIR",
        path.display()
    )]
    BinaryTooOld {
        path: PathBuf,
        found: u32,
        needed: u32,
    },

    #[error(
        "shipsafe runs as root, and PostgreSQL refuses to run as root; it needs the unprivileged user {user:?} to run scratch clusters, which does not exist: create it (`useradd --system {user}`) or set SHIPSAFE_SCRATCH_USER to another unprivileged user"
    )]
    NoUnprivilegedUser { user: String },

    #[error(
        "refusing to use {}: {reason}; it must be a folder of this user that no one else can write to (remove it, or set SHIPSAFE_CACHE_DIR to another folder)",
        dir.display()
    )]
    UnsafeDirectory { dir: PathBuf, reason: String },

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("`{command}` failed: {output}")]
    CommandFailed { command: String, output: String },

    #[error(
        "scratch PostgreSQL cluster in {} did not start: {reason}\n--- last lines of its log ---\n{log_tail}",
        dir.display()
    )]
    StartFailed {
        dir: PathBuf,
        reason: String,
        log_tail: String,
    },

    #[error("the connection string {url} is not valid: {message}")]
    BadConnectionString { url: String, message: String },

    #[error("cannot set up TLS for {url}: {message}")]
    TlsSetup { url: String, message: String },

    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },

    /// The server answered and refused the login: wrong password, unknown
    /// role or database, no `pg_hba.conf` entry. Nothing was started.
    #[error(
        "cannot log in to {url}: {message}. The server refused the user, password or database this URL names; nothing was started. Fix the variable that holds the URL (or the server's roles and pg_hba.conf)"
    )]
    Login { url: String, message: String },

    #[error("query failed on {url}: {message}")]
    Query { url: String, message: String },
}

impl PgError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// True when the cause is a missing or unusable installation or
    /// connection setting, not the database: fixing it means installing or
    /// configuring something (exit 78).
    pub fn is_installation(&self) -> bool {
        matches!(
            self,
            Self::BinaryNotFound { .. }
                | Self::BinaryTooOld { .. }
                | Self::NoUnprivilegedUser { .. }
                | Self::BadConnectionString { .. }
                | Self::Login { .. }
                | Self::TlsSetup { .. }
                | Self::UnsafeDirectory { .. }
        )
    }
}

/// Describes a tokio-postgres error with SQLSTATE and server detail, without
/// ever including connection parameters.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(d) = db.detail() {
            s.push_str(&format!("; detail: {d}"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; hint: {h}"));
        }
        return s;
    }
    error_chain(e)
}

/// An error and its sources, joined, each cause once, secrets masked. The
/// root cause ("Connection refused", "No space left on device") is often
/// several levels down.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    shipsafe_config::mask_secrets(&s)
}
