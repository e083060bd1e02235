//! The backup store `[backups]` names, and its catalog.

use shipsafe_backup::{BackupStore, Manifest, StorageSpec};
use shipsafe_config::{Config, VarSource};

use crate::error::CoreError;

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

/// `backup list [ENV]`: newest first, straight from storage.
pub fn list<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    env: Option<&'a str>,
) -> crate::Task<'a, Result<Vec<Manifest>, CoreError>> {
    Box::pin(async move {
        let store = open_store(config, vars)?;
        let mut all = store.list().await?;
        if let Some(e) = env {
            all.retain(|m| m.env == e);
        }
        Ok(all)
    })
}
