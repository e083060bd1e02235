//! Step 5, confirm: a person types the environment's name (or passes
//! `--confirm ENV`) before a protected environment changes.

use shipsafe_config::{Config, Protection};

use crate::error::CoreError;
use crate::pipeline::Failed;
use crate::progress::Confirm;

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

/// Stops a rollback that restores over, or drops, what was written since
/// the deploy unless a person confirmed it. Guarded environments ask too:
/// the app's writes since are gone from the live database, even though a
/// safety backup keeps them. (A restore or clone into a guarded environment
/// is the person's own explicit request and asks only where protected.)
pub fn require_replacing(
    config: &Config,
    env: &str,
    what: &str,
    confirm: &dyn Confirm,
) -> Result<(), CoreError> {
    match config.environment(env)?.protection() {
        Protection::Open => Ok(()),
        Protection::Protected => require(config, env, what, confirm),
        Protection::Guarded => match confirm.confirm(env, what) {
            Ok(true) => Ok(()),
            Ok(false) => Err(CoreError::Blocked(format!(
                "{what}. Pass --confirm {env} (or type the name on a terminal) to go ahead; nothing was changed"
            ))),
            Err(why) => Err(CoreError::Blocked(format!(
                "{why}; {what}; nothing was changed"
            ))),
        },
    }
}

/// The `confirm` step of a deploy: shows `text` (the change and what the
/// rehearsal found) and asks.
pub async fn deploy(
    confirm: &dyn Confirm,
    env: &str,
    text: &str,
) -> Result<((), serde_json::Value), Failed> {
    match confirm.confirm(env, text) {
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
