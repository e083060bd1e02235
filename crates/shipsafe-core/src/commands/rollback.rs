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
use shipsafe_migrate::{ApplyOptions, apply, history};
use shipsafe_pg::{CheckOutcome, connect, run_checks};
use shipsafe_state::{RunRecord, StateStore};

use crate::commands::backup::{require_confirmation, take_backup};
use crate::error::CoreError;
use crate::progress::{Confirm, Progress};
use crate::runs::Run;

#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    pub rolled_back_run: Option<String>,
    /// `restore` or `down`.
    pub method: Option<String>,
    pub safety_backup: Option<String>,
    /// What a rollback by restore throws away, said before doing it.
    pub discards: Option<Discards>,
    pub detail: String,
    pub checks_after: Vec<CheckOutcome>,
}

/// Writes made after a pre-deploy backup, which restoring it discards.
#[derive(Debug, Clone, Serialize)]
pub struct Discards {
    pub backup_id: String,
    pub backup_created_at: String,
    pub minutes_since_backup: i64,
    /// Rows inserted, updated or deleted since the backup by every session
    /// (the deploy's own changes included), from `pg_stat_user_tables`;
    /// `None` when not measurable (statistics reset, or an older backup).
    pub rows_written_since: Option<i64>,
}

impl Discards {
    fn sentence(&self, env: &str) -> String {
        format!(
            "this restores backup {} taken {} ({} minutes ago): every write to {env} since then is discarded{}",
            self.backup_id,
            self.backup_created_at,
            self.minutes_since_backup,
            match self.rows_written_since {
                Some(n) => format!(
                    " (about {n} rows inserted, updated or deleted since, the deploy's own included, per pg_stat_user_tables)"
                ),
                None => String::new(),
            }
        )
    }
}

/// Sum of rows written to user tables since statistics began: compared with
/// the same figure taken at backup time.
pub(crate) const WRITES_SQL: &str =
    "select coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::int8 from pg_stat_user_tables";

async fn discards(
    config: &Config,
    vars: &dyn VarSource,
    client: &tokio_postgres::Client,
    backup_id: &str,
) -> Result<Discards, CoreError> {
    let store = crate::commands::backup::open_store(config, vars)?;
    let m = store.manifest(backup_id).await?;
    let minutes = m
        .created()
        .map(|t| (jiff::Timestamp::now().as_second() - t.as_second()) / 60)
        .unwrap_or(0);
    let now: Option<i64> = client
        .query_typed(WRITES_SQL, &[])
        .await
        .ok()
        .and_then(|rows| rows.first().map(|r| r.get(0)));
    Ok(Discards {
        backup_id: backup_id.to_string(),
        backup_created_at: m.created_at.clone(),
        minutes_since_backup: minutes,
        rows_written_since: match (now, m.writes_at_backup) {
            (Some(n), Some(then)) if n >= then => Some(n - then),
            _ => None,
        },
    })
}

/// The deploy to undo: the given run, or the newest deploy that may have
/// changed the database and that no later rollback undid.
fn target(
    store: &StateStore,
    env: &str,
    run_id: Option<&str>,
) -> Result<Option<RunRecord>, CoreError> {
    let runs = store.runs(Some(env), 500)?;
    let undone: Vec<String> = runs
        .iter()
        .filter(|r| r.command == "rollback" && r.outcome == "rolled_back")
        .filter_map(|r| r.report["rolled_back_run"].as_str().map(str::to_string))
        .collect();
    if let Some(id) = run_id {
        let Some(r) = runs.into_iter().find(|r| r.run_id == id) else {
            return Err(CoreError::Usage(format!(
                "no run {id} for {env}: `shipsafe log --env {env}` lists the runs"
            )));
        };
        if r.command != "deploy" {
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
        if !matches!(
            r.outcome.as_str(),
            "deployed" | "running" | "rollback_failed"
        ) {
            return Err(CoreError::Usage(format!(
                "run {id} ended {}: it left the database as it was, so there is nothing of it to roll back",
                r.outcome
            )));
        }
        return Ok(Some(r));
    }
    Ok(runs.into_iter().find(|r| {
        r.command == "deploy"
            && matches!(
                r.outcome.as_str(),
                "deployed" | "running" | "rollback_failed"
            )
            && !undone.contains(&r.run_id)
    }))
}

/// Backups that retention must keep because a deploy may still need them:
/// per environment, the pre-deploy backup of the deploy `rollback ENV` would
/// undo, and of every deploy left `running` or `rollback_failed` (a person
/// must still act on those). Keyed by backup id, with the reason.
pub fn backups_in_use(
    state_dir: &Path,
    env: Option<&str>,
) -> Result<std::collections::BTreeMap<String, String>, CoreError> {
    let mut out = std::collections::BTreeMap::new();
    let Some(store) = StateStore::open_existing(state_dir)? else {
        return Ok(out);
    };
    let runs = store.runs(env, 10_000)?;
    let undone: Vec<&str> = runs
        .iter()
        .filter(|r| r.command == "rollback" && r.outcome == "rolled_back")
        .filter_map(|r| r.report["rolled_back_run"].as_str())
        .collect();
    let mut newest_seen: Vec<Option<String>> = Vec::new();
    for r in runs.iter().filter(|r| r.command == "deploy") {
        let Some(backup) = &r.backup_id else { continue };
        if undone.contains(&r.run_id.as_str()) {
            continue;
        }
        let open = matches!(r.outcome.as_str(), "running" | "rollback_failed");
        // The newest such deploy is what `rollback ENV` undoes.
        if (open || r.outcome == "deployed") && !newest_seen.contains(&r.env) {
            newest_seen.push(r.env.clone());
            out.insert(
                backup.clone(),
                format!("`shipsafe rollback` of deploy {} restores it", r.run_id),
            );
        } else if open {
            out.insert(
                backup.clone(),
                format!("deploy {} ended {} and may need it", r.run_id, r.outcome),
            );
        }
    }
    Ok(out)
}

pub async fn rollback(
    config: &Config,
    vars: &dyn VarSource,
    cwd: &Path,
    env: &str,
    run_id: Option<&str>,
    confirm: &dyn Confirm,
    progress: &Arc<dyn Progress>,
) -> Result<RunRecord, CoreError> {
    let protection = config.environment(env)?.protection();
    let store = StateStore::open(config.state_dir())?;
    let mut run = Run::start("rollback", Some(env));
    let mut report = RollbackReport {
        rolled_back_run: None,
        method: None,
        safety_backup: None,
        discards: None,
        detail: String::new(),
        checks_after: Vec::new(),
    };
    let Some(deploy) = target(&store, env, run_id)? else {
        report.detail = format!("no deploy of {env} to roll back");
        return run.finish(
            "nothing_to_do",
            &report,
            config.state_dir(),
            cwd,
            vec![],
            serde_json::json!({}),
        );
    };
    drop(store);
    let url = config.database_url(env, vars)?;
    let client =
        crate::connection::open(config, env, &url, crate::connection::Access::Change).await?;
    // The lock first: a deploy still running (or a session it orphaned) is
    // named before anything else is asked.
    history::lock(&client).await?;
    let rehearsal = &deploy.report["rehearsal"];
    let faithful_down = rehearsal["round_trip"]["status"] == "proven"
        && rehearsal["loses_data"] == false
        && deploy.outcome == "deployed";
    let mut what = format!("rolling back deploy {} of {env}", deploy.run_id);
    if let (Some(backup), false) = (&deploy.backup_id, faithful_down) {
        // A restore throws away what was written since the backup: say so,
        // and have a person confirm it outside open environments.
        let d = discards(config, vars, &client, backup).await?;
        let sentence = d.sentence(env);
        progress.stage(&sentence);
        what = format!("{what}: {sentence}");
        report.discards = Some(d);
        if protection == Protection::Guarded {
            match confirm.confirm(env, &what) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(CoreError::Blocked(format!(
                        "{what}. Pass --confirm {env} (or type the name on a terminal) to go ahead; nothing was changed"
                    )));
                }
                Err(why) => {
                    return Err(CoreError::Blocked(format!(
                        "{why}; {what}; nothing was changed"
                    )));
                }
            }
        }
    }
    require_confirmation(config, env, &what, confirm)?;
    report.rolled_back_run = Some(deploy.run_id.clone());
    let mut ids = Vec::new();

    let result: Result<String, CoreError> = async {
        if let (Some(backup), false) = (&deploy.backup_id, faithful_down) {
            if protection != Protection::Open {
                run.begin("backup");
                let safety = take_backup(config, vars, env, "pre-rollback", progress).await;
                match safety {
                    Ok(m) => {
                        run.end("ok", serde_json::json!({ "backup_id": m.id }));
                        report.safety_backup = Some(m.id.clone());
                        ids.push(m.id);
                    }
                    Err(e) => {
                        run.end("failed", serde_json::json!({ "error": e.to_string() }));
                        return Err(e);
                    }
                }
            }
            ids.push(backup.clone());
            run.begin("restore");
            report.method = Some("restore".into());
            crate::commands::migrate::restore_pre_deploy(config, vars, env, backup, progress).await?;
            // The restore brought the backup's copy of the audit head back.
            crate::anchor::write(config, &client).await;
            run.end("ok", serde_json::json!({ "backup_id": backup }));
            Ok(format!("restored the pre-deploy backup {backup} of run {}", deploy.run_id))
        } else {
            // A rehearsed, faithful down, or no backup (open environment):
            // the down migrations of that run.
            run.begin("down");
            report.method = Some("down".into());
            if let Some(recorded) = deploy.report.get("external") {
                return external_down(config, &url, &deploy.run_id, recorded, &mut run).await;
            }
            let migrations = crate::commands::migrate::discover(config)?;
            let applied = history::applied(&client).await?;
            let mut mine: Vec<_> = applied
                .iter()
                .filter(|a| a.run_id.as_deref() == Some(deploy.run_id.as_str()))
                .filter_map(|a| migrations.iter().find(|m| m.version == a.version))
                .collect();
            mine.reverse();
            let m = &config.file().migrations;
            let opts = ApplyOptions {
                lock_timeout: m.lock_timeout.as_std(),
                statement_timeout: m.statement_timeout.as_std(),
                lock_retries: m.lock_retries,
                applied_by: "rollback".into(),
                run_id: Some(run.record.run_id.clone()),
            };
            for mig in &mine {
                apply::down(&client, mig, &opts).await?;
            }
            run.end("ok", serde_json::json!({ "reverted": mine.iter().map(|m| m.label()).collect::<Vec<_>>(), "rehearsed": faithful_down }));
            Ok(format!(
                "reverted {} migration(s) of run {}{}",
                mine.len(),
                deploy.run_id,
                if faithful_down { " (down/up round trip proven by its rehearsal)" } else { "" }
            ))
        }
    }
    .await;
    history::unlock(&client).await;
    match result {
        Ok(detail) => {
            report.detail = detail;
            if let Ok(c) = connect(&url).await {
                report.checks_after = run_checks(&c, &config.file().checks, false).await;
            }
            let rec = run.finish(
                "rolled_back",
                &report,
                config.state_dir(),
                cwd,
                ids,
                serde_json::json!({ "run": deploy.run_id }),
            )?;
            crate::runs::write_markdown(config.state_dir(), &rec)?;
            Ok(rec)
        }
        Err(e) => {
            report.detail = e.to_string();
            let rec = run.finish(
                "rollback_failed",
                &report,
                config.state_dir(),
                cwd,
                ids,
                serde_json::json!({ "run": deploy.run_id }),
            )?;
            crate::runs::write_markdown(config.state_dir(), &rec)?;
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
}

/// A deploy made by the team's tool goes back to the state its report
/// recorded before the tool ran.
async fn external_down(
    config: &Config,
    url: &shipsafe_config::DbUrl,
    run_id: &str,
    recorded: &serde_json::Value,
    run: &mut Run,
) -> Result<String, CoreError> {
    let Some(ext) = crate::commands::migrate::external(config) else {
        return Err(CoreError::Usage(format!(
            "run {run_id} was made by the team's migration tool, which [migrations] no longer configures"
        )));
    };
    let before: shipsafe_migrate::tool::ToolState =
        serde_json::from_value(recorded["before"].clone()).map_err(|e| {
            CoreError::Failed(format!(
                "run {run_id} recorded no usable state before the deploy ({e}); restore a backup instead"
            ))
        })?;
    let (runs, went) = crate::commands::external::go_back(config, &ext, url, &before).await;
    let commands: Vec<&str> = runs.iter().map(|r| r.command.as_str()).collect();
    match went {
        Ok(_) => {
            run.end(
                "ok",
                serde_json::json!({ "commands": commands, "back_to": before.render(ext.tool) }),
            );
            Ok(format!(
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
            ))
        }
        Err(e) => {
            run.end(
                "failed",
                serde_json::json!({ "commands": commands, "error": e }),
            );
            Err(CoreError::Failed(e))
        }
    }
}
