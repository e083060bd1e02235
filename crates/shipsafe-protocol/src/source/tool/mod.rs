//! The team's own migration tool (SPEC §4) as a migration source: a preset
//! (`[migrations] tool`) or written commands, run as subprocesses with the
//! target's URL in `url_env`. shipsafe cannot see its statements, so it
//! records where the database stands before, compares schemas, and goes
//! back with the tool's own commands.

pub mod config;
pub mod history;
pub mod isolation;
pub mod process;
pub mod rehearsal;
mod watch;

use shipsafe_config::{Config, DbUrl, Protection};
use tokio_postgres::Client;

use self::config::External;
use self::history::ExternalReport;
use self::process::{ToolRun, run_tool};
use super::interface::{Applied, Before, Linted, Pending, PendingMigration, Planned, RollbackInfo};
use crate::error::CoreError;
use crate::lint::{self, LintReport};

pub(crate) async fn pending(
    config: &Config,
    ext: &External,
    url: &DbUrl,
) -> Result<Pending, CoreError> {
    let p = history::pending(config, ext, url).await?;
    Ok(Pending {
        migrations: Vec::new(),
        applied: p.applied.unwrap_or(p.state.revisions.len()),
        tool: Some(p),
    })
}

/// What a deploy's report records of the tool before it runs.
pub(crate) fn report(ext: &External, pending: &Pending) -> Option<ExternalReport> {
    let p = pending.tool.as_ref()?;
    Some(ExternalReport {
        tool: ext.tool.as_str().into(),
        before: p.state.clone(),
        after: None,
        pending: p.revisions.clone(),
        lint_skipped: None,
        empty_down: p.empty_down.clone(),
    })
}

/// The tool's SQL, rendered offline where the tool can: its findings inform
/// (the rehearsal measures what really runs) and never block.
pub(crate) async fn lint(
    config: &Config,
    ext: &External,
    url: &DbUrl,
    client: &Client,
    pending: &Pending,
) -> Result<Linted, CoreError> {
    let Some(p) = &pending.tool else {
        return Ok(Linted::default());
    };
    match history::pending_sql(config, ext, url, p).await {
        Ok(files) if !files.is_empty() => {
            let mut report = LintReport::batch(&files)?;
            lint::weigh(&mut report, client, &config.file().lint).await;
            let detail =
                serde_json::json!({ "findings": report.findings.len(), "blocking": false });
            Ok(Linted {
                report,
                detail,
                ..Linted::default()
            })
        }
        Ok(_) => Ok(Linted {
            skipped: Some("the tool printed no SQL".into()),
            ..Linted::default()
        }),
        Err(why) => Ok(Linted {
            skipped: Some(why),
            ..Linted::default()
        }),
    }
}

/// The schema's fingerprint and the tool's history right before it runs.
pub(crate) async fn before(
    config: &Config,
    ext: &External,
    url: &DbUrl,
    client: &Client,
) -> Result<Before, CoreError> {
    let fingerprint = shipsafe_pg::schema_fingerprint(client).await.map_err(|e| {
        CoreError::Failed(format!(
            "cannot read the schema: {}",
            shipsafe_pg::describe(&e)
        ))
    })?;
    Ok(Before {
        fingerprint: Some(fingerprint),
        tool_state: Some(history::state(config, ext, url).await?),
        empty_down: Vec::new(),
    })
}

pub(crate) async fn apply(
    config: &Config,
    ext: &External,
    env: &str,
    url: &DbUrl,
    client: &Client,
    pending: &Pending,
    before: &Before,
) -> Applied {
    let mut out = Applied::default();
    let named = External {
        app_name: Some(config::deploy_app_name()),
        pg_options: crate::connection::dead_client_check(client, url).await,
        ..ext.clone()
    };
    match run_tool(config, &ext.up, url, &named).await {
        Ok(up) => {
            out.failure = (!up.ok()).then(|| up.failure());
            out.detail =
                serde_json::json!({ "exit_code": up.exit_code, "duration_ms": up.duration_ms });
            out.tool_runs.push(up);
        }
        Err(e) => {
            out.failure = Some(e.to_string());
            out.detail = serde_json::json!({ "error": e.to_string() });
        }
    }
    // Whether the target is where it was: then a failure needs no undoing,
    // and a success that moved nothing went to another database.
    // Only a preset's history is read by shipsafe itself; a `current`
    // command would run the app's code, which may read another database.
    let same = ext.reads_history()
        && before.fingerprint.is_some()
        && shipsafe_pg::schema_fingerprint(client).await.ok() == before.fingerprint
        && history::state(config, ext, url).await.ok() == before.tool_state;
    if out.failure.is_some() {
        out.unchanged = same;
    } else if same && pending.any() {
        out.unchanged = true;
        out.failure = Some(format!(
            "`{}` succeeded, but {env}'s {} history did not move and its schema is unchanged: the tool applied the pending revisions to another database. Does the app read its database URL from .env (e.g. load_dotenv(override=True)) or its settings instead of {}? Check which database it changed before anything else",
            ext.up,
            ext.tool.as_str(),
            ext.url_env
        ));
    }
    out
}

/// The way back without a backup: nothing when the failed run left the
/// schema as it was (the tool rolled back its own transaction: running
/// `down` now would undo an earlier deploy), else the tool's way back.
pub(crate) async fn go_back(
    config: &Config,
    ext: &External,
    url: &DbUrl,
    client: &Client,
    before: &Before,
) -> (RollbackInfo, Vec<ToolRun>) {
    let fingerprint = || async { shipsafe_pg::schema_fingerprint(client).await.ok() };
    let unchanged = |now: Option<String>| now.is_some() && now == before.fingerprint;
    if !before.empty_down.is_empty() {
        // Its downgrade would move the history and leave the change: a
        // schema that looks as before would prove nothing.
        let info = RollbackInfo::new(
            "none",
            false,
            format!(
                "revision(s) {} may not be undone by the tool (a downgrade() is empty, or the offline downgrade SQL could not be printed to tell), and there is no pre-deploy backup (open environment)",
                before.empty_down.join(", ")
            ),
        );
        return (info, Vec::new());
    }
    if unchanged(fingerprint().await) {
        let info = RollbackInfo::new(
            "transaction",
            true,
            "the tool's failed run changed nothing (schema fingerprint unchanged)",
        );
        return (info, Vec::new());
    }
    if !ext.has_down() {
        let info = RollbackInfo::new(
            "none",
            false,
            "no pre-deploy backup (open environment) and no migrations.down command",
        );
        return (info, Vec::new());
    }
    let state = before.tool_state.clone().unwrap_or_default();
    let (runs, went) = history::go_back(config, ext, url, &state).await;
    let back = unchanged(fingerprint().await);
    let detail = match &went {
        Ok(cmds) => format!(
            "ran {}; the schema is {} before the deploy",
            cmds.iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", then "),
            if back { "as" } else { "NOT as" }
        ),
        Err(e) => format!("going back with the tool failed: {e}"),
    };
    (
        RollbackInfo::new("down", went.is_ok() && back, detail),
        runs,
    )
}

/// `rollback`: back to the state a deploy's report recorded before the
/// tool ran. Returns what it says and the step's detail.
pub(crate) async fn undo_run(
    config: &Config,
    ext: &External,
    url: &DbUrl,
    run_id: &str,
    recorded: &serde_json::Value,
) -> Result<(String, serde_json::Value), (CoreError, serde_json::Value)> {
    let before: shipsafe_migrate::tool::ToolState =
        serde_json::from_value(recorded["before"].clone()).map_err(|e| {
            let e = CoreError::Failed(format!(
                "run {run_id} recorded no usable state before the deploy ({e}); restore a backup instead"
            ));
            (e, serde_json::json!({}))
        })?;
    let (runs, went) = history::go_back(config, ext, url, &before).await;
    let commands: Vec<&str> = runs.iter().map(|r| r.command.as_str()).collect();
    match went {
        Ok(_) => Ok((
            format!(
                "went back to {} {} with {} (run {run_id})",
                ext.tool.as_str(),
                before.render(ext.tool),
                if commands.is_empty() {
                    "nothing to run: the tool already records that state".to_string()
                } else {
                    commands
                        .iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join(", then ")
                }
            ),
            serde_json::json!({ "commands": commands, "back_to": before.render(ext.tool) }),
        )),
        Err(e) => {
            let detail = serde_json::json!({ "commands": commands, "error": e });
            Err((CoreError::Failed(e), detail))
        }
    }
}

/// `plan`: what the tool has pending, and its SQL linted where it can be
/// printed (findings inform; the rehearsal measures what really happens).
pub(crate) async fn plan(
    config: &Config,
    ext: &External,
    url: &DbUrl,
    client: &Client,
    protection: Protection,
) -> Result<Planned, CoreError> {
    let pending = history::pending(config, ext, url).await?;
    let mut warnings = Vec::new();
    let mut report = LintReport::default();
    if pending.any {
        match history::pending_sql(config, ext, url, &pending).await {
            Ok(files) if !files.is_empty() => {
                report = LintReport::batch(&files)?;
                lint::weigh(&mut report, client, &config.file().lint).await;
            }
            Ok(_) => {}
            Err(why) => warnings.push(format!("lint skipped: {why}")),
        }
    }
    let mut problems = Vec::new();
    if pending.heads.len() > 1 && !ext.up.split_whitespace().any(|w| w == "heads") {
        problems.push(format!(
            "the migration scripts have {} heads ({}): branches not merged, and `{}` will refuse to choose; merge them (`flask db merge heads` / `alembic merge heads`) or set [migrations] up to upgrade `heads`",
            pending.heads.len(),
            pending.heads.join(", "),
            ext.up
        ));
    }
    if pending.any && protection != Protection::Open && !ext.has_down() {
        warnings.push(
            "no way back with the tool: a failed deploy is undone by restoring the pre-deploy backup".into(),
        );
    }
    Ok(Planned {
        applied: pending.applied.unwrap_or(pending.state.revisions.len()),
        tool_state: Some(pending.state.render(ext.tool)),
        pending: pending
            .revisions
            .iter()
            .flatten()
            .map(|r| PendingMigration {
                version: r.id.clone(),
                name: r.name.clone(),
                transactional: true,
                has_down: ext.has_down(),
                irreversible: false,
                has_verify: false,
            })
            .collect(),
        external_pending: Some(pending.any),
        tool: Some(ext.tool.as_str().to_string()),
        problems,
        warnings,
        lint: report.findings,
        empty_down: pending.empty_down,
        empty_down_from: pending.empty_down_from,
    })
}
