//! `shipsafe rollback ENV [--run ID]`: undo the most recent deploy that
//! changed the database and is not rolled back yet (or the given run).
//!
//! When the deploy's rehearsal proved the down/up round trip and found no
//! data lost, its down migrations undo it (keeping every write made since).
//! Otherwise down migrations are not trusted to give the data back, so a
//! deploy with a pre-deploy backup is undone by restoring it, after a
//! safety backup of the current state. A deploy without a backup (open
//! environment) is undone with the down migrations of that run.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use shipsafe_config::{Config, Protection, VarSource};
use shipsafe_migrate::history;
use shipsafe_pg::CheckOutcome;
use shipsafe_state::{RunRecord, StateStore};

use crate::error::CoreError;
use crate::pipeline::Pipeline;
use crate::progress::{Confirm, Progress};
use crate::source::{Source, native};
use crate::steps;
use crate::steps::rollback::Discards;

#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    pub rolled_back_run: Option<String>,
    /// `restore` or `down`.
    pub method: Option<String>,
    pub safety_backup: Option<String>,
    /// What a rollback by restore throws away, said before doing it.
    pub discards: Option<Discards>,
    /// What going back with `down` drops that holds data (tables and
    /// columns the deploy created, with their rows or values now).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub down_drops: Vec<String>,
    pub detail: String,
    pub checks_after: Vec<CheckOutcome>,
}

/// A guarded environment's confirmation of a rollback that discards data.
/// The tables and columns a deploy created, from its rehearsal (`None`:
/// not recorded, as for a deploy without a rehearsal).
fn created_by(report: &serde_json::Value) -> Option<Vec<String>> {
    let r = &report["rehearsal"];
    let lines = |v: &serde_json::Value| -> Option<Vec<String>> {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|l| l.as_str().map(str::to_string))
                .collect()
        })
    };
    if r["created"].is_array() {
        return lines(&r["created"]);
    }
    // Runs recorded before `created`: the tool's schema changes, or unknown.
    lines(&r["schema_changes"]["extra"])
}

/// The deploy to undo: the given run, or the newest deploy that may have
/// changed the database and that no later rollback undid.
fn target(
    store: &StateStore,
    env: &str,
    run_id: Option<&str>,
) -> Result<Option<RunRecord>, CoreError> {
    let runs = store.runs_of(Some(env), &["deploy", "rollback", "rehearse"], None)?;
    let undone: Vec<String> = runs
        .iter()
        .filter(|r| r.command == "rollback" && r.outcome == "rolled_back")
        .filter_map(|r| r.report["rolled_back_run"].as_str().map(str::to_string))
        .collect();
    if let Some(id) = run_id {
        let found = store.run(id)?.filter(|r| r.env.as_deref() == Some(env));
        let Some(r) = found else {
            return Err(CoreError::Usage(format!(
                "no run {id} for {env}: `shipsafe log --env {env}` lists the runs"
            )));
        };
        if !matches!(r.command.as_str(), "deploy" | "rehearse") {
            return Err(CoreError::Usage(format!(
                "run {id} is a {}, not a deploy",
                r.command
            )));
        }
        if undone.contains(&r.run_id) {
            return Err(CoreError::Usage(format!(
                "run {id} was already rolled back"
            )));
        }
        if !undoable(&r) {
            return Err(CoreError::Usage(format!(
                "run {id} ended {}: it left the database as it was, so there is nothing of it to roll back",
                r.outcome
            )));
        }
        return Ok(Some(r));
    }
    Ok(runs
        .into_iter()
        .find(|r| undoable(r) && !undone.contains(&r.run_id)))
}

/// A run that may have changed the database: a deploy that did (or may
/// have), or a rehearsal whose tool changed the target itself.
fn undoable(r: &RunRecord) -> bool {
    match r.command.as_str() {
        "deploy" => matches!(
            r.outcome.as_str(),
            "deployed" | "running" | "rollback_failed" | "target_changed"
        ),
        "rehearse" => r.outcome == "target_changed",
        _ => false,
    }
}

pub fn rollback<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    cwd: &'a Path,
    env: &'a str,
    run_id: Option<&'a str>,
    confirm: &'a dyn Confirm,
    progress: &'a Arc<dyn Progress>,
) -> crate::Task<'a, Result<RunRecord, CoreError>> {
    Box::pin(async move {
        let protection = config.environment(env)?.protection();
        let store = StateStore::open(config.state_dir())?;
        let mut report = RollbackReport {
            rolled_back_run: None,
            method: None,
            safety_backup: None,
            discards: None,
            down_drops: Vec::new(),
            detail: String::new(),
            checks_after: Vec::new(),
        };
        let nothing = |detail: String, mut report: RollbackReport| {
            report.detail = detail;
            let p = Pipeline::start(config, cwd, "rollback", Some(env), serde_json::json!({}));
            p.finish("nothing_to_do", &report)
        };
        let Some(deploy) = target(&store, env, run_id)? else {
            return nothing(format!("no deploy of {env} to roll back"), report);
        };
        let url = config.database_url(env, vars)?;
        let client =
            crate::connection::open(config, env, &url, crate::connection::Access::Change).await?;
        // The lock first: a deploy still running (or a session it orphaned) is
        // named before anything else is asked.
        history::lock(&client).await?;
        // A deploy whose process died before it changed anything is not one
        // to undo: restoring its backup would only discard later writes.
        let settled = steps::settle::dead_runs(config, &client, env).await;
        let settled = match settled {
            Ok(s) => s,
            Err(e) => {
                history::unlock(&client).await;
                return Err(e);
            }
        };
        if settled.changed_nothing.contains(&deploy.run_id) {
            // The run someone meant to undo changed nothing: say so, and do
            // not quietly undo an older deploy instead.
            history::unlock(&client).await;
            let older = target(&store, env, None)?;
            let why = format!(
                "deploy {} of {env} ended when its process died, before it changed anything (schema and migration history as before): nothing to roll back{}",
                deploy.run_id,
                match older {
                    Some(o) => format!(
                        "; to undo the deploy before it, run `shipsafe rollback {env} --run {}`",
                        o.run_id
                    ),
                    None => String::new(),
                }
            );
            return nothing(why, report);
        }
        drop(store);
        let rehearsal = &deploy.report["rehearsal"];
        let faithful_down = rehearsal["round_trip"]["status"] == "proven"
            && rehearsal["loses_data"] == false
            && deploy.outcome == "deployed";
        // The migration source changed since the deploy: its pre-deploy
        // backup is the only way back; without one nothing is tried.
        let source = Source::of(config);
        let mismatch = source.cannot_undo(&deploy.run_id, &deploy.report);
        let by_restore = deploy
            .backup_id
            .clone()
            .filter(|_| !faithful_down || mismatch.is_some());
        if let (None, Some(why)) = (&by_restore, &mismatch) {
            return Err(CoreError::Blocked(format!(
                "{why}, and the run has no pre-deploy backup to restore; nothing was changed. Undo it by hand (with the tool that made it, where it can)"
            )));
        }
        let mut what = format!("rolling back deploy {} of {env}", deploy.run_id);
        // Going back with `down` drops what the deploy created, and what the
        // app has written into it since: measured now, not at the rehearsal.
        let mut down_safety = false;
        if by_restore.is_none() {
            let created = created_by(&deploy.report);
            let drops = match &created {
                Some(c) => steps::rollback::down_drops(&client, c).await,
                None => Vec::new(),
            };
            down_safety =
                protection != Protection::Open && (created.is_none() || !drops.is_empty());
            what = format!(
                "{what} with its down migrations{}",
                if drops.is_empty() {
                    String::new()
                } else {
                    format!(
                        ": this drops data written since the deploy: {}{}",
                        drops.join(", "),
                        if down_safety {
                            "; a safety backup of it is taken first"
                        } else {
                            ""
                        }
                    )
                }
            );
            if !drops.is_empty() {
                progress.stage(&what);
                report.down_drops = drops;
            }
        }
        if let Some(backup) = &by_restore {
            // A restore throws away what was written since the backup: say so,
            // and have a person confirm it outside open environments.
            let d = steps::rollback::discards(config, vars, &client, backup).await?;
            let sentence = d.sentence(env);
            progress.stage(&sentence);
            what = format!("{what}: {sentence}");
            report.discards = Some(d);
        }
        // Dropping or restoring over what was written since asks outside
        // open environments; a plain `down` asks where protected.
        if by_restore.is_some() || !report.down_drops.is_empty() {
            steps::confirm::require_replacing(config, env, &what, confirm)?;
        } else {
            steps::confirm::require(config, env, &what, confirm)?;
        }
        report.rolled_back_run = Some(deploy.run_id.clone());
        let audit = serde_json::json!({ "run": deploy.run_id });
        let mut p = Pipeline::start(config, cwd, "rollback", Some(env), audit);

        let result: Result<String, CoreError> = async {
            if let Some(backup) = &by_restore {
                if protection != Protection::Open {
                    let safety = steps::backup::step(config, vars, env, "pre-rollback", progress);
                    let m = p.step("backup", safety).await.map_err(|s| s.error)?;
                    report.safety_backup = Some(m.id.clone());
                    p.keep_backup(&m.id, false);
                }
                p.keep_backup(backup, false);
                report.method = Some("restore".into());
                let restored = async {
                    steps::restore::pre_deploy(config, vars, env, backup, progress)
                        .await
                        .map_err(crate::pipeline::Failed::nothing_changed)?;
                    // The restore brought the backup's copy of the audit head back.
                    crate::anchor::write(config, &client).await;
                    Ok(((), serde_json::json!({ "backup_id": backup })))
                };
                p.step("restore", restored).await.map_err(|s| s.error)?;
                Ok(format!(
                    "restored the pre-deploy backup {backup} of run {}",
                    deploy.run_id
                ))
            } else {
                // A rehearsed, faithful down, or no backup (open environment):
                // the source's way back from that run.
                if down_safety {
                    let safety = steps::backup::step(config, vars, env, "pre-rollback", progress);
                    let m = p.step("backup", safety).await.map_err(|s| s.error)?;
                    report.safety_backup = Some(m.id.clone());
                    p.keep_backup(&m.id, false);
                }
                report.method = Some("down".into());
                let opts =
                    native::apply_options(config, "rollback", Some(p.run_id().to_string()), true);
                let undo = async {
                    source
                        .undo_run(config, &url, &client, &deploy.run_id, &deploy.report, &opts)
                        .await
                        .map(|(said, mut detail)| {
                            if detail.get("reverted").is_some() {
                                detail["rehearsed"] = serde_json::json!(faithful_down);
                            }
                            (said, detail)
                        })
                        .map_err(|(e, detail)| {
                            crate::pipeline::Failed::nothing_changed(e).with_detail(detail)
                        })
                };
                let said = p.step("down", undo).await.map_err(|s| s.error)?;
                Ok(if faithful_down {
                    format!("{said} (down/up round trip proven by its rehearsal)")
                } else {
                    said
                })
            }
        }
        .await;
        history::unlock(&client).await;
        match result {
            Ok(detail) => {
                report.detail = detail;
                report.checks_after = steps::rollback::checks_after(config, env, &url).await;
                p.finish("rolled_back", &report)
            }
            Err(e) => {
                report.detail = e.to_string();
                p.finish("rollback_failed", &report)?;
                Err(CoreError::RollbackFailed(format!(
                    "rollback of {env} (run {}) failed: {e}. {}",
                    deploy.run_id,
                    match &report.safety_backup {
                        Some(s) => format!("The state before this rollback is in backup {s}"),
                        None => "Check the database by hand".into(),
                    }
                )))
            }
        }
    })
}
