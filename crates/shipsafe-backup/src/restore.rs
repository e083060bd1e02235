//! Getting a backup back.
//!
//! [`fetch_verified`] downloads and decompresses an archive into a local
//! file while hashing it, and refuses it on a checksum mismatch before
//! anything is restored. Two ways of restoring follow:
//! - [`restore_parallel`]: `pg_restore -j` into a fresh database (scratch
//!   verification: fast, ownership and grants not recreated);
//! - [`restore_atomic`]: replaces an existing database's contents in ONE
//!   transaction on shipsafe's own connection (drop old objects, replay
//!   `pg_restore`'s script, run the checks, commit). Any failure, including a
//!   failing check or a killed process, rolls back: the target is either the
//!   backup's state or exactly what it was.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use shipsafe_config::{CheckConfig, DbUrl};
use shipsafe_pg::{CheckOutcome, PgBinaries, connect, describe, quote_ident, run_checks};
use tokio::io::AsyncBufReadExt;

use crate::dump::{OnBytes, describe_status, libpq_command, tail};
use crate::error::BackupError;
use crate::manifest::Manifest;
use crate::store::BackupStore;

/// A checksum-verified, decompressed archive on local disk; deleted on drop.
#[derive(Debug)]
pub struct VerifiedArchive {
    path: PathBuf,
    _dir: shipsafe_pg::PrivateTemp,
}

impl VerifiedArchive {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// Downloads, hashes and decompresses a backup into a temporary folder under
/// `parent`. A checksum mismatch is reported before anything else happens.
pub async fn fetch_verified(
    store: &BackupStore,
    manifest: &Manifest,
    parent: &Path,
    on_bytes: Option<OnBytes>,
) -> Result<VerifiedArchive, BackupError> {
    if !manifest.is_complete() {
        return Err(BackupError::NotComplete {
            id: manifest.id.clone(),
            status: "failed".into(),
            error: manifest.error.clone(),
        });
    }
    let needed = manifest.raw_bytes + (64 << 20);
    if let Some(available) = free_bytes(parent)
        && available < needed
    {
        return Err(BackupError::NoSpace {
            path: parent.to_path_buf(),
            needed,
            available,
        });
    }
    let dir = shipsafe_pg::PrivateTemp::new_in(parent)?;
    let path = dir.path().join(format!("{}.dump", manifest.id));
    let file =
        std::fs::File::create(&path).map_err(|e| BackupError::io("cannot create", &path, e))?;

    let location = manifest.location.clone();
    let (got, stored_size, actual, decoded) = match store.local_archive_path(&manifest.id) {
        // A local archive is read directly with large buffers.
        Some(local) => {
            let input = std::fs::File::open(&local).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => BackupError::Corrupt {
                    id: manifest.id.clone(),
                    message: format!("its archive {location} is missing"),
                },
                _ => BackupError::io("cannot read the archive", &local, e),
            })?;
            let (got, actual, decoded) =
                tokio::task::spawn_blocking(move || decode_stream(input, file, on_bytes))
                    .await
                    .map_err(|e| {
                        BackupError::io(
                            "reading stopped",
                            &local,
                            std::io::Error::other(e.to_string()),
                        )
                    })?
                    .map_err(|e| BackupError::io("cannot read the archive", &local, e))?;
            (got, got, actual, decoded)
        }
        // Remote: the download feeds the decoding thread through a channel.
        None => {
            let (size, mut stream) = store.archive(&manifest.id).await?;
            let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
            let reader = ChannelReader {
                rx,
                current: bytes::Bytes::new(),
            };
            let decoding =
                tokio::task::spawn_blocking(move || decode_stream(reader, file, on_bytes));
            let mut read_err = None;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => {
                        if tx.send(c).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        read_err = Some(e);
                        break;
                    }
                }
            }
            drop(tx);
            let decoded = decoding.await;
            if let Some(e) = read_err {
                return Err(e);
            }
            let (got, actual, decoded) = decoded
                .map_err(|e| {
                    BackupError::io(
                        "decoding stopped",
                        parent,
                        std::io::Error::other(e.to_string()),
                    )
                })?
                .map_err(|e| BackupError::io("cannot write the restore file", parent, e))?;
            (got, size, actual, decoded)
        }
    };
    judge_fetch(
        manifest,
        got,
        stored_size,
        actual,
        decoded,
        dir.path(),
        parent,
        needed,
    )?;
    Ok(VerifiedArchive { path, _dir: dir })
}

/// Reads the chunks a download sends, as a `Read`.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Hashes and decompresses `input` into `out` as the bytes go by. Returns
/// (bytes read, checksum, decode result); a decode error stops the writing
/// but not the hashing, so a flipped byte is reported as what it is.
fn decode_stream(
    mut input: impl std::io::Read,
    out: std::fs::File,
    on_bytes: Option<OnBytes>,
) -> std::io::Result<(u64, String, Result<(), String>)> {
    let mut dec = zstd::stream::write::Decoder::new(BufWriter::with_capacity(4 << 20, out))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut got = 0u64;
    let mut failed: Option<String> = None;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
        hasher.update(&buf[..n]);
        if failed.is_none()
            && let Err(e) = dec.write_all(&buf[..n])
        {
            failed = Some(e.to_string());
        }
        if let Some(f) = &on_bytes {
            f(got);
        }
    }
    let decoded = match failed {
        Some(e) => Err(e),
        None => dec
            .flush()
            .and_then(|()| dec.into_inner().flush())
            .map_err(|e| e.to_string()),
    };
    Ok((
        got,
        format!("blake3:{}", hasher.finalize().to_hex()),
        decoded,
    ))
}

/// Decides whether a fetched archive may be used: the checksum first (a
/// flipped byte is a checksum mismatch, whatever else went wrong), then the
/// size, then decompression.
#[allow(clippy::too_many_arguments)]
fn judge_fetch(
    manifest: &Manifest,
    got: u64,
    stored_size: u64,
    actual: String,
    decoded: Result<(), String>,
    tmp: &Path,
    parent: &Path,
    needed: u64,
) -> Result<(), BackupError> {
    if actual != manifest.checksum {
        return Err(BackupError::ChecksumMismatch {
            id: manifest.id.clone(),
            location: manifest.location.clone(),
            expected: manifest.checksum.clone(),
            actual,
        });
    }
    if got != stored_size || got != manifest.size_bytes {
        return Err(BackupError::Corrupt {
            id: manifest.id.clone(),
            message: format!(
                "read {got} bytes, the manifest says {}",
                manifest.size_bytes
            ),
        });
    }
    if let Err(e) = decoded {
        let full = free_bytes(tmp).is_some_and(|a| a < 1 << 20);
        return Err(if full {
            BackupError::NoSpace {
                path: parent.to_path_buf(),
                needed,
                available: 0,
            }
        } else {
            BackupError::Corrupt {
                id: manifest.id.clone(),
                message: format!("it does not decompress: {e}"),
            }
        });
    }
    Ok(())
}

/// `pg_restore -j` into an existing empty database, without owners and
/// grants (roles are cluster-wide and not part of a database dump).
pub async fn restore_parallel(
    binaries: &PgBinaries,
    archive: &Path,
    target: &DbUrl,
    jobs: usize,
) -> Result<(), BackupError> {
    restore_parallel_with(binaries, archive, target, jobs, false, None).await
}

/// [`restore_parallel`]; with `keep_owners`, owners and grants are restored
/// too (the roles must exist in the target cluster), so a migration that
/// grants to or changes the owner to an application role works on a clone.
pub async fn restore_parallel_with(
    binaries: &PgBinaries,
    archive: &Path,
    target: &DbUrl,
    jobs: usize,
    keep_owners: bool,
    list: Option<&Path>,
) -> Result<(), BackupError> {
    let mut cmd = libpq_command(binaries.path("pg_restore"), target)?;
    if let Some(l) = list {
        cmd.arg("--use-list").arg(l);
    }
    cmd.arg(format!("--jobs={}", jobs.max(1)));
    if !keep_owners {
        cmd.args(["--no-owner", "--no-privileges"]);
    }
    cmd.arg("--exit-on-error")
        .arg(archive)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| BackupError::Restore {
            status: format!("interrupted: {e}"),
            stderr: String::new(),
        })?
        .map_err(|e| BackupError::io("cannot run pg_restore", binaries.path("pg_restore"), e))?;
    if !out.status.success() {
        return Err(BackupError::Restore {
            status: describe_status(out.status),
            stderr: tail(&String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(())
}

/// Options of [`restore_atomic`].
#[derive(Clone)]
pub struct AtomicRestore<'a> {
    pub checks: &'a [CheckConfig],
    /// SQL run inside the transaction after the restore and before the
    /// checks (masking: nobody else ever sees the unmasked rows).
    pub before_checks: &'a [String],
    /// How long to wait for each lock (the old objects must be dropped).
    pub lock_timeout: Duration,
    pub on_bytes: Option<OnBytes>,
}

impl std::fmt::Debug for AtomicRestore<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomicRestore")
            .field("checks", &self.checks.len())
            .field("lock_timeout", &self.lock_timeout)
            .finish_non_exhaustive()
    }
}

/// The result of a committed atomic restore.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub checks: Vec<CheckOutcome>,
    pub script_bytes: u64,
}

/// Replaces `target`'s contents with the archive in one transaction, runs
/// the checks inside it, and commits only if all of them pass.
pub async fn restore_atomic(
    binaries: &PgBinaries,
    archive: &Path,
    target: &DbUrl,
    opts: AtomicRestore<'_>,
) -> Result<RestoreReport, BackupError> {
    let rolled_back = |message: String| BackupError::RestoreRolledBack {
        target: target.masked(),
        message,
    };
    let public_in_archive = archive_has_public_schema(binaries, archive).await?;
    let client = connect(target).await?;
    let sql_err =
        |what: &str, e: tokio_postgres::Error| rolled_back(format!("{what}: {}", describe(&e)));
    client
        .batch_execute(&format!(
            "begin; set local lock_timeout = '{}ms'",
            opts.lock_timeout.as_millis()
        ))
        .await
        .map_err(|e| sql_err("starting the restore transaction", e))?;

    let prelude = clean_slate_sql(&client, public_in_archive)
        .await
        .map_err(|e| sql_err("reading the target's schemas", e))?;
    client.batch_execute(&prelude).await.map_err(|e| {
        sql_err(
            "removing the current contents (inside the restore transaction)",
            e,
        )
    })?;

    let replayed = replay_archive(&client, binaries, archive, opts.on_bytes.clone()).await;
    let script_bytes = match replayed {
        Ok(n) => n,
        Err(msg) => {
            let _ = client.batch_execute("rollback").await;
            return Err(rolled_back(msg));
        }
    };
    // The script cleared search_path for its own safety; checks are written
    // for the application's normal one.
    client
        .batch_execute("set local search_path to default")
        .await
        .map_err(|e| sql_err("resetting search_path", e))?;
    for stmt in opts.before_checks {
        if let Err(e) = client.batch_execute(stmt).await {
            let _ = client.batch_execute("rollback").await;
            return Err(rolled_back(format!(
                "{} failed: {}",
                stmt.split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" "),
                describe(&e)
            )));
        }
    }
    let checks = run_checks(&client, opts.checks, true).await;
    let failed: Vec<&CheckOutcome> = checks.iter().filter(|c| !c.ok).collect();
    if !failed.is_empty() {
        let _ = client.batch_execute("rollback").await;
        let names: Vec<String> = failed
            .iter()
            .map(|c| {
                format!(
                    "{:?} expected {} got {}{}",
                    c.name,
                    c.expect,
                    c.actual.as_deref().unwrap_or("nothing"),
                    c.error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        return Err(rolled_back(format!(
            "checks failed on the restored data: {}",
            names.join("; ")
        )));
    }
    client
        .batch_execute("commit")
        .await
        .map_err(|e| sql_err("committing the restore", e))?;
    Ok(RestoreReport {
        checks,
        script_bytes,
    })
}

/// Whether the archive recreates the `public` schema itself (it does when
/// the source's public schema was dropped and created again).
async fn archive_has_public_schema(
    binaries: &PgBinaries,
    archive: &Path,
) -> Result<bool, BackupError> {
    Ok(crate::toc::Toc::read(binaries, archive)
        .await?
        .has_entry("SCHEMA - public "))
}

/// SQL that empties the database: every non-system schema dropped (so
/// objects created after the backup go too), large objects unlinked, and
/// `public` recreated with its owner, grants and comment unless the archive
/// does it.
async fn clean_slate_sql(
    client: &tokio_postgres::Client,
    public_in_archive: bool,
) -> Result<String, tokio_postgres::Error> {
    let schemas = client
        .query(
            "select n.nspname::text, pg_get_userbyid(n.nspowner)::text \
             from pg_namespace n \
             where n.nspname not in ('pg_catalog', 'information_schema') \
               and n.nspname not like 'pg\\_toast%' and n.nspname not like 'pg\\_temp%' \
               and not exists (select 1 from pg_depend d where d.classid = 'pg_namespace'::regclass \
                               and d.objid = n.oid and d.deptype = 'e') \
             order by 1",
            &[],
        )
        .await?;
    let public_grants = client
        .query(
            "select case when a.grantee = 0 then 'public' else quote_ident(pg_get_userbyid(a.grantee)) end, \
                    a.privilege_type \
             from pg_namespace n, aclexplode(n.nspacl) a \
             where n.nspname = 'public' and a.grantee <> n.nspowner",
            &[],
        )
        .await?;
    let public_comment: Option<String> = client
        .query_opt(
            "select obj_description(oid, 'pg_namespace') from pg_namespace where nspname = 'public'",
            &[],
        )
        .await?
        .and_then(|r| r.get(0));
    let mut sql =
        String::from("select pg_catalog.lo_unlink(oid) from pg_catalog.pg_largeobject_metadata;\n");
    let mut public_owner = None;
    for row in &schemas {
        let name: String = row.get(0);
        if name == "public" {
            public_owner = Some(row.get::<_, String>(1));
        }
        sql.push_str(&format!("drop schema {} cascade;\n", quote_ident(&name)));
    }
    if let Some(owner) = public_owner
        && !public_in_archive
    {
        sql.push_str(&format!(
            "create schema public authorization {};\n",
            quote_ident(&owner)
        ));
        if let Some(c) = &public_comment {
            sql.push_str(&format!(
                "comment on schema public is {};\n",
                shipsafe_pg::quote_literal(c)
            ));
        }
        for g in &public_grants {
            let grantee: String = g.get(0);
            let privilege: String = g.get(1);
            sql.push_str(&format!(
                "grant {privilege} on schema public to {grantee};\n"
            ));
        }
    }
    Ok(sql)
}

/// Replays the archive on `client` without interpreting its SQL: the
/// schema sections (pre-data, post-data) hold no COPY data and go to the
/// server whole, which parses them exactly as psql would send them; only
/// the data section is split, at COPY blocks, and it holds no user-written
/// SQL (function bodies, comments and view texts are all schema). The psql
/// `\restrict` lines newer pg_dump versions add are recognised by a key
/// chosen here, never by their look.
async fn replay_archive(
    client: &tokio_postgres::Client,
    binaries: &PgBinaries,
    archive: &Path,
    on_bytes: Option<OnBytes>,
) -> Result<u64, String> {
    let key = restrict_key(binaries).await;
    let mut total = 0u64;
    for section in ["pre-data", "data", "post-data"] {
        // Script mode ("-f -"): pg_restore only reads the archive and writes
        // SQL; it needs no connection.
        let mut cmd = tokio::process::Command::new(binaries.path("pg_restore"));
        cmd.args(["--file=-", "--exit-on-error"])
            .arg(format!("--section={section}"));
        if let Some(k) = &key {
            cmd.arg(format!("--restrict-key={k}"));
        }
        cmd.arg(archive)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run pg_restore: {e}"))?;
        let stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let stderr_task = tokio::spawn(async move {
            let mut s = String::new();
            if let Some(e) = stderr.as_mut() {
                let _ = tokio::io::AsyncReadExt::read_to_string(e, &mut s).await;
            }
            s
        });
        let stdout = stdout.ok_or("pg_restore gave no output")?;
        let replayed = if section == "data" {
            replay_data(client, stdout, key.as_deref(), total, on_bytes.clone()).await
        } else {
            replay_whole(client, stdout, key.as_deref()).await
        };
        let status = child.wait().await;
        let stderr_text = stderr_task.await.unwrap_or_default();
        total += replayed?;
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => {
                return Err(format!(
                    "pg_restore {}: {}",
                    describe_status(s),
                    tail(&stderr_text)
                ));
            }
            Err(e) => return Err(format!("pg_restore: {e}")),
        }
        if let Some(f) = &on_bytes {
            f(total);
        }
    }
    Ok(total)
}

/// A fresh key for pg_restore's `\restrict` lines, when this pg_restore
/// writes them (15.14, 16.10, 17.6 and later).
async fn restrict_key(binaries: &PgBinaries) -> Option<String> {
    let help = tokio::process::Command::new(binaries.path("pg_restore"))
        .arg("--help")
        .output()
        .await
        .ok()?;
    if !String::from_utf8_lossy(&help.stdout).contains("--restrict-key") {
        return None;
    }
    let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
    Some(blake3::hash(seed.as_bytes()).to_hex()[..32].to_string())
}

/// True for the exact `\restrict KEY` / `\unrestrict KEY` lines.
fn is_restrict_line(line: &[u8], key: Option<&str>) -> bool {
    let Some(k) = key else { return false };
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line == format!("\\restrict {k}").as_bytes() || line == format!("\\unrestrict {k}").as_bytes()
}

/// Reads the next line of pg_restore's output into `line` (cleared first);
/// 0 at the end.
async fn next_line(
    reader: &mut tokio::io::BufReader<tokio::process::ChildStdout>,
    line: &mut Vec<u8>,
) -> Result<usize, String> {
    line.clear();
    reader
        .read_until(b'\n', line)
        .await
        .map_err(|e| format!("reading pg_restore output: {e}"))
}

/// Sends a schema section to the server as one batch.
async fn replay_whole(
    client: &tokio_postgres::Client,
    stdout: tokio::process::ChildStdout,
    key: Option<&str>,
) -> Result<u64, String> {
    let mut reader = tokio::io::BufReader::with_capacity(1 << 20, stdout);
    let mut line = Vec::with_capacity(4096);
    let mut script = Vec::new();
    let mut total = 0u64;
    loop {
        let n = next_line(&mut reader, &mut line).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if !is_restrict_line(&line, key) {
            script.extend_from_slice(&line);
        }
    }
    let sql = String::from_utf8(script)
        .map_err(|_| "the restore script is not valid UTF-8".to_string())?;
    if !sql.trim().is_empty() {
        client.batch_execute(&sql).await.map_err(|e| describe(&e))?;
    }
    Ok(total)
}

/// Executes the data section on `client`: `COPY ... FROM stdin` blocks
/// streamed with COPY, the few statements between them (sequence values,
/// large objects) in batches. Returns the bytes read.
async fn replay_data(
    client: &tokio_postgres::Client,
    stdout: tokio::process::ChildStdout,
    key: Option<&str>,
    before: u64,
    on_bytes: Option<OnBytes>,
) -> Result<u64, String> {
    let mut reader = tokio::io::BufReader::with_capacity(1 << 20, stdout);
    let mut line = Vec::with_capacity(4096);
    let mut sql = String::new();
    let mut total = 0u64;
    let exec = |sql: String| async move {
        if sql.trim().is_empty() {
            return Ok(());
        }
        client.batch_execute(&sql).await.map_err(|e| describe(&e))
    };
    loop {
        let n = next_line(&mut reader, &mut line).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if line.starts_with(b"COPY ") && line.ends_with(b"FROM stdin;\n") {
            exec(std::mem::take(&mut sql)).await?;
            let stmt = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            let sink = client
                .copy_in::<_, bytes::Bytes>(&stmt)
                .await
                .map_err(|e| format!("{}: {}", stmt.trim_end_matches(';'), describe(&e)))?;
            futures::pin_mut!(sink);
            let mut buf = bytes::BytesMut::with_capacity(1 << 20);
            loop {
                let n = next_line(&mut reader, &mut line).await?;
                total += n as u64;
                if n == 0 || line == b"\\.\n" {
                    break;
                }
                buf.extend_from_slice(&line);
                if buf.len() >= 1 << 20 {
                    sink.send(buf.split().freeze())
                        .await
                        .map_err(|e| format!("{stmt}: {}", describe(&e)))?;
                    if let Some(f) = &on_bytes {
                        f(before + total);
                    }
                }
            }
            if !buf.is_empty() {
                sink.send(buf.freeze())
                    .await
                    .map_err(|e| format!("{stmt}: {}", describe(&e)))?;
            }
            sink.finish()
                .await
                .map_err(|e| format!("{stmt}: {}", describe(&e)))?;
        } else if is_restrict_line(&line, key) {
            // psql meta-commands newer pg_dump versions add around scripts.
        } else {
            let text = std::str::from_utf8(&line).map_err(|_| {
                "the restore script is not valid UTF-8 outside COPY data".to_string()
            })?;
            // Flush at a TOC entry boundary to keep batches bounded.
            if sql.len() > (4 << 20) && text.starts_with("-- Name: ") {
                exec(std::mem::take(&mut sql)).await?;
            }
            sql.push_str(text);
        }
        if let Some(f) = &on_bytes {
            f(before + total);
        }
    }
    exec(sql).await?;
    Ok(total)
}
