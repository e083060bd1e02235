//! Step 10, retention: `[backups] retention` applied to an environment's
//! backups, never deleting one a deploy may still need.

use std::path::Path;

use serde::Serialize;
use shipsafe_backup::Decision;
use shipsafe_config::{Config, VarSource};
use shipsafe_state::StateStore;

use crate::error::CoreError;

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub decisions: Vec<Decision>,
    pub deleted: Vec<String>,
    /// Leftovers of backups that never finished (killed, cut off), removed
    /// (or, with `dry_run`, that would be).
    pub unfinished: Vec<Unfinished>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Unfinished {
    pub name: String,
    pub bytes: u64,
}

/// How long an unfinished upload must have been left alone before prune
/// takes it for abandoned: far longer than any pause of a live backup.
const UNFINISHED_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Applies retention (`backup prune [ENV] [--dry-run]`).
pub fn prune<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    cwd: &'a Path,
    env: Option<&'a str>,
    dry_run: bool,
) -> crate::Task<'a, Result<PruneReport, CoreError>> {
    Box::pin(async move {
        let store = crate::store::open_store(config, vars)?;
        let mut all = store.list().await?;
        if let Some(e) = env {
            all.retain(|m| m.env == e);
        }
        let protected = backups_in_use(config.state_dir(), env)?;
        let decisions = shipsafe_backup::plan(&all, config.file().backups.retention, &protected);
        let unfinished: Vec<Unfinished> = store
            .stale_uploads(UNFINISHED_AFTER, env, dry_run)
            .await?
            .into_iter()
            .map(|(name, bytes)| Unfinished { name, bytes })
            .collect();
        let mut deleted = Vec::new();
        if !dry_run {
            for d in decisions.iter().filter(|d| !d.keep) {
                store.delete(&d.id).await?;
                deleted.push(d.id.clone());
            }
            if !deleted.is_empty() {
                crate::audit::record_with(
                    config.state_dir(),
                    cwd,
                    "backup prune",
                    env,
                    "pruned",
                    deleted.clone(),
                    serde_json::json!({ "kept": decisions.iter().filter(|d| d.keep).count() }),
                )?;
            }
        }
        Ok(PruneReport {
            dry_run,
            decisions,
            deleted,
            unfinished,
        })
    })
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
    let runs = store.runs_of(env, &["deploy", "rollback", "rehearse"], None)?;
    let undone: Vec<&str> = runs
        .iter()
        .filter(|r| r.command == "rollback" && r.outcome == "rolled_back")
        .filter_map(|r| r.report["rolled_back_run"].as_str())
        .collect();
    // A rollback's safety backup holds what the rollback threw away (the
    // writes since the deploy): kept for a month, whatever the count.
    let month_ago = jiff::Timestamp::now().as_second() - 30 * 24 * 3600;
    for r in runs.iter().filter(|r| r.command == "rollback") {
        let recent = r
            .started_at
            .parse::<jiff::Timestamp>()
            .is_ok_and(|t| t.as_second() >= month_ago);
        if let (true, Some(b)) = (recent, r.report["safety_backup"].as_str()) {
            out.entry(b.to_string()).or_insert_with(|| {
                format!(
                    "rollback {} took it: it holds what that rollback discarded (kept 30 days)",
                    r.run_id
                )
            });
        }
    }
    let mut newest_seen: Vec<Option<String>> = Vec::new();
    // A rehearsal whose tool changed the target is undone like a deploy.
    let undoable = |r: &&shipsafe_state::RunRecord| {
        r.command == "deploy" || (r.command == "rehearse" && r.outcome == "target_changed")
    };
    for r in runs.iter().filter(undoable) {
        let Some(backup) = &r.backup_id else { continue };
        if undone.contains(&r.run_id.as_str()) {
            continue;
        }
        let open = matches!(
            r.outcome.as_str(),
            "running" | "rollback_failed" | "target_changed"
        );
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

/// The retention step after a good deploy: the deploy's own backup is kept
/// (its run is still `running` until it is saved). A failure here is
/// reported, never a reason to undo a good deploy.
pub async fn after_deploy(
    config: &Config,
    vars: &dyn VarSource,
    cwd: &Path,
    env: &str,
) -> Result<serde_json::Value, serde_json::Value> {
    match prune(config, vars, cwd, Some(env), false).await {
        Ok(r) => Ok(serde_json::json!({ "deleted": r.deleted })),
        Err(e) => Err(serde_json::json!({ "error": e.to_string() })),
    }
}
