//! One module per command. A command composes steps (`crate::steps`) and
//! never uses another command.

pub mod backup;
pub mod clone;
pub mod data;
pub mod deploy;
pub mod init;
pub mod log;
pub mod migrate;
pub mod rehearse;
pub mod rollback;
pub mod status;
pub mod verify;
pub mod wipe;
