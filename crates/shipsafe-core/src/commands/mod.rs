pub mod backup;
pub mod init;
pub mod lint;
pub mod log;
pub mod migrate;
pub mod rollback;
pub mod status;
pub mod verify;
