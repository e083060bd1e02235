//! `shipsafe new`, `plan` and `deploy` (open and guarded environments).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use shipsafe_backup::{AtomicRestore, fetch_verified, restore_atomic};
use shipsafe_config::{Config, MigrationFormat, Protection, VarSource};
use shipsafe_migrate::{
    ApplyOptions, ApplyReport, MigrateError, Migration, VerifyReport, apply, history,
};
use shipsafe_pg::{CheckOutcome, PgBinaries, connect, run_checks, server_info};

use crate::error::CoreError;
use crate::progress::Progress;
use crate::runs::Run;

impl From<MigrateError> for CoreError {
    fn from(e: MigrateError) -> Self {
        match e {
            MigrateError::Locked { .. } => CoreError::Blocked(e.to_string()),
            MigrateError::Drift { .. }
            | MigrateError::Missing { .. }
            | MigrateError::Dirty { .. } => CoreError::Problems(e.to_string()),
            MigrateError::Layout { .. } | MigrateError::Read { .. } => {
                CoreError::Usage(e.to_string())
            }
            other => CoreError::Failed(other.to_string()),
        }
    }
}

pub fn migrations_dir(config: &Config) -> PathBuf {
    config.root().join(&config.file().migrations.dir)
}

pub fn discover(config: &Config) -> Result<Vec<Migration>, CoreError> {
    Ok(shipsafe_migrate::discover(
        &migrations_dir(config),
        config.file().migrations.format,
    )?)
}

#[derive(Debug, Clone, Serialize)]
pub struct NewReport {
    pub dir: String,
    pub files: Vec<String>,
}

/// `shipsafe new NAME`: `migrations/<UTC timestamp>_<name>/{up,down,verify}.sql`.
pub fn new_migration(config: &Config, name: &str) -> Result<NewReport, CoreError> {
    let m = &config.file().migrations;
    if m.is_external() || matches!(m.format, MigrationFormat::Prisma | MigrationFormat::Flyway) {
        return Err(CoreError::Usage(
            "this project's migrations are written with its own tool (see [migrations] in shipsafe.toml); `shipsafe new` writes native migrations".into(),
        ));
    }
    let slug: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect::<String>()
        .split('_')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("_");
    if slug.is_empty() {
        return Err(CoreError::Usage(format!(
            "{name:?} is not a usable migration name: use letters, digits and _"
        )));
    }
    let version = jiff::Timestamp::now().strftime("%Y%m%d%H%M%S").to_string();
    let dir = migrations_dir(config).join(format!("{version}_{slug}"));
    if dir.exists() {
        return Err(CoreError::Usage(format!(
            "{} already exists",
            dir.display()
        )));
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| CoreError::io(format!("cannot create {}", dir.display()), e))?;
    let files = [
        (
            "up.sql",
            format!(
                "-- {slug}: the change.\n-- Runs in one transaction with lock_timeout and statement_timeout set.\n-- Mark `-- shipsafe:no-transaction` for CREATE INDEX CONCURRENTLY and the like.\n\n"
            ),
        ),
        (
            "down.sql",
            format!(
                "-- {slug}: undoes up.sql exactly (rehearsals check the round trip).\n-- If there is no way back, delete this file and mark up.sql `-- shipsafe:irreversible`.\n\n"
            ),
        ),
        (
            "verify.sql",
            format!(
                "-- {slug}: proves the change did what it should. Runs in a transaction that\n-- is always rolled back, so it may insert test rows. Every query must return\n-- true in its first column (false, NULL or no row fails).\n\n"
            ),
        ),
    ];
    let mut written = Vec::new();
    for (file, text) in files {
        let p = dir.join(file);
        std::fs::write(&p, text)
            .map_err(|e| CoreError::io(format!("cannot write {}", p.display()), e))?;
        written.push(p.display().to_string());
    }
    Ok(NewReport {
        dir: dir.display().to_string(),
        files: written,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct PendingMigration {
    pub version: String,
    pub name: String,
    pub transactional: bool,
    pub has_down: bool,
    pub irreversible: bool,
    pub has_verify: bool,
}

impl PendingMigration {
    fn of(m: &Migration) -> Self {
        Self {
            version: m.version.clone(),
            name: m.name.clone(),
            transactional: !m.no_transaction(),
            has_down: m.down.is_some(),
            irreversible: m.irreversible(),
            has_verify: m.verify.is_some(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub env: String,
    pub protection: String,
    pub applied: usize,
    pub pending: Vec<PendingMigration>,
    /// External mode: whether the team\'s tool says something is pending.
    pub external_pending: Option<bool>,
    /// What deploy would do first.
    pub backup_first: bool,
    /// Problems that would stop deploy.
    pub problems: Vec<String>,
    pub lint: Vec<shipsafe_lint::Finding>,
}

/// `shipsafe plan ENV`: what deploy would do. Changes nothing.
pub async fn plan(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
) -> Result<PlanReport, CoreError> {
    let protection = config.environment(env)?.protection();
    if let Some(ext) = external(config) {
        let url = config.database_url(env, vars)?;
        let r = run_tool(config, &ext.pending, &url, &ext.url_env).await?;
        return Ok(PlanReport {
            env: env.to_string(),
            protection: protection.as_str().into(),
            applied: 0,
            pending: Vec::new(),
            external_pending: Some(!r.ok()),
            backup_first: protection != Protection::Open,
            problems: Vec::new(),
            lint: Vec::new(),
        });
    }
    let migrations = discover(config)?;
    let url = config.database_url(env, vars)?;
    let client = connect(&url).await?;
    let applied = history::applied(&client).await?;
    let applied_count = applied.len();
    let plan = history::plan(&migrations, applied)?;
    let mut problems = Vec::new();
    if protection != Protection::Open {
        for m in &plan.pending {
            if m.down.is_none() && !m.irreversible() && m.layout == shipsafe_migrate::Layout::Native
            {
                problems.push(format!(
                    "migration {} has no down.sql: add one, or mark up.sql `-- shipsafe:irreversible` (a failed deploy is then undone by restoring the pre-deploy backup)",
                    m.label()
                ));
            }
        }
    }
    let lint = crate::commands::lint::lint_migrations(&plan.pending, config.root())?;
    for f in lint.blocking() {
        problems.push(format!("lint: {}", f.render().trim_end()));
    }
    Ok(PlanReport {
        lint: lint.findings.clone(),
        env: env.to_string(),
        protection: protection.as_str().into(),
        applied: applied_count,
        pending: plan
            .pending
            .iter()
            .map(|m| PendingMigration::of(m))
            .collect(),
        external_pending: None,
        backup_first: protection != Protection::Open,
        problems,
    })
}

/// What `deploy` reports besides its steps.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeployReport {
    /// External mode: what the team's tool printed.
    pub tool_output: Vec<ToolRun>,
    pub lint: Vec<shipsafe_lint::Finding>,
    pub applied: Vec<ApplyReport>,
    pub verified: Vec<VerifyReport>,
    pub checks: Vec<CheckOutcome>,
    pub smoke: Vec<crate::smoke::SmokeOutcome>,
    pub rollback: Option<RollbackInfo>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RollbackInfo {
    /// `down` (down migrations) or `restore` (pre-deploy backup).
    pub method: String,
    pub ok: bool,
    pub detail: String,
    pub checks_after: Vec<CheckOutcome>,
}

/// The outcome of a deploy and its exit status.
#[derive(Debug)]
pub struct DeployOutcome {
    pub run: shipsafe_state::RunRecord,
    pub error: Option<CoreError>,
}

/// `shipsafe deploy ENV` for open and guarded environments: (guarded:
/// backup) → apply → verify.sql + `[[checks]]` → on failure, down
/// migrations of this run in reverse, or a restore of the pre-deploy backup.
pub async fn deploy(
    config: &Config,
    vars: &dyn VarSource,
    cwd: &Path,
    env: &str,
    applied_by: &str,
    override_reason: Option<&str>,
    progress: &Arc<dyn Progress>,
) -> Result<DeployOutcome, CoreError> {
    let protection = config.environment(env)?.protection();
    if protection == Protection::Protected {
        return Err(CoreError::Blocked(format!(
            "{env} is protected: deploys there need the rehearsal protocol (a rehearsal on a clone, then confirmation), which this version of shipsafe does not have yet; nothing was changed"
        )));
    }
    if let Some(ext) = external(config) {
        return deploy_external(config, vars, cwd, env, &ext, override_reason, progress).await;
    }
    let mut run = Run::start("deploy", Some(env));
    // Gates (window, git branch) before anything else; --override is recorded.
    let gate_results = crate::gates::check(config, env, jiff::Timestamp::now())?;
    let audit_detail = serde_json::json!({
        "override": override_reason,
        "gates": gate_results,
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

    // 1. preflight
    if let Err(e) = crate::gates::enforce(&gate_results, env, override_reason) {
        run.begin("gates");
        run.end("failed", serde_json::json!({ "gates": gate_results }));
        let rec = finish(run, "blocked", &report, vec![])?;
        return Ok(DeployOutcome {
            run: rec,
            error: Some(e),
        });
    }
    run.begin("preflight");
    progress.stage(&format!("preflight: {env}"));
    let migrations = discover(config)?;
    let url = config.database_url(env, vars)?;
    let client = connect(&url).await?;
    if let Err(e) = history::lock(&client).await {
        run.end("failed", serde_json::json!({ "error": e.to_string() }));
        let rec = finish(run, "blocked", &report, vec![])?;
        return Ok(DeployOutcome {
            run: rec,
            error: Some(e.into()),
        });
    }
    let applied = match history::applied(&client).await.and_then(|a| {
        history::plan(&migrations, a).map(|p| p.pending.into_iter().cloned().collect::<Vec<_>>())
    }) {
        Ok(p) => p,
        Err(e) => {
            run.end("failed", serde_json::json!({ "error": e.to_string() }));
            report.error = Some(e.to_string());
            history::unlock(&client).await;
            let rec = finish(run, "failed_nothing_changed", &report, vec![])?;
            return Ok(DeployOutcome {
                run: rec,
                error: Some(e.into()),
            });
        }
    };
    let pending: Vec<Migration> = applied;
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
    let lint = match crate::commands::lint::lint_migrations(&pending_refs, config.root()) {
        Ok(l) => l,
        Err(e) => {
            run.end("failed", serde_json::json!({ "error": e.to_string() }));
            report.error = Some(e.to_string());
            history::unlock(&client).await;
            let rec = finish(run, "blocked", &report, vec![])?;
            return Ok(DeployOutcome {
                run: rec,
                error: Some(e),
            });
        }
    };
    let blocking: Vec<String> = lint
        .blocking()
        .iter()
        .map(|f| f.render().trim_end().to_string())
        .collect();
    run.end(
        if blocking.is_empty() { "ok" } else { "failed" },
        serde_json::json!({ "files_checked": lint.files_checked, "findings": lint.findings.len(),
                            "blocking": blocking.len(), "suppressed": lint.findings.iter().filter(|f| f.suppressed).count() }),
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
        let rec = finish(run, "blocked", &report, vec![])?;
        return Ok(DeployOutcome {
            run: rec,
            error: Some(CoreError::Problems(msg)),
        });
    }

    // 3. backup
    // 3. backup (guarded and protected; there is no way to skip it).
    let backup_id = match backup_step(config, vars, env, protection, &mut run, progress).await {
        Ok(id) => id,
        Err(e) => {
            report.error = Some(e.to_string());
            history::unlock(&client).await;
            let rec = finish(run, "failed_nothing_changed", &report, vec![])?;
            return Ok(DeployOutcome {
                run: rec,
                error: Some(e),
            });
        }
    };
    let ids: Vec<String> = backup_id.iter().cloned().collect();

    // 4./5. rehearsal and confirmation belong to protected environments.
    run.skip("rehearse", "not required for this protection level");

    // 6. apply
    let m = &config.file().migrations;
    let opts = ApplyOptions {
        lock_timeout: m.lock_timeout.as_std(),
        statement_timeout: m.statement_timeout.as_std(),
        lock_retries: m.lock_retries,
        applied_by: applied_by.to_string(),
        run_id: Some(run.record.run_id.clone()),
    };
    run.begin("apply");
    let mut done: Vec<&Migration> = Vec::new();
    let mut failure: Option<MigrateError> = None;
    let mut partial = false;
    for mig in &pending {
        progress.stage(&format!("applying {}", mig.label()));
        match apply::up(&client, mig, &opts).await {
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

    // 7. data: reference-data sets are a later part of the protocol.
    run.skip("data", "no reference-data import in this version");

    // 8. verify
    if failure.is_none() {
        run.begin("verify");
        progress.stage("verifying");
        for mig in &done {
            match apply::verify(&client, mig).await {
                Ok(Some(v)) => report.verified.push(v),
                Ok(None) => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() {
            report.checks = run_checks(&client, &config.file().checks, false).await;
        }
        if failure.is_none()
            && let Ok(Ok(smoke)) = crate::commands::verify::smoke_for(config, vars, env).await
        {
            report.smoke = smoke;
        }
        let failed_checks: Vec<&CheckOutcome> = report.checks.iter().filter(|c| !c.ok).collect();
        let check_error = (!failed_checks.is_empty()).then(|| {
            failed_checks
                .iter()
                .map(|c| {
                    format!(
                        "check {:?} expected {} got {}",
                        c.name,
                        c.expect,
                        c.actual
                            .as_deref()
                            .or(c.error.as_deref())
                            .unwrap_or("nothing")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        });
        let smoke_failures = crate::commands::verify::smoke_failures(&report.smoke);
        let check_error = match (check_error, smoke_failures.is_empty()) {
            (Some(c), false) => Some(format!("{c}; {}", smoke_failures.join("; "))),
            (Some(c), true) => Some(c),
            (None, false) => Some(smoke_failures.join("; ")),
            (None, true) => None,
        };
        run.end(
            if failure.is_some() || check_error.is_some() { "failed" } else { "ok" },
            serde_json::json!({ "verify_sql": report.verified.len(), "checks_passed": report.checks.iter().filter(|c| c.ok).count(),
                                "checks_failed": failed_checks.len() }),
        );
        if failure.is_none()
            && let Some(msg) = check_error
        {
            failure = Some(MigrateError::Verify {
                version: "(all)".into(),
                location: config.path().display().to_string(),
                message: msg,
            });
        }
    } else {
        run.skip("verify", "apply failed");
    }

    let Some(failure) = failure else {
        history::unlock(&client).await;
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
    let can_down = !partial && done.iter().all(|m| m.down.is_some());
    let mut info = if done.is_empty() {
        RollbackInfo {
            method: "transaction".into(),
            ok: true,
            detail:
                "the failing migration rolled back in its own transaction; nothing else was applied"
                    .into(),
            checks_after: vec![],
        }
    } else if can_down {
        let mut ok = true;
        let mut detail = Vec::new();
        for mig in done.iter().rev() {
            match apply::down(&client, mig, &opts).await {
                Ok(_) => detail.push(format!("reverted {}", mig.label())),
                Err(e) => {
                    ok = false;
                    detail.push(format!("reverting {} failed: {e}", mig.label()));
                    break;
                }
            }
        }
        RollbackInfo {
            method: "down".into(),
            ok,
            detail: detail.join("; "),
            checks_after: vec![],
        }
    } else if let Some(id) = &backup_id {
        rollback_by_restore(config, vars, env, id, progress).await
    } else {
        RollbackInfo {
            method: "none".into(),
            ok: false,
            detail: "the applied migrations have no down.sql and this open environment has no pre-deploy backup".into(),
            checks_after: vec![],
        }
    };
    if info.ok
        && let Ok(c) = connect(&url).await
    {
        info.checks_after = run_checks(&c, &config.file().checks, false).await;
    }
    run.end(
        if info.ok { "ok" } else { "failed" },
        serde_json::json!({ "method": info.method, "detail": info.detail }),
    );
    history::unlock(&client).await;
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

/// Step 3: the pre-deploy backup in guarded and protected environments,
/// then a `running` checkpoint, since from here on the database may change.
async fn backup_step(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    protection: Protection,
    run: &mut Run,
    progress: &Arc<dyn Progress>,
) -> Result<Option<String>, CoreError> {
    let mut backup_id = None;
    if protection == Protection::Open {
        run.skip("backup", "open environment");
    } else {
        run.begin("backup");
        match crate::commands::backup::take_backup(config, vars, env, "pre-deploy", progress).await
        {
            Ok(m) => {
                run.end(
                    "ok",
                    serde_json::json!({ "backup_id": m.id, "size_bytes": m.size_bytes }),
                );
                backup_id = Some(m.id);
            }
            Err(e) => {
                run.end("failed", serde_json::json!({ "error": e.to_string() }));
                return Err(e);
            }
        }
    }
    run.record.backup_id = backup_id.clone();
    run.checkpoint(config.state_dir())?;
    Ok(backup_id)
}

/// The run's outcome and error after a rollback attempt: what happened, and
/// when it failed, exactly what a person should do.
fn conclude(
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

/// Rollback by restoring the step-3 backup.
async fn rollback_by_restore(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    id: &str,
    progress: &Arc<dyn Progress>,
) -> RollbackInfo {
    match restore_pre_deploy(config, vars, env, id, progress).await {
        Ok(()) => RollbackInfo {
            method: "restore".into(),
            ok: true,
            detail: format!("restored the pre-deploy backup {id}"),
            checks_after: vec![],
        },
        Err(e) => RollbackInfo {
            method: "restore".into(),
            ok: false,
            detail: format!("restoring the pre-deploy backup {id} failed: {e}"),
            checks_after: vec![],
        },
    }
}

pub(crate) async fn restore_pre_deploy(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    id: &str,
    progress: &Arc<dyn Progress>,
) -> Result<(), CoreError> {
    let store = crate::commands::backup::open_store(config, vars)?;
    let manifest = store.manifest(id).await?;
    progress.stage(&format!("restoring the pre-deploy backup {id}"));
    let archive = fetch_verified(
        &store,
        &manifest,
        &shipsafe_pg::scratch::temp_dir_for(manifest.raw_bytes),
        None,
    )
    .await?;
    let url = config.database_url(env, vars)?;
    let client = connect(&url).await?;
    let info = server_info(&client, &url).await?;
    drop(client);
    let binaries = PgBinaries::for_server(info.major, &["pg_restore"])?;
    // No checks inside: the state before the deploy is what we want back,
    // whatever the checks say; they run afterwards and are reported.
    restore_atomic(
        &binaries,
        archive.path(),
        &url,
        AtomicRestore {
            checks: &[],
            lock_timeout: config.file().migrations.lock_timeout.as_std(),
            on_bytes: None,
        },
    )
    .await?;
    Ok(())
}

/// External mode: the team's own migration tool (SPEC §4).
#[derive(Debug, Clone)]
pub struct External {
    pub up: String,
    pub down: Option<String>,
    pub pending: String,
    pub url_env: String,
}

pub fn external(config: &Config) -> Option<External> {
    let m = &config.file().migrations;
    Some(External {
        up: m.up.clone()?,
        down: m.down.clone(),
        pending: m.pending.clone()?,
        url_env: m.url_env.clone(),
    })
}

/// One run of the team's tool.
#[derive(Debug, Clone, Serialize)]
pub struct ToolRun {
    pub command: String,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// The last lines of its output, secrets masked.
    pub output: String,
}

impl ToolRun {
    pub fn ok(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// Runs `command` with `sh -c` in the project folder, the target URL in
/// `url_env`, within the statement timeout.
pub async fn run_tool(
    config: &Config,
    command: &str,
    url: &shipsafe_config::DbUrl,
    url_env: &str,
) -> Result<ToolRun, CoreError> {
    let started = std::time::Instant::now();
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(config.root())
        .env(url_env, url.expose())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let limit = config.file().migrations.statement_timeout.as_std();
    let out = match tokio::time::timeout(limit, child).await {
        Ok(r) => r.map_err(|e| CoreError::io(format!("cannot run `{command}`"), e))?,
        Err(_) => {
            return Ok(ToolRun {
                command: command.to_string(),
                exit_code: None,
                duration_ms: started.elapsed().as_millis() as u64,
                output: format!(
                    "stopped after {} (migrations.statement_timeout)",
                    config.file().migrations.statement_timeout
                ),
            });
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    Ok(ToolRun {
        command: command.to_string(),
        exit_code: out.status.code(),
        duration_ms: started.elapsed().as_millis() as u64,
        output: shipsafe_config::mask_secrets(&tail),
    })
}

/// Deploy through the team's tool: pending? → (guarded: backup) → up →
/// checks → on failure, restore the pre-deploy backup (or `down` when there
/// is no backup).
async fn deploy_external(
    config: &Config,
    vars: &dyn VarSource,
    cwd: &Path,
    env: &str,
    ext: &External,
    override_reason: Option<&str>,
    progress: &Arc<dyn Progress>,
) -> Result<DeployOutcome, CoreError> {
    let protection = config.environment(env)?.protection();
    let mut run = Run::start("deploy", Some(env));
    // Gates (window, git branch) before anything else; --override is recorded.
    let gate_results = crate::gates::check(config, env, jiff::Timestamp::now())?;
    let audit_detail = serde_json::json!({
        "override": override_reason,
        "gates": gate_results,
    });

    let mut report = DeployReport::default();
    let finish = |run: Run,
                  outcome: &str,
                  report: &DeployReport,
                  ids: Vec<String>|
     -> Result<shipsafe_state::RunRecord, CoreError> {
        let rec = run.finish(outcome, report, config.state_dir(), cwd, ids, {
            let mut d = audit_detail.clone();
            d["mode"] = serde_json::json!("external");
            d
        })?;
        crate::runs::write_markdown(config.state_dir(), &rec)?;
        Ok(rec)
    };
    if let Err(e) = crate::gates::enforce(&gate_results, env, override_reason) {
        run.begin("gates");
        run.end("failed", serde_json::json!({ "gates": gate_results }));
        let rec = finish(run, "blocked", &report, vec![])?;
        return Ok(DeployOutcome {
            run: rec,
            error: Some(e),
        });
    }
    run.begin("preflight");
    let url = config.database_url(env, vars)?;
    let client = connect(&url).await?;
    if let Err(e) = history::lock(&client).await {
        run.end("failed", serde_json::json!({ "error": e.to_string() }));
        let rec = finish(run, "blocked", &report, vec![])?;
        return Ok(DeployOutcome {
            run: rec,
            error: Some(e.into()),
        });
    }
    progress.stage(&format!(
        "asking `{}` whether anything is pending",
        ext.pending
    ));
    let pending = run_tool(config, &ext.pending, &url, &ext.url_env).await?;
    let has_pending = !pending.ok();
    report.tool_output.push(pending);
    run.end("ok", serde_json::json!({ "pending": has_pending }));
    if !has_pending {
        history::unlock(&client).await;
        let rec = finish(run, "nothing_to_do", &report, vec![])?;
        return Ok(DeployOutcome {
            run: rec,
            error: None,
        });
    }
    run.skip("lint", "external tool: its SQL is not visible to shipsafe");
    // 3. backup (guarded and protected; there is no way to skip it).
    let backup_id = match backup_step(config, vars, env, protection, &mut run, progress).await {
        Ok(id) => id,
        Err(e) => {
            report.error = Some(e.to_string());
            history::unlock(&client).await;
            let rec = finish(run, "failed_nothing_changed", &report, vec![])?;
            return Ok(DeployOutcome {
                run: rec,
                error: Some(e),
            });
        }
    };
    let ids: Vec<String> = backup_id.iter().cloned().collect();
    run.skip("rehearse", "not required for this protection level");
    let fingerprint_before = shipsafe_pg::schema_fingerprint(&client)
        .await
        .map_err(|e| {
            CoreError::Failed(format!(
                "cannot read the schema: {}",
                shipsafe_pg::describe(&e)
            ))
        })?;
    run.begin("apply");
    progress.stage(&format!("running `{}`", ext.up));
    let up = run_tool(config, &ext.up, &url, &ext.url_env).await?;
    let mut failure =
        (!up.ok()).then(|| format!("`{}` exited with {:?}: {}", ext.up, up.exit_code, up.output));
    run.end(
        if up.ok() { "ok" } else { "failed" },
        serde_json::json!({ "exit_code": up.exit_code, "duration_ms": up.duration_ms }),
    );
    report.tool_output.push(up);
    run.skip("data", "no reference-data import in this version");
    if failure.is_none() {
        run.begin("verify");
        report.checks = run_checks(&client, &config.file().checks, false).await;
        if let Ok(Ok(smoke)) = crate::commands::verify::smoke_for(config, vars, env).await {
            report.smoke = smoke;
        }
        let failed: Vec<String> = report
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| {
                format!(
                    "check {:?} expected {} got {}",
                    c.name,
                    c.expect,
                    c.actual
                        .as_deref()
                        .or(c.error.as_deref())
                        .unwrap_or("nothing")
                )
            })
            .collect();
        run.end(
            if failed.is_empty() { "ok" } else { "failed" },
            serde_json::json!({ "checks_failed": failed.len() }),
        );
        let mut failed = failed;
        failed.extend(crate::commands::verify::smoke_failures(&report.smoke));
        if !failed.is_empty() {
            failure = Some(failed.join("; "));
        }
    } else {
        run.skip("verify", "apply failed");
    }
    let Some(failure) = failure else {
        history::unlock(&client).await;
        let rec = finish(run, "deployed", &report, ids)?;
        return Ok(DeployOutcome {
            run: rec,
            error: None,
        });
    };
    report.error = Some(failure.clone());
    run.begin("rollback");
    progress.stage("rolling back");
    let mut info = if let Some(id) = &backup_id {
        rollback_by_restore(config, vars, env, id, progress).await
    } else if shipsafe_pg::schema_fingerprint(&client)
        .await
        .ok()
        .as_deref()
        == Some(fingerprint_before.as_str())
    {
        // The tool's failed run left the schema as it was (it rolled back its
        // own transaction): running `down` now would undo an earlier deploy.
        RollbackInfo {
            method: "transaction".into(),
            ok: true,
            detail: "the tool's failed run changed nothing (schema fingerprint unchanged)".into(),
            checks_after: vec![],
        }
    } else if let Some(down) = &ext.down {
        let r = run_tool(config, down, &url, &ext.url_env).await?;
        let back = shipsafe_pg::schema_fingerprint(&client)
            .await
            .ok()
            .as_deref()
            == Some(fingerprint_before.as_str());
        let ok = r.ok() && back;
        let detail = format!(
            "ran `{down}` once (exit {:?}); the schema is {} before the deploy",
            r.exit_code,
            if back { "as" } else { "NOT as" }
        );
        report.tool_output.push(r);
        RollbackInfo {
            method: "down".into(),
            ok,
            detail,
            checks_after: vec![],
        }
    } else {
        RollbackInfo {
            method: "none".into(),
            ok: false,
            detail: "no pre-deploy backup (open environment) and no migrations.down command".into(),
            checks_after: vec![],
        }
    };
    if info.ok
        && let Ok(c) = connect(&url).await
    {
        info.checks_after = run_checks(&c, &config.file().checks, false).await;
    }
    run.end(
        if info.ok { "ok" } else { "failed" },
        serde_json::json!({ "method": info.method, "detail": info.detail }),
    );
    history::unlock(&client).await;
    let (ok, detail) = (info.ok, info.detail.clone());
    report.rollback = Some(info);
    let (outcome, error) = conclude(env, ok, &detail, &failure, backup_id.as_deref());
    let rec = finish(run, outcome, &report, ids)?;
    Ok(DeployOutcome {
        run: rec,
        error: Some(error),
    })
}
