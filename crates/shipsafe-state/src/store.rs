//! The SQLite file behind run history and the audit log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use crate::error::StateError;

pub const DB_FILE: &str = "state.db";
const SCHEMA_VERSION: i64 = 4;

const SCHEMA_V1: &str = "
create table runs (
    run_id text primary key,
    command text not null,
    env text,
    outcome text not null,
    backup_id text,
    started_at text not null,
    duration_ms integer not null,
    report text not null default '{}'
);
create table steps (
    run_id text not null references runs (run_id) on delete cascade,
    seq integer not null,
    name text not null,
    status text not null,
    duration_ms integer not null,
    detail text not null default '{}',
    primary key (run_id, seq)
);
create table audit (
    seq integer primary key,
    at text not null,
    actor text not null,
    command text not null,
    env text,
    outcome text not null,
    backup_ids text not null,
    run_id text,
    detail text not null,
    prev_hash text not null,
    hash text not null
);
create table audit_head (
    id integer primary key check (id = 1),
    seq integer not null,
    hash text not null
);
";

/// Readiness scorecards, kept apart from runs: they change nothing, and
/// frequent scorecards must not push deploys out of `rollback`'s window.
const SCHEMA_V2: &str = "
create table readiness (
    id text primary key,
    env text not null,
    at text not null,
    level text not null,
    score real not null,
    report text not null
);
create index readiness_env_at on readiness (env, at);
";

/// `serve`: its heartbeat, and the last scheduled run of each job (what a
/// restart catches up from, what a recovery is measured against).
const SCHEMA_V3: &str = "
create table serve (
    instance text primary key,
    started_at text not null,
    beat_at text not null,
    listen text not null,
    stopped_at text
);
create table schedule (
    env text not null,
    job text not null,
    last_at text,
    last_outcome text,
    last_run_id text,
    last_ok_at text,
    skipped_at text,
    skipped_why text,
    primary key (env, job)
);
";

/// Run lookups by command (the deploy `rollback` undoes, the backups
/// retention keeps) read this index, not a window of the newest runs.
const SCHEMA_V4: &str = "
create index runs_env_command_started on runs (env, command, started_at);
";

#[derive(Debug)]
pub struct StateStore {
    conn: Connection,
    path: PathBuf,
}

impl StateStore {
    /// Opens (creating if needed) the state database in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StateError::CreateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        Self::open_file(&state_dir.join(DB_FILE))
    }

    /// Opens the state database only if it exists (read-only commands should
    /// not create state folders as a side effect).
    pub fn open_existing(state_dir: &Path) -> Result<Option<Self>, StateError> {
        let file = state_dir.join(DB_FILE);
        if !file.is_file() {
            return Ok(None);
        }
        Self::open_file(&file).map(Some)
    }

    fn open_file(path: &Path) -> Result<Self, StateError> {
        let sql_err = |source| StateError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(sql_err)?;
        // Several shipsafe processes may share a state folder (a deploy and
        // the scheduler); writers wait for each other instead of failing.
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(sql_err)?;
        conn.pragma_update(None, "journal_mode", "wal")
            .map_err(sql_err)?;
        conn.pragma_update(None, "foreign_keys", "on")
            .map_err(sql_err)?;
        let mut store = Self {
            conn,
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), StateError> {
        let path = self.path.clone();
        let sql_err = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql_err)?;
        let version: i64 = tx
            .query_row("pragma user_version", [], |r| r.get(0))
            .map_err(sql_err)?;
        if version > SCHEMA_VERSION {
            return Err(StateError::TooNew {
                path: path.clone(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        if version < 1 {
            tx.execute_batch(SCHEMA_V1).map_err(sql_err)?;
        }
        if version < 2 {
            tx.execute_batch(SCHEMA_V2).map_err(sql_err)?;
        }
        if version < 3 {
            tx.execute_batch(SCHEMA_V3).map_err(sql_err)?;
        }
        if version < 4 {
            tx.execute_batch(SCHEMA_V4).map_err(sql_err)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sql_err)?;
        tx.commit().map_err(sql_err)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    pub(crate) fn sql_err(&self, source: rusqlite::Error) -> StateError {
        StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}
