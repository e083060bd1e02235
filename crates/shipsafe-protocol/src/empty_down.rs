//! Revisions of the team's tool whose way back does nothing: an alembic or
//! Flask-Migrate revision whose `downgrade()` is empty (`pass`) prints no
//! statement in the tool's offline downgrade SQL. Going back with the tool
//! over such a revision moves `alembic_version` and leaves the revision's
//! change in place, so only a backup undoes it.

use serde::Serialize;
use shipsafe_config::{Config, DbUrl};
use shipsafe_migrate::tool::{self, ToolState};

use crate::source::tool::config::External;
use crate::source::tool::process::run_capture;

/// What the tool's offline downgrade SQL says of each revision.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EmptyDowns {
    /// The command that printed it (`flask db downgrade --sql head:0001`).
    pub command: String,
    /// Every revision between the newest and `state`, newest first, with
    /// whether its downgrade prints no statement.
    pub revisions: Vec<(String, bool)>,
}

/// Whether the tool can tell (alembic and Flask-Migrate presets).
pub fn applies(ext: &External) -> bool {
    tool::down_sql_command(ext.tool, &ToolState::default()).is_ok()
}

/// Runs the tool's offline downgrade from its newest revision back to
/// `state` (where the database at `url` stands) and reads which revisions
/// print no statement. Nothing connects to the database: alembic's `--sql`
/// mode only prints. `Err` says why it could not be told.
pub async fn empty_downs(
    config: &Config,
    ext: &External,
    url: &DbUrl,
    state: &ToolState,
) -> Result<EmptyDowns, String> {
    let command = tool::down_sql_command(ext.tool, state)?;
    let (run, stdout) = run_capture(config, &command, url, ext)
        .await
        .map_err(|e| e.to_string())?;
    if !run.ok() {
        return Err(format!(
            "`{command}` failed: {}",
            shipsafe_config::mask_secrets(&run.failure())
        ));
    }
    // A cut output would leave the older revisions unread, and an empty
    // downgrade among them unseen.
    if stdout.ends_with(crate::source::tool::process::CUT_MARK) {
        return Err(format!(
            "`{command}` printed more than 4 MiB, which was not read whole"
        ));
    }
    Ok(EmptyDowns {
        revisions: tool::empty_downgrades(ext.tool, &stdout),
        command,
    })
}
