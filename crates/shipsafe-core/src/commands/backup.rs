//! `shipsafe backup create | list | verify | restore | prune` (SPEC §7).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use shipsafe_backup::{
    AtomicRestore, BackupError, BackupStore, Decision, DumpRequest, Manifest, OnBytes,
    RestoreProof, StorageSpec, Verification, fetch_verified, restore_atomic,
};
use shipsafe_config::{Config, DbUrl, Protection, VarSource};
use shipsafe_pg::{
    CheckOutcome, PgBinaries, ScratchCluster, ScratchOptions, connect, quote_ident, run_checks,
    server_info,
};

use crate::error::CoreError;
use crate::progress::{Confirm, Progress};
use crate::runs::Run;

/// Where `[backups]` says backups go, with `${VAR}`s resolved.
pub fn storage_spec(config: &Config, vars: &dyn VarSource) -> Result<StorageSpec, CoreError> {
    let b = &config.file().backups;
    let url = match &b.storage {
        Some(t) => config.resolve(t, "backups.storage", vars)?,
        None => format!("file://{}", config.state_dir().join("backups").display()),
    };
    let endpoint = match &b.s3_endpoint {
        Some(t) => Some(t.resolve(vars).map_err(|m| {
            CoreError::Config(shipsafe_config::ConfigError::Invalid {
                path: config.path().to_path_buf(),
                line: 1,
                column: 1,
                message: format!("backups.s3_endpoint uses ${{{}}}, which is not set", m.name),
            })
        })?),
        None => None,
    };
    Ok(StorageSpec {
        url,
        root: config.root().to_path_buf(),
        s3_endpoint: endpoint,
        s3_region: b.s3_region.clone(),
        s3_allow_http: b.s3_allow_http,
    })
}

pub fn open_store(config: &Config, vars: &dyn VarSource) -> Result<BackupStore, CoreError> {
    Ok(BackupStore::open(&storage_spec(config, vars)?)?)
}

fn bytes_callback(progress: &Arc<dyn Progress>, total: Option<u64>) -> OnBytes {
    let p = Arc::clone(progress);
    Arc::new(move |n| p.bytes(n, total))
}

/// Takes a backup of `env` and publishes it (no audit entry: callers that
/// are part of a larger run record it there).
pub async fn take_backup(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    reason: &str,
    progress: &Arc<dyn Progress>,
) -> Result<Manifest, CoreError> {
    take_backup_teed(config, vars, env, reason, None, progress).await
}

/// [`take_backup`], also writing pg_dump's raw output to `tee` (the source
/// of a rehearsal clone).
pub async fn take_backup_teed(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    reason: &str,
    tee: Option<&Path>,
    progress: &Arc<dyn Progress>,
) -> Result<Manifest, CoreError> {
    let url = config.database_url(env, vars)?;
    let store = open_store(config, vars)?;
    progress.stage(&format!("connecting to {env}"));
    let client =
        crate::connection::open_pinned(config, env, &url, crate::connection::Access::Read).await?;
    let info = server_info(&client, &url).await?;
    // What a restore elsewhere will need, kept with the backup.
    let strings = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query_typed(sql, &[])
                .await
                .map(|rows| {
                    rows.iter()
                        .map(|r| r.get::<_, String>(0))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        }
    };
    let roles = strings(shipsafe_backup::toc::REFERENCED_ROLES_SQL).await;
    let extensions = strings(shipsafe_backup::toc::EXTENSIONS_SQL).await;
    let writes_at_backup: Option<i64> = client
        .query_typed(crate::commands::rollback::WRITES_SQL, &[])
        .await
        .ok()
        .and_then(|rows| rows.first().map(|r| r.get(0)));
    let database_level = shipsafe_backup::dblevel::read(&client)
        .await
        .unwrap_or_default();
    drop(client);
    let binaries = PgBinaries::for_server(info.major, &["pg_dump", "pg_restore"])?;
    progress.stage(&format!(
        "backing up {env} ({}) to {}",
        info.database,
        store.url()
    ));
    let manifest = shipsafe_backup::create(
        &store,
        DumpRequest {
            url: &url,
            env,
            reason,
            compression_level: config.file().backups.compression_level,
            binaries: &binaries,
            server_version: &info.server_version,
            database: &info.database,
            on_bytes: Some(bytes_callback(
                progress,
                Some(info.size_bytes.max(0) as u64),
            )),
            tee,
            exclude_schemas: &config.file().backups.exclude_schemas,
            extensions,
            roles,
            writes_at_backup,
            database_level,
            audit_head: crate::anchor::current(config).map(|h| {
                shipsafe_backup::manifest::AuditHead {
                    seq: h.seq,
                    hash: h.hash,
                }
            }),
        },
    )
    .await?;
    Ok(manifest)
}

/// Fetches `manifest`'s archive (checksum first) and replaces the database
/// at `url` with it in one transaction: `before_checks` then `checks` run
/// inside it, and it commits only if they pass.
pub(crate) async fn restore_into(
    config: &Config,
    store: &BackupStore,
    manifest: &Manifest,
    url: &shipsafe_config::DbUrl,
    checks: &[shipsafe_config::CheckConfig],
    before_checks: &[String],
) -> Result<shipsafe_backup::RestoreReport, CoreError> {
    let archive = fetch_verified(
        store,
        manifest,
        &shipsafe_pg::scratch::temp_dir_for(manifest.raw_bytes),
        None,
    )
    .await?;
    let client = shipsafe_pg::connect_pinned(url).await?;
    let info = server_info(&client, url).await?;
    drop(client);
    let binaries = PgBinaries::for_server(
        info.major
            .max(manifest.server_major().unwrap_or(info.major)),
        &["pg_restore"],
    )?;
    Ok(restore_atomic(
        &binaries,
        archive.path(),
        url,
        AtomicRestore {
            checks,
            before_checks,
            lock_timeout: config.file().migrations.lock_timeout.as_std(),
            on_bytes: None,
            contents: archive.contents(),
            manifest: Some(manifest),
            list: None,
            compare_database: true,
        },
    )
    .await?)
}

/// A backup taken as the `backup` step of `run` (recorded as the run's
/// backup). Returns its id.
pub(crate) async fn backup_as_step(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    reason: &str,
    run: &mut crate::runs::Run,
    progress: &Arc<dyn Progress>,
) -> Result<String, CoreError> {
    run.begin("backup");
    match take_backup(config, vars, env, reason, progress).await {
        Ok(m) => {
            run.end(
                "ok",
                serde_json::json!({ "backup_id": m.id, "size_bytes": m.size_bytes }),
            );
            run.record.backup_id = Some(m.id.clone());
            Ok(m.id)
        }
        Err(e) => {
            run.end("failed", serde_json::json!({ "error": e.to_string() }));
            Err(e)
        }
    }
}

/// `backup create ENV [--reason]`.
pub async fn create(
    config: &Config,
    vars: &dyn VarSource,
    cwd: &Path,
    env: &str,
    reason: &str,
    progress: &Arc<dyn Progress>,
) -> Result<Manifest, CoreError> {
    config.environment(env)?;
    let result = take_backup(config, vars, env, reason, progress).await;
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
}

/// `backup list [ENV]`: newest first, straight from storage.
pub async fn list(
    config: &Config,
    vars: &dyn VarSource,
    env: Option<&str>,
) -> Result<Vec<Manifest>, CoreError> {
    let store = open_store(config, vars)?;
    let mut all = store.list().await?;
    if let Some(e) = env {
        all.retain(|m| m.env == e);
    }
    Ok(all)
}

/// `backup verify ID`: restore into a scratch cluster of the backup's major
/// version by the path an environment restore takes (owners, grants, every
/// entry, rows compared with the archive), run the checks, and record the
/// result in the manifest with what it proved and what it did not.
pub async fn verify(
    config: &Config,
    vars: &dyn VarSource,
    cwd: &Path,
    id: &str,
    progress: &Arc<dyn Progress>,
) -> Result<(Manifest, Vec<CheckOutcome>), CoreError> {
    let store = open_store(config, vars)?;
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
                CoreError::Problems(format!("backup {} could not be restored: {b}", manifest.id))
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

/// What a scratch restore is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScratchUse {
    /// `backup verify`: every entry, as an environment restore.
    Proof,
    /// A rehearsal clone: entries that act on the server around the
    /// database (event triggers, publications, subscriptions) left out.
    Rehearsal,
}

/// A database restored into a scratch cluster.
#[derive(Debug)]
pub(crate) struct ScratchRestore {
    pub url: DbUrl,
    pub proof: RestoreProof,
}

/// Restores an archive into a new database of a scratch cluster, named as
/// the source, by the environment restore path (one transaction, owners and
/// grants, rows compared with the archive). The archive's table of contents
/// decides which roles to create (its owners, plus the manifest's and
/// `extra_roles`) and which extensions must be installable (checked before
/// anything is restored).
pub(crate) async fn restore_into_scratch(
    cluster: &ScratchCluster,
    manifest: &Manifest,
    archive: &Path,
    contents: Option<&shipsafe_backup::ArchiveContents>,
    purpose: ScratchUse,
    extra_roles: &[String],
) -> Result<ScratchRestore, CoreError> {
    let toc = shipsafe_backup::Toc::read(cluster.binaries(), archive).await?;
    // template1: the backed-up database may be called `postgres` (Supabase's
    // is), which every new cluster already has, empty: it is made anew.
    let admin = connect(&cluster.url("template1")).await?;
    let mut roles = manifest.roles.clone();
    roles.extend(extra_roles.iter().cloned());
    shipsafe_backup::toc::prepare_cluster(&admin, &toc, &roles, cluster.binaries().major()).await?;
    for stmt in [
        format!(
            "drop database if exists {}",
            quote_ident(&manifest.database)
        ),
        format!("create database {}", quote_ident(&manifest.database)),
    ] {
        admin.batch_execute(&stmt).await.map_err(|e| {
            CoreError::Failed(format!(
                "cannot create the database to restore into: {}",
                shipsafe_pg::describe(&e)
            ))
        })?;
    }
    drop(admin);
    let list_dir = shipsafe_pg::PrivateTemp::new_in(&std::env::temp_dir())?;
    let list_path = list_dir.path().join("restore.list");
    let left_out = match purpose {
        ScratchUse::Proof => 0,
        ScratchUse::Rehearsal => {
            let (list, left_out) = toc.restore_list();
            std::fs::write(&list_path, list)
                .map_err(|e| CoreError::io("cannot write the restore list", e))?;
            left_out
        }
    };
    let url = cluster.url(&manifest.database);
    let report = restore_atomic(
        cluster.binaries(),
        archive,
        &url,
        AtomicRestore {
            checks: &[],
            before_checks: &[],
            lock_timeout: std::time::Duration::from_secs(60),
            on_bytes: None,
            contents,
            manifest: Some(manifest),
            list: (left_out > 0).then_some(list_path.as_path()),
            compare_database: false,
        },
    )
    .await?;
    let mut proof = report.proof;
    // A new database has none of the backup's database-level properties:
    // not proven rather than a difference.
    if !manifest.database_level.is_empty() {
        let names: Vec<String> = manifest
            .database_level
            .iter()
            .map(|p| format!("{} {}", p.kind, p.name))
            .collect();
        proof.not_proven.push(format!(
            "the database's own properties ({}): a dump does not carry them, so no restore into another database brings them back",
            names.join(", ")
        ));
    }
    if left_out > 0 {
        proof.not_proven.push(format!(
            "{left_out} entries that act on the server around the database (event triggers, publications, subscriptions) were left out of the rehearsal clone"
        ));
    }
    Ok(ScratchRestore { url, proof })
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

/// Takes `env`'s migration lock on a connection kept open for the whole
/// operation (a session lock: closing the connection releases it), and
/// reads the server's version on the way. When it cannot, `run` gets a
/// failed `lock` step (a step only when it stops the run) and the outcome
/// to end with.
pub(crate) async fn lock_for_run(
    config: &Config,
    env: &str,
    url: &DbUrl,
    run: &mut Run,
) -> Result<(tokio_postgres::Client, shipsafe_pg::ServerInfo), (CoreError, &'static str)> {
    let locked = async {
        let client = crate::connection::open_for_restore(config, env, url).await?;
        let info = server_info(&client, url).await?;
        shipsafe_migrate::history::lock(&client).await?;
        Ok::<_, CoreError>((client, info))
    }
    .await;
    locked.map_err(|e| {
        run.begin("lock");
        run.end("failed", serde_json::json!({ "error": e.to_string() }));
        let outcome = match e {
            CoreError::Blocked(_) => "blocked",
            _ => "failed_nothing_changed",
        };
        (e, outcome)
    })
}

/// Stops a change to a protected environment unless a person confirmed it.
pub fn require_confirmation(
    config: &Config,
    env: &str,
    what: &str,
    confirm: &dyn Confirm,
) -> Result<(), CoreError> {
    if config.environment(env)?.protection() != Protection::Protected {
        return Ok(());
    }
    match confirm.confirm(env, what) {
        Ok(true) => Ok(()),
        Ok(false) => Err(CoreError::Blocked(format!(
            "{env} is protected: {what} needs confirmation. Type the environment name when asked, or pass --confirm {env} when not on a terminal; nothing was changed"
        ))),
        Err(why) => Err(CoreError::Blocked(format!("{why}; nothing was changed"))),
    }
}

/// `backup restore ID --to ENV`: checksum first, then (guarded/protected) a
/// safety backup, then an atomic restore whose checks must pass to commit.
#[allow(clippy::too_many_arguments)]
pub async fn restore(
    config: &Config,
    vars: &dyn VarSource,
    cwd: &Path,
    id: &str,
    to: &str,
    confirm: &dyn Confirm,
    progress: &Arc<dyn Progress>,
) -> Result<shipsafe_state::RunRecord, CoreError> {
    let protection = config.environment(to)?.protection();
    let store = open_store(config, vars)?;
    let manifest = store.manifest(id).await?;
    require_confirmation(
        config,
        to,
        &format!(
            "restoring backup {id} (of {}, {}) over {to}",
            manifest.env, manifest.created_at
        ),
        confirm,
    )?;
    let target = config.database_url(to, vars)?;
    let mut run = Run::start("backup restore", Some(to));
    run.record.backup_id = Some(manifest.id.clone());
    let mut report = RestoreReport {
        backup: manifest.id.clone(),
        target: target.masked(),
        safety_backup: None,
        checks: Vec::new(),
        proof: None,
    };

    // Ends the run before anything changed.
    let stop = |run: Run, outcome: &str, report: &RestoreReport, e: CoreError| {
        run.finish(
            outcome,
            report,
            config.state_dir(),
            cwd,
            vec![manifest.id.clone()],
            serde_json::json!({ "error": e.to_string() }),
        )?;
        Err::<shipsafe_state::RunRecord, _>(e)
    };

    // The environment's lock, as deploys and rollbacks take it: two
    // restores (or a restore and a deploy) never run into each other.
    let (lock, info) = match lock_for_run(config, to, &target, &mut run).await {
        Ok(held) => held,
        Err((e, outcome)) => return stop(run, outcome, &report, e),
    };

    run.begin("checksum");
    progress.stage(&format!("downloading and checking {id}"));
    let archive = match fetch_verified(
        &store,
        &manifest,
        &shipsafe_pg::scratch::temp_dir_for(manifest.raw_bytes),
        Some(bytes_callback(progress, Some(manifest.size_bytes))),
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            run.end("failed", serde_json::json!({ "error": e.to_string() }));
            return stop(run, "failed_nothing_changed", &report, e.into());
        }
    };
    run.end("ok", serde_json::json!({ "checksum": manifest.checksum }));

    let mut backup_ids = vec![manifest.id.clone()];
    if protection == Protection::Open {
        run.skip("backup", "open environment");
    } else {
        run.begin("backup");
        match take_backup(config, vars, to, "pre-restore", progress).await {
            Ok(safety) => {
                run.end(
                    "ok",
                    serde_json::json!({ "backup_id": safety.id, "size_bytes": safety.size_bytes }),
                );
                report.safety_backup = Some(safety.id.clone());
                backup_ids.push(safety.id);
            }
            Err(e) => {
                let e = CoreError::Failed(format!(
                    "the safety backup of {to}, taken before restoring, failed, so nothing was restored: {e}"
                ));
                run.end("failed", serde_json::json!({ "error": e.to_string() }));
                run.finish(
                    "failed_nothing_changed",
                    &report,
                    config.state_dir(),
                    cwd,
                    backup_ids,
                    serde_json::json!({ "error": e.to_string() }),
                )?;
                return Err(e);
            }
        }
    }

    run.begin("restore");
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
            run.end(
                "ok",
                serde_json::json!({ "script_bytes": r.script_bytes, "proof": r.proof }),
            );
            report.proof = Some(r.proof);
            run.record.steps.push(shipsafe_state::StepRecord {
                name: "checks".into(),
                status: "ok".into(),
                duration_ms: r.checks.iter().map(|c| c.duration_ms).sum(),
                detail: serde_json::json!({ "passed": r.checks.len() }),
            });
            report.checks = r.checks;
            // The restore brought the backup's copy of the audit head back.
            crate::anchor::write(config, &lock).await;
            drop(lock);
            Ok(run.finish(
                "restored",
                &report,
                config.state_dir(),
                cwd,
                backup_ids,
                serde_json::json!({}),
            )?)
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
            run.end("failed", serde_json::json!({ "error": e.to_string() }));
            let outcome = match e {
                BackupError::RestoreRolledBack { .. } => "rolled_back",
                BackupError::RestoreNotAtomic { .. } => "rollback_failed",
                _ => "failed_nothing_changed",
            };
            run.finish(
                outcome,
                &report,
                config.state_dir(),
                cwd,
                backup_ids,
                serde_json::json!({ "error": e.to_string() }),
            )?;
            Err(e.into())
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub decisions: Vec<Decision>,
    pub deleted: Vec<String>,
}

/// `backup prune [ENV] [--dry-run]`.
pub async fn prune(
    config: &Config,
    vars: &dyn VarSource,
    cwd: &Path,
    env: Option<&str>,
    dry_run: bool,
) -> Result<PruneReport, CoreError> {
    let store = open_store(config, vars)?;
    let mut all = store.list().await?;
    if let Some(e) = env {
        all.retain(|m| m.env == e);
    }
    let protected = crate::commands::rollback::backups_in_use(config.state_dir(), env)?;
    let decisions = shipsafe_backup::plan(&all, config.file().backups.retention, &protected);
    let mut deleted = Vec::new();
    if !dry_run {
        for d in decisions.iter().filter(|d| !d.keep) {
            store.delete(&d.id).await?;
            deleted.push(d.id.clone());
        }
        if !deleted.is_empty() {
            crate::audit::record_with(
                config.state_dir(),
                cwd,
                "backup prune",
                env,
                "pruned",
                deleted.clone(),
                serde_json::json!({ "kept": decisions.iter().filter(|d| d.keep).count() }),
            )?;
        }
    }
    Ok(PruneReport {
        dry_run,
        decisions,
        deleted,
    })
}
