//! `shipsafe backup create | list | verify | restore | prune` (SPEC §7).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use shipsafe_backup::{
    AtomicRestore, BackupError, BackupStore, Manifest, RestoreProof, Verification, fetch_verified,
    restore_atomic,
};
use shipsafe_config::{Config, Protection, VarSource};
use shipsafe_pg::{CheckOutcome, PgBinaries, ScratchCluster, ScratchOptions, connect, run_checks};

use crate::error::CoreError;
use crate::pipeline::{Failed, Pipeline, Stop};
use crate::progress::{Confirm, Progress, bytes_callback};
use crate::steps;
use crate::steps::restore::{ScratchUse, restore_into_scratch};
pub use crate::steps::retention::{PruneReport, prune};
pub use crate::store::list;

/// `backup create ENV [--reason]`.
pub fn create<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    cwd: &'a Path,
    env: &'a str,
    reason: &'a str,
    progress: &'a Arc<dyn Progress>,
) -> crate::Task<'a, Result<Manifest, CoreError>> {
    Box::pin(async move {
        config.environment(env)?;
        let result = steps::backup::take_backup(config, vars, env, reason, progress).await;
        let (outcome, ids, detail) = match &result {
            Ok(m) => (
                "complete",
                vec![m.id.clone()],
                serde_json::json!({ "reason": reason, "size_bytes": m.size_bytes }),
            ),
            Err(e) => (
                "failed",
                vec![],
                serde_json::json!({ "reason": reason, "error": e.to_string() }),
            ),
        };
        crate::audit::record_with(
            config.state_dir(),
            cwd,
            "backup create",
            Some(env),
            outcome,
            ids,
            detail,
        )?;
        result
    })
}

/// `backup verify ID`: restore into a scratch cluster of the backup's major
/// version by the path an environment restore takes (owners, grants, every
/// entry, rows compared with the archive), run the checks, and record the
/// result in the manifest with what it proved and what it did not.
pub fn verify<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    cwd: &'a Path,
    id: &'a str,
    progress: &'a Arc<dyn Progress>,
) -> crate::Task<'a, Result<(Manifest, Vec<CheckOutcome>), CoreError>> {
    Box::pin(async move {
        let store = crate::store::open_store(config, vars)?;
        let mut manifest = store.manifest(id).await?;
        let started = Instant::now();
        let at = shipsafe_state::now_rfc3339();
        let result = restore_and_check(config, &store, &manifest, progress).await;
        let (verification, checks, err) = match result {
            Ok((checks, proof, restored)) => {
                // The recovery time: fetch, cluster and restore, not the checks.
                let restore_seconds = restored.as_secs_f64();
                let failed = checks.iter().filter(|c| !c.ok).count() as u32;
                let v = Verification {
                    at,
                    ok: failed == 0,
                    restore_seconds: (restore_seconds * 1000.0).round() / 1000.0,
                    checks_passed: checks.len() as u32 - failed,
                    checks_failed: failed,
                    error: (failed > 0)
                        .then(|| format!("{failed} check(s) failed on the restored copy")),
                    method: Some(VERIFY_METHOD.into()),
                    proof: Some(with_limits(config, &manifest, proof)),
                };
                (v, checks, None)
            }
            Err(e) => {
                let restore_seconds = started.elapsed().as_secs_f64();
                let v = Verification {
                    at,
                    ok: false,
                    restore_seconds: (restore_seconds * 1000.0).round() / 1000.0,
                    checks_passed: 0,
                    checks_failed: 0,
                    error: Some(e.to_string()),
                    method: Some(VERIFY_METHOD.into()),
                    proof: None,
                };
                (v, Vec::new(), Some(e))
            }
        };
        let ok = verification.ok;
        let audit_detail = serde_json::json!({
            "ok": ok,
            "restore_seconds": verification.restore_seconds,
            "checks_passed": verification.checks_passed,
            "checks_failed": verification.checks_failed,
            "proof": verification.proof,
            "error": verification.error,
        });
        // A backup that is not complete never had an archive to verify; its
        // manifest stays as the record of the failed attempt.
        if manifest.is_complete() {
            manifest.verifications.push(verification);
            store.put_manifest(&manifest).await?;
        }
        crate::audit::record_with(
            config.state_dir(),
            cwd,
            "backup verify",
            Some(&manifest.env),
            if ok {
                "verified"
            } else {
                "verification_failed"
            },
            vec![manifest.id.clone()],
            audit_detail,
        )?;
        if let Some(e) = err {
            return Err(match e {
                CoreError::Backup(b) if b.is_bad_backup() => CoreError::Backup(b),
                CoreError::Backup(b @ BackupError::RestoreRolledBack { .. }) => {
                    CoreError::Problems(format!(
                        "backup {} could not be restored: {b}",
                        manifest.id
                    ))
                }
                other => other,
            });
        }
        if !ok {
            let names: Vec<&str> = checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| c.name.as_str())
                .collect();
            return Err(CoreError::Problems(format!(
                "backup {} restored, but checks failed on the restored copy: {}",
                manifest.id,
                names.join(", ")
            )));
        }
        Ok((manifest, checks))
    })
}

/// How `backup verify` restores, recorded with each verification.
const VERIFY_METHOD: &str = "backup verify: the environment restore path into a scratch cluster";

/// What a restore into a scratch cluster cannot establish, added to what
/// the restore itself reported.
fn with_limits(config: &Config, manifest: &Manifest, mut proof: RestoreProof) -> RestoreProof {
    if config.file().checks.is_empty() {
        proof
            .not_proven
            .push("business invariants: no [[checks]] are configured".into());
    }
    if !manifest.excluded_schemas.is_empty() {
        proof.not_proven.push(format!(
            "schemas left out of the backup ([backups] exclude_schemas: {})",
            manifest.excluded_schemas.join(", ")
        ));
    }
    proof.not_proven.push(
        "roles: they belong to the server, not the backup; the scratch cluster created them without passwords or attributes, so ownership and privileges were restored but logins were not tried".into(),
    );
    proof
}

async fn restore_and_check(
    config: &Config,
    store: &BackupStore,
    manifest: &Manifest,
    progress: &Arc<dyn Progress>,
) -> Result<(Vec<CheckOutcome>, RestoreProof, std::time::Duration), CoreError> {
    let started = Instant::now();
    // The cluster starts while the archive is fetched and checked; if the
    // fetch fails, the cluster is dropped (and torn down) unused.
    let opts = ScratchOptions {
        major: manifest.server_major(),
        size_hint: Some(manifest.raw_bytes.saturating_mul(3)),
        ..Default::default()
    };
    let starting = tokio::task::spawn_blocking(move || ScratchCluster::start_with(&opts));
    progress.stage(&format!("downloading and checking {}", manifest.id));
    let archive = fetch_verified(
        store,
        manifest,
        &shipsafe_pg::scratch::temp_dir_for(manifest.raw_bytes),
        Some(bytes_callback(progress, Some(manifest.size_bytes))),
    )
    .await?;
    progress.stage("starting a scratch cluster");
    let cluster = starting
        .await
        .map_err(|e| CoreError::Failed(format!("scratch cluster start was interrupted: {e}")))??;
    progress.stage(&format!(
        "restoring {} into the scratch cluster",
        manifest.id
    ));
    let restored = restore_into_scratch(
        &cluster,
        manifest,
        archive.path(),
        archive.contents(),
        ScratchUse::Proof,
        &[],
    )
    .await?;
    let restore_time = started.elapsed();
    progress.stage("running checks on the restored copy");
    let client = connect(&restored.url).await?;
    let checks = run_checks(&client, &config.file().checks, false).await;
    drop(client);
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .map_err(|e| CoreError::Failed(format!("scratch cluster stop was interrupted: {e}")))??;
    Ok((checks, restored.proof, restore_time))
}

/// The run report of `backup restore`.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub target: String,
    pub safety_backup: Option<String>,
    pub checks: Vec<CheckOutcome>,
    /// What the restore compared with the backup, and what it did not do.
    pub proof: Option<RestoreProof>,
}

/// `backup restore ID --to ENV`: lock → checksum → safety backup
/// (guarded/protected) → an atomic restore whose checks must pass to commit.
#[allow(clippy::too_many_arguments)]
pub fn restore<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    cwd: &'a Path,
    id: &'a str,
    to: &'a str,
    confirm: &'a dyn Confirm,
    progress: &'a Arc<dyn Progress>,
) -> crate::Task<'a, Result<shipsafe_state::RunRecord, CoreError>> {
    Box::pin(async move {
        let protection = config.environment(to)?.protection();
        let store = crate::store::open_store(config, vars)?;
        let manifest = store.manifest(id).await?;
        steps::confirm::require(
            config,
            to,
            &format!(
                "restoring backup {id} (of {}, {}) over {to}",
                manifest.env, manifest.created_at
            ),
            confirm,
        )?;
        let target = config.database_url(to, vars)?;
        let mut p = Pipeline::start(
            config,
            cwd,
            "backup restore",
            Some(to),
            serde_json::json!({}),
        );
        p.keep_backup(&manifest.id, true);
        let mut report = RestoreReport {
            backup: manifest.id.clone(),
            target: target.masked(),
            safety_backup: None,
            checks: Vec::new(),
            proof: None,
        };
        let stopped = |mut p: Pipeline, report: &RestoreReport, stop: Stop| {
            p.audit("error", serde_json::json!(stop.error.to_string()));
            let (_, e) = p.stop(stop, report)?;
            Err::<shipsafe_state::RunRecord, _>(e.expect("a stop has an error"))
        };

        // The environment's lock, as deploys and rollbacks take it: two
        // restores (or a restore and a deploy) never run into each other.
        let (lock, info) = match steps::preflight::lock_for_restore(config, to, &target).await {
            Ok((held, _)) => held,
            Err(f) => {
                let stop = p.failed_step("lock", f);
                return stopped(p, &report, stop);
            }
        };

        progress.stage(&format!("downloading and checking {id}"));
        let fetch = async {
            let dir = shipsafe_pg::scratch::temp_dir_for(manifest.raw_bytes);
            let on_bytes = Some(bytes_callback(progress, Some(manifest.size_bytes)));
            match fetch_verified(&store, &manifest, &dir, on_bytes).await {
                Ok(a) => Ok((a, serde_json::json!({ "checksum": manifest.checksum }))),
                Err(e) => Err(Failed::nothing_changed(e.into())),
            }
        };
        let archive = match p.step("checksum", fetch).await {
            Ok(a) => a,
            Err(stop) => return stopped(p, &report, stop),
        };

        if protection == Protection::Open {
            p.skip("backup", "open environment");
        } else {
            let safety = async {
                steps::backup::step(config, vars, to, "pre-restore", progress)
                .await
                .map_err(|f| {
                    Failed::nothing_changed(CoreError::Failed(format!(
                        "the safety backup of {to}, taken before restoring, failed, so nothing was restored: {}",
                        f.stop.error
                    )))
                })
            };
            match p.step("backup", safety).await {
                Ok(m) => {
                    report.safety_backup = Some(m.id.clone());
                    p.keep_backup(&m.id, false);
                }
                Err(stop) => return stopped(p, &report, stop),
            }
        }

        p.begin("restore");
        progress.stage(&format!("restoring {id} into {to} (one transaction)"));
        let binaries = PgBinaries::for_server(
            info.major
                .max(manifest.server_major().unwrap_or(info.major)),
            &["pg_restore"],
        )?;
        let result = restore_atomic(
            &binaries,
            archive.path(),
            &target,
            AtomicRestore {
                checks: &config.file().checks,
                before_checks: &[],
                lock_timeout: config.file().migrations.lock_timeout.as_std(),
                on_bytes: Some(bytes_callback(progress, None)),
                contents: archive.contents(),
                manifest: Some(&manifest),
                list: None,
                compare_database: true,
            },
        )
        .await;
        match result {
            Ok(r) => {
                p.end(
                    true,
                    serde_json::json!({ "script_bytes": r.script_bytes, "proof": r.proof }),
                );
                report.proof = Some(r.proof);
                p.record(
                    "checks",
                    "ok",
                    r.checks.iter().map(|c| c.duration_ms).sum(),
                    serde_json::json!({ "passed": r.checks.len() }),
                );
                report.checks = r.checks;
                // The restore brought the backup's copy of the audit head back.
                crate::anchor::write(config, &lock).await;
                drop(lock);
                p.finish("restored", &report)
            }
            Err(e) => {
                let e = match (e, &report.safety_backup) {
                    (BackupError::RestoreNotAtomic { target, message }, Some(safety)) => {
                        BackupError::RestoreNotAtomic {
                            target,
                            message: format!(
                                "{message}; safety backup {safety} holds {to} as it was: `shipsafe backup restore {safety} --to {to}`"
                            ),
                        }
                    }
                    (e, _) => e,
                };
                p.end(false, serde_json::json!({ "error": e.to_string() }));
                let outcome = match e {
                    BackupError::RestoreRolledBack { .. } => "rolled_back",
                    BackupError::RestoreNotAtomic { .. } => "rollback_failed",
                    _ => "failed_nothing_changed",
                };
                stopped(
                    p,
                    &report,
                    Stop {
                        outcome,
                        error: e.into(),
                    },
                )
            }
        }
    })
}
