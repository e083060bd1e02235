//! How long-running commands tell the user what they are doing. The binary
//! decides how (a spinner on a terminal, nothing otherwise).

pub trait Progress: Send + Sync {
    /// A new stage begins.
    fn stage(&self, message: &str);
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn stage(&self, _message: &str) {}
}
