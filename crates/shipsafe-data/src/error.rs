use std::path::PathBuf;

/// Why a data operation failed. Messages name the set, table, file or row.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The configuration does not match the database (unknown table or
    /// column, a reference without a primary key to resolve to, ...).
    #[error("data set {set}: {message}")]
    Definition { set: String, message: String },

    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },

    #[error("{what}: {message}")]
    Db { what: String, message: String },

    /// The rows, predicates or foreign keys make the request impossible.
    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    pub fn db(what: impl Into<String>, e: &tokio_postgres::Error) -> Self {
        Self::Db {
            what: what.into(),
            message: shipsafe_pg::describe(e),
        }
    }
}
