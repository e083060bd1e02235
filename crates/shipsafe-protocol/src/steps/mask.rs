//! A masked copy of a backup, made where nobody else can read it: the backup
//! is restored into a private scratch cluster, `[mask]` is applied there,
//! and the masked database is dumped into a private, temporary backup store.
//! Restoring that copy into TO is then an ordinary restore: the original
//! values never reach TO's data files, indexes or WAL (masking in TO itself
//! would leave them there as dead row versions and WAL records, which a
//! provider snapshot or physical backup of TO would carry).

use std::sync::Arc;

use shipsafe_backup::{BackupStore, Manifest, StorageSpec, fetch_verified};
use shipsafe_pg::{PrivateTemp, ScratchCluster, ScratchOptions, connect};

use super::restore::{ScratchUse, restore_into_scratch};
use crate::error::CoreError;
use crate::progress::Progress;

/// A masked copy: its store lives as long as this value (a private folder
/// removed on drop).
#[derive(Debug)]
pub struct MaskedCopy {
    pub store: BackupStore,
    pub manifest: Manifest,
    _folder: PrivateTemp,
}

/// Restores `source` (from `store`) into a private scratch cluster, runs the
/// masking `statements` there in one transaction, and dumps the result into
/// a temporary store, named for environment `to`.
pub async fn masked_copy(
    store: &BackupStore,
    source: &Manifest,
    statements: &[String],
    to: &str,
    progress: &Arc<dyn Progress>,
) -> Result<MaskedCopy, CoreError> {
    let opts = ScratchOptions {
        major: source.server_major(),
        size_hint: Some(source.raw_bytes.saturating_mul(3)),
        ..Default::default()
    };
    let starting = tokio::task::spawn_blocking(move || ScratchCluster::start_with(&opts));
    progress.stage(&format!("downloading and checking {}", source.id));
    let temp = shipsafe_pg::scratch::temp_dir_for(source.raw_bytes);
    let archive = fetch_verified(store, source, &temp, None).await?;
    let cluster = starting
        .await
        .map_err(|e| CoreError::Failed(format!("scratch cluster start was interrupted: {e}")))??;
    progress.stage(&format!(
        "restoring {} into a private scratch cluster to mask it",
        source.id
    ));
    let restored = restore_into_scratch(
        &cluster,
        source,
        archive.path(),
        archive.contents(),
        ScratchUse::Proof,
        &[],
    )
    .await?;
    drop(archive);
    progress.stage("masking the private copy");
    let client = connect(&restored.url).await?;
    // Replica mode: no trigger or rule of any table fires (partitions' and
    // inheritance children's own included), so nothing copies an original
    // into another table of the copy.
    let script = format!(
        "begin;\nset local session_replication_role = replica;\n{};\ncommit;",
        statements.join(";\n")
    );
    client.batch_execute(&script).await.map_err(|e| {
        CoreError::Failed(format!(
            "masking failed on the private copy ({}); nothing was changed",
            shipsafe_pg::describe(&e)
        ))
    })?;
    drop(client);
    progress.stage("dumping the masked copy");
    let folder = PrivateTemp::new_in(&temp)?;
    let masked_store = BackupStore::open(&StorageSpec {
        url: folder.path().display().to_string(),
        root: folder.path().to_path_buf(),
        ..Default::default()
    })?;
    let manifest = shipsafe_backup::create(
        &masked_store,
        shipsafe_backup::DumpRequest {
            url: &restored.url,
            env: to,
            reason: "masked-clone",
            compression_level: 1,
            binaries: cluster.binaries(),
            server_version: &source.server_version,
            database: &source.database,
            on_bytes: None,
            tee: None,
            exclude_schemas: &[],
            extensions: source.extensions.clone(),
            roles: source.roles.clone(),
            writes_at_backup: None,
            audit_head: source.audit_head.clone(),
            database_level: source.database_level.clone(),
            database_identity: source.database_identity.clone(),
            checks: source.checks.clone(),
            stop: None,
            pg_options: None,
        },
    )
    .await?;
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .map_err(|e| CoreError::Failed(format!("scratch cluster stop was interrupted: {e}")))??;
    Ok(MaskedCopy {
        store: masked_store,
        manifest,
        _folder: folder,
    })
}
