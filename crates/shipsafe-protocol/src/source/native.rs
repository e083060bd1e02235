//! Native migration folders (shipsafe's own, Prisma's and Flyway's
//! layouts): shipsafe reads every statement, applies each migration in its
//! own transaction, records it in `shipsafe.migrations` and goes back with
//! down.sql.

use std::path::PathBuf;
use std::sync::Arc;

use shipsafe_config::{Config, Protection};
use shipsafe_migrate::{ApplyOptions, MigrateError, Migration, VerifyReport, apply, history};
use tokio_postgres::Client;

use super::interface::{Applied, Linted, Pending, PendingMigration, Planned, RollbackInfo};
use crate::error::CoreError;
use crate::lint;
use crate::progress::Progress;

pub fn migrations_dir(config: &Config) -> PathBuf {
    config.root().join(&config.file().migrations.dir)
}

pub fn discover(config: &Config) -> Result<Vec<Migration>, CoreError> {
    Ok(shipsafe_migrate::discover(
        &migrations_dir(config),
        config.file().migrations.format,
    )?)
}

/// The options every apply and down of this project runs with.
pub fn apply_options(
    config: &Config,
    applied_by: &str,
    run_id: Option<String>,
    retries: bool,
) -> ApplyOptions {
    let m = &config.file().migrations;
    ApplyOptions {
        lock_timeout: m.lock_timeout.as_std(),
        statement_timeout: m.statement_timeout.as_std(),
        lock_retries: if retries { m.lock_retries } else { 0 },
        applied_by: applied_by.to_string(),
        run_id,
    }
}

pub(crate) async fn pending(config: &Config, client: &Client) -> Result<Pending, CoreError> {
    let migrations = discover(config)?;
    let applied = history::applied(client).await?;
    let count = applied.len();
    let plan = history::plan(&migrations, applied)?;
    Ok(Pending {
        migrations: plan.pending.into_iter().cloned().collect(),
        tool: None,
        applied: count,
    })
}

/// Lints the pending migrations: unsuppressed errors block, except the
/// size-dependent ones a rehearsal will measure.
pub(crate) async fn lint(
    config: &Config,
    client: &Client,
    pending: &Pending,
    rehearsing: bool,
) -> Result<Linted, CoreError> {
    let refs: Vec<&Migration> = pending.migrations.iter().collect();
    let mut report = lint::lint_migrations(&refs, config.root())?;
    lint::weigh(&mut report, client, &config.file().lint).await;
    // Lock and rewrite findings are guesses about time; a rehearsal measures
    // them, and its verdict (with --accept-risk) decides instead.
    let deferred = if rehearsing {
        lint::defer_to_rehearsal(&mut report)
    } else {
        0
    };
    let blocking: Vec<String> = report
        .blocking()
        .iter()
        .map(|f| f.render().trim_end().to_string())
        .collect();
    let detail = serde_json::json!({ "files_checked": report.files_checked, "findings": report.findings.len(),
        "blocking": blocking.len(), "deferred_to_rehearsal": deferred,
        "suppressed": report.findings.iter().filter(|f| f.suppressed).count() });
    Ok(Linted {
        report,
        blocking,
        deferred,
        skipped: None,
        detail,
    })
}

pub(crate) fn confirm_lines(pending: &Pending) -> String {
    pending
        .migrations
        .iter()
        .map(|m| format!("  apply {}\n", m.label()))
        .collect()
}

/// Applies the pending migrations in order, stopping at the first failure.
pub(crate) async fn apply(
    client: &Client,
    pending: &Pending,
    opts: &ApplyOptions,
    progress: &Arc<dyn Progress>,
) -> Applied {
    let mut out = Applied::default();
    for mig in &pending.migrations {
        progress.stage(&format!("applying {}", mig.label()));
        match apply::up(client, mig, opts).await {
            Ok(r) => {
                out.reports.push(r);
                out.done.push(mig.clone());
            }
            Err(e) => {
                out.partial = matches!(e, MigrateError::Apply { partial: true, .. });
                if out.partial {
                    out.done.push(mig.clone());
                }
                out.failure = Some(e.to_string());
                break;
            }
        }
    }
    out.detail = serde_json::json!({
        "applied": out.reports.iter().map(|r| format!("{}_{}", r.version, r.name)).collect::<Vec<_>>(),
        "error": out.failure,
    });
    out
}

/// verify.sql of every applied migration.
pub(crate) async fn verify_sql(
    client: &Client,
    applied: &Applied,
) -> Result<Vec<VerifyReport>, String> {
    let mut out = Vec::new();
    for mig in &applied.done {
        if let Some(v) = apply::verify(client, mig)
            .await
            .map_err(|e| e.to_string())?
        {
            out.push(v);
        }
    }
    Ok(out)
}

/// Every applied migration can be reverted by its down.sql.
pub(crate) fn can_down(applied: &Applied) -> bool {
    !applied.partial && applied.done.iter().all(|m| m.down.is_some())
}

/// The down migrations of what was applied, newest first.
pub(crate) async fn down(client: &Client, done: &[Migration], opts: &ApplyOptions) -> RollbackInfo {
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

/// The way back without restoring a backup: down.sql, when every applied
/// migration has one.
pub(crate) async fn go_back(
    client: &Client,
    applied: &Applied,
    opts: &ApplyOptions,
    proven: bool,
) -> RollbackInfo {
    if !can_down(applied) {
        return RollbackInfo::new(
            "none",
            false,
            "the applied migrations have no down.sql and this open environment has no pre-deploy backup",
        );
    }
    let mut info = down(client, &applied.done, opts).await;
    if !proven {
        info.detail.push_str(
            " (down.sql was not rehearsed: this open environment has no backup to restore instead)",
        );
    }
    info
}

/// `rollback`: the down migrations of the deploy run `run_id`.
pub(crate) async fn undo_run(
    config: &Config,
    client: &Client,
    run_id: &str,
    opts: &ApplyOptions,
) -> Result<Vec<String>, CoreError> {
    let migrations = discover(config)?;
    let applied = history::applied(client).await?;
    let mut mine: Vec<_> = applied
        .iter()
        .filter(|a| a.run_id.as_deref() == Some(run_id))
        .filter_map(|a| migrations.iter().find(|m| m.version == a.version))
        .collect();
    mine.reverse();
    for mig in &mine {
        apply::down(client, mig, opts).await?;
    }
    Ok(mine.iter().map(|m| m.label()).collect())
}

/// `plan`: the pending migrations, what would stop a deploy, the lint.
pub(crate) async fn plan(
    config: &Config,
    client: &Client,
    protection: Protection,
) -> Result<Planned, CoreError> {
    let pending = pending(config, client).await?;
    let mut problems = Vec::new();
    if protection != Protection::Open {
        for m in &pending.migrations {
            if m.down.is_none() && !m.irreversible() && m.layout == shipsafe_migrate::Layout::Native
            {
                problems.push(format!(
                    "migration {} has no down.sql: add one, or mark up.sql `-- shipsafe:irreversible` (a failed deploy is then undone by restoring the pre-deploy backup)",
                    m.label()
                ));
            }
        }
    }
    let refs: Vec<&Migration> = pending.migrations.iter().collect();
    let mut report = lint::lint_migrations(&refs, config.root())?;
    lint::weigh(&mut report, client, &config.file().lint).await;
    for f in report.blocking() {
        problems.push(format!("lint: {}", f.render().trim_end()));
    }
    Ok(Planned {
        applied: pending.applied,
        tool_state: None,
        pending: pending
            .migrations
            .iter()
            .map(PendingMigration::of)
            .collect(),
        external_pending: None,
        tool: None,
        problems,
        warnings: Vec::new(),
        lint: report.findings,
        empty_down: Vec::new(),
        empty_down_from: None,
    })
}
