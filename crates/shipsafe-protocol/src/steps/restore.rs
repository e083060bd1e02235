//! Restoring a backup: into an environment (the way back of a rollback,
//! a clone's target) or into a scratch cluster (`backup verify`, rehearsal
//! clones), always by the one atomic path of `shipsafe-backup`.

use std::path::Path;
use std::sync::Arc;

use shipsafe_backup::{
    AtomicRestore, BackupStore, Manifest, RestoreProof, fetch_verified, restore_atomic,
};
use shipsafe_config::{Config, DbUrl, VarSource};
use shipsafe_pg::{PgBinaries, ScratchCluster, connect, quote_ident, server_info};

use crate::error::CoreError;
use crate::progress::Progress;

/// Fetches `manifest`'s archive (checksum first) and replaces the database
/// at `url` with it in one transaction: `before_checks` then `checks` run
/// inside it, and it commits only if they pass.
pub async fn restore_into(
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

/// What a scratch restore is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScratchUse {
    /// `backup verify`: every entry, as an environment restore.
    Proof,
    /// A rehearsal clone: entries that act on the server around the
    /// database (event triggers, publications, subscriptions) left out.
    Rehearsal,
}

/// A database restored into a scratch cluster.
#[derive(Debug)]
pub struct ScratchRestore {
    pub url: DbUrl,
    pub proof: RestoreProof,
}

/// Restores an archive into a new database of a scratch cluster, named as
/// the source, by the environment restore path (one transaction, owners and
/// grants, rows compared with the archive). The archive's table of contents
/// decides which roles to create (its owners, plus the manifest's and
/// `extra_roles`) and which extensions must be installable (checked before
/// anything is restored).
pub async fn restore_into_scratch(
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

/// Restores the pre-deploy backup `id` over `env` (a rollback). No checks
/// inside: the state before the deploy is what is wanted back, whatever the
/// checks say; they run afterwards and are reported.
pub async fn pre_deploy(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    id: &str,
    progress: &Arc<dyn Progress>,
) -> Result<(), CoreError> {
    let store = crate::store::open_store(config, vars)?;
    let manifest = store.manifest(id).await?;
    progress.stage(&format!("restoring the pre-deploy backup {id}"));
    let url = config.database_url(env, vars)?;
    restore_into(config, &store, &manifest, &url, &[], &[]).await?;
    Ok(())
}
