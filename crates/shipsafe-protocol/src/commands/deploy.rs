//! `shipsafe deploy ENV`: the protocol of SPEC §6, the same for every
//! migration source.
//!
//! preflight (gates, confirmation possible, lock, pending) → lint → backup
//! → rehearse (protected, or `--rehearse`) → confirm (protected) → apply →
//! data → verify → on failure, the compensation the pipeline chooses →
//! retention → record.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use shipsafe_config::{Config, Protection, VarSource};
use shipsafe_migrate::{ApplyReport, VerifyReport, history};
use shipsafe_pg::CheckOutcome;
use tokio_postgres::Client;

use crate::error::CoreError;
use crate::pipeline::{Compensation, Failed, Pipeline, Stop, compensation, conclude};
use crate::progress::{Confirm, Progress};
use crate::rehearsal::RehearsalReport;
use crate::source::{Applied, Before, ExternalReport, Pending, Source, ToolRun, native};
use crate::steps;

pub use crate::source::RollbackInfo;

/// What `deploy` reports besides its steps.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeployReport {
    /// External mode: what the team's tool printed.
    pub tool_output: Vec<ToolRun>,
    /// External mode: where the tool stood before and after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalReport>,
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

/// What the steps share.
struct Ctx<'a> {
    config: &'a Config,
    cwd: &'a Path,
    vars: &'a dyn VarSource,
    env: &'a str,
    source: Source,
    url: shipsafe_config::DbUrl,
    opts: &'a DeployOptions<'a>,
    progress: &'a Arc<dyn Progress>,
}

/// `shipsafe deploy ENV`.
pub fn deploy<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    cwd: &'a Path,
    env: &'a str,
    opts: &'a DeployOptions<'a>,
    progress: &'a Arc<dyn Progress>,
) -> crate::Task<'a, Result<DeployOutcome, CoreError>> {
    Box::pin(async move {
        let protection = config.environment(env)?.protection();
        let source = Source::of(config);
        let gates = steps::preflight::gates(config, env)?;
        let mut audit = serde_json::json!({
            "override": opts.override_reason,
            "gates": gates,
            "accept_risk": opts.accept_risk,
        });
        if let Some(mode) = source.audit_mode() {
            audit["mode"] = serde_json::json!(mode);
        }
        let mut p = Pipeline::start(config, cwd, "deploy", Some(env), audit);
        let mut report = DeployReport::default();
        let done = |p: Pipeline, report: &mut DeployReport, stop: Stop| {
            report.error.get_or_insert_with(|| stop.error.to_string());
            p.stop(stop, &*report).map(into_outcome)
        };

        // 1. preflight: gates, confirmation possible, lock, pending.
        if let Err(e) = crate::gates::enforce(&gates, env, opts.override_reason) {
            p.begin("gates");
            p.end(false, serde_json::json!({ "gates": gates }));
            return p.stop(Stop::blocked(e), &report).map(into_outcome);
        }
        if protection == Protection::Protected
            && let Err(e) = steps::confirm::possible(opts.confirm, env)
        {
            p.begin("confirm");
            p.end(false, serde_json::json!({ "error": e.to_string() }));
            return p.stop(Stop::blocked(e), &report).map(into_outcome);
        }
        let url = config.database_url(env, vars)?;
        let cx = Ctx {
            config,
            cwd,
            vars,
            env,
            source,
            url,
            opts,
            progress,
        };
        let client =
            crate::connection::open(config, env, &cx.url, crate::connection::Access::Change)
                .await?;
        let pending = match p
            .step("preflight", preflight(&cx, &client, &mut report))
            .await
        {
            Ok(pending) => pending,
            Err(stop) => return done(p, &mut report, stop),
        };
        if !pending.any() {
            history::unlock(&client).await;
            let run = p.finish("nothing_to_do", &report)?;
            return Ok(DeployOutcome { run, error: None });
        }
        // From here on the lock is held; it is released on every way out.
        let result = locked(&cx, &client, &mut p, &mut report, &pending, protection).await;
        history::unlock(&client).await;
        match result {
            Ok(outcome) => {
                let run = p.finish(outcome, &report)?;
                Ok(DeployOutcome { run, error: None })
            }
            Err(stop) => done(p, &mut report, stop),
        }
    })
}

fn into_outcome((run, error): (shipsafe_state::RunRecord, Option<CoreError>)) -> DeployOutcome {
    DeployOutcome { run, error }
}

/// Step 1's lock and pending list.
async fn preflight(
    cx: &Ctx<'_>,
    client: &Client,
    report: &mut DeployReport,
) -> Result<(Pending, serde_json::Value), Failed> {
    cx.progress.stage(&format!("preflight: {}", cx.env));
    steps::preflight::lock(client).await?;
    let settled = match steps::settle::dead_runs(cx.config, client, cx.env).await {
        Ok(s) => s,
        Err(e) => {
            history::unlock(client).await;
            return Err(Failed::blocked(e));
        }
    };
    if cx.source.tool().is_some() {
        cx.progress
            .stage("asking the migration tool what is pending");
    }
    match cx.source.pending(cx.config, &cx.url, client).await {
        Ok(pending) => {
            if let (Some(x), Some(t)) = (cx.source.tool(), &pending.tool) {
                report.tool_output.extend(t.runs.iter().cloned());
                report.external = crate::source::tool::report(x, &pending);
            }
            let mut detail = pending.detail();
            if !settled.is_empty() {
                detail["settled"] = serde_json::json!(settled);
            }
            Ok((pending, detail))
        }
        Err(e) => {
            history::unlock(client).await;
            Err(Failed::nothing_changed(e))
        }
    }
}

/// Steps 2 to 10, with the environment's lock held.
async fn locked(
    cx: &Ctx<'_>,
    client: &Client,
    p: &mut Pipeline<'_>,
    report: &mut DeployReport,
    pending: &Pending,
    protection: Protection,
) -> Result<&'static str, Stop> {
    let rehearsing = protection == Protection::Protected || cx.opts.rehearse;

    // 2. lint: unsuppressed errors block (exit 1) before anything changes.
    lint(cx, client, p, report, pending, rehearsing).await?;

    // The schema the rehearsal's backup is about to hold: another session
    // changing it later (during the backup, the rehearsal or the prompt)
    // leaves the rehearsal no evidence for the target as it will be.
    let rehearsed_schema = if rehearsing {
        shipsafe_pg::schema_fingerprint(client).await.ok()
    } else {
        None
    };

    // 3. backup, and 4. rehearse on a clone made from it.
    let backup_id = if rehearsing {
        Some(rehearse(cx, p, report, pending).await?)
    } else if steps::backup::required(protection) {
        let m = p
            .step_or_stop(
                "backup",
                steps::backup::step(cx.config, cx.vars, cx.env, "pre-deploy", cx.progress),
            )
            .await?;
        p.keep_backup(&m.id, true);
        p.skip(
            "rehearse",
            "not required for this protection level (use --rehearse)",
        );
        Some(m.id)
    } else {
        p.skip("backup", "open environment");
        p.skip(
            "rehearse",
            "not required for this protection level (use --rehearse)",
        );
        None
    };

    // 5. confirm (protected).
    if protection == Protection::Protected {
        let text = cx
            .source
            .confirm_text(cx.env, pending, report.rehearsal.as_ref());
        p.step(
            "confirm",
            steps::confirm::deploy(cx.opts.confirm, cx.env, &text),
        )
        .await?;
    } else {
        p.skip("confirm", "not a protected environment");
    }

    let mut before = match cx.source.before(cx.config, &cx.url, client).await {
        Ok(b) => b,
        Err(e) => return Err(Stop::nothing_changed(e)),
    };
    if let (Some(then), Some(now)) = (&rehearsed_schema, &before.fingerprint)
        && then != now
    {
        return Err(Stop::blocked(CoreError::Problems(format!(
            "{env}'s schema changed after its backup for the rehearsal was started (another session: the app's own DDL, a migrate-on-boot?): the rehearsal ran on a copy without that change, so it is no evidence for {env} as it is now; nothing was applied. Deploy again when {env} is quiet",
            env = cx.env
        ))));
    }
    if let Some(t) = &pending.tool {
        before.empty_down = t.empty_down.clone();
    }
    if let (Some(x), Some(state)) = (report.external.as_mut(), &before.tool_state) {
        x.before = state.clone();
    }
    // From here on the database may change. A rollback after this process
    // died needs to know the team's tool made the run, and where it stood.
    // What a later start needs to tell whether this run changed anything,
    // and to end its statement if the server outlives this process.
    let mut known = serde_json::json!({
        "before_fingerprint": before.fingerprint,
        "backend": steps::settle::backend(client).await,
    });
    if let Some(x) = &report.external {
        known["external"] = serde_json::json!(x);
    }
    let backend = known["backend"]["pid"].as_i64().map(|p| p as i32);
    p.checkpoint(known)?;

    // 6. apply
    p.begin("apply");
    let apply = steps::apply::run(
        cx.config,
        &cx.source,
        cx.env,
        &cx.url,
        client,
        pending,
        &before,
        cx.opts.applied_by,
        p.run_id(),
        cx.progress,
    );
    // A Ctrl-C during the change cancels the statement under way (shipsafe's
    // own, or a session of the tool's run): the migration rolls back in its
    // own transaction, and there is less, or nothing, to undo.
    let cancel = steps::apply::cancel(&cx.url, backend, cx.source.tool().is_some());
    let applied = crate::pipeline::cancel_on_stop(apply, cancel).await;
    p.end(applied.failure.is_none(), applied.detail.clone());
    p.save_progress();
    report.applied = applied.reports.clone();
    report.tool_output.extend(applied.tool_runs.iter().cloned());
    let mut failure = applied.failure.clone();

    // 7. data, and 8. verify.
    if failure.is_none() {
        failure = data(cx, client, p, report).await;
    } else {
        p.skip("data", "apply failed");
    }
    if failure.is_none() {
        failure = verify(cx, client, p, report, &applied).await;
    } else {
        p.skip("verify", "apply failed");
    }
    // A Ctrl-C during the change: it is undone like any failure.
    if failure.is_none() && crate::pipeline::stop_requested() {
        failure = Some("interrupted (Ctrl-C) during the change".into());
    }

    let Some(failure) = failure else {
        if let Some(x) = report.external.as_mut() {
            x.after = cx.source.after(cx.config, &cx.url).await;
        }
        p.step_or_note(
            "retention",
            steps::retention::after_deploy(cx.config, cx.vars, cx.cwd, cx.env),
        )
        .await;
        return Ok("deployed");
    };
    report.error = Some(failure.clone());

    // 9. rollback
    let info = rollback(
        cx,
        client,
        p,
        report,
        &applied,
        &before,
        backup_id.as_deref(),
    )
    .await;
    let (outcome, error) = conclude(
        cx.env,
        info.ok,
        &info.detail,
        &failure,
        backup_id.as_deref(),
    );
    report.rollback = Some(info);
    Err(Stop { outcome, error })
}

/// Step 2.
async fn lint(
    cx: &Ctx<'_>,
    client: &Client,
    p: &mut Pipeline<'_>,
    report: &mut DeployReport,
    pending: &Pending,
    rehearsing: bool,
) -> Result<(), Stop> {
    p.begin("lint");
    let linted = cx
        .source
        .lint(cx.config, &cx.url, client, pending, rehearsing)
        .await;
    let linted = match linted {
        Ok(l) => l,
        Err(e) => {
            p.end(false, serde_json::json!({ "error": e.to_string() }));
            return Err(Stop::blocked(e));
        }
    };
    if let Some(why) = &linted.skipped {
        p.skip("lint", why);
        if let Some(x) = report.external.as_mut()
            && why != "the tool printed no SQL"
        {
            x.lint_skipped = Some(why.clone());
        }
        return Ok(());
    }
    p.end(linted.blocking.is_empty(), linted.detail.clone());
    report.lint = linted.report.findings.clone();
    if linted.blocking.is_empty() {
        return Ok(());
    }
    Err(Stop::blocked(CoreError::Problems(format!(
        "lint found {} error(s) in the pending migrations; nothing was changed. Fix them, or allow one with `-- shipsafe:allow RULE reason` on the line before the statement:\n{}",
        linted.blocking.len(),
        linted.blocking.join("\n")
    ))))
}

/// Steps 3 and 4 together: the backup, a clone made from it, the rehearsal,
/// and the verdict's consequences. Returns the backup id.
async fn rehearse(
    cx: &Ctx<'_>,
    p: &mut Pipeline<'_>,
    report: &mut DeployReport,
    pending: &Pending,
) -> Result<String, Stop> {
    let (mut manifest, clone) = p
        .step_or_stop(
            "backup",
            steps::clone::backup_for_clone(cx.config, cx.vars, cx.env, "pre-deploy", cx.progress),
        )
        .await?;
    p.keep_backup(&manifest.id, true);
    if crate::pipeline::stop_requested() {
        return Err(Stop::interrupted("the rehearsal"));
    }
    p.begin("rehearse");
    let r = steps::rehearse::on_clone(
        cx.config,
        cx.vars,
        cx.env,
        &cx.source,
        pending,
        &mut manifest,
        clone,
        cx.progress,
    );
    let r = p.cancellable("rehearsal", r).await?;
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            p.end(false, serde_json::json!({ "error": e.to_string() }));
            return Err(Stop::nothing_changed(e));
        }
    };
    p.end(
        r.verdict != crate::rehearsal::Verdict::Blocked,
        steps::rehearse::detail(&r),
    );
    crate::rehearsal::confront(&mut report.lint, &r);
    let consequences = steps::rehearse::consequences(cx.env, &manifest.id, &r, cx.opts.accept_risk);
    report.rehearsal = Some(r);
    consequences.map(|()| manifest.id)
}

/// Step 7. Returns why it failed, if it did.
async fn data(
    cx: &Ctx<'_>,
    client: &Client,
    p: &mut Pipeline<'_>,
    report: &mut DeployReport,
) -> Option<String> {
    let names = steps::data::sets(cx.config);
    if names.is_empty() {
        p.skip("data", "no reference-data files in data/");
        return None;
    }
    p.begin("data");
    let (plans, result) = steps::data::merge(cx.config, client, cx.env, &names).await;
    report.data = plans;
    match result {
        Ok(detail) => {
            p.end(true, detail);
            None
        }
        Err((e, detail)) => {
            p.end(false, detail);
            Some(format!("verification after the migrations failed: {e}"))
        }
    }
}

/// Step 8. Returns why it failed, if it did.
async fn verify(
    cx: &Ctx<'_>,
    client: &Client,
    p: &mut Pipeline<'_>,
    report: &mut DeployReport,
    applied: &Applied,
) -> Option<String> {
    p.begin("verify");
    cx.progress.stage("verifying");
    let v = steps::verify::run(cx.config, cx.vars, cx.env, client, &cx.source, applied).await;
    let failure = v.failure();
    p.end(failure.is_none(), v.detail());
    report.verified = v.verified;
    report.checks = v.checks;
    report.smoke = v.smoke;
    failure
}

/// Step 9: the compensation the pipeline chooses, then the checks.
async fn rollback(
    cx: &Ctx<'_>,
    client: &Client,
    p: &mut Pipeline<'_>,
    report: &mut DeployReport,
    applied: &Applied,
    before: &Before,
    backup_id: Option<&str>,
) -> RollbackInfo {
    p.begin("rollback");
    cx.progress.stage("rolling back");
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
    let mut info = match compensation(&cx.source, applied, backup_id, proven) {
        Compensation::Nothing => RollbackInfo::new(
            "transaction",
            true,
            if cx.source.tool().is_some() {
                "the tool's failed run left the schema and its history as they were before; nothing was restored"
            } else {
                "the failing migration rolled back in its own transaction; nothing else was applied"
            },
        ),
        Compensation::GoBack => {
            let opts = native::apply_options(
                cx.config,
                cx.opts.applied_by,
                Some(p.run_id().to_string()),
                true,
            );
            let (info, runs) = cx
                .source
                .go_back(cx.config, &cx.url, client, applied, before, &opts, proven)
                .await;
            report.tool_output.extend(runs);
            info
        }
        Compensation::Restore(id) => {
            steps::rollback::by_restore(cx.config, cx.vars, cx.env, &id, cx.progress).await
        }
    };
    if info.ok {
        info.checks_after = steps::rollback::checks_after(cx.config, cx.env, &cx.url).await;
    }
    if let Some(s) = &info.safety_backup {
        p.keep_backup(s, false);
    }
    p.end(
        info.ok,
        serde_json::json!({ "method": info.method, "detail": info.detail, "safety_backup": info.safety_backup }),
    );
    info
}
