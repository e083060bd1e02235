//! `shipsafe.migrations` in the target database, and the migration lock.

use serde::Serialize;
use tokio_postgres::Client;

use crate::error::MigrateError;
use crate::source::Migration;

const CREATE: &str = "
create schema if not exists shipsafe;
create table if not exists shipsafe.migrations (
    version     text primary key,
    name        text not null,
    checksum    text not null,
    applied_at  timestamptz not null default now(),
    duration_ms bigint not null default 0,
    applied_by  text not null,
    run_id      text,
    -- true while a no-transaction migration is running: if it stays true,
    -- the migration stopped part-way.
    dirty       boolean not null default false
);";

/// Key of the session-level advisory lock every migrating run holds.
pub const LOCK_KEY: i64 = 0x7368_6970_7361_6665; // "shipsafe"

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AppliedRow {
    pub version: String,
    pub name: String,
    pub checksum: String,
    pub applied_at: String,
    pub duration_ms: i64,
    pub applied_by: String,
    pub run_id: Option<String>,
    pub dirty: bool,
}

pub async fn ensure_table(client: &Client) -> Result<(), MigrateError> {
    client
        .batch_execute(CREATE)
        .await
        .map_err(|e| MigrateError::db("creating shipsafe.migrations", &e))
}

/// Applied migrations in version order; none when the table does not exist
/// (reading never creates it).
pub async fn applied(client: &Client) -> Result<Vec<AppliedRow>, MigrateError> {
    // Unnamed statements (query_typed): this runs for `status` and `plan`,
    // which must work through a transaction-mode pooler.
    let exists: bool = client
        .query_typed("select to_regclass('shipsafe.migrations') is not null", &[])
        .await
        .map_err(|e| MigrateError::db("reading shipsafe.migrations", &e))?
        .first()
        .is_some_and(|r| r.get(0));
    if !exists {
        return Ok(Vec::new());
    }
    let rows = client
        .query_typed(
            "select version, name, checksum, to_char(applied_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
                    duration_ms, applied_by, run_id, dirty from shipsafe.migrations",
            &[],
        )
        .await
        .map_err(|e| MigrateError::db("reading shipsafe.migrations", &e))?;
    let mut out: Vec<AppliedRow> = rows
        .iter()
        .map(|r| AppliedRow {
            version: r.get(0),
            name: r.get(1),
            checksum: r.get(2),
            applied_at: r.get(3),
            duration_ms: r.get(4),
            applied_by: r.get(5),
            run_id: r.get(6),
            dirty: r.get(7),
        })
        .collect();
    out.sort_by(|a, b| crate::source::compare_versions(&a.version, &b.version));
    Ok(out)
}

/// What deploying would do, after checking the history is consistent.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    pub pending: Vec<&'a Migration>,
    pub applied: Vec<AppliedRow>,
}

/// Compares files with history: a half-applied migration, a changed file or
/// a vanished file is an error naming the version.
pub fn plan<'a>(
    migrations: &'a [Migration],
    applied: Vec<AppliedRow>,
) -> Result<Plan<'a>, MigrateError> {
    if let Some(d) = applied.iter().find(|a| a.dirty) {
        return Err(MigrateError::Dirty {
            version: d.version.clone(),
        });
    }
    for a in &applied {
        match migrations.iter().find(|m| m.version == a.version) {
            None => {
                return Err(MigrateError::Missing {
                    version: a.version.clone(),
                });
            }
            Some(m) if m.checksum() != a.checksum => {
                return Err(MigrateError::Drift {
                    version: a.version.clone(),
                    file: m.checksum(),
                    applied: a.checksum.clone(),
                });
            }
            Some(_) => {}
        }
    }
    let pending = migrations
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version == m.version))
        .collect();
    Ok(Plan { pending, applied })
}

/// Takes the migration lock for this session, or says who holds it.
pub async fn lock(client: &Client) -> Result<(), MigrateError> {
    let got: bool = client
        .query_one("select pg_try_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(|e| MigrateError::db("taking the migration lock", &e))?
        .get(0);
    if got {
        return Ok(());
    }
    let holder = client
        .query_opt(
            "select format('pid %s, %s, since %s', a.pid, coalesce(nullif(a.application_name, ''), 'unknown client'), \
                           to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS')) \
             from pg_locks l join pg_stat_activity a using (pid) \
             where l.locktype = 'advisory' and l.granted \
               and ((l.classid::bigint << 32) | l.objid::bigint) = $1 limit 1",
            &[&LOCK_KEY],
        )
        .await
        .ok()
        .flatten()
        .map(|r| r.get::<_, String>(0));
    Err(MigrateError::Locked { holder })
}

pub async fn unlock(client: &Client) {
    let _ = client
        .execute("select pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
}
