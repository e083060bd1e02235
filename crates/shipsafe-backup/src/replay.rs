//! Replaying pg_restore's script on a connection whose transaction is open.
//!
//! pg_restore writes the archive as SQL (`--file=-`; it needs no
//! connection). Every statement is found by [`crate::script::Splitter`]
//! and sent on shipsafe's connection; `COPY … FROM stdin` rows are streamed
//! with the COPY protocol. Nothing in the script may end the transaction:
//! the `BEGIN`/`COMMIT` pg_restore writes around large objects are not sent
//! (the restore's own transaction already holds them), any other
//! transaction control stops the restore. A `REFRESH MATERIALIZED VIEW` that
//! fails is undone to a savepoint and reported, and the view stays
//! unpopulated, as pg_restore leaves it.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;

use futures::SinkExt;
use shipsafe_pg::{PgBinaries, describe};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::dump::{OnBytes, describe_status, tail};
use crate::script::{Item, Kind, Splitter, Statement};

/// What a replay did.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    /// Bytes of script read.
    pub bytes: u64,
    /// Rows the server loaded per table (schema, name) of a `COPY`.
    pub copied: HashMap<(String, String), u64>,
    /// Materialized views left unpopulated: (statement, server's error).
    pub refresh_failures: Vec<(String, String)>,
    /// `BEGIN`/`COMMIT` lines of the script that were not sent.
    pub transaction_lines: u32,
}

/// Flush the batch of schema statements at this size.
const BATCH: usize = 4 << 20;

/// The parts of an archive a replay covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// Schema before the data, and the data: what the archive's contents
    /// describe.
    Load,
    /// Indexes, constraints, triggers, event triggers, privileges,
    /// materialized view refreshes: what may act on the loaded data.
    Finish,
}

/// Replays `part` of `archive` (optionally only the entries of a
/// `pg_restore -L` list) on `client`, whose transaction must be open, and
/// adds what it did to `done`. An error leaves that transaction for the
/// caller to roll back.
pub(crate) async fn replay(
    client: &tokio_postgres::Client,
    binaries: &PgBinaries,
    archive: &Path,
    part: Part,
    list: Option<&Path>,
    on_bytes: Option<OnBytes>,
    done: &mut Replayed,
) -> Result<(), String> {
    let key = restrict_key(binaries).await;
    let mut cmd = tokio::process::Command::new(binaries.path("pg_restore"));
    cmd.args(["--file=-", "--exit-on-error"]).process_group(0);
    match part {
        Part::Load => cmd.args(["--section=pre-data", "--section=data"]),
        Part::Finish => cmd.arg("--section=post-data"),
    };
    if let Some(k) = &key {
        cmd.arg(format!("--restrict-key={k}"));
    }
    if let Some(l) = list {
        cmd.arg("--use-list").arg(l);
    }
    cmd.arg(archive)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run pg_restore: {e}"))?;
    let stdout = child.stdout.take().ok_or("pg_restore gave no output")?;
    let mut stderr = child.stderr.take();
    let stderr_task = tokio::spawn(async move {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = tokio::io::AsyncReadExt::read_to_string(e, &mut s).await;
        }
        s
    });
    let mut reader = tokio::io::BufReader::with_capacity(1 << 20, stdout);
    let mut run = Run {
        client,
        key: key.as_deref(),
        on_bytes,
        done: std::mem::take(done),
        batch: String::new(),
        batch_from: 0,
    };
    let replayed = run.script(&mut reader).await;
    tracing::debug!(
        "replayed {:?}: {} bytes, {} tables loaded, {} BEGIN/COMMIT lines of the script not sent",
        part,
        run.done.bytes,
        run.done.copied.len(),
        run.done.transaction_lines
    );
    *done = run.done;
    // A failed replay stops reading; pg_restore then dies of a closed pipe.
    drop(reader);
    let status = child.wait().await;
    let stderr_text = stderr_task.await.unwrap_or_default();
    replayed?;
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!(
            "pg_restore {}: {}",
            describe_status(s),
            tail(&stderr_text)
        )),
        Err(e) => Err(format!("pg_restore: {e}")),
    }
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

struct Run<'a> {
    client: &'a tokio_postgres::Client,
    key: Option<&'a str>,
    on_bytes: Option<OnBytes>,
    done: Replayed,
    /// Statements not sent yet, and the script line of the first.
    batch: String,
    batch_from: u64,
}

impl Run<'_> {
    fn progress(&self) {
        if let Some(f) = &self.on_bytes {
            f(self.done.bytes);
        }
    }

    async fn script<R: AsyncBufRead + Unpin>(&mut self, reader: &mut R) -> Result<(), String> {
        let mut splitter = Splitter::new();
        let mut line = Vec::with_capacity(4096);
        let mut items = Vec::new();
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .await
                .map_err(|e| format!("reading pg_restore's output: {e}"))?;
            if n == 0 {
                break;
            }
            self.done.bytes += n as u64;
            splitter.push_line(&line, &mut items)?;
            for item in items.drain(..) {
                match item {
                    Item::Meta { text, line } => self.meta(&text, line)?,
                    Item::Statement(stmt) => self.statement(stmt, reader).await?,
                }
            }
        }
        splitter.finish()?;
        self.flush().await?;
        self.progress();
        Ok(())
    }

    fn meta(&self, text: &str, line: u64) -> Result<(), String> {
        let ours = self.key.is_some_and(|k| {
            text == format!("\\restrict {k}") || text == format!("\\unrestrict {k}")
        });
        if ours {
            return Ok(());
        }
        Err(format!(
            "line {line} of the restore script is the psql command `{}`, which a restore does not run",
            text.chars().take(60).collect::<String>()
        ))
    }

    async fn statement<R: AsyncBufRead + Unpin>(
        &mut self,
        stmt: Statement,
        reader: &mut R,
    ) -> Result<(), String> {
        match stmt.kind {
            Kind::Other => {
                if self.batch.is_empty() {
                    self.batch_from = stmt.line;
                }
                self.batch.push_str(&stmt.text);
                self.batch.push('\n');
                if self.batch.len() >= BATCH {
                    self.flush().await?;
                }
                Ok(())
            }
            // The restore keeps its own lock timeout: waiting forever for a
            // lock would hold every restored table's lock as long.
            Kind::Setting(name) if name == "lock_timeout" => Ok(()),
            // The server reads a whole batch before running any of it: a
            // setting that changes how it reads text (standard strings,
            // encoding) must end its batch to apply to the next statements.
            Kind::Setting(_) => {
                if self.batch.is_empty() {
                    self.batch_from = stmt.line;
                }
                self.batch.push_str(&stmt.text);
                self.batch.push('\n');
                self.flush().await
            }
            Kind::Transaction => {
                self.done.transaction_lines += 1;
                Ok(())
            }
            Kind::ForeignTransaction => Err(format!(
                "line {} of the restore script is `{}`: a restore never passes transaction control on to its script",
                stmt.line,
                stmt.text.chars().take(60).collect::<String>()
            )),
            Kind::Refresh => {
                self.flush().await?;
                self.refresh(stmt).await
            }
            Kind::CopyFromStdin => {
                self.flush().await?;
                let rows = self.copy(&stmt, reader).await?;
                let table = crate::script::copy_target(&stmt.text)
                    .unwrap_or_else(|| (String::new(), stmt.text.clone()));
                *self.done.copied.entry(table).or_default() += rows;
                Ok(())
            }
        }
    }

    async fn flush(&mut self) -> Result<(), String> {
        if self.batch.trim().is_empty() {
            self.batch.clear();
            return Ok(());
        }
        let sql = std::mem::take(&mut self.batch);
        self.client.batch_execute(&sql).await.map_err(|e| {
            format!(
                "in the statements from line {} of the restore script: {}",
                self.batch_from,
                describe(&e)
            )
        })?;
        self.progress();
        Ok(())
    }

    /// pg_restore reports a view it cannot populate and goes on; so does
    /// this, and the failure is in the restore's report.
    async fn refresh(&mut self, stmt: Statement) -> Result<(), String> {
        let c = self.client;
        let sql_err = |what: &str, e: tokio_postgres::Error| format!("{what}: {}", describe(&e));
        c.batch_execute("savepoint shipsafe_refresh")
            .await
            .map_err(|e| sql_err("savepoint before a materialized view's refresh", e))?;
        match c.batch_execute(&stmt.text).await {
            Ok(()) => c
                .batch_execute("release savepoint shipsafe_refresh")
                .await
                .map_err(|e| sql_err("after a materialized view's refresh", e)),
            Err(e) => {
                self.done
                    .refresh_failures
                    .push((stmt.text.clone(), describe(&e)));
                c.batch_execute(
                    "rollback to savepoint shipsafe_refresh; release savepoint shipsafe_refresh",
                )
                .await
                .map_err(|e| sql_err("undoing a failed refresh", e))
            }
        }
    }

    /// Streams the rows after a `COPY … FROM stdin` up to its `\.` line;
    /// returns the rows the server loaded.
    async fn copy<R: AsyncBufRead + Unpin>(
        &mut self,
        stmt: &Statement,
        reader: &mut R,
    ) -> Result<u64, String> {
        let name = stmt.text.trim_end_matches(';');
        let copy_err = |e: tokio_postgres::Error| format!("{name}: {}", describe(&e));
        let sink = self
            .client
            .copy_in::<_, bytes::Bytes>(stmt.text.as_str())
            .await
            .map_err(copy_err)?;
        futures::pin_mut!(sink);
        let mut out = bytes::BytesMut::with_capacity(1 << 20);
        // The end is a line `\.`, and data lines never are one (COPY text
        // escapes every backslash), so only lines starting with a backslash
        // are read one by one; the rest goes by in whole buffers.
        let mut line_start = true;
        let mut line = Vec::new();
        loop {
            let buf = reader
                .fill_buf()
                .await
                .map_err(|e| format!("reading pg_restore's output: {e}"))?;
            if buf.is_empty() {
                return Err(format!("{name}: the script ends inside its rows"));
            }
            if line_start && buf[0] == b'\\' {
                line.clear();
                let n = reader
                    .read_until(b'\n', &mut line)
                    .await
                    .map_err(|e| format!("reading pg_restore's output: {e}"))?;
                self.done.bytes += n as u64;
                if matches!(line.as_slice(), b"\\.\n" | b"\\.\r\n" | b"\\.") {
                    break;
                }
                out.extend_from_slice(&line);
                line_start = line.ends_with(b"\n");
            } else {
                let take = match memchr::memmem::find(buf, b"\n\\") {
                    Some(k) => k + 1,
                    None => buf.len(),
                };
                out.extend_from_slice(&buf[..take]);
                line_start = buf[take - 1] == b'\n';
                reader.consume(take);
                self.done.bytes += take as u64;
            }
            if out.len() >= 1 << 20 {
                sink.send(out.split().freeze()).await.map_err(copy_err)?;
                self.progress();
            }
        }
        if !out.is_empty() {
            sink.send(out.freeze()).await.map_err(copy_err)?;
        }
        sink.finish().await.map_err(copy_err)
    }
}
