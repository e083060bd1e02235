//! How long-running commands tell the user what they are doing. The binary
//! decides how (a spinner on a terminal, nothing otherwise).

pub trait Progress: Send + Sync {
    /// A new stage begins.
    fn stage(&self, message: &str);

    /// Bytes processed in the current stage, and the total when known.
    fn bytes(&self, _done: u64, _total: Option<u64>) {}
}

/// Asks a person to confirm a change to a protected environment.
pub trait Confirm: Send + Sync {
    /// Returns true only when the person confirmed `env` (by typing its name
    /// on a terminal, or with `--confirm ENV`). `what` describes the change.
    fn confirm(&self, env: &str, what: &str) -> Result<bool, String>;

    /// Whether [`Confirm::confirm`] could say yes at all: true with a
    /// matching `--confirm ENV` or a terminal to ask on, false without
    /// either, an error for a `--confirm` naming another environment.
    fn can_confirm(&self, env: &str) -> Result<bool, String>;
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn stage(&self, _message: &str) {}
}

/// A byte counter that reports to `progress`.
pub fn bytes_callback(
    progress: &std::sync::Arc<dyn Progress>,
    total: Option<u64>,
) -> shipsafe_backup::OnBytes {
    let p = std::sync::Arc::clone(progress);
    std::sync::Arc::new(move |n| p.bytes(n, total))
}
