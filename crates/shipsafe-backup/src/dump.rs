//! `pg_dump -Fc -Z0 -E UTF8` → zstd (multithreaded) → BLAKE3 → storage, in
//! one pass.
//!
//! The upload is committed only after `pg_dump` exited successfully and the
//! compressor finished; any failure aborts it, so a partial archive is never
//! published. The manifest is written last.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use shipsafe_config::DbUrl;
use shipsafe_pg::PgBinaries;

use crate::error::BackupError;
use crate::manifest::{Manifest, Status, new_id};
use crate::store::BackupStore;

/// Called with the number of uncompressed bytes read so far.
pub type OnBytes = Arc<dyn Fn(u64) + Send + Sync>;

pub struct DumpRequest<'a> {
    pub url: &'a DbUrl,
    pub env: &'a str,
    pub reason: &'a str,
    pub compression_level: i32,
    /// `pg_dump` of the server's major version (or newer).
    pub binaries: &'a PgBinaries,
    pub server_version: &'a str,
    pub database: &'a str,
    pub on_bytes: Option<OnBytes>,
    /// Also write pg_dump's uncompressed output to this file, for a clone
    /// restored from the very bytes the backup was made of.
    pub tee: Option<&'a std::path::Path>,
    /// `pg_dump --exclude-schema` patterns.
    pub exclude_schemas: &'a [String],
    /// Recorded in the manifest (see [`Manifest::extensions`]).
    pub extensions: Vec<String>,
    pub roles: Vec<String>,
    pub writes_at_backup: Option<i64>,
    pub audit_head: Option<crate::manifest::AuditHead>,
    /// Recorded in the manifest (see [`Manifest::database_level`]).
    pub database_level: Vec<crate::dblevel::DatabaseProperty>,
    /// The environment's `[[checks]]` now (see [`Manifest::checks`]).
    pub checks: Option<Vec<crate::manifest::RecordedCheck>>,
    /// Recorded in the manifest (see [`Manifest::database_identity`]).
    pub database_identity: Option<String>,
    /// Turns true when the backup is to stop (Ctrl-C): pg_dump is ended and
    /// nothing is stored. Once pg_dump has finished, the backup is
    /// completed and published whatever this says.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// `PGOPTIONS` added for pg_dump (the dead-client check, so its session
    /// ends when it is killed instead of waiting on with its locks).
    pub pg_options: Option<String>,
}

impl std::fmt::Debug for DumpRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpRequest")
            .field("url", self.url)
            .field("env", &self.env)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

/// Command for a libpq program talking to `url`: the connection (password and
/// TLS settings included) goes in the environment, never on the command line
/// where `ps` shows it.
pub fn libpq_command(program: std::path::PathBuf, url: &DbUrl) -> Result<Command, BackupError> {
    let child = shipsafe_pg::LibpqChild::for_url(url)?;
    let mut cmd = Command::new(program);
    child.apply(&mut cmd);
    // A group of its own: a Ctrl-C at the terminal is shipsafe's to handle,
    // not a `pg_dump: terminated by user` that reads as a failed backup.
    std::os::unix::process::CommandExt::process_group(cmd.stdin(Stdio::null()), 0);
    Ok(cmd)
}

/// Buffers compressed output, hashes it and hands it to the uploader.
struct ChannelSink {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    hasher: blake3::Hasher,
    bytes: u64,
}

const SEND_CHUNK: usize = 1 << 20;

impl ChannelSink {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(SEND_CHUNK),
        ));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl Write for ChannelSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= SEND_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

struct Compressed {
    raw_bytes: u64,
    size_bytes: u64,
    checksum: String,
    contents: Result<crate::archive::ArchiveContents, String>,
}

/// Takes a backup and publishes it. On failure nothing is published; a
/// manifest with status `failed` and the reason is written when storage
/// allows, so the attempt is on record.
pub async fn create(store: &BackupStore, req: DumpRequest<'_>) -> Result<Manifest, BackupError> {
    let started = jiff::Timestamp::now();
    let id = new_id(req.env, started);
    let mut manifest = Manifest {
        id: id.clone(),
        env: req.env.to_string(),
        database: req.database.to_string(),
        reason: req.reason.to_string(),
        status: Status::Failed,
        created_at: rfc3339(started),
        finished_at: String::new(),
        raw_bytes: 0,
        size_bytes: 0,
        checksum: String::new(),
        location: store.archive_location(&id),
        server_version: req.server_version.to_string(),
        pg_dump_version: req.binaries.version().to_string(),
        extensions: req.extensions.clone(),
        roles: req.roles.clone(),
        writes_at_backup: req.writes_at_backup,
        audit_head: req.audit_head.clone(),
        excluded_schemas: req.exclude_schemas.to_vec(),
        contents: None,
        database_level: req.database_level.clone(),
        database_identity: req.database_identity.clone(),
        checks: req.checks.clone(),
        verifications: Vec::new(),
        error: None,
    };
    match run(store, &req, &id).await {
        Ok(c) => {
            manifest.status = Status::Complete;
            manifest.raw_bytes = c.raw_bytes;
            manifest.size_bytes = c.size_bytes;
            manifest.checksum = format!("blake3:{}", c.checksum);
            match c.contents {
                Ok(contents) => manifest.contents = Some(contents),
                // The archive is what pg_restore reads; not understanding its
                // layout only costs the row counts.
                Err(why) => tracing::warn!("backup {id}: its contents were not read: {why}"),
            }
            manifest.finished_at = rfc3339(jiff::Timestamp::now());
            if let Err(e) = store.put_manifest(&manifest).await {
                // Without its manifest the archive is not a backup; remove it.
                let _ = store.delete(&id).await;
                return Err(e);
            }
            Ok(manifest)
        }
        // Stopped by the person: nothing to record (the audit log says it).
        Err(BackupError::Interrupted) => Err(BackupError::Interrupted),
        Err(e) => {
            manifest.finished_at = rfc3339(jiff::Timestamp::now());
            manifest.error = Some(e.to_string());
            if let Err(m) = store.put_manifest(&manifest).await {
                tracing::debug!("could not record the failed backup {id}: {m}");
            }
            Err(e)
        }
    }
}

pub(crate) fn rfc3339(t: jiff::Timestamp) -> String {
    t.round(jiff::Unit::Millisecond)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_else(|_| t.to_string())
}

async fn run(
    store: &BackupStore,
    req: &DumpRequest<'_>,
    id: &str,
) -> Result<Compressed, BackupError> {
    let mut upload = store.start_archive(id).await?;
    let mut cmd = libpq_command(req.binaries.path("pg_dump"), req.url)?;
    // UTF-8 whatever the database's encoding: a restore sends the text on
    // shipsafe's connection, which speaks UTF-8, and the server converts it
    // into the target's encoding.
    cmd.args(["--format=custom", "-Z0", "--encoding=UTF8"]);
    for s in req.exclude_schemas {
        cmd.arg(format!("--exclude-schema={s}"));
    }
    if let Some(options) = req.pg_options.as_deref().and_then(|o| {
        shipsafe_pg::child::pgoptions_with(&std::env::var("PGOPTIONS").unwrap_or_default(), o)
    }) {
        cmd.env("PGOPTIONS", options);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = upload.abort().await;
            return Err(BackupError::io(
                "cannot run pg_dump",
                req.binaries.path("pg_dump"),
                e,
            ));
        }
    };
    // A dropped backup (a deploy's Ctrl-C cancels its backup step) must not
    // leave pg_dump running: its reader threads would keep the process from
    // ending.
    let mut ends_dump = EndOnDrop(Some(nix::unistd::Pid::from_raw(child.id() as i32)));
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        let _ = upload.abort().await;
        return Err(BackupError::Dump {
            status: "no output pipe".into(),
            stderr: String::new(),
        });
    };
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let level = req.compression_level;
    let on_bytes = req.on_bytes.clone();
    let mut tee = match req.tee {
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => Some(std::io::BufWriter::with_capacity(1 << 20, f)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = upload.abort().await;
                return Err(BackupError::io("cannot write the copy for the clone", p, e));
            }
        },
        None => None,
    };
    let compressor = tokio::task::spawn_blocking(move || -> std::io::Result<Compressed> {
        let sink = ChannelSink {
            tx,
            buf: Vec::with_capacity(SEND_CHUNK),
            hasher: blake3::Hasher::new(),
            bytes: 0,
        };
        let mut enc = zstd::stream::write::Encoder::new(sink, level)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        enc.multithread(threads)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut raw = 0u64;
        let mut scanner = crate::archive::ArchiveScanner::new();
        loop {
            let n = stdout.read(&mut buf)?;
            if n == 0 {
                break;
            }
            raw += n as u64;
            scanner.feed(&buf[..n]);
            enc.write_all(&buf[..n])?;
            if let Some(t) = &mut tee {
                t.write_all(&buf[..n])?;
            }
            if let Some(f) = &on_bytes {
                f(raw);
            }
        }
        let mut sink = enc.finish()?;
        sink.flush()?;
        if let Some(t) = tee {
            t.into_inner().map_err(|e| e.into_error())?;
        }
        Ok(Compressed {
            raw_bytes: raw,
            size_bytes: sink.bytes,
            checksum: sink.hasher.finalize().to_hex().to_string(),
            contents: scanner.finish(),
        })
    });

    let mut upload_err = None;
    // A backup that waits long (pg_dump behind a lock) still touches its
    // staging file, so prune never takes it for abandoned.
    let mut alive = tokio::time::interval(std::time::Duration::from_secs(600));
    alive.tick().await;
    let mut stop = req.stop.clone();
    let mut stopped = false;
    loop {
        let chunk = tokio::select! {
            chunk = rx.recv() => chunk,
            _ = alive.tick() => {
                store.touch_upload(id);
                continue;
            }
            () = async {
                match stop.as_mut() {
                    Some(s) => { let _ = s.wait_for(|asked| *asked).await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                stopped = true;
                let _ = child.kill();
                break;
            }
        };
        let Some(chunk) = chunk else { break };
        if let Err(e) = upload.wait_for_capacity(4).await {
            upload_err = Some(e);
            break;
        }
        upload.write(&chunk);
    }
    // Stop the compressor (and so pg_dump) if the upload broke off.
    drop(rx);
    if upload_err.is_some() {
        let _ = child.kill();
    }
    let compressed = compressor.await;
    let status = tokio::task::spawn_blocking(move || child.wait()).await;
    ends_dump.0 = None;
    let stderr_text = stderr_reader.join().unwrap_or_default();

    if stopped {
        let _ = upload.abort().await;
        return Err(BackupError::Interrupted);
    }
    let outcome = judge(
        upload_err.map(|e| BackupError::Storage {
            url: store.url().to_string(),
            message: format!("writing the archive failed: {}", describe_os(&e)),
        }),
        status,
        compressed,
        &stderr_text,
        req,
    );
    let compressed = match outcome {
        Ok(c) => c,
        Err(e) => {
            let _ = upload.abort().await;
            return Err(e);
        }
    };
    upload.finish().await.map_err(|e| BackupError::Storage {
        url: store.url().to_string(),
        message: format!("completing the archive upload failed: {}", describe_os(&e)),
    })?;
    Ok(compressed)
}

type Joined<T> = Result<T, tokio::task::JoinError>;

/// Kills the process (not yet waited for, so its pid is still its own)
/// when dropped armed.
struct EndOnDrop(Option<nix::unistd::Pid>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Decides whether the archive may be published: only if the upload, the
/// compressor and pg_dump all succeeded and pg_dump wrote something.
fn judge(
    upload_err: Option<BackupError>,
    status: Joined<std::io::Result<std::process::ExitStatus>>,
    compressed: Joined<std::io::Result<Compressed>>,
    stderr_text: &str,
    req: &DumpRequest<'_>,
) -> Result<Compressed, BackupError> {
    if let Some(e) = upload_err {
        return Err(e);
    }
    let status = match status {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(BackupError::io(
                "waiting for pg_dump",
                req.binaries.path("pg_dump"),
                e,
            ));
        }
        Err(e) => {
            return Err(BackupError::Dump {
                status: format!("interrupted: {e}"),
                stderr: String::new(),
            });
        }
    };
    if !status.success() {
        return Err(BackupError::Dump {
            status: describe_status(status),
            stderr: tail(stderr_text),
        });
    }
    let compressed = match compressed {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Err(BackupError::Dump {
                status: format!("compressing the dump failed: {e}"),
                stderr: tail(stderr_text),
            });
        }
        Err(e) => {
            return Err(BackupError::Dump {
                status: format!("compressor stopped: {e}"),
                stderr: String::new(),
            });
        }
    };
    if compressed.raw_bytes == 0 {
        return Err(BackupError::Dump {
            status: "pg_dump wrote nothing".into(),
            stderr: tail(stderr_text),
        });
    }
    Ok(compressed)
}

fn describe_os(e: &object_store::Error) -> String {
    shipsafe_pg::error_chain(e)
}

pub(crate) fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

pub(crate) fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let t = lines[lines.len().saturating_sub(12)..].join("\n");
    let t = shipsafe_config::mask_secrets(t.trim());
    if t.is_empty() {
        "(no error output)".into()
    } else {
        t
    }
}
