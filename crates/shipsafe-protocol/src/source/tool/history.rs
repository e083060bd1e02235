//! What the team's tool has pending, where the database stands by its
//! history, the way back to a recorded state, and the SQL it would run.

use serde::Serialize;
use shipsafe_config::{Config, DbUrl, MigrationTool};
use shipsafe_migrate::tool::{self, PendingRevision, ToolState};

use super::config::External;
use super::process::{ToolRun, run_capture, run_tool, run_with};
use crate::error::CoreError;

/// What is pending, by the tool's own account.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pending {
    pub any: bool,
    /// The revisions, oldest first, when the preset can list them.
    pub revisions: Option<Vec<PendingRevision>>,
    /// Where the database stood when asked.
    pub state: ToolState,
    /// How many revisions are applied, where the listing names them all
    /// (alembic keeps only its heads in the database, Django one row per
    /// migration but the state holds the latest per app).
    #[serde(skip)]
    pub applied: Option<usize>,
    /// alembic / Flask-Migrate: the heads the migration scripts have (more
    /// than one: branches not merged).
    #[serde(skip)]
    pub heads: Vec<String>,
    /// Pending revisions whose way back does nothing (an empty
    /// `downgrade()`), or all of them when the tool's offline downgrade SQL
    /// could not be printed: only a backup undoes them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub empty_down: Vec<String>,
    /// How `empty_down` was read: the tool's offline downgrade command, or
    /// why it could not be (then every pending revision is in it).
    #[serde(skip)]
    pub empty_down_from: Option<Result<String, String>>,
    #[serde(skip)]
    pub runs: Vec<ToolRun>,
}

/// Asks the tool what is pending on `url`: the `pending` command when one
/// is written (exit 0: nothing), else the preset's listing against the
/// history table.
pub async fn pending(config: &Config, ext: &External, url: &DbUrl) -> Result<Pending, CoreError> {
    let mut out = Pending {
        state: state(config, ext, url).await?,
        ..Pending::default()
    };
    if let Some(list) = tool::list_command(ext.tool) {
        let (run, stdout) = run_capture(config, list, url, ext).await?;
        let ok = run.ok();
        let failure = run.failure();
        out.runs.push(run);
        if ok {
            let pending =
                tool::parse_pending(ext.tool, &stdout, &out.state).map_err(CoreError::Failed)?;
            out.applied =
                tool::count_listed(ext.tool, &stdout).map(|n| n.saturating_sub(pending.len()));
            out.heads = tool::alembic_heads(ext.tool, &stdout);
            out.revisions = Some(pending);
        } else if ext.tool == MigrationTool::Rails && out.state.revisions.is_empty() {
            // No schema_migrations yet: Rails says so and exits 1.
            out.revisions = Some(tool::rails_migration_files(
                &config.root().join(&config.file().migrations.dir),
            ));
        } else if ext.pending.is_none() {
            return Err(CoreError::Failed(format!(
                "cannot list pending migrations: {failure}"
            )));
        }
    }
    match &ext.pending {
        Some(cmd) => {
            let run = run_tool(config, cmd, url, ext).await?;
            out.any = !run.ok();
            out.runs.push(run);
        }
        None => out.any = out.revisions.as_ref().is_some_and(|r| !r.is_empty()),
    }
    if out.any && crate::empty_down::applies(ext) {
        match crate::empty_down::empty_downs(config, ext, url, &out.state).await {
            Ok(found) => {
                out.empty_down_from = Some(Ok(found.command.clone()));
                let pending: Vec<&str> = out
                    .revisions
                    .iter()
                    .flatten()
                    .map(|r| r.id.as_str())
                    .collect();
                out.empty_down = found
                    .revisions
                    .into_iter()
                    .filter(|(id, empty)| *empty && pending.contains(&id.as_str()))
                    .map(|(id, _)| id)
                    .collect();
            }
            // Not knowing is no proof: every pending revision is taken as one
            // the tool may not undo, so only a backup undoes the deploy.
            Err(why) => {
                tracing::info!("cannot tell empty downgrades: {why}");
                out.empty_down_from = Some(Err(why));
                out.empty_down = out
                    .revisions
                    .iter()
                    .flatten()
                    .map(|r| r.id.clone())
                    .collect();
            }
        }
    }
    Ok(out)
}

/// Where the database at `url` stands: the tool's history table, or the
/// `current` command's output.
pub async fn state(config: &Config, ext: &External, url: &DbUrl) -> Result<ToolState, CoreError> {
    if ext.reads_history() {
        let client = shipsafe_pg::connect(url).await.map_err(|e| {
            CoreError::Failed(format!("cannot read the migration tool's history: {e}"))
        })?;
        return tool::read_state(&client, ext.tool).await.map_err(|e| {
            CoreError::Failed(format!(
                "cannot read the migration tool's history: {}",
                shipsafe_pg::describe(&e)
            ))
        });
    }
    let Some(current) = &ext.current else {
        return Ok(ToolState::default());
    };
    let (run, stdout) = run_capture(config, current, url, ext).await?;
    if !run.ok() {
        return Err(CoreError::Failed(format!(
            "cannot record where the database stands: {}",
            run.failure()
        )));
    }
    let line = stdout.trim();
    Ok(ToolState {
        revisions: if line.is_empty() {
            Vec::new()
        } else {
            vec![line.to_string()]
        },
    })
}

/// The commands that take the database from `now` back to `before`.
pub fn down_plan(
    ext: &External,
    before: &ToolState,
    now: &ToolState,
) -> Result<Vec<String>, String> {
    if let Some(down) = &ext.down {
        if !down.contains("{revision}") {
            // No placeholder: the command decides how far it goes, once.
            return Ok(vec![down.clone()]);
        }
        if before == now {
            return Ok(Vec::new());
        }
        for rev in &before.revisions {
            tool::check_revision(ext.tool, rev)?;
        }
        // The revision reaches the shell as data, one quoted word each,
        // never as shell text.
        let words = if before.revisions.len() > 1 {
            (1..=before.revisions.len())
                .map(|i| format!("\"${REVISION_VAR}_{i}\""))
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            format!("\"${REVISION_VAR}\"")
        };
        return Ok(vec![down.replace("{revision}", &words)]);
    }
    tool::down_commands(ext.tool, before, now)
}

/// The variable a custom `down` gets the recorded revision in.
pub const REVISION_VAR: &str = "SHIPSAFE_REVISION";

/// [`REVISION_VAR`] (every revision, space-separated) and, with several,
/// `SHIPSAFE_REVISION_1`, `_2`, … one each.
fn revision_vars(ext: &External, before: &ToolState) -> Vec<(String, String)> {
    let mut vars = vec![(REVISION_VAR.to_string(), before.render(ext.tool))];
    if before.revisions.len() > 1 {
        for (i, r) in before.revisions.iter().enumerate() {
            vars.push((format!("{REVISION_VAR}_{}", i + 1), r.clone()));
        }
    }
    vars
}

/// `command` as a person reads it: the revisions written in, quoted.
fn shown(command: &str, vars: &[(String, String)]) -> String {
    let mut text = command.to_string();
    // The numbered names first: `SHIPSAFE_REVISION` is a prefix of them.
    for (k, v) in vars.iter().rev() {
        text = text.replace(&format!("\"${k}\""), &tool::sh_quote(v));
    }
    text
}

/// Takes the database at `url` back to `before` with the tool's own
/// commands. Returns what ran and, on failure, why.
pub async fn go_back(
    config: &Config,
    ext: &External,
    url: &DbUrl,
    before: &ToolState,
) -> (Vec<ToolRun>, Result<Vec<String>, String>) {
    let now = match state(config, ext, url).await {
        Ok(s) => s,
        Err(e) => return (Vec::new(), Err(e.to_string())),
    };
    let commands = match down_plan(ext, before, &now) {
        Ok(c) => c,
        Err(e) => return (Vec::new(), Err(e)),
    };
    let vars = revision_vars(ext, before);
    let mut runs = Vec::new();
    for c in &commands {
        match run_with(config, c, url, ext, &vars).await {
            Ok((mut r, _)) => {
                r.command = shown(c, &vars);
                let ok = r.ok();
                let failure = r.failure();
                runs.push(r);
                if !ok {
                    return (runs, Err(failure));
                }
            }
            Err(e) => return (runs, Err(e.to_string())),
        }
    }
    (runs, Ok(commands.iter().map(|c| shown(c, &vars)).collect()))
}

/// The SQL the tool would run for `pending`, as `(label, sql)` files for
/// the linter; `Err` says why there is none.
pub async fn pending_sql(
    config: &Config,
    ext: &External,
    url: &DbUrl,
    pending: &Pending,
) -> Result<Vec<(String, String)>, String> {
    let revisions = pending.revisions.as_deref().unwrap_or_default();
    let commands = tool::sql_commands(ext.tool, &pending.state, revisions)?;
    let mut files = Vec::new();
    for c in commands {
        let (run, stdout) = run_capture(config, &c, url, ext)
            .await
            .map_err(|e| e.to_string())?;
        if !run.ok() {
            return Err(format!("cannot print the SQL: {}", run.failure()));
        }
        files.push((format!("`{c}`"), tool::tidy_sql(ext.tool, &stdout)));
    }
    Ok(files)
}

/// Recorded in a deploy's report: where the tool stood before and after,
/// and what it had pending. `shipsafe rollback` goes back to `before`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExternalReport {
    pub tool: String,
    pub before: ToolState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<ToolState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<Vec<PendingRevision>>,
    /// Why the tool's SQL was not linted, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lint_skipped: Option<String>,
    /// Pending revisions with an empty `downgrade()`: `rollback` restores
    /// the backup instead of going back with the tool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub empty_down: Vec<String>,
}
