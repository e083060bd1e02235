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
/// (reading never creates it). Migrations that Prisma's own table records
/// as finished (applied by `prisma migrate deploy` before shipsafe, or
/// beside it) count as applied too, with Prisma's checksum.
pub async fn applied(client: &Client) -> Result<Vec<AppliedRow>, MigrateError> {
    // Unnamed statements (query_typed): this runs for `status` and `plan`,
    // which must work through a transaction-mode pooler.
    let exists = |table: &'static str| async move {
        client
            .query_typed(
                "select to_regclass($1) is not null",
                &[(&table, tokio_postgres::types::Type::TEXT)],
            )
            .await
            .map_err(|e| MigrateError::db("reading the migration history", &e))
            .map(|rows| rows.first().is_some_and(|r| r.get(0)))
    };
    let mut out: Vec<AppliedRow> = Vec::new();
    if exists("shipsafe.migrations").await? {
        let rows = client
            .query_typed(
                "select version, name, checksum, to_char(applied_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
                        duration_ms, applied_by, run_id, dirty from shipsafe.migrations",
                &[],
            )
            .await
            .map_err(|e| MigrateError::db("reading shipsafe.migrations", &e))?;
        out = rows
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
    }
    if exists("public._prisma_migrations").await? {
        let rows = client
            .query_typed(
                "select migration_name, checksum, to_char(finished_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') \
                   from public._prisma_migrations \
                  where finished_at is not null and rolled_back_at is null",
                &[],
            )
            .await
            .map_err(|e| MigrateError::db("reading _prisma_migrations", &e))?;
        for r in rows {
            let folder: String = r.get(0);
            let (version, name) = folder.split_once('_').unwrap_or((folder.as_str(), ""));
            if out.iter().any(|a| a.version == version) {
                continue;
            }
            out.push(AppliedRow {
                version: version.to_string(),
                name: name.to_string(),
                checksum: format!("sha256:{}", r.get::<_, String>(1)),
                applied_at: r.get(2),
                duration_ms: 0,
                applied_by: "prisma".into(),
                run_id: None,
                dirty: false,
            });
        }
    }
    out.sort_by(|a, b| crate::source::compare_versions(&a.version, &b.version));
    Ok(out)
}

/// Prisma's history table, as `prisma migrate` creates it.
pub(crate) const PRISMA_TABLE: &str = r#"create table if not exists public."_prisma_migrations" (
    "id" varchar(36) primary key not null,
    "checksum" varchar(64) not null,
    "finished_at" timestamptz,
    "migration_name" varchar(255) not null,
    "logs" text,
    "rolled_back_at" timestamptz,
    "started_at" timestamptz not null default now(),
    "applied_steps_count" integer not null default 0
)"#;

/// A finished row for a migration folder ($1) whose migration.sql is $2;
/// Prisma's checksum is the SHA-256 of the file.
pub(crate) const PRISMA_RECORD: &str = "insert into public._prisma_migrations \
     (id, checksum, finished_at, migration_name, started_at, applied_steps_count) \
     select gen_random_uuid()::text, encode(sha256(convert_to($2::text, 'UTF8')), 'hex'), now(), $1::text, now(), 1 \
     where not exists (select 1 from public._prisma_migrations \
                        where migration_name = $1::text and finished_at is not null and rolled_back_at is null)";

/// The folder name Prisma records: `<version>_<name>`.
pub fn prisma_folder(m: &Migration) -> String {
    m.up.path
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("{}_{}", m.version, m.name))
}

/// Whether `m`'s file is what the history recorded: shipsafe's checksum,
/// or Prisma's (`sha256:`) for a row read from `_prisma_migrations`.
fn same_file(m: &Migration, recorded: &str) -> bool {
    match recorded.strip_prefix("sha256:") {
        Some(hex) => {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(m.up.text.as_bytes());
            let mine: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            mine.eq_ignore_ascii_case(hex)
        }
        None => m.checksum() == recorded,
    }
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
            Some(m) if !same_file(m, &a.checksum) => {
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
