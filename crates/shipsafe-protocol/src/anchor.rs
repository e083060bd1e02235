//! Copies of the audit chain's head kept outside state.db, so a log that
//! lost its newest entries, or a state.db that was deleted or replaced by an
//! older copy, is caught by `log verify`:
//! - in each environment's database (`shipsafe.audit_head`, one row per
//!   project), written before every change shipsafe makes there;
//! - in each backup manifest (`audit_head`), written when the backup is
//!   taken.
//!
//! A head copy names an entry (sequence number and hash) that the log must
//! still hold, unchanged.

use serde::{Deserialize, Serialize};
use shipsafe_config::{Config, VarSource};
use shipsafe_pg::connect;
use shipsafe_state::{ChainProblem, ChainReport, StateStore};
use tokio_postgres::Client;

/// A copy of the chain head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
}

/// The log's current head, if there is a log.
pub fn current(config: &Config) -> Option<Head> {
    let store = StateStore::open_existing(config.state_dir()).ok()??;
    store
        .audit_head()
        .ok()?
        .map(|(seq, hash)| Head { seq, hash })
}

/// Writes the log's head into the database on `client`. A head never moves
/// back: a state.db that lost entries leaves the database's copy ahead of it,
/// for `log verify` to see. Best effort: a role that may not create the
/// table still gets its change, and `log verify` says no copy was found.
pub async fn write(config: &Config, client: &Client) {
    let Some(head) = current(config) else { return };
    let sql = format!(
        "create schema if not exists shipsafe; \
         create table if not exists shipsafe.audit_head (project text primary key, seq bigint not null, \
           hash text not null, written_at timestamptz not null default now()); \
         insert into shipsafe.audit_head (project, seq, hash) values ({p}, {seq}, {h}) \
         on conflict (project) do update set seq = excluded.seq, hash = excluded.hash, written_at = now() \
         where shipsafe.audit_head.seq <= excluded.seq",
        p = shipsafe_pg::quote_literal(&config.project_name()),
        seq = head.seq,
        h = shipsafe_pg::quote_literal(&head.hash),
    );
    let _ = client.batch_execute(&sql).await;
}

/// Reads the head copy of this project from the database on `client`.
async fn read(config: &Config, client: &Client) -> Option<Head> {
    let rows = client
        .query_typed(
            "select seq, hash from shipsafe.audit_head where project = $1",
            &[(&config.project_name(), tokio_postgres::types::Type::TEXT)],
        )
        .await
        .ok()?;
    rows.first().map(|r| Head {
        seq: r.get(0),
        hash: r.get(1),
    })
}

/// The problem a head copy shows in the log, if any.
fn compare(store: Option<&StateStore>, head: &Head, place: &str) -> Option<ChainProblem> {
    let Some(store) = store else {
        return Some(ChainProblem {
            seq: head.seq,
            problem: format!(
                "state.db is missing, but {place} records audit entry {} of this project",
                head.seq
            ),
        });
    };
    match store.audit_hash(head.seq) {
        Ok(Some(h)) if h == head.hash => None,
        Ok(Some(_)) => Some(ChainProblem {
            seq: head.seq,
            problem: format!(
                "entry {} differs from the copy of it in {place}: the log was rewritten",
                head.seq
            ),
        }),
        Ok(None) => Some(ChainProblem {
            seq: head.seq,
            problem: format!(
                "{place} records audit entry {}, which the log does not have: the log lost entries (state.db deleted, replaced or cut short)",
                head.seq
            ),
        }),
        Err(e) => Some(ChainProblem {
            seq: head.seq,
            problem: format!(
                "cannot read entry {} to compare with {place}: {e}",
                head.seq
            ),
        }),
    }
}

/// Compares every reachable head copy (environments' databases, backup
/// manifests) with the log and adds what it finds to `report`.
pub fn check<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    report: &'a mut ChainReport,
) -> crate::Task<'a, ()> {
    Box::pin(async move {
        let store = StateStore::open_existing(config.state_dir()).ok().flatten();
        let mut found = Vec::new();
        for env in config.environments() {
            let Ok(url) = config.database_url(env.name, vars) else {
                continue;
            };
            let Ok(client) = connect(&url).await else {
                report
                    .anchors_checked
                    .push(format!("{}: not reachable, not compared", env.name));
                continue;
            };
            if let Some(h) = read(config, &client).await {
                found.push((format!("{}'s database", env.name), h));
            }
        }
        // The default storage lives in the state folder: without one there is
        // nothing to list (and listing must not create it).
        let storage_exists = config.file().backups.storage.is_some() || config.state_dir().exists();
        let backups = if storage_exists {
            crate::store::list(config, vars, None).await.ok()
        } else {
            None
        };
        if let Some(backups) = backups {
            for m in backups {
                if let Some(h) = m.audit_head.as_ref() {
                    found.push((
                        format!("backup {}", m.id),
                        Head {
                            seq: h.seq,
                            hash: h.hash.clone(),
                        },
                    ));
                }
            }
        }
        for (place, head) in found {
            report
                .anchors_checked
                .push(format!("{place}: entry {}", head.seq));
            if let Some(p) = compare(store.as_ref(), &head, &place) {
                report.problems.push(p);
            }
        }
        report.problems.sort_by_key(|p| p.seq);
        report.problems.dedup();
        report.ok = report.problems.is_empty();
    })
}
