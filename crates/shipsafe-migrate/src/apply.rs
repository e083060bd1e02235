//! Running migrations: up, down and verify.
//!
//! Each migration runs in its own transaction with `lock_timeout` and
//! `statement_timeout` set, statement by statement so a failure is reported
//! at its file, line and column. A lock timeout is retried with backoff.
//! Migrations that cannot run in a transaction run statement by statement in
//! autocommit, marked dirty in the history until they finish; a failed
//! `CREATE INDEX CONCURRENTLY` has its INVALID index dropped.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::error::{ErrorPosition, SqlState};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::error::MigrateError;
use crate::lockwait::LockWaits;
use crate::script::{Script, Statement, byte_of_char};
use crate::source::Migration;

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
    pub lock_retries: u32,
    pub applied_by: String,
    pub run_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatementTiming {
    pub line: usize,
    pub sql: String,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub version: String,
    pub name: String,
    pub direction: &'static str,
    pub transactional: bool,
    pub duration_ms: u64,
    /// Lock-timeout retries it took.
    pub retries: u32,
    pub statements: Vec<StatementTiming>,
}

/// Where in `script` a statement error points.
pub(crate) fn locate(script: &Script, stmt: &Statement, e: &tokio_postgres::Error) -> String {
    let offset = match e.as_db_error().and_then(|d| d.position()) {
        Some(ErrorPosition::Original(p)) => stmt.start + byte_of_char(&stmt.sql, *p as usize),
        _ => stmt.start,
    };
    script.location(offset)
}

pub(crate) fn is_lock_timeout(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
}

pub(crate) fn timeouts(opts: &ApplyOptions, local: bool) -> String {
    timeouts_with(opts.lock_timeout, opts, local)
}

/// [`timeouts`] with the lock wait of one attempt ([`LockWaits::slice`]).
fn timeouts_with(lock: Duration, opts: &ApplyOptions, local: bool) -> String {
    let scope = if local { "local " } else { "" };
    format!(
        "set {scope}lock_timeout = '{}ms'; set {scope}statement_timeout = '{}ms'",
        lock.as_millis(),
        opts.statement_timeout.as_millis()
    )
}

fn gave_up(waits: &LockWaits) -> String {
    format!(
        "; gave up after {} attempts ({} ms of lock waits in all, none longer than {} ms): another session holds a conflicting lock",
        waits.retries(),
        waits.budget().as_millis(),
        waits.longest().as_millis()
    )
}

pub(crate) fn check_no_transaction_control(
    m: &Migration,
    script: &Script,
) -> Result<(), MigrateError> {
    if let Some(s) = script
        .statements()
        .iter()
        .find(|s| s.is_transaction_control())
    {
        return Err(MigrateError::Apply {
            version: m.version.clone(),
            location: script.location(s.start),
            message: "the script manages its own transaction; remove BEGIN/COMMIT (shipsafe runs each migration in one transaction), or mark it `-- shipsafe:no-transaction`".into(),
            partial: false,
        });
    }
    Ok(())
}

/// Applies `m` and records it in `shipsafe.migrations`.
pub async fn up(
    client: &Client,
    m: &Migration,
    opts: &ApplyOptions,
) -> Result<ApplyReport, MigrateError> {
    crate::history::ensure_table(client).await?;
    if m.no_transaction() {
        client
            .execute(
                "insert into shipsafe.migrations (version, name, checksum, applied_by, run_id, dirty) values ($1, $2, $3, $4, $5, true)",
                &[&m.version, &m.name, &m.checksum(), &opts.applied_by, &opts.run_id],
            )
            .await
            .map_err(|e| MigrateError::db(format!("recording migration {}", m.version), &e))?;
        let report = run_autocommit(client, m, &m.up, opts, "up").await;
        match report {
            Ok(r) => {
                finish(client, m, opts, After::Record, r.duration_ms as i64)
                    .await
                    .map_err(|e| {
                        MigrateError::db(format!("recording migration {}", m.version), &e)
                    })?;
                Ok(r)
            }
            Err(e) => {
                if matches!(e, MigrateError::Apply { partial: false, .. }) {
                    // Nothing of it took effect: it is simply not applied.
                    let _ = client
                        .execute(
                            "delete from shipsafe.migrations where version = $1",
                            &[&m.version],
                        )
                        .await;
                }
                Err(e)
            }
        }
    } else {
        check_no_transaction_control(m, &m.up)?;
        run_transactional(client, m, &m.up, opts, "up", After::Record).await
    }
}

/// Reverts `m` with its down.sql and removes it from the history.
pub async fn down(
    client: &Client,
    m: &Migration,
    opts: &ApplyOptions,
) -> Result<ApplyReport, MigrateError> {
    let Some(script) = &m.down else {
        return Err(MigrateError::NoDown {
            version: m.version.clone(),
        });
    };
    if script.statements().iter().any(Statement::needs_autocommit)
        || script.has_marker("no-transaction")
    {
        let r = run_autocommit(client, m, script, opts, "down").await?;
        finish(client, m, opts, After::Forget, 0)
            .await
            .map_err(|e| MigrateError::db(format!("forgetting migration {}", m.version), &e))?;
        Ok(r)
    } else {
        check_no_transaction_control(m, script)?;
        run_transactional(client, m, script, opts, "down", After::Forget).await
    }
}

/// What the transaction records in the history before it commits.
#[derive(Debug, Clone, Copy)]
pub(crate) enum After {
    Record,
    Forget,
}

const RECORD: &str = "insert into shipsafe.migrations (version, name, checksum, duration_ms, applied_by, run_id, dirty) \
     values ($1, $2, $3, $4, $5, $6, false) \
     on conflict (version) do update set checksum = excluded.checksum, duration_ms = excluded.duration_ms, \
     applied_at = now(), applied_by = excluded.applied_by, run_id = excluded.run_id, dirty = false";
const FORGET: &str = "delete from shipsafe.migrations where version = $1";

pub(crate) async fn finish(
    client: &Client,
    m: &Migration,
    opts: &ApplyOptions,
    after: After,
    ms: i64,
) -> Result<(), tokio_postgres::Error> {
    if let (After::Record, crate::source::Layout::Prisma) = (after, m.layout) {
        // The Prisma CLI reads its own table: a migration shipsafe applied
        // must not look pending to `prisma migrate deploy` or `status`.
        client.batch_execute(crate::history::PRISMA_TABLE).await?;
        client
            .execute(
                crate::history::PRISMA_RECORD,
                &[&crate::history::prisma_folder(m), &m.up.text],
            )
            .await?;
    }
    match after {
        After::Record => client
            .execute(
                RECORD,
                &[
                    &m.version,
                    &m.name,
                    &m.checksum(),
                    &ms,
                    &opts.applied_by,
                    &opts.run_id,
                ],
            )
            .await
            .map(|_| ()),
        After::Forget => client.execute(FORGET, &[&m.version]).await.map(|_| ()),
    }
}

async fn run_transactional(
    client: &Client,
    m: &Migration,
    script: &Script,
    opts: &ApplyOptions,
    direction: &'static str,
    after: After,
) -> Result<ApplyReport, MigrateError> {
    let statements = script.statements();
    let mut waits = LockWaits::new(opts.lock_timeout, opts.lock_retries);
    loop {
        let started = Instant::now();
        client
            .batch_execute(&format!(
                "begin; {}",
                timeouts_with(waits.slice(), opts, true)
            ))
            .await
            .map_err(|e| MigrateError::db(format!("starting migration {}", m.version), &e))?;
        let mut timings = Vec::with_capacity(statements.len());
        let mut failure = None;
        for stmt in &statements {
            let t = Instant::now();
            if let Err(e) = client.batch_execute(&stmt.sql).await {
                failure = Some((stmt, e));
                break;
            }
            timings.push(StatementTiming {
                line: crate::script::line_col(&script.text, stmt.start).0,
                sql: stmt.sql.clone(),
                duration_ms: t.elapsed().as_millis() as u64,
            });
        }
        let failure = match failure {
            None => {
                let ms = started.elapsed().as_millis() as i64;
                match finish(client, m, opts, after, ms).await {
                    Ok(()) => None,
                    Err(e) => {
                        let _ = client.batch_execute("rollback").await;
                        return Err(MigrateError::db(
                            format!("recording migration {}", m.version),
                            &e,
                        ));
                    }
                }
            }
            Some(f) => Some(f),
        };
        match failure {
            None => {
                client.batch_execute("commit").await.map_err(|e| {
                    MigrateError::db(format!("committing migration {}", m.version), &e)
                })?;
                return Ok(ApplyReport {
                    version: m.version.clone(),
                    name: m.name.clone(),
                    direction,
                    transactional: true,
                    duration_ms: started.elapsed().as_millis() as u64,
                    retries: waits.retries(),
                    statements: timings,
                });
            }
            Some((stmt, e)) => {
                let _ = client.batch_execute("rollback").await;
                // Statements before this one ran (and may have rewritten a
                // table): short attempts would repeat that work.
                let after_work = !std::ptr::eq(stmt, &statements[0]);
                let tried = waits.slice();
                if is_lock_timeout(&e)
                    && let Some(pause) = waits.timed_out()
                {
                    if after_work {
                        waits.hold_on();
                    }
                    tracing::info!(
                        "migration {}: no lock within {} ms at {}, attempt {}; trying again in {} ms",
                        m.version,
                        tried.as_millis(),
                        script.location(stmt.start),
                        waits.retries(),
                        pause.as_millis()
                    );
                    tokio::time::sleep(pause).await;
                    continue;
                }
                let mut message = shipsafe_pg::describe(&e);
                if is_lock_timeout(&e) {
                    message.push_str(&gave_up(&waits));
                }
                return Err(MigrateError::Apply {
                    version: m.version.clone(),
                    location: locate(script, stmt, &e),
                    message: format!("{message}; the migration was rolled back"),
                    partial: false,
                });
            }
        }
    }
}

/// Invalid indexes, to find the one a failed concurrent build left behind.
pub(crate) async fn invalid_indexes(client: &Client) -> Vec<String> {
    client
        .query(
            "select format('%I.%I', n.nspname, c.relname) from pg_index i \
             join pg_class c on c.oid = i.indexrelid join pg_namespace n on n.oid = c.relnamespace \
             where not i.indisvalid",
            &[],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}

async fn run_autocommit(
    client: &Client,
    m: &Migration,
    script: &Script,
    opts: &ApplyOptions,
    direction: &'static str,
) -> Result<ApplyReport, MigrateError> {
    let started = Instant::now();
    client
        .batch_execute(&timeouts(opts, false))
        .await
        .map_err(|e| MigrateError::db("setting timeouts", &e))?;
    let statements = script.statements();
    let mut timings = Vec::new();
    let mut retries = 0;
    let mut result = Ok(());
    'statements: for (i, stmt) in statements.iter().enumerate() {
        let mut waits = LockWaits::new(opts.lock_timeout, opts.lock_retries);
        loop {
            client
                .batch_execute(&timeouts_with(waits.slice(), opts, false))
                .await
                .map_err(|e| MigrateError::db("setting timeouts", &e))?;
            let before = if stmt.needs_autocommit() {
                invalid_indexes(client).await
            } else {
                Vec::new()
            };
            let t = Instant::now();
            match client.batch_execute(&stmt.sql).await {
                Ok(()) => {
                    timings.push(StatementTiming {
                        line: crate::script::line_col(&script.text, stmt.start).0,
                        sql: stmt.sql.clone(),
                        duration_ms: t.elapsed().as_millis() as u64,
                    });
                    break;
                }
                Err(e) => {
                    // A failed concurrent build leaves an INVALID index that
                    // still slows every write: drop it.
                    let mut dropped = Vec::new();
                    for idx in invalid_indexes(client).await {
                        if !before.contains(&idx)
                            && client
                                .batch_execute(&format!("drop index concurrently if exists {idx}"))
                                .await
                                .is_ok()
                        {
                            dropped.push(idx);
                        }
                    }
                    if is_lock_timeout(&e)
                        && let Some(pause) = waits.timed_out()
                    {
                        tokio::time::sleep(pause).await;
                        retries += 1;
                        continue;
                    }
                    let mut message = shipsafe_pg::describe(&e);
                    if is_lock_timeout(&e) {
                        message.push_str(&gave_up(&waits));
                    }
                    if !dropped.is_empty() {
                        message.push_str(&format!(
                            "; dropped the invalid index {} it left behind",
                            dropped.join(", ")
                        ));
                    }
                    result = Err(MigrateError::Apply {
                        version: m.version.clone(),
                        location: locate(script, stmt, &e),
                        message: if i == 0 {
                            format!("{message}; nothing of it was applied")
                        } else {
                            format!(
                                "{message}; it ran outside a transaction, so its first {i} statement(s) stay applied"
                            )
                        },
                        partial: i > 0,
                    });
                    break 'statements;
                }
            }
        }
    }
    let _ = client
        .batch_execute("reset lock_timeout; reset statement_timeout")
        .await;
    result?;
    Ok(ApplyReport {
        version: m.version.clone(),
        name: m.name.clone(),
        direction,
        transactional: false,
        duration_ms: started.elapsed().as_millis() as u64,
        retries,
        statements: timings,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub version: String,
    /// Statements that returned a result and were judged.
    pub assertions: u32,
}

/// Runs verify.sql in a transaction that is always rolled back. Statements
/// without a result set are setup; every statement with one must return a
/// first row whose first column is true. false, NULL, no row or an error
/// fails.
pub async fn verify(client: &Client, m: &Migration) -> Result<Option<VerifyReport>, MigrateError> {
    let Some(script) = &m.verify else {
        return Ok(None);
    };
    client
        .batch_execute("begin")
        .await
        .map_err(|e| MigrateError::db("starting verification", &e))?;
    let result = verify_statements(client, m, script).await;
    let _ = client.batch_execute("rollback").await;
    result.map(Some)
}

async fn verify_statements(
    client: &Client,
    m: &Migration,
    script: &Script,
) -> Result<VerifyReport, MigrateError> {
    let mut assertions = 0;
    for stmt in script.statements() {
        let fail = |message: String| MigrateError::Verify {
            version: m.version.clone(),
            location: script.location(stmt.start),
            message,
        };
        let messages = client
            .simple_query(&stmt.sql)
            .await
            .map_err(|e| MigrateError::Verify {
                version: m.version.clone(),
                location: locate(script, &stmt, &e),
                message: shipsafe_pg::describe(&e),
            })?;
        let has_result = messages
            .iter()
            .any(|msg| matches!(msg, SimpleQueryMessage::RowDescription(_)));
        if !has_result {
            continue;
        }
        assertions += 1;
        let first = messages.iter().find_map(|msg| match msg {
            SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
            _ => None,
        });
        match first {
            Some(Some(v)) if v == "t" => {}
            Some(Some(v)) => return Err(fail(format!("returned {v}, expected true"))),
            Some(None) => return Err(fail("returned NULL, expected true".into())),
            None => return Err(fail("returned no rows, expected true".into())),
        }
    }
    Ok(VerifyReport {
        version: m.version.clone(),
        assertions,
    })
}
