//! Backup storage: a local folder or S3-compatible object storage, behind
//! one interface (`object_store`).
//!
//! Layout under the storage root: `<id>.dump.zst` (the archive) and
//! `<id>.json` (its manifest). An archive is uploaded as a multipart upload,
//! which is invisible until completed (local: a `#`-suffixed staging file
//! renamed into place), and completed only once `pg_dump` has succeeded. The
//! manifest is written last. So a backup is listed only when complete.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart};

use crate::error::BackupError;
use crate::manifest::Manifest;

pub const ARCHIVE_SUFFIX: &str = ".dump.zst";
pub const MANIFEST_SUFFIX: &str = ".json";

/// Where backups go, from `[backups]`.
#[derive(Debug, Clone, Default)]
pub struct StorageSpec {
    /// `file://PATH`, a plain path, or `s3://bucket/prefix` (resolved).
    pub url: String,
    /// Folder that relative `file://` paths start from.
    pub root: PathBuf,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_allow_http: bool,
}

#[derive(Debug, Clone)]
enum Kind {
    Local(PathBuf),
    S3 { bucket: String },
}

#[derive(Debug, Clone)]
pub struct BackupStore {
    inner: Arc<dyn ObjectStore>,
    prefix: ObjPath,
    kind: Kind,
    display: String,
}

fn retry() -> RetryConfig {
    // Fail within seconds, not minutes, when storage is down: a backup that
    // cannot be written must say so while the person is still watching.
    RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

impl BackupStore {
    pub fn open(spec: &StorageSpec) -> Result<Self, BackupError> {
        let invalid = |reason: String| BackupError::InvalidStorage {
            url: shipsafe_config::mask_secrets(&spec.url),
            reason,
        };
        if let Some(rest) = spec.url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("no bucket: write s3://bucket/prefix".into()));
            }
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry());
            if let Some(e) = &spec.s3_endpoint {
                if e.starts_with("http://") && !spec.s3_allow_http {
                    return Err(invalid(format!(
                        "endpoint {e} is plain HTTP; set backups.s3_allow_http = true if it is a local server"
                    )));
                }
                b = b.with_endpoint(e).with_allow_http(spec.s3_allow_http);
            }
            b = b.with_region(spec.s3_region.clone().unwrap_or_else(|| "us-east-1".into()));
            let store = b.build().map_err(|e| invalid(e.to_string()))?;
            return Ok(Self {
                inner: Arc::new(store),
                prefix: ObjPath::from(prefix.trim_matches('/')),
                kind: Kind::S3 {
                    bucket: bucket.to_string(),
                },
                display: format!("s3://{bucket}/{}", prefix.trim_matches('/')),
            });
        }
        if spec.url.contains("://") && !spec.url.starts_with("file://") {
            return Err(invalid("use file://PATH or s3://bucket/prefix".into()));
        }
        let raw = spec.url.strip_prefix("file://").unwrap_or(&spec.url);
        if raw.is_empty() {
            return Err(invalid("empty path".into()));
        }
        let dir = if Path::new(raw).is_absolute() {
            PathBuf::from(raw)
        } else {
            spec.root.join(raw)
        };
        std::fs::create_dir_all(&dir).map_err(|e| BackupError::Storage {
            url: format!("file://{}", dir.display()),
            message: format!("cannot create the backup folder: {e}"),
        })?;
        let dir = dir.canonicalize().unwrap_or(dir);
        let store = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| invalid(e.to_string()))?
            .with_automatic_cleanup(true)
            .with_fsync(true);
        Ok(Self {
            inner: Arc::new(store),
            prefix: ObjPath::default(),
            display: format!("file://{}", dir.display()),
            kind: Kind::Local(dir),
        })
    }

    /// The storage URL, for messages (never holds credentials).
    pub fn url(&self) -> &str {
        &self.display
    }

    fn path(&self, name: &str) -> ObjPath {
        self.prefix.clone().join(name)
    }

    fn err(&self, e: object_store::Error) -> BackupError {
        BackupError::Storage {
            url: self.display.clone(),
            message: shipsafe_config::mask_secrets(&describe(&e)),
        }
    }

    /// Storage URL of an archive.
    pub fn archive_location(&self, id: &str) -> String {
        match &self.kind {
            Kind::Local(dir) => format!(
                "file://{}",
                dir.join(format!("{id}{ARCHIVE_SUFFIX}")).display()
            ),
            Kind::S3 { bucket } => format!(
                "s3://{bucket}/{}",
                self.path(&format!("{id}{ARCHIVE_SUFFIX}"))
            ),
        }
    }

    /// Local path of an archive, when storage is a folder.
    pub fn local_archive_path(&self, id: &str) -> Option<PathBuf> {
        match &self.kind {
            Kind::Local(dir) => Some(dir.join(format!("{id}{ARCHIVE_SUFFIX}"))),
            Kind::S3 { .. } => None,
        }
    }

    /// Starts the (invisible until finished) upload of an archive.
    pub async fn start_archive(&self, id: &str) -> Result<WriteMultipart, BackupError> {
        let up = self
            .inner
            .put_multipart(&self.path(&format!("{id}{ARCHIVE_SUFFIX}")))
            .await
            .map_err(|e| self.err(e))?;
        Ok(WriteMultipart::new_with_chunk_size(up, 8 << 20))
    }

    pub async fn put_manifest(&self, m: &Manifest) -> Result<(), BackupError> {
        let body = serde_json::to_vec_pretty(m).map_err(|e| BackupError::Manifest {
            id: m.id.clone(),
            message: e.to_string(),
        })?;
        self.inner
            .put(
                &self.path(&format!("{}{MANIFEST_SUFFIX}", m.id)),
                PutPayload::from(body),
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub async fn manifest(&self, id: &str) -> Result<Manifest, BackupError> {
        if id.is_empty() || id.contains('/') {
            return Err(BackupError::NotFound {
                id: id.to_string(),
                storage: self.display.clone(),
            });
        }
        let got = match self
            .inner
            .get(&self.path(&format!("{id}{MANIFEST_SUFFIX}")))
            .await
        {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(BackupError::NotFound {
                    id: id.to_string(),
                    storage: self.display.clone(),
                });
            }
            Err(e) => return Err(self.err(e)),
        };
        let bytes = got.bytes().await.map_err(|e| self.err(e))?;
        serde_json::from_slice(&bytes).map_err(|e| BackupError::Manifest {
            id: id.to_string(),
            message: format!("unreadable: {e}"),
        })
    }

    /// Every manifest in storage, newest first. Unreadable manifests are
    /// skipped with a warning rather than hiding every other backup.
    pub async fn list(&self) -> Result<Vec<Manifest>, BackupError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let mut entries = self.inner.list(prefix);
        let mut ids = Vec::new();
        while let Some(meta) = entries.next().await {
            let meta = meta.map_err(|e| self.err(e))?;
            if let Some(name) = meta.location.filename()
                && let Some(id) = name.strip_suffix(MANIFEST_SUFFIX)
                && meta
                    .location
                    .prefix_match(&self.prefix)
                    .is_some_and(|mut p| p.next().is_some() && p.next().is_none())
            {
                ids.push(id.to_string());
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.manifest(&id).await {
                Ok(m) => out.push(m),
                Err(e @ BackupError::Manifest { .. }) => tracing::warn!("{e}"),
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(out)
    }

    /// The archive's bytes as a stream, with its size.
    pub async fn archive(
        &self,
        id: &str,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, BackupError>>), BackupError> {
        let got = match self
            .inner
            .get(&self.path(&format!("{id}{ARCHIVE_SUFFIX}")))
            .await
        {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(BackupError::Corrupt {
                    id: id.to_string(),
                    message: format!("its archive {} is missing", self.archive_location(id)),
                });
            }
            Err(e) => return Err(self.err(e)),
        };
        let size = got.meta.size;
        let url = self.display.clone();
        let stream = got
            .into_stream()
            .map(move |r| {
                r.map_err(|e| BackupError::Storage {
                    url: url.clone(),
                    message: describe(&e),
                })
            })
            .boxed();
        Ok((size, stream))
    }

    /// Reads the stored archive once and returns its `blake3:<hex>` and
    /// size, without decompressing it: proof the bytes are still those the
    /// manifest names.
    pub async fn rehash(&self, id: &str) -> Result<(String, u64), BackupError> {
        let (_, mut stream) = self.archive(id).await?;
        let mut hasher = blake3::Hasher::new();
        let mut read = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            read += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok((format!("blake3:{}", hasher.finalize().to_hex()), read))
    }

    /// Deletes a backup: manifest first, so a half-deleted backup is never
    /// listed.
    pub async fn delete(&self, id: &str) -> Result<(), BackupError> {
        for name in [
            format!("{id}{MANIFEST_SUFFIX}"),
            format!("{id}{ARCHIVE_SUFFIX}"),
        ] {
            match self.inner.delete(&self.path(&name)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err(e)),
            }
        }
        Ok(())
    }

    /// Names of objects that are not a complete backup's archive or manifest
    /// (interrupted uploads), for diagnostics and tests.
    pub async fn stray_objects(&self) -> Result<Vec<String>, BackupError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let mut names = Vec::new();
        let mut entries = self.inner.list(prefix);
        while let Some(meta) = entries.next().await {
            let meta = meta.map_err(|e| self.err(e))?;
            names.push(meta.location.filename().unwrap_or_default().to_string());
        }
        let manifests: Vec<String> = names
            .iter()
            .filter_map(|n| n.strip_suffix(MANIFEST_SUFFIX).map(str::to_string))
            .collect();
        let mut stray: Vec<String> = names
            .into_iter()
            .filter(|n| {
                let id = n
                    .strip_suffix(MANIFEST_SUFFIX)
                    .or_else(|| n.strip_suffix(ARCHIVE_SUFFIX));
                !id.is_some_and(|id| manifests.iter().any(|m| m == id))
            })
            .collect();
        // Local staging files of uploads in progress are not listed by
        // object_store; look for them directly.
        if let Kind::Local(dir) = &self.kind
            && let Ok(rd) = std::fs::read_dir(dir)
        {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.contains('#') {
                    stray.push(n);
                }
            }
        }
        stray.sort();
        Ok(stray)
    }
    /// Leftovers of backups that never finished (killed or cut off before
    /// their manifest): local `#N` staging files of an archive or a
    /// manifest, and archives without a manifest, untouched for
    /// `older_than` (a live backup's files are touched while it runs, see
    /// [`BackupStore::touch_upload`]). Only files directly in the storage
    /// folder, named as shipsafe names backups, of environment `env` when
    /// given, and never through a symlink. Returns each name and its size;
    /// `dry_run` removes nothing. S3 keeps an interrupted multipart upload's
    /// parts out of any listing: a bucket lifecycle rule
    /// (AbortIncompleteMultipartUpload) removes them.
    pub async fn stale_uploads(
        &self,
        older_than: Duration,
        env: Option<&str>,
        dry_run: bool,
    ) -> Result<Vec<(String, u64)>, BackupError> {
        let mut out = Vec::new();
        let now = std::time::SystemTime::now();
        let old =
            |t: std::time::SystemTime| now.duration_since(t).is_ok_and(|age| age >= older_than);
        let ours = |id: &str| {
            crate::manifest::env_of_id(id).is_some_and(|e| env.is_none_or(|want| want == e))
        };
        if let Kind::Local(dir) = &self.kind
            && let Ok(rd) = std::fs::read_dir(dir)
        {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some((base, n)) = name.rsplit_once('#') else {
                    continue;
                };
                let id = base
                    .strip_suffix(ARCHIVE_SUFFIX)
                    .or_else(|| base.strip_suffix(MANIFEST_SUFFIX));
                let staging =
                    id.is_some_and(ours) && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
                // symlink_metadata: a link is never followed nor removed.
                let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                    continue;
                };
                if staging && meta.file_type().is_file() && meta.modified().is_ok_and(old) {
                    if !dry_run {
                        std::fs::remove_file(e.path()).map_err(|source| {
                            BackupError::io("removing an unfinished upload", e.path(), source)
                        })?;
                    }
                    out.push((name, meta.len()));
                }
            }
        }
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let depth = self.prefix.parts().count() + 1;
        let mut metas = Vec::new();
        let mut entries = self.inner.list(prefix);
        while let Some(meta) = entries.next().await {
            let meta = meta.map_err(|e| self.err(e))?;
            // Directly in the storage folder: nothing in a subfolder is ours.
            if meta.location.parts().count() == depth {
                metas.push(meta);
            }
        }
        let names: Vec<String> = metas
            .iter()
            .map(|m| m.location.filename().unwrap_or_default().to_string())
            .collect();
        for (meta, name) in metas.iter().zip(&names) {
            let Some(id) = name.strip_suffix(ARCHIVE_SUFFIX) else {
                continue;
            };
            if !ours(id) {
                continue;
            }
            if let Kind::Local(dir) = &self.kind
                && std::fs::symlink_metadata(dir.join(name)).is_ok_and(|m| !m.file_type().is_file())
            {
                continue;
            }
            let has_manifest = names.iter().any(|n| *n == format!("{id}{MANIFEST_SUFFIX}"));
            if !has_manifest && old(meta.last_modified.into()) {
                if !dry_run {
                    match self.inner.delete(&meta.location).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(self.err(e)),
                    }
                }
                out.push((name.clone(), meta.size));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Marks backup `id`'s unfinished local upload as alive (its staging
    /// files' modification time set to now), so that `stale_uploads` never
    /// takes a backup that waits long (pg_dump behind a lock) for abandoned.
    pub fn touch_upload(&self, id: &str) {
        let Kind::Local(dir) = &self.kind else { return };
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let prefix = format!("{id}{ARCHIVE_SUFFIX}#");
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix)
                && let Ok(f) = std::fs::File::options().append(true).open(e.path())
            {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
        }
    }
}

/// An object_store error with its sources (the root cause is often deep).
fn describe(e: &object_store::Error) -> String {
    shipsafe_pg::error_chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_uploads_staging_file_is_touched_and_only_its_own() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = BackupStore::open(&StorageSpec {
            url: dir.path().display().to_string(),
            root: dir.path().to_path_buf(),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let old = std::time::SystemTime::now() - Duration::from_secs(3 * 24 * 3600);
        let mine = dir.path().join("prod-20261101T000000Z-abcd.dump.zst#3");
        let other = dir.path().join("prod-20261101T000000Z-ef01.dump.zst#3");
        for f in [&mine, &other] {
            std::fs::write(f, b"x").unwrap_or_else(|e| panic!("{e}"));
            let h = std::fs::File::options()
                .append(true)
                .open(f)
                .unwrap_or_else(|e| panic!("{e}"));
            h.set_modified(old).unwrap_or_else(|e| panic!("{e}"));
        }
        store.touch_upload("prod-20261101T000000Z-abcd");
        let age = |f: &std::path::Path| {
            std::fs::metadata(f)
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().unwrap_or_default())
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert!(age(&mine) < Duration::from_secs(60));
        assert!(age(&other) > Duration::from_secs(24 * 3600));
    }

    #[test]
    fn backup_ids_name_their_environment_exactly() {
        use crate::manifest::env_of_id;
        assert_eq!(env_of_id("prod-eu-20261101T000000Z-abcd"), Some("prod-eu"));
        assert_eq!(env_of_id("prod-20261101T000000Z-abcd"), Some("prod"));
        assert_eq!(env_of_id("pre-upgrade"), None);
        assert_eq!(env_of_id("prod-20261101T000000Z-zzzz"), None);
        assert_eq!(env_of_id("-20261101T000000Z-abcd"), None);
    }
}
