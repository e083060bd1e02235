//! PostgreSQL access for shipsafe: connections, server binaries of the right
//! major version, and throwaway scratch clusters.

pub mod binaries;
pub mod checks;
pub mod child;
pub mod connect;
pub mod error;
pub mod health;
pub mod schema;
pub mod scratch;
pub mod tls;

pub use binaries::PgBinaries;
pub use checks::{CheckOutcome, CheckStatus, run_checks};
pub use child::LibpqChild;
pub use connect::{
    ServerInfo, connect, connect_info, connect_pinned, database_identity, quote_ident,
    quote_literal, server_info, tls_version,
};
pub use error::{PgError, describe, error_chain};
pub use schema::{SchemaDiff, schema_description, schema_diff, schema_fingerprint};
pub use scratch::{PrivateTemp, ScratchCluster, ScratchOptions, Storage};
