//! `shipsafe deploy ENV`: the protocol of SPEC §6.
//!
//! preflight (gates, lock, pending) → lint → backup → rehearse (protected,
//! or `--rehearse`) → confirm (protected) → apply → data → verify → on
//! failure, rollback: down migrations only when this run's rehearsal proved
//! the round trip, otherwise a safety backup and a restore of the step-3
//! backup (open environments without a backup fall back to down.sql).

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use shipsafe_config::{Config, Protection, VarSource};
use shipsafe_migrate::{
    ApplyOptions, ApplyReport, MigrateError, Migration, VerifyReport, apply, history,
};
use shipsafe_pg::{CheckOutcome, connect, run_checks};

use crate::commands::migrate::{ToolRun, discover, external, restore_pre_deploy};
use crate::commands::rehearse::{self, Change, RehearsalReport, Verdict};
use crate::error::CoreError;
use crate::progress::{Confirm, Progress};
use crate::runs::Run;

/// What `deploy` reports besides its steps.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeployReport {
    /// External mode: what the team's tool printed.
    pub tool_output: Vec<ToolRun>,
    /// External mode: where the tool stood before and after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<crate::commands::external::ExternalReport>,
    pub lint: Vec<shipsafe_lint::Finding>,
    pub rehearsal: Option<RehearsalReport>,
    pub applied: Vec<ApplyReport>,
    /// Step 7: reference-data sets merged from data/.
    pub data: Vec<shipsafe_data::SetPlan>,
    pub verified: Vec<VerifyReport>,
    pub checks: Vec<CheckOutcome>,
    pub smoke: Vec<crate::smoke::SmokeOutcome>,
    pub rollback: Option<RollbackInfo>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RollbackInfo {
    /// `down` (down migrations), `restore` (pre-deploy backup),
    /// `transaction` (nothing to undo) or `none`.
    pub method: String,
    pub ok: bool,
    pub detail: String,
    /// The safety backup taken before a restore.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safety_backup: Option<String>,
    pub checks_after: Vec<CheckOutcome>,
}

impl RollbackInfo {
    pub(crate) fn new(method: &str, ok: bool, detail: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            ok,
            detail: detail.into(),
            safety_backup: None,
            checks_after: Vec::new(),
        }
    }
}

/// The outcome of a deploy and its exit status.
#[derive(Debug)]
pub struct DeployOutcome {
    pub run: shipsafe_state::RunRecord,
    pub error: Option<CoreError>,
}

/// How `deploy` was asked to run.
pub struct DeployOptions<'a> {
    /// Recorded in the history as who applied the migrations.
    pub applied_by: &'a str,
    /// `--override REASON`: go ahead despite the window or git gate.
    pub override_reason: Option<&'a str>,
    /// `--rehearse`: rehearse in an open or guarded environment too.
    pub rehearse: bool,
    /// `--accept-risk`: go ahead when the rehearsal says `needs_ack`.
    pub accept_risk: bool,
    pub confirm: &'a dyn Confirm,
}

impl std::fmt::Debug for DeployOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeployOptions")
            .field("override_reason", &self.override_reason)
            .field("rehearse", &self.rehearse)
            .field("accept_risk", &self.accept_risk)
            .finish_non_exhaustive()
    }
}

/// Asks for confirmation of a protected deploy before anything costly runs:
/// without a terminal and without `--confirm ENV` it cannot be given later.
pub(crate) fn confirmation_possible(confirm: &dyn Confirm, env: &str) -> Result<(), CoreError> {
    match confirm.can_confirm(env) {
        Ok(true) => Ok(()),
        Ok(false) => Err(CoreError::Blocked(format!(
            "{env} is protected: deploying needs confirmation. Run it on a terminal and type the environment name when asked, or pass --confirm {env}; nothing was changed"
        ))),
        Err(why) => Err(CoreError::Blocked(format!("{why}; nothing was changed"))),
    }
}

/// The summary a person confirms: what will be applied and what the
/// rehearsal found.
fn confirmation_text(env: &str, pending: &[Migration], r: Option<&RehearsalReport>) -> String {
    let mut t = format!("Deploy to {env} (protected):\n");
    for m in pending {
        t.push_str(&format!("  apply {}\n", m.label()));
    }
    if let Some(r) = r {
        t.push_str(&format!(
            "Rehearsal on {}: {} (round trip: {})\n",
            r.clone,
            r.verdict.as_str(),
            r.round_trip.status
        ));
        for reason in &r.reasons {
            t.push_str(&format!("  - {reason}\n"));
        }
    }
    t
}

/// `shipsafe deploy ENV`.
pub async fn deploy(
    config: &Config,
    vars: &dyn VarSource,
    cwd: &Path,
    env: &str,
    opts: &DeployOptions<'_>,
    progress: &Arc<dyn Progress>,
) -> Result<DeployOutcome, CoreError> {
    let protection = config.environment(env)?.protection();
    if let Some(ext) = external(config) {
        return crate::commands::migrate::deploy_external(
            config, vars, cwd, env, &ext, opts, progress,
        )
        .await;
    }
    let mut run = Run::start("deploy", Some(env));
    // Gates (window, git branch) before anything else; --override is recorded.
    let gate_results = crate::gates::check(config, env, jiff::Timestamp::now())?;
    let audit_detail = serde_json::json!({
        "override": opts.override_reason,
        "gates": gate_results,
        "accept_risk": opts.accept_risk,
    });

    let mut report = DeployReport::default();
    let finish = |run: Run,
                  outcome: &str,
                  report: &DeployReport,
                  ids: Vec<String>|
     -> Result<shipsafe_state::RunRecord, CoreError> {
        let rec = run.finish(
            outcome,
            report,
            config.state_dir(),
            cwd,
            ids,
            audit_detail.clone(),
        )?;
        crate::runs::write_markdown(config.state_dir(), &rec)?;
        Ok(rec)
    };
    let stop = |run: Run, outcome: &str, report: &DeployReport, ids: Vec<String>, e: CoreError| {
        finish(run, outcome, report, ids).map(|rec| DeployOutcome {
            run: rec,
            error: Some(e),
        })
    };

    // 1. preflight: gates, confirmation possible, lock, pending.
    if let Err(e) = crate::gates::enforce(&gate_results, env, opts.override_reason) {
        run.begin("gates");
        run.end("failed", serde_json::json!({ "gates": gate_results }));
        return stop(run, "blocked", &report, vec![], e);
    }
    if protection == Protection::Protected
        && let Err(e) = confirmation_possible(opts.confirm, env)
    {
        run.begin("confirm");
        run.end("failed", serde_json::json!({ "error": e.to_string() }));
        return stop(run, "blocked", &report, vec![], e);
    }
    run.begin("preflight");
    progress.stage(&format!("preflight: {env}"));
    let migrations = discover(config)?;
    let url = config.database_url(env, vars)?;
    let client =
        crate::connection::open(config, env, &url, crate::connection::Access::Change).await?;
    if let Err(e) = history::lock(&client).await {
        run.end("failed", serde_json::json!({ "error": e.to_string() }));
        return stop(run, "blocked", &report, vec![], e.into());
    }
    let pending = match history::applied(&client).await.and_then(|a| {
        history::plan(&migrations, a).map(|p| p.pending.into_iter().cloned().collect::<Vec<_>>())
    }) {
        Ok(p) => p,
        Err(e) => {
            run.end("failed", serde_json::json!({ "error": e.to_string() }));
            report.error = Some(e.to_string());
            history::unlock(&client).await;
            return stop(run, "failed_nothing_changed", &report, vec![], e.into());
        }
    };
    run.end(
        "ok",
        serde_json::json!({ "pending": pending.iter().map(Migration::label).collect::<Vec<_>>() }),
    );
    if pending.is_empty() {
        history::unlock(&client).await;
        let rec = finish(run, "nothing_to_do", &report, vec![])?;
        return Ok(DeployOutcome {
            run: rec,
            error: None,
        });
    }

    // 2. lint: unsuppressed errors block (exit 1) before anything changes.
    run.begin("lint");
    let pending_refs: Vec<&Migration> = pending.iter().collect();
    let rehearsing = protection == Protection::Protected || opts.rehearse;
    let mut lint = match crate::commands::lint::lint_migrations(&pending_refs, config.root()) {
        Ok(mut l) => {
            crate::commands::lint::weigh(&mut l, &client, &config.file().lint).await;
            l
        }
        Err(e) => {
            run.end("failed", serde_json::json!({ "error": e.to_string() }));
            report.error = Some(e.to_string());
            history::unlock(&client).await;
            return stop(run, "blocked", &report, vec![], e);
        }
    };
    // Lock and rewrite findings are guesses about time; a rehearsal measures
    // them, and its verdict (with --accept-risk) decides instead.
    let deferred = if rehearsing {
        crate::commands::lint::defer_to_rehearsal(&mut lint)
    } else {
        0
    };
    let blocking: Vec<String> = lint
        .blocking()
        .iter()
        .map(|f| f.render().trim_end().to_string())
        .collect();
    run.end(
        if blocking.is_empty() { "ok" } else { "failed" },
        serde_json::json!({ "files_checked": lint.files_checked, "findings": lint.findings.len(),
                            "blocking": blocking.len(), "deferred_to_rehearsal": deferred,
                            "suppressed": lint.findings.iter().filter(|f| f.suppressed).count() }),
    );
    report.lint = lint.findings.clone();
    if !blocking.is_empty() {
        history::unlock(&client).await;
        let msg = format!(
            "lint found {} error(s) in the pending migrations; nothing was changed. Fix them, or allow one with `-- shipsafe:allow RULE reason` on the line before the statement:\n{}",
            blocking.len(),
            blocking.join("\n")
        );
        report.error = Some(msg.clone());
        return stop(run, "blocked", &report, vec![], CoreError::Problems(msg));
    }

    // 3. backup, and 4. rehearse on a clone made from it.
    let backup_id = if rehearsing {
        match rehearse_step(
            config,
            vars,
            env,
            Change::Native(&pending),
            &mut run,
            &mut report,
            opts,
            progress,
        )
        .await
        {
            Ok(id) => Some(id),
            Err((outcome, ids, e)) => {
                report.error = Some(e.to_string());
                history::unlock(&client).await;
                return stop(run, outcome, &report, ids, e);
            }
        }
    } else {
        let id = match backup_step(config, vars, env, protection, &mut run, progress).await {
            Ok(id) => id,
            Err(e) => {
                report.error = Some(e.to_string());
                history::unlock(&client).await;
                return stop(run, "failed_nothing_changed", &report, vec![], e);
            }
        };
        run.skip(
            "rehearse",
            "not required for this protection level (use --rehearse)",
        );
        id
    };
    let ids: Vec<String> = backup_id.iter().cloned().collect();

    // 5. confirm (protected).
    if protection == Protection::Protected {
        run.begin("confirm");
        let text = confirmation_text(env, &pending, report.rehearsal.as_ref());
        let mut answer = Ok(false);
        progress.suspend(&mut || answer = opts.confirm.confirm(env, &text));
        let confirmed = match answer {
            Ok(true) => Ok(()),
            Ok(false) => Err(CoreError::Blocked(format!(
                "{env} is protected and the deploy was not confirmed (the typed name did not match); nothing was changed"
            ))),
            Err(why) => Err(CoreError::Blocked(format!("{why}; nothing was changed"))),
        };
        if let Err(e) = confirmed {
            run.end("failed", serde_json::json!({ "error": e.to_string() }));
            report.error = Some(e.to_string());
            history::unlock(&client).await;
            return stop(run, "blocked", &report, ids, e);
        }
        run.end("ok", serde_json::json!({}));
    } else {
        run.skip("confirm", "not a protected environment");
    }
    // From here on the database may change: leave a record `rollback` finds
    // even if this process is killed.
    run.checkpoint(config.state_dir())?;

    // 6. apply
    let m = &config.file().migrations;
    let apply_opts = ApplyOptions {
        lock_timeout: m.lock_timeout.as_std(),
        statement_timeout: m.statement_timeout.as_std(),
        lock_retries: m.lock_retries,
        applied_by: opts.applied_by.to_string(),
        run_id: Some(run.record.run_id.clone()),
    };
    run.begin("apply");
    let mut done: Vec<&Migration> = Vec::new();
    let mut failure: Option<MigrateError> = None;
    let mut partial = false;
    for mig in &pending {
        progress.stage(&format!("applying {}", mig.label()));
        match apply::up(&client, mig, &apply_opts).await {
            Ok(r) => {
                report.applied.push(r);
                done.push(mig);
            }
            Err(e) => {
                partial = matches!(e, MigrateError::Apply { partial: true, .. });
                if partial {
                    done.push(mig);
                }
                failure = Some(e);
                break;
            }
        }
    }
    run.end(
        if failure.is_some() { "failed" } else { "ok" },
        serde_json::json!({ "applied": report.applied.iter().map(|r| format!("{}_{}", r.version, r.name)).collect::<Vec<_>>(),
                            "error": failure.as_ref().map(ToString::to_string) }),
    );

    // 7. data: the reference-data files in data/, merged.
    if failure.is_none() {
        if let Err(e) = data_step(config, &client, env, &mut run, &mut report).await {
            failure = Some(MigrateError::Checks {
                message: e.to_string(),
            });
        }
    } else {
        run.skip("data", "apply failed");
    }

    // 8. verify
    if failure.is_none() {
        run.begin("verify");
        progress.stage("verifying");
        if let Err(e) = verify_step(config, vars, env, &client, &done, &mut report).await {
            failure = Some(e);
        }
        let failed_checks = report.checks.iter().filter(|c| !c.ok).count();
        run.end(
            if failure.is_some() { "failed" } else { "ok" },
            serde_json::json!({ "verify_sql": report.verified.len(), "checks_passed": report.checks.len() - failed_checks,
                                "checks_failed": failed_checks, "smoke": report.smoke.len() }),
        );
    } else {
        run.skip("verify", "apply failed");
    }

    let Some(failure) = failure else {
        history::unlock(&client).await;
        retention_step(config, vars, cwd, env, &mut run).await;
        let rec = finish(run, "deployed", &report, ids)?;
        return Ok(DeployOutcome {
            run: rec,
            error: None,
        });
    };
    report.error = Some(failure.to_string());

    // 9. rollback
    run.begin("rollback");
    progress.stage("rolling back");
    // Down migrations do not undo imported reference data; a restore does.
    let data_changed = report
        .data
        .iter()
        .any(shipsafe_data::SetPlan::changes_anything);
    let proven = !data_changed
        && report
            .rehearsal
            .as_ref()
            .is_some_and(RehearsalReport::down_is_faithful);
    let can_down = !partial && done.iter().all(|m| m.down.is_some());
    let mut info = if done.is_empty() {
        RollbackInfo::new(
            "transaction",
            true,
            "the failing migration rolled back in its own transaction; nothing else was applied",
        )
    } else if can_down && (proven || backup_id.is_none()) {
        let mut info = rollback_by_down(&client, &done, &apply_opts).await;
        if !proven {
            info.detail.push_str(
                " (down.sql was not rehearsed: this open environment has no backup to restore instead)",
            );
        }
        info
    } else if let Some(id) = &backup_id {
        rollback_by_restore(config, vars, env, id, progress).await
    } else {
        RollbackInfo::new(
            "none",
            false,
            "the applied migrations have no down.sql and this open environment has no pre-deploy backup",
        )
    };
    history::unlock(&client).await;
    if info.ok
        && let Ok(c) = connect(&url).await
    {
        info.checks_after = run_checks(&c, &config.file().checks, false).await;
    }
    let mut ids = ids;
    ids.extend(info.safety_backup.iter().cloned());
    run.end(
        if info.ok { "ok" } else { "failed" },
        serde_json::json!({ "method": info.method, "detail": info.detail, "safety_backup": info.safety_backup }),
    );
    let ok = info.ok;
    let detail = info.detail.clone();
    report.rollback = Some(info);
    let (outcome, error) = conclude(env, ok, &detail, &failure.to_string(), backup_id.as_deref());
    let rec = finish(run, outcome, &report, ids)?;
    Ok(DeployOutcome {
        run: rec,
        error: Some(error),
    })
}

/// Step 10: retention for this environment's backups. The deploy's own
/// backup is kept (its run is still `running` until it is saved). A failure
/// here is reported, never a reason to undo a good deploy.
pub(crate) async fn retention_step(
    config: &Config,
    vars: &dyn VarSource,
    cwd: &Path,
    env: &str,
    run: &mut Run,
) {
    run.begin("retention");
    match crate::commands::backup::prune(config, vars, cwd, Some(env), false).await {
        Ok(r) => run.end("ok", serde_json::json!({ "deleted": r.deleted })),
        Err(e) => run.end("failed", serde_json::json!({ "error": e.to_string() })),
    }
}

pub(crate) type StepFailure = (&'static str, Vec<String>, CoreError);

/// Steps 3 and 4 together: the backup, a clone made from it, the rehearsal,
/// and the verdict's consequences. Returns the backup id.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn rehearse_step(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    change: Change<'_>,
    run: &mut Run,
    report: &mut DeployReport,
    opts: &DeployOptions<'_>,
    progress: &Arc<dyn Progress>,
) -> Result<String, StepFailure> {
    let (mut manifest, pending_clone) =
        rehearse::backup_for_clone(config, vars, env, "pre-deploy", run, progress)
            .await
            .map_err(|e| ("failed_nothing_changed", vec![], e))?;
    let ids = vec![manifest.id.clone()];
    run.begin("rehearse");
    let t = std::time::Instant::now();
    let (clone, _) =
        match rehearse::make_clone(config, vars, env, &mut manifest, pending_clone, progress).await
        {
            Ok(c) => c,
            Err(e) => {
                run.end("failed", serde_json::json!({ "error": e.to_string() }));
                return Err(("failed_nothing_changed", ids, e));
            }
        };
    let clone_ms = t.elapsed().as_millis() as u64;
    let verified = manifest.is_verified();
    let id = Some(manifest.id.clone());
    let target = config
        .database_url(env, vars)
        .map_err(|e| ("failed_nothing_changed", ids.clone(), CoreError::from(e)))?;
    let mut r =
        rehearse::rehearse_on(config, &target, &clone, change, id, verified, progress).await;
    r.timings.clone_ms = clone_ms;
    clone.dispose().await;
    run.end(
        if r.verdict == Verdict::Blocked {
            "failed"
        } else {
            "ok"
        },
        serde_json::json!({ "verdict": r.verdict, "round_trip": r.round_trip.status,
                            "clone": r.clone, "backup_verified": r.backup_verified, "timings": r.timings }),
    );
    let verdict = r.verdict;
    let reasons = r.reasons.join("; ");
    let target_changed = r.target_changed;
    rehearse::confront(&mut report.lint, &r);
    report.rehearsal = Some(r);
    if target_changed {
        let e = rehearse::target_changed_error(env, &manifest.id, &reasons);
        return Err(("blocked", ids, e));
    }
    match verdict {
        Verdict::Blocked => Err((
            "blocked",
            ids,
            CoreError::Problems(format!(
                "the rehearsal failed on the clone, so {env} was not touched: {reasons}"
            )),
        )),
        Verdict::NeedsAck if !opts.accept_risk => Err((
            "blocked",
            ids,
            CoreError::Blocked(format!(
                "the rehearsal found risks that need acknowledging: {reasons}. Read the report, then run again with --accept-risk to go ahead; nothing was changed"
            )),
        )),
        _ => Ok(manifest.id),
    }
}

/// Step 7: merges every configured set whose file exists in `data/`, in its
/// own transaction. Conflicts and unresolved references fail the deploy
/// (and roll it back), as they would stop `data import`.
pub(crate) async fn data_step(
    config: &Config,
    client: &tokio_postgres::Client,
    env: &str,
    run: &mut Run,
    report: &mut DeployReport,
) -> Result<(), CoreError> {
    let dir = crate::commands::data::data_dir(config, None);
    let names: Vec<String> = config
        .file()
        .data
        .keys()
        .filter(|s| dir.join(format!("{s}.json")).is_file())
        .cloned()
        .collect();
    if names.is_empty() {
        run.skip("data", "no reference-data files in data/");
        return Ok(());
    }
    run.begin("data");
    let result = crate::commands::data::merge_in_transaction(config, client, env, &names).await;
    match result {
        Ok(plans) => {
            run.end(
                "ok",
                serde_json::json!({ "sets": plans.iter().map(|p| serde_json::json!({
                    "set": p.set, "inserts": p.inserts, "updates": p.updates, "deletes": p.deletes,
                    "unchanged": p.unchanged })).collect::<Vec<_>>() }),
            );
            report.data = plans;
            Ok(())
        }
        Err((plans, e)) => {
            run.end("failed", serde_json::json!({ "error": e.to_string() }));
            report.data = plans;
            Err(e)
        }
    }
}

/// verify.sql of the applied migrations, `[[checks]]`, then `[[smoke]]`.
async fn verify_step(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    client: &tokio_postgres::Client,
    done: &[&Migration],
    report: &mut DeployReport,
) -> Result<(), MigrateError> {
    for mig in done {
        if let Some(v) = apply::verify(client, mig).await? {
            report.verified.push(v);
        }
    }
    report.checks = run_checks(client, &config.file().checks, false).await;
    if let Ok(Ok(smoke)) = crate::commands::verify::smoke_for(config, vars, env).await {
        report.smoke = smoke;
    }
    let mut problems: Vec<String> = crate::commands::verify::check_failures(&report.checks);
    problems.extend(crate::commands::verify::smoke_failures(&report.smoke));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(MigrateError::Checks {
            message: problems.join("; "),
        })
    }
}

async fn rollback_by_down(
    client: &tokio_postgres::Client,
    done: &[&Migration],
    opts: &ApplyOptions,
) -> RollbackInfo {
    let mut ok = true;
    let mut detail = Vec::new();
    for mig in done.iter().rev() {
        match apply::down(client, mig, opts).await {
            Ok(_) => detail.push(format!("reverted {}", mig.label())),
            Err(e) => {
                ok = false;
                detail.push(format!("reverting {} failed: {e}", mig.label()));
                break;
            }
        }
    }
    RollbackInfo::new("down", ok, detail.join("; "))
}

/// Step 3 without a rehearsal: the pre-deploy backup in guarded and
/// protected environments.
pub(crate) async fn backup_step(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    protection: Protection,
    run: &mut Run,
    progress: &Arc<dyn Progress>,
) -> Result<Option<String>, CoreError> {
    if protection == Protection::Open {
        run.skip("backup", "open environment");
        return Ok(None);
    }
    crate::commands::backup::backup_as_step(config, vars, env, "pre-deploy", run, progress)
        .await
        .map(Some)
}

/// The run's outcome and error after a rollback attempt: what happened, and
/// when it failed, exactly what a person should do.
pub(crate) fn conclude(
    env: &str,
    ok: bool,
    detail: &str,
    failure: &str,
    backup_id: Option<&str>,
) -> (&'static str, CoreError) {
    if ok {
        return (
            "rolled_back",
            CoreError::RolledBack(format!(
                "deploy to {env} failed and was rolled back ({detail}); the database is as it was before: {failure}"
            )),
        );
    }
    let advice = match backup_id {
        Some(id) => {
            format!("restore the pre-deploy backup with `shipsafe backup restore {id} --to {env}`")
        }
        None => format!(
            "there is no pre-deploy backup (open environment): repair the database by hand, or restore an older backup (`shipsafe backup list {env}`)"
        ),
    };
    (
        "rollback_failed",
        CoreError::RollbackFailed(format!(
            "deploy to {env} failed and could NOT be rolled back: {failure}; rollback: {detail}. The database holds a partly applied change: {advice}"
        )),
    )
}

/// Rollback by restoring the step-3 backup, after a safety backup of the
/// state the failed deploy left (SPEC §6 step 9).
pub(crate) async fn rollback_by_restore(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    id: &str,
    progress: &Arc<dyn Progress>,
) -> RollbackInfo {
    progress.stage("safety backup of the failed state");
    let safety = match crate::commands::backup::take_backup(
        config,
        vars,
        env,
        "pre-rollback",
        progress,
    )
    .await
    {
        Ok(m) => m.id,
        Err(e) => {
            return RollbackInfo::new(
                "restore",
                false,
                format!(
                    "the safety backup before restoring failed ({e}), so the pre-deploy backup {id} was not restored"
                ),
            );
        }
    };
    let mut info = match restore_pre_deploy(config, vars, env, id, progress).await {
        Ok(()) => RollbackInfo::new(
            "restore",
            true,
            format!("restored the pre-deploy backup {id}; the failed state is in backup {safety}"),
        ),
        Err(e) => RollbackInfo::new(
            "restore",
            false,
            format!(
                "restoring the pre-deploy backup {id} failed: {e}; the failed state is in backup {safety}"
            ),
        ),
    };
    info.safety_backup = Some(safety);
    info
}
