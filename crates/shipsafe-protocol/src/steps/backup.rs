//! Step 3, backup: a fresh, checksummed backup of the environment before
//! it changes (guarded and protected environments; there is no way to skip
//! it), optionally teed to a file a rehearsal clone is restored from.

use std::path::Path;
use std::sync::Arc;

use shipsafe_backup::{DumpRequest, Manifest};
use shipsafe_config::{Config, Protection, VarSource};
use shipsafe_pg::{PgBinaries, server_info};

use crate::error::CoreError;
use crate::pipeline::Failed;
use crate::progress::Progress;

/// Sum of rows written to user tables since statistics began: recorded with
/// a backup, compared later to say what restoring it would discard.
pub const WRITES_SQL: &str =
    "select coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::int8 from pg_stat_user_tables";

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
    let store = crate::store::open_store(config, vars)?;
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
        .query_typed(WRITES_SQL, &[])
        .await
        .ok()
        .and_then(|rows| rows.first().map(|r| r.get(0)));
    let database_identity = shipsafe_pg::database_identity(&client).await;
    let database_level = shipsafe_backup::dblevel::read(&client)
        .await
        .unwrap_or_default();
    // pg_dump's session should end with pg_dump, not wait on with its locks.
    let pg_options = crate::connection::dead_client_check(&client, &url).await;
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
            on_bytes: Some(crate::progress::bytes_callback(
                progress,
                Some(info.size_bytes.max(0) as u64),
            )),
            tee,
            exclude_schemas: &config.file().backups.exclude_schemas,
            extensions,
            roles,
            writes_at_backup,
            database_level,
            database_identity,
            stop: Some(crate::pipeline::stop_signal()),
            pg_options,
            checks: Some(
                config
                    .checks_for(env)
                    .iter()
                    .map(shipsafe_backup::RecordedCheck::from)
                    .collect(),
            ),
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

/// The `backup` step: a backup for `reason`. Returns the manifest.
pub async fn step(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    reason: &str,
    progress: &Arc<dyn Progress>,
) -> Result<(Manifest, serde_json::Value), Failed> {
    match take_backup(config, vars, env, reason, progress).await {
        Ok(m) => {
            let detail = serde_json::json!({ "backup_id": m.id, "size_bytes": m.size_bytes });
            Ok((m, detail))
        }
        Err(e) => Err(Failed::nothing_changed(e)),
    }
}

/// Whether a deploy of an environment so protected takes a backup first.
pub fn required(protection: Protection) -> bool {
    protection != Protection::Open
}

/// The `backup` step recorded straight into `run` (commands that are not
/// run by a [`crate::pipeline::Pipeline`]). Returns the backup's id, also
/// recorded as the run's backup.
pub async fn recorded(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    reason: &str,
    run: &mut crate::runs::Run,
    progress: &Arc<dyn Progress>,
) -> Result<String, CoreError> {
    run.begin("backup");
    match step(config, vars, env, reason, progress).await {
        Ok((m, detail)) => {
            run.end("ok", detail);
            run.record.backup_id = Some(m.id.clone());
            Ok(m.id)
        }
        Err(f) => {
            run.end("failed", f.detail);
            Err(f.stop.error)
        }
    }
}
