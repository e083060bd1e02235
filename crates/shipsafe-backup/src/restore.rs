//! Getting a backup back.
//!
//! [`fetch_verified`] downloads and decompresses an archive into a local
//! file while hashing it (and reading its contents), and refuses it on a
//! checksum mismatch before anything is restored. [`restore_atomic`] then
//! replaces a database's contents in ONE transaction on shipsafe's own
//! connection: every restore takes this path (an environment, a clone, a
//! rollback, `backup verify` and rehearsal clones in scratch clusters), so
//! what a verification proves is what a restore does. Any failure, a
//! failing check or a killed process included, rolls back: the target is
//! either the backup's state or exactly what it was.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use shipsafe_config::{CheckConfig, DbUrl};
use shipsafe_pg::{CheckOutcome, PgBinaries, connect, describe, quote_ident, run_checks};

use crate::archive::{ArchiveContents, ArchiveScanner};
use crate::dump::OnBytes;
use crate::error::BackupError;
use crate::manifest::{Manifest, RestoreProof};
use crate::replay::Part;
use crate::store::BackupStore;

/// A checksum-verified, decompressed archive on local disk; deleted on drop.
#[derive(Debug)]
pub struct VerifiedArchive {
    path: PathBuf,
    contents: Result<ArchiveContents, String>,
    _dir: shipsafe_pg::PrivateTemp,
}

impl VerifiedArchive {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the archive holds, read while it was decompressed (or why it
    /// could not be read).
    pub fn contents(&self) -> Option<&ArchiveContents> {
        self.contents.as_ref().ok()
    }
}

/// Passes bytes on and reads the archive's layout from them.
struct Scanning<W> {
    inner: W,
    scanner: ArchiveScanner,
}

impl<W: Write> Write for Scanning<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.scanner.feed(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
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
    let (got, stored_size, actual, (decoded, contents)) =
        match store.local_archive_path(&manifest.id) {
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
    Ok(VerifiedArchive {
        path,
        contents,
        _dir: dir,
    })
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

type Decoded = (Result<(), String>, Result<ArchiveContents, String>);

/// Hashes and decompresses `input` into `out` as the bytes go by, reading
/// the archive's contents on the way. Returns (bytes read, checksum, decode
/// result and contents); a decode error stops the writing but not the
/// hashing, so a flipped byte is reported as what it is.
fn decode_stream(
    mut input: impl std::io::Read,
    out: std::fs::File,
    on_bytes: Option<OnBytes>,
) -> std::io::Result<(u64, String, Decoded)> {
    let mut dec = zstd::stream::write::Decoder::new(Scanning {
        inner: BufWriter::with_capacity(4 << 20, out),
        scanner: ArchiveScanner::new(),
    })?;
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
        Some(e) => (Err(e), Err("not decompressed".to_string())),
        None => match dec.flush() {
            Err(e) => (Err(e.to_string()), Err("not decompressed".to_string())),
            Ok(()) => {
                let mut sink = dec.into_inner();
                match sink.inner.flush() {
                    Ok(()) => (Ok(()), sink.scanner.finish()),
                    Err(e) => (Err(e.to_string()), Err("not written".to_string())),
                }
            }
        },
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
    /// What the archive holds, when already read (a fetch reads it on the
    /// way); otherwise the archive file is read for it.
    pub contents: Option<&'a ArchiveContents>,
    /// The backup's manifest: schemas it left out (kept in the target) and
    /// its database-level properties.
    pub manifest: Option<&'a Manifest>,
    /// Restore only these entries (`pg_restore -L` list).
    pub list: Option<&'a Path>,
    /// Say which of the manifest's database-level properties the target
    /// lacks or has besides (an environment: yes; a new scratch database,
    /// which has none of them: no).
    pub compare_database: bool,
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
    pub proof: RestoreProof,
}

/// Replaces `target`'s contents with the archive in one transaction: the
/// target is checked first (anything the restore could not replace is
/// refused before the first change), emptied, the archive replayed, what
/// was loaded compared with what the archive holds, the checks run; it
/// commits only if all of that held and the transaction is still the one it
/// began. Any failure, a killed process included, leaves the target as it
/// was.
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
    let scanned;
    let (contents, unread) = match opts.contents {
        Some(c) => (c.clone(), None),
        None => {
            let path = archive.to_path_buf();
            scanned = tokio::task::spawn_blocking(move || ArchiveContents::read_file(&path))
                .await
                .map_err(|e| rolled_back(format!("reading the archive stopped: {e}")))?
                .map_err(|e| BackupError::io("cannot read the archive", archive, e))?;
            match scanned {
                Ok(c) => (c, None),
                Err(why) => (
                    crate::toc::Toc::read(binaries, archive).await?.contents(),
                    Some(why),
                ),
            }
        }
    };
    let excluded = opts
        .manifest
        .map(|m| m.excluded_schemas.as_slice())
        .unwrap_or_default();

    let client = connect(target).await?;
    let sql_err =
        |what: &str, e: tokio_postgres::Error| rolled_back(format!("{what}: {}", describe(&e)));
    // The target's own settings must not change how shipsafe's statements
    // read: functions resolve in pg_catalog only (a search_path the
    // database's owner set could put a look-alike first), and strings are
    // read the standard way, as the splitter reads the script.
    client
        .batch_execute(&format!(
            "begin; set local lock_timeout = '{}ms'; set local search_path = pg_catalog, pg_temp; \
             set local standard_conforming_strings = on; set local array_nulls = on; \
             set local transform_null_equals = off",
            opts.lock_timeout.as_millis()
        ))
        .await
        .map_err(|e| sql_err("starting the restore transaction", e))?;
    let mut proof = RestoreProof::default();
    // The transaction's id, taken now: before the checks and before the
    // commit it must still be this one (nothing ended it on the way).
    let xid: String = client
        .query_one("select pg_catalog.txid_current()::text", &[])
        .await
        .map_err(|e| sql_err("starting the restore transaction", e))?
        .get(0);
    let abort = |msg: String| {
        let client = &client;
        async move {
            let _ = client.batch_execute("rollback").await;
            Err::<RestoreReport, _>(rolled_back(msg))
        }
    };

    let slate = match crate::slate::prepare(&client, &contents, excluded).await {
        Ok(slate) => slate,
        Err(refusal) => {
            let _ = client.batch_execute("rollback").await;
            return Err(match refusal {
                crate::slate::Refusal::Sql(e) => sql_err("reading the target", e),
                crate::slate::Refusal::MissingExtensions(missing) => {
                    BackupError::MissingExtensions {
                        missing,
                        major: binaries.major(),
                    }
                }
                crate::slate::Refusal::Refused(reasons) => BackupError::RestoreRefused {
                    target: target.masked(),
                    reasons,
                },
            });
        }
    };
    if let Err(e) = client.batch_execute(&slate.sql).await {
        let _ = client.batch_execute("rollback").await;
        let mut msg = format!(
            "removing the current contents (inside the restore transaction): {}",
            describe(&e)
        );
        if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
            msg.push_str(&blockers(&client).await);
        }
        return Err(rolled_back(msg));
    }

    // Schema and data first; what was loaded is compared with the archive
    // before post-data (event triggers, refreshes) may act on it, as it
    // does in any restore.
    let mut replayed = crate::replay::Replayed::default();
    for part in [Part::Load, Part::Finish] {
        if let Err(msg) = crate::replay::replay(
            &client,
            binaries,
            archive,
            part,
            opts.list,
            opts.on_bytes.clone(),
            &mut replayed,
        )
        .await
        {
            return abort(msg).await;
        }
        match same_transaction(&client, &xid).await {
            Ok(()) => {}
            Err(Ended::Failed(msg)) => return abort(msg).await,
            Err(Ended::Elsewhere(msg)) => return Err(lost(target, msg)),
        }
        if part == Part::Load {
            match prove(
                &client,
                &contents,
                unread.clone(),
                &replayed,
                opts.list.is_some(),
            )
            .await
            {
                Ok(p) => proof = p,
                Err(msg) => return abort(msg).await,
            }
        }
    }
    proof.warnings.extend(slate.removed);
    for (stmt, err) in &replayed.refresh_failures {
        let view = stmt
            .trim_end_matches(';')
            .trim_start_matches("REFRESH MATERIALIZED VIEW ");
        proof.warnings.push(format!(
            "materialized view {view} was left unpopulated (as pg_restore leaves it): refreshing it failed: {err}"
        ));
    }

    // The script changed session settings for its own use (an empty
    // search_path, row_security off); checks run as the application would.
    if let Err(e) = app_session(&client, opts.lock_timeout).await {
        return abort(format!("resetting the session: {}", describe(&e))).await;
    }
    for stmt in opts.before_checks {
        if let Err(e) = client.batch_execute(stmt).await {
            return abort(format!(
                "{} failed: {}",
                stmt.split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" "),
                describe(&e)
            ))
            .await;
        }
    }
    let checks = run_checks(&client, opts.checks, true).await;
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(CheckOutcome::line)
        .collect();
    if !failed.is_empty() {
        return abort(format!(
            "checks did not pass on the restored data: {}",
            failed.join("; ")
        ))
        .await;
    }
    match same_transaction(&client, &xid).await {
        Ok(()) => {}
        Err(Ended::Failed(msg)) => return abort(msg).await,
        Err(Ended::Elsewhere(msg)) => return Err(lost(target, msg)),
    }
    client
        .batch_execute("commit")
        .await
        .map_err(|e| sql_err("committing the restore", e))?;
    if let Some(m) = opts.manifest.filter(|_| opts.compare_database) {
        let _ = client
            .batch_execute("set search_path = pg_catalog, pg_temp")
            .await;
        proof
            .warnings
            .extend(crate::dblevel::compare(&client, &m.database_level).await);
    }
    Ok(RestoreReport {
        checks,
        script_bytes: replayed.bytes,
        proof,
    })
}

/// The session as the application has it, for the masking statements and
/// the checks (the script emptied `search_path` and turned `row_security`
/// off) — except that `pg_catalog` comes first on the path, as it does
/// unless a path names it later: a database whose owner put it later could
/// otherwise have the restoring role run that owner's look-alikes.
async fn app_session(
    client: &tokio_postgres::Client,
    lock_timeout: Duration,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("reset all").await?;
    let schemas: Vec<String> = client
        .query_one("select pg_catalog.current_schemas(false)::text[]", &[])
        .await?
        .get(0);
    let path: Vec<String> = std::iter::once("pg_catalog".to_string())
        .chain(
            schemas
                .iter()
                .filter(|s| *s != "pg_catalog" && !s.starts_with("pg_temp"))
                .map(|s| quote_ident(s)),
        )
        .chain(std::iter::once("pg_temp".to_string()))
        .collect();
    client
        .batch_execute(&format!(
            "set local search_path = {}; set local lock_timeout = '{}ms'",
            path.join(", "),
            lock_timeout.as_millis()
        ))
        .await
}

/// Why the restore's transaction is not the one it began.
enum Ended {
    /// It failed (a statement erred): rolling back undoes everything.
    Failed(String),
    /// Something ended it and another runs: what came before may be
    /// committed.
    Elsewhere(String),
}

/// The restore's transaction is still open and still the one it began: a
/// statement that ended it would leave a new transaction (or none) with
/// another id, and an aborted one fails this query.
async fn same_transaction(client: &tokio_postgres::Client, xid: &str) -> Result<(), Ended> {
    let now: Option<String> = client
        .query_one("select pg_catalog.txid_current_if_assigned()::text", &[])
        .await
        .map_err(|e| Ended::Failed(describe(&e)))?
        .get(0);
    if now.as_deref() == Some(xid) {
        Ok(())
    } else {
        Err(Ended::Elsewhere(format!(
            "the restore's transaction {xid} is no longer open (now {})",
            now.as_deref().unwrap_or("none")
        )))
    }
}

fn lost(target: &DbUrl, message: String) -> BackupError {
    BackupError::RestoreNotAtomic {
        target: target.masked(),
        message,
    }
}

/// Compares what the replay loaded with what the archive holds: every
/// table's rows (as the server counted them while loading), every
/// sequence's value, the number of large objects.
async fn prove(
    client: &tokio_postgres::Client,
    contents: &ArchiveContents,
    unread: Option<String>,
    replayed: &crate::replay::Replayed,
    listed: bool,
) -> Result<RestoreProof, String> {
    let mut proof = RestoreProof::default();
    let mut wrong = Vec::new();
    let mut uncounted = 0;
    if let Some(why) = unread {
        proof.not_proven.push(format!(
            "row counts, sequences and large objects: the archive could not be read ({why})"
        ));
    }
    for t in &contents.tables {
        let name = format!("{}.{}", t.schema, t.table);
        let key = (t.schema.clone(), t.table.clone());
        match (replayed.copied.get(&key), t.rows) {
            (Some(got), Some(want)) if *got == want => {
                proof.tables += 1;
                proof.rows += got;
            }
            (Some(got), Some(want)) => {
                wrong.push(format!("{name}: {want} rows in the backup, {got} restored"))
            }
            (Some(got), None) => {
                proof.rows += got;
                uncounted += 1;
            }
            (None, _) if listed => {}
            (None, _) => wrong.push(format!("{name}: its rows were not restored")),
        }
    }
    if uncounted > 0 {
        proof.not_proven.push(format!(
            "the rows of {uncounted} table(s): the archive's data is compressed, so its rows were not counted"
        ));
    }
    if !contents.sequences.is_empty() {
        let sql = contents
            .sequences
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "select {i}, last_value, is_called from {}.{}",
                    quote_ident(&s.schema),
                    quote_ident(&s.sequence)
                )
            })
            .collect::<Vec<_>>()
            .join(" union all ");
        let rows = client
            .query(&sql, &[])
            .await
            .map_err(|e| format!("reading the restored sequences: {}", describe(&e)))?;
        for r in rows {
            let i: i32 = r.get(0);
            let s = &contents.sequences[i as usize];
            let (value, called): (i64, bool) = (r.get(1), r.get(2));
            if value == s.value && called == s.is_called {
                proof.sequences += 1;
            } else {
                wrong.push(format!(
                    "sequence {}.{}: {} in the backup, {value} restored",
                    s.schema, s.sequence, s.value
                ));
            }
        }
    }
    let los: i64 = client
        .query_one(
            "select count(*) from pg_catalog.pg_largeobject_metadata",
            &[],
        )
        .await
        .map_err(|e| format!("counting the restored large objects: {}", describe(&e)))?
        .get(0);
    if los as u64 == contents.large_objects {
        proof.large_objects = contents.large_objects;
    } else {
        wrong.push(format!(
            "{} large object(s) in the backup, {los} restored",
            contents.large_objects
        ));
    }
    if !wrong.is_empty() {
        let n = wrong.len();
        wrong.truncate(10);
        return Err(format!(
            "what was restored differs from the backup ({n} difference(s)): {}",
            wrong.join("; ")
        ));
    }
    Ok(proof)
}

/// The sessions holding locks on tables of the database on `client` (the
/// app, a report query), named for a person to decide: wait, or end them.
async fn blockers(client: &tokio_postgres::Client) -> String {
    let rows = client
        .query(
            "select format('pid %s (%s, %s since %s)', a.pid, \
                    coalesce(nullif(a.application_name, ''), 'unknown client'), \
                    coalesce(a.state, 'unknown state'), \
                    to_char(coalesce(a.xact_start, a.backend_start), 'YYYY-MM-DD HH24:MI:SS')) \
             from pg_catalog.pg_stat_activity a \
             where a.datname = pg_catalog.current_database() and a.pid <> pg_catalog.pg_backend_pid() \
               and exists (select 1 from pg_catalog.pg_locks l \
                           where l.pid = a.pid and l.granted and l.locktype = 'relation' \
                             and l.database = (select oid from pg_catalog.pg_database \
                                               where datname = pg_catalog.current_database())) \
             order by a.pid",
            &[],
        )
        .await;
    match rows {
        Ok(rows) if !rows.is_empty() => format!(
            "; sessions holding locks on its tables: {}. Stop the app or wait for them, or end them (`select pg_terminate_backend(PID)`), then run the restore again",
            rows.iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => String::new(),
    }
}
