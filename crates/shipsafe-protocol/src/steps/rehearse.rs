//! Step 4, rehearse: the pending change applied, measured and proven on
//! the clone by its source, then judged. Before anything the clone must be
//! another database than the target; afterwards the target's schema must be
//! as it was (a tool that reads its URL from elsewhere would have changed
//! it). The target is never touched.

use std::sync::Arc;
use std::time::Instant;

use shipsafe_backup::Manifest;
use shipsafe_config::{Config, DbUrl, VarSource};
use shipsafe_pg::connect;

use super::clone::{CloneDb, PendingClone, make_clone};
use crate::error::CoreError;
use crate::pipeline::Stop;
use crate::progress::Progress;
use crate::rehearsal::{RehearsalReport, Verdict, judge, loses_data, target_changed_error};
use crate::source::{Pending, Source};

/// Makes the clone from the backup (`manifest`, marked verified when the
/// restore and the checks pass), rehearses the change on it, disposes of it.
#[allow(clippy::too_many_arguments)]
pub async fn on_clone(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    source: &Source,
    pending: &Pending,
    manifest: &mut Manifest,
    clone: PendingClone,
    progress: &Arc<dyn Progress>,
) -> Result<RehearsalReport, CoreError> {
    let t = Instant::now();
    // Everything on the clone of `env` (the restore's checks, the checks
    // after the change) runs the checks that hold in `env`.
    let config = &config.with_checks_of(env);
    let (clone, _) = make_clone(config, vars, env, manifest, clone, progress).await?;
    let clone_ms = t.elapsed().as_millis() as u64;
    let target = config.database_url(env, vars)?;
    let mut r = rehearse_on(
        config,
        source,
        &target,
        &clone,
        pending,
        Some(manifest.id.clone()),
        manifest.is_verified(),
        progress,
    )
    .await;
    r.timings.clone_ms = clone_ms;
    clone.dispose().await;
    Ok(r)
}

/// The rehearse step's detail in the run record.
pub fn detail(r: &RehearsalReport) -> serde_json::Value {
    serde_json::json!({ "verdict": r.verdict, "round_trip": r.round_trip.status,
                        "clone": r.clone, "backup_verified": r.backup_verified, "timings": r.timings })
}

/// What the verdict means for a deploy: a failure on the clone blocks, a
/// risk needs `--accept-risk`, a changed target stops everything (exit 5).
pub fn consequences(
    env: &str,
    backup_id: &str,
    r: &RehearsalReport,
    accept_risk: bool,
) -> Result<(), Stop> {
    let reasons = r.reasons.join("; ");
    if r.target_changed {
        return Err(Stop::target_changed(target_changed_error(
            env, backup_id, &reasons,
        )));
    }
    match r.verdict {
        Verdict::Blocked => Err(Stop::blocked(CoreError::Problems(format!(
            "the rehearsal failed on the clone, so {env} was not touched: {reasons}"
        )))),
        Verdict::NeedsAck if !accept_risk => Err(Stop::blocked(CoreError::Blocked(format!(
            "the rehearsal found risks that need acknowledging: {reasons}. Read the report, then run again with --accept-risk to go ahead; nothing was changed"
        )))),
        _ => Ok(()),
    }
}

/// `system identifier|server start time|database oid|database name` of a
/// connection: equal for two URLs only when they reach the same database.
/// The start time tells apart clusters copied from one template (scratch
/// clusters share their system identifier).
async fn database_identity(url: &DbUrl) -> Result<String, String> {
    let client = connect(url).await.map_err(|e| e.to_string())?;
    let rows = client
        .simple_query(
            "select concat_ws('|', \
                coalesce((select system_identifier::text from pg_control_system()), ''), \
                pg_postmaster_start_time()::text, \
                (select oid::text from pg_database where datname = current_database()), \
                current_database())",
        )
        .await
        .map_err(|e| shipsafe_pg::describe(&e))?;
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .ok_or_else(|| "the server returned no identity".to_string())
}

async fn target_fingerprint(url: &DbUrl) -> Result<String, String> {
    let client = connect(url).await.map_err(|e| e.to_string())?;
    shipsafe_pg::schema_fingerprint(&client)
        .await
        .map_err(|e| shipsafe_pg::describe(&e))
}

/// Applies, measures, verifies and round-trips the change on the clone,
/// then judges the result. Before anything the clone must be another
/// database than `target`; afterwards `target`'s schema must be as it was
/// (a tool that reads its URL from elsewhere would have changed it).
#[allow(clippy::too_many_arguments)]
pub async fn rehearse_on(
    config: &Config,
    source: &Source,
    target: &DbUrl,
    clone: &CloneDb,
    pending: &Pending,
    backup_id: Option<String>,
    backup_verified: bool,
    progress: &Arc<dyn Progress>,
) -> RehearsalReport {
    let mut report = RehearsalReport::new(clone.label.clone(), backup_id);
    report.backup_verified = backup_verified;
    report.privacy = unmasked_into(config, &clone.label);
    let guard = async {
        let (t, c) = (
            database_identity(target).await?,
            database_identity(&clone.url).await?,
        );
        if t == c {
            return Err(format!(
                "the clone ({}) is the target database itself: nothing was run",
                clone.url.masked()
            ));
        }
        target_fingerprint(target).await
    };
    let result = match guard.await {
        Err(e) => Err(e),
        Ok(before) => {
            let ran = source
                .rehearse(config, target, &clone.url, pending, &mut report, progress)
                .await;
            match target_fingerprint(target).await {
                Ok(after) if after == before => ran,
                Ok(_) => {
                    report.target_changed = true;
                    Err(source.target_changed_reason(config))
                }
                Err(e) => Err(format!("cannot re-read the target's schema: {e}")),
            }
        }
    };
    if let Err(e) = result {
        report.error = Some(e);
    }
    let (verdict, reasons) = judge(&report, config.file().rehearsal.exclusive_lock_limit());
    report.verdict = verdict;
    report.reasons = reasons;
    report.loses_data = loses_data(&report);
    report
}

/// The note a rehearsal carries when its clone is another environment
/// (`env:NAME`) and `[mask]` says the data holds personal fields: the whole
/// backup, originals included, was restored there. A rehearsal measures the
/// real data; `clone = "scratch"` keeps it in a private cluster removed
/// afterwards.
fn unmasked_into(config: &Config, clone: &str) -> Option<String> {
    let other = clone.strip_prefix("env:")?;
    let masked: Vec<&str> = config
        .file()
        .mask
        .iter()
        .filter(|(_, k)| *k.get_ref() != shipsafe_config::MaskKind::Keep)
        .map(|(c, _)| c.as_str())
        .collect();
    (!masked.is_empty()).then(|| {
        format!(
            "the rehearsal restored the backup unmasked into {other} ([mask] names {}): a rehearsal measures the real data; use [rehearsal] clone = \"scratch\" to keep it in a private cluster that is removed afterwards",
            masked.join(", ")
        )
    })
}
