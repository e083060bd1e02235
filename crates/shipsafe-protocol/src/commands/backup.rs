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

use crate::checks::{BackupChecks, check_failures};
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
        // A Ctrl-C ends pg_dump (nothing is stored); once the dump is
        // complete, the backup is published rather than left half-written.
        let result = steps::backup::take_backup(config, vars, env, reason, progress)
            .await
            .map_err(|e| {
                if crate::pipeline::stop_requested() {
                    CoreError::RolledBack(format!(
                        "interrupted (Ctrl-C): the backup of {env} was cancelled and nothing was stored ({e})"
                    ))
                } else {
                    e
                }
            });
        let interrupted = crate::pipeline::stop_requested() && result.is_err();
        let (outcome, ids, detail) = match &result {
            Ok(m) => (
                "complete",
                vec![m.id.clone()],
                serde_json::json!({ "reason": reason, "size_bytes": m.size_bytes }),
            ),
            Err(e) => (
                if interrupted { "interrupted" } else { "failed" },
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

/// What `backup verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct BackupVerification {
    /// The manifest, with this verification added.
    pub manifest: Manifest,
    /// The checks that decided: those recorded with the backup (or, for a
    /// manifest without them, those configured now for its environment).
    pub checks: Vec<CheckOutcome>,
    /// Checks configured now that the backup did not record: reported,
    /// never failing the verification.
    pub current_checks: Vec<CheckOutcome>,
}

/// `backup verify ID`: restore into a scratch cluster of the backup's major
/// version by the path an environment restore takes (owners, grants, every
/// entry, rows compared with the archive), run the checks recorded with the
/// backup (and, reported apart, the ones configured since), and record the
/// result in the manifest with what it proved and what it did not.
pub fn verify<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    cwd: &'a Path,
    id: &'a str,
    progress: &'a Arc<dyn Progress>,
) -> crate::Task<'a, Result<BackupVerification, CoreError>> {
    Box::pin(async move {
        let store = crate::store::open_store(config, vars)?;
        let mut manifest = store.manifest(id).await?;
        let started = Instant::now();
        let at = shipsafe_state::now_rfc3339();
        let which = BackupChecks::of(config, &manifest, &manifest.env);
        let result = restore_and_check(&store, &manifest, &which, progress).await;
        let (verification, checks, current, err) = match result {
            Ok(Checked {
                checks,
                current,
                proof,
                restored,
            }) => {
                // The recovery time: fetch, cluster and restore, not the checks.
                let restore_seconds = restored.as_secs_f64();
                let failures = check_failures(&checks);
                let failed = failures.len() as u32;
                let mut proof = with_limits(&manifest, &which, proof);
                proof.warnings.extend(
                    check_failures(&current).into_iter().map(|f| {
                        format!("{f} (configured after this backup was taken; not counted)")
                    }),
                );
                let v = Verification {
                    at,
                    ok: failed == 0,
                    restore_seconds: (restore_seconds * 1000.0).round() / 1000.0,
                    checks_passed: checks.len() as u32 - failed,
                    checks_failed: failed,
                    error: (failed > 0)
                        .then(|| format!("on the restored copy: {}", failures.join("; "))),
                    method: Some(VERIFY_METHOD.into()),
                    proof: Some(proof),
                };
                (v, checks, current, None)
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
                (v, Vec::new(), Vec::new(), Some(e))
            }
        };
        let ok = verification.ok;
        let audit_detail = serde_json::json!({
            "ok": ok,
            "restore_seconds": verification.restore_seconds,
            "checks_passed": verification.checks_passed,
            "checks_failed": verification.checks_failed,
            "checks_errored": checks.iter().filter(|c| c.is_error()).count(),
            "current_checks_not_passing": check_failures(&current),
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
            return Err(CoreError::Problems(format!(
                "backup {} restored, but {} on the restored copy: {}",
                manifest.id,
                if checks.iter().any(|c| !c.ok && !c.is_error()) {
                    "checks failed"
                } else {
                    "checks could not run"
                },
                check_failures(&checks).join("; ")
            )));
        }
        Ok(BackupVerification {
            manifest,
            checks,
            current_checks: current,
        })
    })
}

/// How `backup verify` restores, recorded with each verification.
const VERIFY_METHOD: &str = "backup verify: the environment restore path into a scratch cluster";

/// What a restore into a scratch cluster cannot establish, added to what
/// the restore itself reported.
fn with_limits(manifest: &Manifest, which: &BackupChecks, mut proof: RestoreProof) -> RestoreProof {
    if which.deciding.is_empty() {
        proof.not_proven.push(if manifest.checks.is_some() {
            format!(
                "business invariants: no [[checks]] were configured for {} when the backup was taken",
                manifest.env
            )
        } else {
            "business invariants: no [[checks]] are configured".into()
        });
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

/// A restored copy and what the checks said on it.
struct Checked {
    checks: Vec<CheckOutcome>,
    current: Vec<CheckOutcome>,
    proof: RestoreProof,
    restored: std::time::Duration,
}

async fn restore_and_check(
    store: &BackupStore,
    manifest: &Manifest,
    which: &BackupChecks,
    progress: &Arc<dyn Progress>,
) -> Result<Checked, CoreError> {
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
    let checks = run_checks(&client, &which.deciding, false).await;
    let current = run_checks(&client, &which.current, false).await;
    drop(client);
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .map_err(|e| CoreError::Failed(format!("scratch cluster stop was interrupted: {e}")))??;
    Ok(Checked {
        checks,
        current,
        proof: restored.proof,
        restored: restore_time,
    })
}

/// The run report of `backup restore`.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub target: String,
    pub safety_backup: Option<String>,
    /// The checks that had to pass for the restore to commit: those
    /// recorded with the backup (or, for a manifest without them, the
    /// target's configured now).
    pub checks: Vec<CheckOutcome>,
    /// The target's checks configured now that the backup did not record,
    /// run after the commit: reported, never undoing the restore.
    pub current_checks: Vec<CheckOutcome>,
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
            current_checks: Vec::new(),
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
        let which = BackupChecks::of(config, &manifest, to);
        let result = restore_atomic(
            &binaries,
            archive.path(),
            &target,
            AtomicRestore {
                checks: &which.deciding,
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
                    serde_json::json!({ "passed": r.checks.len(), "recorded_with_backup": manifest.checks.is_some() }),
                );
                report.checks = r.checks;
                if !which.current.is_empty() {
                    match connect(&target).await {
                        Ok(c) => {
                            report.current_checks = run_checks(&c, &which.current, false).await;
                        }
                        Err(e) => tracing::warn!(
                            "the checks configured since backup {id} was taken did not run: {e}"
                        ),
                    }
                }
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
