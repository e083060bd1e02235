//! `shipsafe wipe ENV --keep TABLE:PREDICATE... [--keep-table T...]
//! [--reset-sequences] [--dry-run] [--confirm ENV]` (SPEC §9).
//!
//! A backup first (every protection level: nothing is more destructive),
//! then one transaction: the wipe, the `[[checks]]`, commit only if they
//! pass. Tables of configured reference-data sets are kept whole.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use shipsafe_config::{Config, VarSource};
use shipsafe_data::wipe::{WipeReport, WipeRequest};
use shipsafe_pg::CheckOutcome;

use crate::error::CoreError;
use crate::progress::{Confirm, Progress};
use crate::runs::Run;

#[derive(Debug, Clone, Serialize)]
pub struct WipeRunReport {
    pub dry_run: bool,
    pub keep: Vec<String>,
    pub keep_tables: Vec<String>,
    #[serde(flatten)]
    pub wipe: WipeReport,
    pub checks: Vec<CheckOutcome>,
}

/// Parses `TABLE:PREDICATE`.
pub fn parse_keep(s: &str) -> Result<(String, String), CoreError> {
    match s.split_once(':') {
        Some((t, p)) if !t.trim().is_empty() && !p.trim().is_empty() => {
            Ok((t.trim().to_string(), p.trim().to_string()))
        }
        _ => Err(CoreError::Usage(format!(
            "--keep {s:?} must be TABLE:PREDICATE, e.g. --keep 'users:id = 14'"
        ))),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn wipe<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    cwd: &'a Path,
    env: &'a str,
    keep: &'a [String],
    keep_tables: &'a [String],
    reset_sequences: bool,
    dry_run: bool,
    confirm: &'a dyn Confirm,
    progress: &'a Arc<dyn Progress>,
) -> crate::Task<'a, Result<(shipsafe_state::RunRecord, Option<CoreError>), CoreError>> {
    Box::pin(async move {
        config.environment(env)?;
        let keep: Vec<(String, String)> = keep
            .iter()
            .map(|k| parse_keep(k))
            .collect::<Result<_, _>>()?;
        if keep.is_empty() && keep_tables.is_empty() {
            return Err(CoreError::Usage(
            "say what to keep: --keep TABLE:PREDICATE (rows and what they reference) and/or --keep-table TABLE; a wipe that keeps nothing is a restore of an empty backup".into(),
        ));
        }
        let mut tables: Vec<String> = keep_tables.to_vec();
        for set in config.file().data.values() {
            if !tables.contains(&set.table) {
                tables.push(set.table.clone());
            }
        }
        let req = WipeRequest {
            keep,
            keep_tables: tables,
            reset_sequences,
        };
        let mut report = WipeRunReport {
            dry_run,
            keep: req.keep.iter().map(|(t, p)| format!("{t}:{p}")).collect(),
            keep_tables: req.keep_tables.clone(),
            wipe: WipeReport::default(),
            checks: Vec::new(),
        };
        let mut run = Run::start("wipe", Some(env));
        let audit = serde_json::json!({ "keep": report.keep, "keep_tables": report.keep_tables,
                                    "reset_sequences": reset_sequences, "dry_run": dry_run });
        let finish = |run: Run, outcome: &str, report: &WipeRunReport, ids: Vec<String>| {
            let rec = run.finish(outcome, report, config.state_dir(), cwd, ids, audit.clone())?;
            crate::runs::write_markdown(config.state_dir(), &rec)?;
            Ok::<_, CoreError>(rec)
        };
        if !dry_run
            && let Err(e) = crate::steps::confirm::require(
                config,
                env,
                &format!("wiping {env} except {}", report.keep.join(", ")),
                confirm,
            )
        {
            run.begin("confirm");
            run.end("failed", serde_json::json!({ "error": e.to_string() }));
            return Ok((finish(run, "blocked", &report, vec![])?, Some(e)));
        }
        let url = config.database_url(env, vars)?;
        let _lock =
            match crate::steps::preflight::lock_to_change(config, env, &url, &mut run, dry_run)
                .await
            {
                Ok(held) => held,
                Err((e, outcome)) => return Ok((finish(run, outcome, &report, vec![])?, Some(e))),
            };
        let mut ids = Vec::new();
        if dry_run {
            run.skip("backup", "dry run");
        } else {
            match crate::steps::backup::recorded(config, vars, env, "pre-wipe", &mut run, progress)
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
        run.begin("wipe");
        progress.stage(&format!("wiping {env}"));
        // A dry run changes nothing, not even the audit head copy.
        let access = if dry_run {
            crate::connection::Access::Read
        } else {
            crate::connection::Access::Change
        };
        let client = crate::connection::open(config, env, &url, access).await?;
        let result = match crate::checks::begin(&client, config).await {
            Ok(()) => shipsafe_data::wipe::wipe(&client, &req)
                .await
                .map_err(CoreError::from),
            Err(e) => Err(e),
        };
        match result {
            Ok(w) => report.wipe = w,
            Err(e) => {
                let _ = client.batch_execute("rollback").await;
                run.end("failed", serde_json::json!({ "error": e.to_string() }));
                return Ok((
                    finish(run, "failed_nothing_changed", &report, ids)?,
                    Some(e),
                ));
            }
        }
        run.end(
        "ok",
        serde_json::json!({ "deleted_rows": report.wipe.deleted_rows, "sequences_reset": report.wipe.sequences.len() }),
    );
        run.begin("verify");
        let (checks, committed) = crate::checks::checks_then_commit(
            &client,
            config,
            env,
            &format!("the wipe of {env}"),
            !dry_run,
        )
        .await;
        report.checks = checks;
        if let Err(e) = committed {
            run.end("failed", serde_json::json!({ "error": e.to_string() }));
            let outcome = if dry_run { "dry_run" } else { "rolled_back" };
            return Ok((finish(run, outcome, &report, ids)?, Some(e)));
        }
        run.end(
            "ok",
            serde_json::json!({ "checks_passed": report.checks.len() }),
        );
        if dry_run {
            return Ok((finish(run, "dry_run", &report, ids)?, None));
        }
        Ok((finish(run, "wiped", &report, ids)?, None))
    })
}
