//! Applying a migration on a rehearsal clone while measuring what each
//! statement does: its duration, the locks it takes on each relation, the
//! tables and indexes it rewrites (relfilenode changes), the rows it adds or
//! removes, and the non-null values in the columns it drops.
//!
//! In a transaction the measurements are exact: after each statement the
//! session reads its own `pg_locks` rows (held until commit) and the catalog
//! as it sees it. When a statement writes a table whose row count is not
//! known yet, or drops a column or table, it is rolled back to a savepoint,
//! the rows and values are counted, and the statement runs again; only the
//! clone pays for that. Statements that cannot run in a transaction are
//! watched from a second connection that samples their locks every few
//! milliseconds; values lost in a column they drop cannot be counted.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Client;

use crate::apply::{After, ApplyOptions, check_no_transaction_control, finish, locate, timeouts};
use crate::error::MigrateError;
use crate::script::{Script, Statement, line_col};
use crate::source::Migration;

/// A lock a statement took, with its mode as `pg_locks` names it.
#[derive(Debug, Clone, Serialize)]
pub struct LockTaken {
    pub relation: String,
    /// `table`, `index`, `sequence`, `view` or `other`.
    pub kind: &'static str,
    pub mode: String,
    /// From the statement's start until commit (transactional migrations);
    /// for the duration of the statement otherwise.
    pub held_ms: u64,
    /// Size of the relation before the statement; 0 for new relations.
    pub relation_bytes: i64,
    /// The relation existed before this migration.
    pub existing: bool,
}

impl LockTaken {
    pub fn is_access_exclusive(&self) -> bool {
        self.mode == "AccessExclusiveLock"
    }

    /// A lock under which nobody else can write the table (a plain CREATE
    /// INDEX, a foreign key validated in place): SHARE and stronger, short
    /// of ACCESS EXCLUSIVE, which blocks reads too.
    pub fn blocks_writes_only(&self) -> bool {
        matches!(
            self.mode.as_str(),
            "ShareLock" | "ShareRowExclusiveLock" | "ExclusiveLock"
        )
    }
}

/// A relation whose storage the statement replaced (new relfilenode).
#[derive(Debug, Clone, Serialize)]
pub struct Rewrite {
    pub relation: String,
    pub kind: &'static str,
    pub bytes_before: i64,
    pub bytes_after: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DroppedColumn {
    pub table: String,
    pub column: String,
    /// Values that were not NULL, now gone. `None` when the statement ran
    /// outside a transaction and could not be counted.
    pub non_null_values: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DroppedTable {
    pub table: String,
    pub rows: Option<i64>,
}

/// Rows of a table the statement wrote to, before and after it.
#[derive(Debug, Clone, Serialize)]
pub struct RowCount {
    pub table: String,
    pub before: Option<i64>,
    pub after: i64,
}

impl RowCount {
    pub fn lost(&self) -> i64 {
        self.before.map_or(0, |b| (b - self.after).max(0))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MeasuredStatement {
    pub line: usize,
    /// The statement, shortened to its first 200 characters.
    pub sql: String,
    pub duration_ms: u64,
    /// True when the locks were sampled from another connection (the
    /// statement ran outside a transaction), so short locks may be missing.
    pub locks_sampled: bool,
    pub locks: Vec<LockTaken>,
    pub rewrites: Vec<Rewrite>,
    pub dropped_tables: Vec<DroppedTable>,
    pub dropped_columns: Vec<DroppedColumn>,
    pub rows: Vec<RowCount>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MeasuredMigration {
    pub version: String,
    pub name: String,
    pub transactional: bool,
    pub duration_ms: u64,
    pub statements: Vec<MeasuredStatement>,
}

/// Row counts known so far on the clone, by table oid, carried from one
/// migration to the next.
#[derive(Debug, Default)]
pub struct RowCache(HashMap<i64, i64>);

impl RowCache {
    /// The tables' last known row counts, forgotten (they are gone).
    fn take_dropped(&mut self, dropped: &[(i64, String)]) -> Vec<DroppedTable> {
        dropped
            .iter()
            .map(|(oid, name)| DroppedTable {
                table: name.clone(),
                rows: self.0.remove(oid),
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
struct Rel {
    name: String,
    kind: char,
    filenode: i64,
    bytes: i64,
}

#[derive(Debug, Clone, Default)]
struct Catalog {
    rels: HashMap<i64, Rel>,
    /// (table oid, attnum) → column name.
    cols: HashMap<(i64, i16), String>,
}

const CATALOG: &str = "select c.oid::int8, format('%I.%I', n.nspname, c.relname), c.relkind::text, \
            c.relfilenode::int8, case when c.relkind in ('r','m','i','t','S') then pg_relation_size(c.oid) else 0 end \
       from pg_class c join pg_namespace n on n.oid = c.relnamespace \
      where n.nspname not in ('pg_catalog', 'information_schema', 'shipsafe') \
        and n.nspname not like 'pg\\_toast%' and n.nspname not like 'pg\\_temp%' \
        and c.relkind in ('r','p','m','i','I','S','v','f')";
const COLUMNS: &str = "select a.attrelid::int8, a.attnum, a.attname::text \
       from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace \
      where n.nspname not in ('pg_catalog', 'information_schema', 'shipsafe') \
        and n.nspname not like 'pg\\_toast%' and n.nspname not like 'pg\\_temp%' \
        and c.relkind in ('r','p','m') and a.attnum > 0 and not a.attisdropped";
const OWN_LOCKS: &str = "select relation::int8, mode from pg_locks \
      where pid = pg_backend_pid() and locktype = 'relation' and granted";
const LOCKS_OF: &str = "select relation::int8, mode from pg_locks \
      where pid = $1 and locktype = 'relation' and granted";

async fn catalog(client: &Client) -> Result<Catalog, tokio_postgres::Error> {
    let mut cat = Catalog::default();
    for r in client.query(CATALOG, &[]).await? {
        let kind: String = r.get(2);
        cat.rels.insert(
            r.get(0),
            Rel {
                name: r.get(1),
                kind: kind.chars().next().unwrap_or('?'),
                filenode: r.get(3),
                bytes: r.get(4),
            },
        );
    }
    for r in client.query(COLUMNS, &[]).await? {
        cat.cols.insert((r.get(0), r.get(1)), r.get(2));
    }
    Ok(cat)
}

fn kind_name(kind: char) -> &'static str {
    match kind {
        'r' | 'p' => "table",
        'm' => "materialized view",
        'i' | 'I' => "index",
        'S' => "sequence",
        'v' => "view",
        'f' => "foreign table",
        _ => "other",
    }
}

fn is_table(kind: char) -> bool {
    matches!(kind, 'r' | 'p' | 'm')
}

/// Modes that let a statement change rows (everything but the two read modes).
fn writes(mode: &str) -> bool {
    !matches!(mode, "AccessShareLock" | "RowShareLock")
}

type LockSet = BTreeSet<(i64, String)>;

async fn own_locks(client: &Client) -> Result<LockSet, tokio_postgres::Error> {
    Ok(client
        .query(OWN_LOCKS, &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

async fn count(client: &Client, sql: &str) -> Result<i64, tokio_postgres::Error> {
    client.query_one(sql, &[]).await.map(|r| r.get(0))
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn shorten(sql: &str) -> String {
    let one_line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 200 {
        format!("{}…", one_line.chars().take(200).collect::<String>())
    } else {
        one_line
    }
}

/// What changed in the catalog between two snapshots.
struct Changes {
    locks: Vec<(i64, LockTaken)>,
    rewrites: Vec<Rewrite>,
    dropped_tables: Vec<(i64, String)>,
    dropped_columns: Vec<(i64, String, String)>,
    /// Existing tables the statement may have written rows to.
    written: Vec<i64>,
    /// Tables it created.
    created: Vec<i64>,
}

fn changes(before: &Catalog, after: &Catalog, new_locks: &LockSet) -> Changes {
    let mut locks = Vec::new();
    let mut written = Vec::new();
    for (oid, mode) in new_locks {
        let (rel, existing) = match (before.rels.get(oid), after.rels.get(oid)) {
            (Some(r), _) => (r, true),
            (None, Some(r)) => (r, false),
            // Not a user relation (catalog, shipsafe's history).
            (None, None) => continue,
        };
        if existing && is_table(rel.kind) && writes(mode) && !written.contains(oid) {
            written.push(*oid);
        }
        locks.push((
            *oid,
            LockTaken {
                relation: rel.name.clone(),
                kind: kind_name(rel.kind),
                mode: mode.clone(),
                held_ms: 0,
                relation_bytes: if existing { rel.bytes } else { 0 },
                existing,
            },
        ));
    }
    let mut rewrites = Vec::new();
    let mut dropped_tables = Vec::new();
    for (oid, b) in &before.rels {
        match after.rels.get(oid) {
            Some(a) if a.filenode != b.filenode && b.filenode != 0 => rewrites.push(Rewrite {
                relation: b.name.clone(),
                kind: kind_name(b.kind),
                bytes_before: b.bytes,
                bytes_after: a.bytes,
            }),
            None if is_table(b.kind) => dropped_tables.push((*oid, b.name.clone())),
            _ => {}
        }
    }
    rewrites.sort_by(|a, b| a.relation.cmp(&b.relation));
    dropped_tables.sort_by(|a, b| a.1.cmp(&b.1));
    let mut dropped_columns: Vec<(i64, String, String)> = before
        .cols
        .iter()
        .filter(|(key, _)| !after.cols.contains_key(key) && after.rels.contains_key(&key.0))
        .filter_map(|((rel, _), col)| {
            before
                .rels
                .get(rel)
                .map(|r| (*rel, r.name.clone(), col.clone()))
        })
        .collect();
    dropped_columns.sort_by(|a, b| (&a.1, &a.2).cmp(&(&b.1, &b.2)));
    let created = after
        .rels
        .iter()
        .filter(|(oid, r)| !before.rels.contains_key(oid) && is_table(r.kind))
        .map(|(oid, _)| *oid)
        .collect();
    Changes {
        locks,
        rewrites,
        dropped_tables,
        dropped_columns,
        written,
        created,
    }
}

fn apply_error(
    m: &Migration,
    script: &Script,
    stmt: &Statement,
    e: &tokio_postgres::Error,
    note: &str,
) -> MigrateError {
    MigrateError::Apply {
        version: m.version.clone(),
        location: locate(script, stmt, e),
        message: format!("{}{note}", shipsafe_pg::describe(e)),
        partial: false,
    }
}

fn db(what: &str, e: tokio_postgres::Error) -> MigrateError {
    MigrateError::db(what, &e)
}

/// Applies `m` on a rehearsal clone, measuring each statement, and records
/// it in the clone's history. `sampler` is a second connection to the same
/// database, used for statements that run outside a transaction.
pub async fn up_measured(
    client: &Client,
    sampler: &Client,
    m: &Migration,
    opts: &ApplyOptions,
    rows: &mut RowCache,
) -> Result<MeasuredMigration, MigrateError> {
    crate::history::ensure_table(client).await?;
    if m.no_transaction() {
        return up_autocommit(client, sampler, m, opts, rows).await;
    }
    check_no_transaction_control(m, &m.up)?;
    let script = &m.up;
    let started = Instant::now();
    client
        .batch_execute(&format!("begin; {}", timeouts(opts, true)))
        .await
        .map_err(|e| db("starting the migration", e))?;
    let result = measure_in_transaction(client, m, script, rows).await;
    let (mut statements, lock_starts) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = client.batch_execute("rollback").await;
            return Err(e);
        }
    };
    let ms = started.elapsed().as_millis() as i64;
    if let Err(e) = finish(client, m, opts, After::Record, ms).await {
        let _ = client.batch_execute("rollback").await;
        return Err(db("recording the migration", e));
    }
    client
        .batch_execute("commit")
        .await
        .map_err(|e| db("committing the migration", e))?;
    let committed = Instant::now();
    for (stmt, starts) in statements.iter_mut().zip(lock_starts) {
        for lock in &mut stmt.locks {
            lock.held_ms = committed.duration_since(starts).as_millis() as u64;
        }
    }
    Ok(MeasuredMigration {
        version: m.version.clone(),
        name: m.name.clone(),
        transactional: true,
        duration_ms: started.elapsed().as_millis() as u64,
        statements,
    })
}

async fn measure_in_transaction(
    client: &Client,
    m: &Migration,
    script: &Script,
    rows: &mut RowCache,
) -> Result<(Vec<MeasuredStatement>, Vec<Instant>), MigrateError> {
    let mut out = Vec::new();
    let mut starts = Vec::new();
    let mut cat = catalog(client)
        .await
        .map_err(|e| db("reading the catalog", e))?;
    for stmt in script.statements() {
        let locks_before = own_locks(client)
            .await
            .map_err(|e| db("reading locks", e))?;
        client
            .batch_execute("savepoint shipsafe_measure")
            .await
            .map_err(|e| db("setting a savepoint", e))?;
        let t = Instant::now();
        if let Err(e) = client.batch_execute(&stmt.sql).await {
            return Err(apply_error(
                m,
                script,
                &stmt,
                &e,
                "; the migration was rolled back",
            ));
        }
        let duration_ms = t.elapsed().as_millis() as u64;
        let locks_after = own_locks(client)
            .await
            .map_err(|e| db("reading locks", e))?;
        let mut after = catalog(client)
            .await
            .map_err(|e| db("reading the catalog", e))?;
        let new_locks: LockSet = locks_after.difference(&locks_before).cloned().collect();
        let ch = changes(&cat, &after, &new_locks);

        // Counts that must be taken before the statement: roll it back,
        // count, and run it again.
        let uncounted: Vec<i64> = ch
            .written
            .iter()
            .chain(ch.dropped_tables.iter().map(|(oid, _)| oid))
            .filter(|oid| !rows.0.contains_key(oid))
            .copied()
            .collect();
        let mut lost_values = HashMap::new();
        if !uncounted.is_empty() || !ch.dropped_columns.is_empty() {
            client
                .batch_execute("rollback to savepoint shipsafe_measure")
                .await
                .map_err(|e| db("rolling back to the savepoint", e))?;
            for oid in &uncounted {
                let name = &cat.rels[oid].name;
                let n = count(client, &format!("select count(*) from {name}"))
                    .await
                    .map_err(|e| db(&format!("counting rows of {name}"), e))?;
                rows.0.insert(*oid, n);
            }
            for (oid, table, column) in &ch.dropped_columns {
                let n = count(
                    client,
                    &format!("select count({}) from {table}", quote(column)),
                )
                .await
                .map_err(|e| db(&format!("counting values of {table}.{column}"), e))?;
                lost_values.insert((*oid, column.clone()), n);
            }
            if let Err(e) = client.batch_execute(&stmt.sql).await {
                return Err(apply_error(
                    m,
                    script,
                    &stmt,
                    &e,
                    "; it failed when run a second time (after counting rows), so it does not give the same result twice",
                ));
            }
            after = catalog(client)
                .await
                .map_err(|e| db("reading the catalog", e))?;
        }
        client
            .batch_execute("release savepoint shipsafe_measure")
            .await
            .map_err(|e| db("releasing the savepoint", e))?;

        let row_counts = count_after(client, &cat, &after, &ch, rows).await?;
        out.push(MeasuredStatement {
            line: line_col(&script.text, stmt.start).0,
            sql: shorten(&stmt.sql),
            duration_ms,
            locks_sampled: false,
            locks: ch.locks.into_iter().map(|(_, l)| l).collect(),
            rewrites: ch.rewrites,
            dropped_tables: rows.take_dropped(&ch.dropped_tables),
            dropped_columns: ch
                .dropped_columns
                .into_iter()
                .map(|(oid, table, column)| DroppedColumn {
                    non_null_values: lost_values.get(&(oid, column.clone())).copied(),
                    table,
                    column,
                })
                .collect(),
            rows: row_counts,
        });
        starts.push(t);
        cat = after;
    }
    Ok((out, starts))
}

/// Rows after the statement in the tables it wrote to or created.
async fn count_after(
    client: &Client,
    before: &Catalog,
    after: &Catalog,
    ch: &Changes,
    rows: &mut RowCache,
) -> Result<Vec<RowCount>, MigrateError> {
    let mut out = Vec::new();
    for oid in &ch.written {
        let Some(rel) = after.rels.get(oid) else {
            continue;
        };
        let n = count(client, &format!("select count(*) from {}", rel.name))
            .await
            .map_err(|e| db(&format!("counting rows of {}", rel.name), e))?;
        let before_n = rows.0.insert(*oid, n);
        out.push(RowCount {
            table: before.rels[oid].name.clone(),
            before: before_n,
            after: n,
        });
    }
    for oid in &ch.created {
        let rel = &after.rels[oid];
        let n = count(client, &format!("select count(*) from {}", rel.name))
            .await
            .map_err(|e| db(&format!("counting rows of {}", rel.name), e))?;
        rows.0.insert(*oid, n);
        if n > 0 {
            out.push(RowCount {
                table: rel.name.clone(),
                before: Some(0),
                after: n,
            });
        }
    }
    Ok(out)
}

/// Statements outside a transaction: locks sampled from `sampler`.
async fn up_autocommit(
    client: &Client,
    sampler: &Client,
    m: &Migration,
    opts: &ApplyOptions,
    rows: &mut RowCache,
) -> Result<MeasuredMigration, MigrateError> {
    let script = &m.up;
    let started = Instant::now();
    client
        .execute(
            "insert into shipsafe.migrations (version, name, checksum, applied_by, run_id, dirty) values ($1, $2, $3, $4, $5, true)",
            &[&m.version, &m.name, &m.checksum(), &opts.applied_by, &opts.run_id],
        )
        .await
        .map_err(|e| db("recording the migration", e))?;
    client
        .batch_execute(&timeouts(opts, false))
        .await
        .map_err(|e| db("setting timeouts", e))?;
    let pid: i32 = client
        .query_one("select pg_backend_pid()", &[])
        .await
        .map_err(|e| db("reading the backend pid", e))?
        .get(0);
    let mut out = Vec::new();
    let mut cat = catalog(client)
        .await
        .map_err(|e| db("reading the catalog", e))?;
    for stmt in script.statements() {
        let t = Instant::now();
        let exec = client.batch_execute(&stmt.sql);
        tokio::pin!(exec);
        let mut seen = LockSet::new();
        let result = loop {
            tokio::select! {
                r = &mut exec => break r,
                _ = tokio::time::sleep(Duration::from_millis(5)) => {
                    if let Ok(found) = sampler.query(LOCKS_OF, &[&pid]).await {
                        seen.extend(found.iter().map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1))));
                    }
                }
            }
        };
        let duration_ms = t.elapsed().as_millis() as u64;
        if let Err(e) = result {
            let _ = client
                .batch_execute("reset lock_timeout; reset statement_timeout")
                .await;
            return Err(apply_error(m, script, &stmt, &e, ""));
        }
        let after = catalog(client)
            .await
            .map_err(|e| db("reading the catalog", e))?;
        let ch = changes(&cat, &after, &seen);
        let row_counts = count_after(client, &cat, &after, &ch, rows).await?;
        out.push(MeasuredStatement {
            line: line_col(&script.text, stmt.start).0,
            sql: shorten(&stmt.sql),
            duration_ms,
            locks_sampled: true,
            locks: ch
                .locks
                .into_iter()
                .map(|(_, mut l)| {
                    l.held_ms = duration_ms;
                    l
                })
                .collect(),
            rewrites: ch.rewrites,
            dropped_tables: rows.take_dropped(&ch.dropped_tables),
            dropped_columns: ch
                .dropped_columns
                .into_iter()
                .map(|(_, table, column)| DroppedColumn {
                    table,
                    column,
                    non_null_values: None,
                })
                .collect(),
            rows: row_counts,
        });
        cat = after;
    }
    let _ = client
        .batch_execute("reset lock_timeout; reset statement_timeout")
        .await;
    let ms = started.elapsed().as_millis() as i64;
    finish(client, m, opts, After::Record, ms)
        .await
        .map_err(|e| db("recording the migration", e))?;
    Ok(MeasuredMigration {
        version: m.version.clone(),
        name: m.name.clone(),
        transactional: false,
        duration_ms: started.elapsed().as_millis() as u64,
        statements: out,
    })
}
