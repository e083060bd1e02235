//! `shipsafe data export | diff | import` (SPEC §8).

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use shipsafe_config::{Config, Protection, VarSource};
use shipsafe_data::{DataFile, SetDef};

use crate::refdata::{
    DataOptions, DataReport, data_dir, file_of, plan_all, problems, read_files, selected,
};

use crate::error::CoreError;
use crate::progress::{Confirm, Progress};
use crate::runs::Run;

#[derive(Debug, Clone, Serialize)]
pub struct ExportedSet {
    pub set: String,
    pub table: String,
    pub file: String,
    pub rows: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub env: String,
    pub sets: Vec<ExportedSet>,
}

/// `data export SET... | --all --env ENV [--out DIR]`.
pub fn export<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    env: &'a str,
    sets: &'a [String],
    all: bool,
    out: Option<&'a Path>,
) -> crate::Task<'a, Result<ExportReport, CoreError>> {
    Box::pin(async move {
        config.environment(env)?;
        let chosen = selected(config, sets, all)?;
        let dir = data_dir(config, out);
        let url = config.database_url(env, vars)?;
        let client =
            crate::connection::open(config, env, &url, crate::connection::Access::Read).await?;
        let mut report = ExportReport {
            env: env.to_string(),
            sets: Vec::new(),
        };
        for (name, cfg) in chosen {
            let def = SetDef::resolve(&client, name, cfg).await?;
            let rows = shipsafe_data::export::rows(&client, &def).await?;
            let path = file_of(&dir, name);
            DataFile::write(&path, name, &def.display, &def.key_names(), &rows)?;
            report.sets.push(ExportedSet {
                set: name.to_string(),
                table: def.display.clone(),
                file: path.display().to_string(),
                rows: rows.len(),
            });
        }
        Ok(report)
    })
}

/// `data diff`: what an import would do; the transaction is rolled back.
pub fn diff<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    env: &'a str,
    sets: &'a [String],
    all: bool,
    opts: &'a DataOptions<'a>,
) -> crate::Task<'a, Result<DataReport, CoreError>> {
    Box::pin(async move {
        config.environment(env)?;
        let chosen = selected(config, sets, all)?;
        let files = read_files(config, &chosen, opts.dir)?;
        let url = config.database_url(env, vars)?;
        let client =
            crate::connection::open(config, env, &url, crate::connection::Access::Read).await?;
        client
            .batch_execute("begin")
            .await
            .map_err(|e| CoreError::Failed(shipsafe_pg::describe(&e)))?;
        let plans = plan_all(&client, &chosen, &files, opts, false).await;
        let _ = client.batch_execute("rollback").await;
        Ok(DataReport {
            env: env.to_string(),
            mode: opts.mode,
            dry_run: true,
            force: opts.force,
            sets: plans?,
            checks: Vec::new(),
        })
    })
}

/// `data import`: backup first (guarded, protected), one transaction, the
/// checks inside it; conflicts and unresolved references stop it unless
/// `--force` / `--skip-unresolved`.
#[allow(clippy::too_many_arguments)]
pub fn import<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    cwd: &'a Path,
    env: &'a str,
    sets: &'a [String],
    all: bool,
    opts: &'a DataOptions<'a>,
    confirm: &'a dyn Confirm,
    progress: &'a Arc<dyn Progress>,
) -> crate::Task<'a, Result<(shipsafe_state::RunRecord, Option<CoreError>), CoreError>> {
    Box::pin(async move {
        let protection = config.environment(env)?.protection();
        let chosen = selected(config, sets, all)?;
        let files = read_files(config, &chosen, opts.dir)?;
        let mut run = Run::start("data import", Some(env));
        let audit = serde_json::json!({
            "sets": chosen.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            "mode": opts.mode, "force": opts.force, "dry_run": opts.dry_run,
            "skip_unresolved": opts.skip_unresolved,
        });
        let mut report = DataReport {
            env: env.to_string(),
            mode: opts.mode,
            dry_run: opts.dry_run,
            force: opts.force,
            sets: Vec::new(),
            checks: Vec::new(),
        };
        let finish = |run: Run, outcome: &str, report: &DataReport, ids: Vec<String>| {
            let rec = run.finish(outcome, report, config.state_dir(), cwd, ids, audit.clone())?;
            crate::runs::write_markdown(config.state_dir(), &rec)?;
            Ok::<_, CoreError>(rec)
        };
        if !opts.dry_run
            && let Err(e) = crate::steps::confirm::require(
                config,
                env,
                &format!("importing reference data into {env}"),
                confirm,
            )
        {
            run.begin("confirm");
            run.end("failed", serde_json::json!({ "error": e.to_string() }));
            return Ok((finish(run, "blocked", &report, vec![])?, Some(e)));
        }
        let url = config.database_url(env, vars)?;
        let _lock = match crate::steps::preflight::lock_to_change(
            config,
            env,
            &url,
            &mut run,
            opts.dry_run,
        )
        .await
        {
            Ok(held) => held,
            Err((e, outcome)) => return Ok((finish(run, outcome, &report, vec![])?, Some(e))),
        };
        // A dry run changes nothing, not even the audit head copy.
        let access = if opts.dry_run {
            crate::connection::Access::Read
        } else {
            crate::connection::Access::Change
        };
        let client = crate::connection::open(config, env, &url, access).await?;
        let mut ids = Vec::new();
        if opts.dry_run {
            run.skip("backup", "dry run");
        } else if protection == Protection::Open {
            run.skip("backup", "open environment");
        } else {
            match crate::steps::backup::recorded(
                config,
                vars,
                env,
                "pre-import",
                &mut run,
                progress,
            )
            .await
            {
                Ok(id) => ids.push(id),
                Err(e) => {
                    return Ok((
                        finish(run, "failed_nothing_changed", &report, ids)?,
                        Some(e),
                    ));
                }
            }
        }

        run.begin("import");
        progress.stage(&format!("importing into {env}"));
        if let Err(e) = crate::checks::begin(&client, config).await {
            run.end("failed", serde_json::json!({ "error": e.to_string() }));
            return Ok((
                finish(run, "failed_nothing_changed", &report, ids)?,
                Some(e),
            ));
        }
        let planned = plan_all(&client, &chosen, &files, opts, !opts.dry_run).await;
        match planned {
            Ok(p) => report.sets = p,
            Err(e) => {
                let _ = client.batch_execute("rollback").await;
                run.end("failed", serde_json::json!({ "error": e.to_string() }));
                return Ok((
                    finish(run, "failed_nothing_changed", &report, ids)?,
                    Some(e),
                ));
            }
        }
        let detail = serde_json::json!({
            "sets": report.sets.iter().map(|s| serde_json::json!({
                "set": s.set, "inserts": s.inserts, "updates": s.updates, "deletes": s.deletes,
                "unchanged": s.unchanged, "renamed": s.renamed.len(), "conflicts": s.conflicts.len(),
                "unresolved": s.unresolved.len(), "forced": s.forced,
            })).collect::<Vec<_>>(),
        });
        let blocking = (report.conflicts() > 0
            || (report.unresolved() > 0 && !opts.skip_unresolved))
            .then(|| problems(&report))
            .flatten();
        if let Some(msg) = blocking {
            let _ = client.batch_execute("rollback").await;
            run.end("failed", detail);
            return Ok((
                finish(run, "blocked", &report, ids)?,
                Some(CoreError::Problems(msg)),
            ));
        }
        if opts.dry_run {
            let _ = client.batch_execute("rollback").await;
            run.end("ok", detail);
            return Ok((finish(run, "dry_run", &report, ids)?, None));
        }
        run.end("ok", detail);
        run.begin("verify");
        let (checks, committed) = crate::checks::checks_then_commit(
            &client,
            config,
            env,
            &format!("the import into {env}"),
            true,
        )
        .await;
        report.checks = checks;
        if let Err(e) = committed {
            run.end("failed", serde_json::json!({ "error": e.to_string() }));
            return Ok((finish(run, "rolled_back", &report, ids)?, Some(e)));
        }
        run.end(
            "ok",
            serde_json::json!({ "checks_passed": report.checks.len() }),
        );
        let outcome = if report.changes_anything() {
            "imported"
        } else {
            "nothing_to_do"
        };
        Ok((finish(run, outcome, &report, ids)?, None))
    })
}
