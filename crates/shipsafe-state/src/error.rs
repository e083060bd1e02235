use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create the state folder {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("state database {}: {source} (if it was damaged, move it aside: backups stay listed because their manifests live in backup storage)", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("state database {} was written by a newer shipsafe (schema {found}, this one knows {known}): upgrade shipsafe", path.display())]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },

    #[error("cannot encode state record: {0}")]
    Encode(#[from] serde_json::Error),
}
