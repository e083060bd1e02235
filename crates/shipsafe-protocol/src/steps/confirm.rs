//! Step 5, confirm: a person types the environment's name (or passes
//! `--confirm ENV`) before a protected environment changes.

use shipsafe_config::{Config, Protection};

use crate::error::CoreError;
use crate::pipeline::Failed;
use crate::progress::{Confirm, Progress};

/// Whether a confirmation could be given at all.
pub fn possible(confirm: &dyn Confirm, env: &str) -> Result<(), CoreError> {
    match confirm.can_confirm(env) {
        Ok(true) => Ok(()),
        Ok(false) => Err(CoreError::Blocked(format!(
            "{env} is protected: deploying needs confirmation. Run it on a terminal and type the environment name when asked, or pass --confirm {env}; nothing was changed"
        ))),
        Err(why) => Err(CoreError::Blocked(format!("{why}; nothing was changed"))),
    }
}

/// Stops a change to a protected environment unless a person confirmed it.
pub fn require(
    config: &Config,
    env: &str,
    what: &str,
    confirm: &dyn Confirm,
) -> Result<(), CoreError> {
    if config.environment(env)?.protection() != Protection::Protected {
        return Ok(());
    }
    match confirm.confirm(env, what) {
        Ok(true) => Ok(()),
        Ok(false) => Err(CoreError::Blocked(format!(
            "{env} is protected: {what} needs confirmation. Type the environment name when asked, or pass --confirm {env} when not on a terminal; nothing was changed"
        ))),
        Err(why) => Err(CoreError::Blocked(format!("{why}; nothing was changed"))),
    }
}

/// The `confirm` step of a deploy: shows `text` (the change and what the
/// rehearsal found) with the progress display hidden, and asks.
pub async fn deploy(
    confirm: &dyn Confirm,
    progress: &dyn Progress,
    env: &str,
    text: &str,
) -> Result<((), serde_json::Value), Failed> {
    let mut answer = Ok(false);
    progress.suspend(&mut || answer = confirm.confirm(env, text));
    match answer {
        // What the person confirmed, kept with the run.
        Ok(true) => Ok(((), serde_json::json!({ "shown": text }))),
        Ok(false) => Err(Failed::blocked(CoreError::Blocked(format!(
            "{env} is protected and the deploy was not confirmed (the typed name did not match); nothing was changed"
        )))),
        Err(why) => Err(Failed::blocked(CoreError::Blocked(format!(
            "{why}; nothing was changed"
        )))),
    }
}
