//! Migrations (SPEC §4): native `up`/`down`/`verify` scripts, Prisma and
//! Flyway layouts, the `shipsafe.migrations` history, the migration lock,
//! and applying with timeouts, retries and exact error locations.

pub mod apply;
pub mod error;
pub mod history;
pub mod lockwait;
pub mod measure;
pub mod script;
pub mod source;
pub mod tool;

pub use apply::{ApplyOptions, ApplyReport, VerifyReport};
pub use error::MigrateError;
pub use history::{AppliedRow, Plan};
pub use measure::{MeasuredMigration, MeasuredStatement, RowCache, up_measured};
pub use source::{Layout, Migration, discover};
