pub mod init;
pub mod log;
pub mod status;
