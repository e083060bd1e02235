//! `shipsafe new` and `plan`, pending migrations, restoring a pre-deploy
//! backup, and deploys through the team's own migration tool.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use shipsafe_config::{Config, MigrationFormat, Protection, VarSource};
use shipsafe_migrate::{MigrateError, Migration, history};
use shipsafe_pg::{connect, run_checks};

pub use crate::commands::external::{External, ToolRun, external, run_tool};

use crate::commands::deploy::{
    DeployOptions, DeployOutcome, DeployReport, RollbackInfo, backup_step, conclude,
    rollback_by_restore,
};
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

/// The migrations not yet applied to `env`, in order. Native formats only.
pub async fn pending_for(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
) -> Result<Vec<Migration>, CoreError> {
    if external(config).is_some() {
        return Err(CoreError::Usage(
            "the migrations are run by the team's own tool ([migrations] up); shipsafe cannot list them one by one".into(),
        ));
    }
    let migrations = discover(config)?;
    let url = config.database_url(env, vars)?;
    let client =
        crate::connection::open(config, env, &url, crate::connection::Access::Read).await?;
    let applied = history::applied(&client).await?;
    let plan = history::plan(&migrations, applied)?;
    Ok(plan.pending.into_iter().cloned().collect())
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
    /// External mode: the tool (`alembic`, ..., `command`).
    pub tool: Option<String>,
    /// What deploy would do first.
    pub backup_first: bool,
    /// Problems that would stop deploy.
    pub problems: Vec<String>,
    /// What deploy would not stop for but a person should know.
    pub warnings: Vec<String>,
    pub lint: Vec<shipsafe_lint::Finding>,
}

/// `shipsafe plan ENV`: what deploy would do. Changes nothing.
pub async fn plan(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
) -> Result<PlanReport, CoreError> {
    let protection = config.environment(env)?.protection();
    let warnings = boot_warnings(config);
    if let Some(ext) = external(config) {
        return plan_external(config, vars, env, &ext, protection, warnings).await;
    }
    let migrations = discover(config)?;
    let url = config.database_url(env, vars)?;
    let client =
        crate::connection::open(config, env, &url, crate::connection::Access::Read).await?;
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
    let mut lint = crate::commands::lint::lint_migrations(&plan.pending, config.root())?;
    crate::commands::lint::weigh(&mut lint, &client, &config.file().lint).await;
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
        tool: None,
        backup_first: protection != Protection::Open,
        problems,
        warnings,
    })
}

/// Start-up files that migrate on every boot: those migrations bypass the
/// backup, the rehearsal and the rollback.
pub(crate) fn boot_warnings(config: &Config) -> Vec<String> {
    crate::readiness::repo::migrate_on_boot(config.root())
        .iter()
        .map(|h| {
            format!(
                "{} {}: the app migrates each time it starts, outside shipsafe (no backup, rehearsal or rollback); remove it and deploy with `shipsafe deploy`",
                h.display(),
                if h.file.to_ascii_lowercase().contains("procfile") {
                    "(release or web process)"
                } else {
                    "(start-up command)"
                }
            )
        })
        .collect()
}

async fn plan_external(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    ext: &External,
    protection: Protection,
    mut warnings: Vec<String>,
) -> Result<PlanReport, CoreError> {
    let url = config.database_url(env, vars)?;
    let pending = crate::commands::external::pending(config, ext, &url).await?;
    // The tool's SQL is rendered offline and may differ from what runs:
    // its findings inform; the rehearsal measures what really happens.
    let problems = Vec::new();
    let mut lint = crate::commands::lint::LintReport::default();
    if pending.any {
        match crate::commands::external::pending_sql(config, ext, &url, &pending).await {
            Ok(files) if !files.is_empty() => {
                lint = crate::commands::lint::LintReport::batch(&files)?;
                if let Ok(client) =
                    crate::connection::open(config, env, &url, crate::connection::Access::Read)
                        .await
                {
                    crate::commands::lint::weigh(&mut lint, &client, &config.file().lint).await;
                }
            }
            Ok(_) => {}
            Err(why) => warnings.push(format!("lint skipped: {why}")),
        }
    }
    if pending.any && protection != Protection::Open && !ext.has_down() {
        warnings.push(
            "no way back with the tool: a failed deploy is undone by restoring the pre-deploy backup".into(),
        );
    }
    Ok(PlanReport {
        env: env.to_string(),
        protection: protection.as_str().into(),
        applied: pending.state.revisions.len(),
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
        backup_first: protection != Protection::Open,
        problems,
        warnings,
        lint: lint.findings,
    })
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
    let url = config.database_url(env, vars)?;
    // No checks inside: the state before the deploy is what we want back,
    // whatever the checks say; they run afterwards and are reported.
    crate::commands::backup::restore_into(config, &store, &manifest, &url, &[], &[]).await?;
    Ok(())
}

/// Deploy through the team's tool: pending? → (guarded: backup) → up →
/// checks → on failure, restore the pre-deploy backup (or `down` when there
/// is no backup).
pub(crate) async fn deploy_external(
    config: &Config,
    vars: &dyn VarSource,
    cwd: &Path,
    env: &str,
    ext: &External,
    opts: &DeployOptions<'_>,
    progress: &Arc<dyn Progress>,
) -> Result<DeployOutcome, CoreError> {
    let override_reason = opts.override_reason;
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
    if protection == Protection::Protected
        && let Err(e) = crate::commands::deploy::confirmation_possible(opts.confirm, env)
    {
        run.begin("confirm");
        run.end("failed", serde_json::json!({ "error": e.to_string() }));
        let rec = finish(run, "blocked", &report, vec![])?;
        return Ok(DeployOutcome {
            run: rec,
            error: Some(e),
        });
    }
    run.begin("preflight");
    let url = config.database_url(env, vars)?;
    let client =
        crate::connection::open(config, env, &url, crate::connection::Access::Change).await?;
    if let Err(e) = history::lock(&client).await {
        run.end("failed", serde_json::json!({ "error": e.to_string() }));
        let rec = finish(run, "blocked", &report, vec![])?;
        return Ok(DeployOutcome {
            run: rec,
            error: Some(e.into()),
        });
    }
    progress.stage("asking the migration tool what is pending");
    let pending = match crate::commands::external::pending(config, ext, &url).await {
        Ok(p) => p,
        Err(e) => {
            run.end("failed", serde_json::json!({ "error": e.to_string() }));
            history::unlock(&client).await;
            let rec = finish(run, "failed_nothing_changed", &report, vec![])?;
            return Ok(DeployOutcome {
                run: rec,
                error: Some(e),
            });
        }
    };
    report.tool_output.extend(pending.runs.iter().cloned());
    report.external = Some(crate::commands::external::ExternalReport {
        tool: ext.tool.as_str().into(),
        before: pending.state.clone(),
        after: None,
        pending: pending.revisions.clone(),
        lint_skipped: None,
    });
    run.end(
        "ok",
        serde_json::json!({ "pending": pending.any, "revisions": pending.revisions }),
    );
    if !pending.any {
        history::unlock(&client).await;
        let rec = finish(run, "nothing_to_do", &report, vec![])?;
        return Ok(DeployOutcome {
            run: rec,
            error: None,
        });
    }
    // The tool's SQL, rendered offline where the tool can: its findings
    // inform (the rehearsal measures what really runs) and never block.
    match crate::commands::external::pending_sql(config, ext, &url, &pending).await {
        Ok(files) if !files.is_empty() => {
            run.begin("lint");
            let mut lint = crate::commands::lint::LintReport::batch(&files)?;
            crate::commands::lint::weigh(&mut lint, &client, &config.file().lint).await;
            run.end(
                "ok",
                serde_json::json!({ "findings": lint.findings.len(), "blocking": false }),
            );
            report.lint = lint.findings;
        }
        Ok(_) => run.skip("lint", "the tool printed no SQL"),
        Err(why) => {
            run.skip("lint", &why);
            if let Some(x) = report.external.as_mut() {
                x.lint_skipped = Some(why);
            }
        }
    }
    // 3. backup (guarded and protected; there is no way to skip it), and
    // 4. the rehearsal on a clone (protected, or --rehearse).
    let backup_id = if protection == Protection::Protected || opts.rehearse {
        match crate::commands::deploy::rehearse_step(
            config,
            vars,
            env,
            crate::commands::rehearse::Change::External(ext),
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
                let rec = finish(run, outcome, &report, ids)?;
                return Ok(DeployOutcome {
                    run: rec,
                    error: Some(e),
                });
            }
        }
    } else {
        match backup_step(config, vars, env, protection, &mut run, progress).await {
            Ok(id) => {
                run.skip(
                    "rehearse",
                    "not required for this protection level (use --rehearse)",
                );
                id
            }
            Err(e) => {
                report.error = Some(e.to_string());
                history::unlock(&client).await;
                let rec = finish(run, "failed_nothing_changed", &report, vec![])?;
                return Ok(DeployOutcome {
                    run: rec,
                    error: Some(e),
                });
            }
        }
    };
    let ids: Vec<String> = backup_id.iter().cloned().collect();
    if protection == Protection::Protected {
        run.begin("confirm");
        let mut answer = Ok(false);
        let text = format!(
            "Deploy to {env} (protected) with `{}`; rehearsal: {}",
            ext.up,
            report
                .rehearsal
                .as_ref()
                .map_or("none", |r| r.verdict.as_str())
        );
        progress.suspend(&mut || answer = opts.confirm.confirm(env, &text));
        if answer != Ok(true) {
            let e = CoreError::Blocked(match answer {
                Err(why) => format!("{why}; nothing was changed"),
                _ => format!(
                    "{env} is protected and the deploy was not confirmed; nothing was changed"
                ),
            });
            run.end("failed", serde_json::json!({ "error": e.to_string() }));
            history::unlock(&client).await;
            let rec = finish(run, "blocked", &report, ids)?;
            return Ok(DeployOutcome {
                run: rec,
                error: Some(e),
            });
        }
        run.end("ok", serde_json::json!({}));
    } else {
        run.skip("confirm", "not a protected environment");
    }
    run.checkpoint(config.state_dir())?;
    let fingerprint_before = shipsafe_pg::schema_fingerprint(&client)
        .await
        .map_err(|e| {
            CoreError::Failed(format!(
                "cannot read the schema: {}",
                shipsafe_pg::describe(&e)
            ))
        })?;
    // Where the tool stands right before it runs: the way back goes here.
    match crate::commands::external::state(config, ext, &url).await {
        Ok(now) => {
            if let Some(x) = report.external.as_mut() {
                x.before = now;
            }
        }
        Err(e) => {
            report.error = Some(e.to_string());
            history::unlock(&client).await;
            let rec = finish(run, "failed_nothing_changed", &report, ids)?;
            return Ok(DeployOutcome {
                run: rec,
                error: Some(e),
            });
        }
    }
    run.begin("apply");
    progress.stage(&format!("running `{}`", ext.up));
    let up = run_tool(config, &ext.up, &url, ext).await?;
    let mut failure =
        (!up.ok()).then(|| format!("`{}` exited with {:?}: {}", ext.up, up.exit_code, up.output));
    run.end(
        if up.ok() { "ok" } else { "failed" },
        serde_json::json!({ "exit_code": up.exit_code, "duration_ms": up.duration_ms }),
    );
    report.tool_output.push(up);
    if failure.is_none() {
        if let Err(e) =
            crate::commands::deploy::data_step(config, &client, env, &mut run, &mut report).await
        {
            failure = Some(e.to_string());
        }
    } else {
        run.skip("data", "apply failed");
    }
    if failure.is_none() {
        run.begin("verify");
        report.checks = run_checks(&client, &config.file().checks, false).await;
        if let Ok(Ok(smoke)) = crate::commands::verify::smoke_for(config, vars, env).await {
            report.smoke = smoke;
        }
        let failed: Vec<String> = crate::commands::verify::check_failures(&report.checks);
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
        if let (Some(x), Ok(after)) = (
            report.external.as_mut(),
            crate::commands::external::state(config, ext, &url).await,
        ) {
            x.after = Some(after);
        }
        history::unlock(&client).await;
        crate::commands::deploy::retention_step(config, vars, cwd, env, &mut run).await;
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
        RollbackInfo::new(
            "transaction",
            true,
            "the tool's failed run changed nothing (schema fingerprint unchanged)",
        )
    } else if ext.has_down() {
        let before = report
            .external
            .as_ref()
            .map(|x| x.before.clone())
            .unwrap_or_default();
        let (runs, went) = crate::commands::external::go_back(config, ext, &url, &before).await;
        report.tool_output.extend(runs);
        let back = shipsafe_pg::schema_fingerprint(&client)
            .await
            .ok()
            .as_deref()
            == Some(fingerprint_before.as_str());
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
        RollbackInfo::new("down", went.is_ok() && back, detail)
    } else {
        RollbackInfo::new(
            "none",
            false,
            "no pre-deploy backup (open environment) and no migrations.down command",
        )
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
