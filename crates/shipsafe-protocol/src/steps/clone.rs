//! Step 3 and 4's copy: the backup made for a rehearsal, and the clone
//! made from it, from `[rehearsal] clone`:
//! - `scratch`: a local cluster of the server's major version, restored
//!   from pg_dump's own output, written to a file beside the compressed
//!   backup as it streams; the cluster starts while the dump runs. A clean
//!   restore and passing checks mark the backup verified.
//! - `env:NAME`: the backup is restored into environment NAME (after a
//!   safety backup when NAME is guarded); NAME must not be protected.
//! - `command:SCRIPT`: the script's last output line is a connection URL
//!   (a Neon branch, a snapshot). An empty database gets the backup
//!   restored into it; one with tables is used as it is.

use std::sync::Arc;
use std::time::Instant;

use shipsafe_backup::{Manifest, Verification};
use shipsafe_config::{CloneSource, Config, DbUrl, Protection, VarSource};
use shipsafe_pg::{CheckOutcome, ScratchCluster, ScratchOptions, connect, run_checks, server_info};

use crate::error::CoreError;
use crate::pipeline::Failed;
use crate::progress::Progress;

/// A database to rehearse on, and what keeps it alive.
#[derive(Debug)]
pub struct CloneDb {
    pub url: DbUrl,
    pub label: String,
    cluster: Option<ScratchCluster>,
}

impl CloneDb {
    /// Stops a scratch cluster (other clones are left as they are).
    pub async fn dispose(self) {
        if let Some(c) = self.cluster {
            let _ = tokio::task::spawn_blocking(move || c.stop()).await;
        }
    }
}

/// What [`backup_for_clone`] hands to [`make_clone`].
#[derive(Debug)]
pub struct PendingClone {
    source: CloneSource,
    starting: Option<tokio::task::JoinHandle<Result<ScratchCluster, shipsafe_pg::PgError>>>,
    dump_dir: Option<shipsafe_pg::PrivateTemp>,
    roles: Vec<String>,
}

impl PendingClone {
    fn dump_path(&self) -> Option<std::path::PathBuf> {
        self.dump_dir.as_ref().map(|d| d.path().join("dump"))
    }
}

fn clone_label(source: &CloneSource) -> String {
    match source {
        CloneSource::Scratch => "scratch".into(),
        CloneSource::Env(e) => format!("env:{e}"),
        CloneSource::Command(_) => "command".into(),
    }
}

/// Step 3 for a rehearsed change: the backup (reason `reason`), and for a
/// scratch clone, the cluster started meanwhile and pg_dump's raw output
/// kept for the restore. Records the `backup` step in `run`.
pub async fn backup_for_clone(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    reason: &str,
    progress: &Arc<dyn Progress>,
) -> Result<((Manifest, PendingClone), serde_json::Value), Failed> {
    let source = config.file().rehearsal.clone_source();
    if let CloneSource::Env(other) = &source {
        if other == env {
            return Err(Failed::nothing_changed(CoreError::Usage(format!(
                "[rehearsal] clone = \"env:{other}\" names the environment being changed; a rehearsal needs a copy: use \"scratch\" or another environment"
            ))));
        }
        let protection = config
            .environment(other)
            .map_err(|e| Failed::nothing_changed(e.into()))?
            .protection();
        if protection == Protection::Protected {
            return Err(Failed::nothing_changed(CoreError::Blocked(format!(
                "[rehearsal] clone = \"env:{other}\": {other} is protected, and a rehearsal replaces the clone's data; use \"scratch\" or an open or guarded environment; nothing was changed"
            ))));
        }
    }
    let mut pending = PendingClone {
        source: source.clone(),
        starting: None,
        dump_dir: None,
        roles: Vec::new(),
    };
    if source == CloneSource::Scratch {
        let started = start_scratch(config, vars, env, &mut pending).await;
        started.map_err(Failed::nothing_changed)?;
    }
    let tee = pending.dump_path();
    let result =
        super::backup::take_backup_teed(config, vars, env, reason, tee.as_deref(), progress).await;
    match result {
        Ok(m) => {
            let detail = serde_json::json!({ "backup_id": m.id, "size_bytes": m.size_bytes, "raw_bytes": m.raw_bytes });
            Ok(((m, pending), detail))
        }
        Err(e) => {
            if let Some(s) = pending.starting.take()
                && let Ok(Ok(c)) = s.await
            {
                let _ = tokio::task::spawn_blocking(move || c.stop()).await;
            }
            Err(Failed::nothing_changed(e))
        }
    }
}

/// A scratch clone: the cluster starts while the backup runs, with the
/// source's roles (cluster-wide, so owners and grants restore).
async fn start_scratch(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    pending: &mut PendingClone,
) -> Result<(), CoreError> {
    {
        let url = config.database_url(env, vars)?;
        let client =
            crate::connection::open(config, env, &url, crate::connection::Access::Read).await?;
        let info = server_info(&client, &url).await?;
        pending.roles = client
            .query(
                "select rolname::text from pg_roles where rolname !~ '^pg_' order by 1",
                &[],
            )
            .await
            .map(|rows| rows.iter().map(|r| r.get(0)).collect())
            .unwrap_or_default();
        drop(client);
        let size = info.size_bytes.max(0) as u64;
        let dir = shipsafe_pg::PrivateTemp::new_in(&shipsafe_pg::scratch::temp_dir_for(size))?;
        pending.dump_dir = Some(dir);
        let opts = ScratchOptions {
            major: Some(info.major),
            size_hint: Some(size.saturating_mul(2)),
            ..Default::default()
        };
        pending.starting = Some(tokio::task::spawn_blocking(move || {
            ScratchCluster::start_with(&opts)
        }));
    }
    Ok(())
}

/// Makes the clone from the backup. For scratch and env clones a restore
/// that succeeds and whose checks pass is recorded in the backup's
/// manifest as a verification.
pub async fn make_clone(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    manifest: &mut Manifest,
    mut pending: PendingClone,
    progress: &Arc<dyn Progress>,
) -> Result<(CloneDb, Vec<CheckOutcome>), CoreError> {
    let started = Instant::now();
    let label = clone_label(&pending.source);
    let (clone, restored, proof) = match pending.source.clone() {
        CloneSource::Scratch => {
            progress.stage("restoring the backup into a scratch clone");
            let starting = pending
                .starting
                .take()
                .ok_or_else(|| CoreError::Failed("the scratch cluster was not started".into()))?;
            let cluster = starting.await.map_err(|e| {
                CoreError::Failed(format!("scratch cluster start was interrupted: {e}"))
            })??;
            let dump = pending
                .dump_path()
                .ok_or_else(|| CoreError::Failed("no copy of the dump for the clone".into()))?;
            // Roles are cluster-wide: the source's roles are created too, so
            // owners and grants restore and migrations that grant to them work.
            let restored = super::restore::restore_into_scratch(
                &cluster,
                manifest,
                &dump,
                manifest.contents.as_ref(),
                super::restore::ScratchUse::Rehearsal,
                &pending.roles,
            )
            .await?;
            drop(pending.dump_dir.take());
            (
                CloneDb {
                    url: restored.url,
                    label: label.clone(),
                    cluster: Some(cluster),
                },
                true,
                Some(restored.proof),
            )
        }
        CloneSource::Env(other) => {
            let url = config.database_url(&other, vars)?;
            if config.environment(&other)?.protection() != Protection::Open {
                progress.stage(&format!(
                    "safety backup of {other} before it becomes the clone"
                ));
                super::backup::take_backup(config, vars, &other, "pre-restore", progress).await?;
            }
            progress.stage(&format!("restoring the backup into {other}"));
            let proof = restore_into(config, vars, manifest, &url).await?;
            (
                CloneDb {
                    url,
                    label: label.clone(),
                    cluster: None,
                },
                true,
                Some(proof),
            )
        }
        CloneSource::Command(script) => {
            progress.stage("asking the clone command for a database");
            let url = clone_from_command(config, &script, env, &manifest.id).await?;
            let client = connect(&url).await?;
            let empty: bool = client
                .query_one(
                    "select not exists (select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace \
                      where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_toast%' \
                        and c.relkind in ('r','p'))",
                    &[],
                )
                .await
                .map(|r| r.get(0))
                .map_err(|e| {
                    CoreError::Failed(format!(
                        "cannot read the clone: {}",
                        shipsafe_pg::describe(&e)
                    ))
                })?;
            drop(client);
            let proof = if empty {
                progress.stage("restoring the backup into the clone");
                Some(restore_into(config, vars, manifest, &url).await?)
            } else {
                None
            };
            (
                CloneDb {
                    url,
                    label: label.clone(),
                    cluster: None,
                },
                empty,
                proof,
            )
        }
    };
    let client = connect(&clone.url).await?;
    let checks = run_checks(&client, &config.file().checks, false).await;
    drop(client);
    if restored {
        let failed = checks.iter().filter(|c| !c.ok).count() as u32;
        let secs = started.elapsed().as_secs_f64();
        manifest.verifications.push(Verification {
            at: shipsafe_state::now_rfc3339(),
            ok: failed == 0,
            restore_seconds: (secs * 1000.0).round() / 1000.0,
            checks_passed: checks.len() as u32 - failed,
            checks_failed: failed,
            error: (failed > 0)
                .then(|| format!("{failed} check(s) failed on the rehearsal clone ({label})")),
            method: Some(format!("rehearsal clone ({label})")),
            proof,
        });
        let store = crate::store::open_store(config, vars)?;
        store.put_manifest(manifest).await?;
    }
    Ok((clone, checks))
}

async fn restore_into(
    config: &Config,
    vars: &dyn VarSource,
    manifest: &Manifest,
    url: &DbUrl,
) -> Result<shipsafe_backup::RestoreProof, CoreError> {
    let store = crate::store::open_store(config, vars)?;
    let report = super::restore::restore_into(config, &store, manifest, url, &[], &[]).await?;
    Ok(report.proof)
}

/// Runs the clone command; its last non-empty output line is the URL.
async fn clone_from_command(
    config: &Config,
    script: &str,
    env: &str,
    backup_id: &str,
) -> Result<DbUrl, CoreError> {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(crate::files::with_user_umask(script))
        .current_dir(config.root())
        .env("SHIPSAFE_ENV", env)
        .env("SHIPSAFE_BACKUP_ID", backup_id)
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| CoreError::io(format!("cannot run the clone command `{script}`"), e))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(CoreError::Failed(format!(
            "the clone command `{script}` failed ({}): {}",
            out.status,
            shipsafe_config::mask_secrets(String::from_utf8_lossy(&out.stderr).trim())
        )));
    }
    let line = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if !(line.starts_with("postgres://") || line.starts_with("postgresql://")) {
        return Err(CoreError::Failed(format!(
            "the clone command `{script}` must print a postgres:// URL as its last line; it printed {:?}",
            shipsafe_config::mask_secrets(line)
        )));
    }
    Ok(DbUrl::new(line))
}
