//! The audit log: an append-only, hash-chained list of everything shipsafe
//! changed.
//!
//! Each entry's hash covers its own fields and the previous entry's hash, so
//! editing, reordering or deleting an entry breaks the chain at that entry.
//! A separate head record (last sequence number and hash) catches removal of
//! the newest entries, which a chain alone cannot see.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::actor::Actor;
use crate::error::StateError;
use crate::store::StateStore;

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a command records.
#[derive(Debug, Clone, Default)]
pub struct NewAuditEntry {
    pub actor: Actor,
    pub command: String,
    pub env: Option<String>,
    pub outcome: String,
    pub backup_ids: Vec<String>,
    pub run_id: Option<String>,
    /// Anything else worth keeping (e.g. an `--override` reason).
    pub detail: serde_json::Value,
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: String,
    pub actor: Actor,
    pub command: String,
    pub env: Option<String>,
    pub outcome: String,
    pub backup_ids: Vec<String>,
    pub run_id: Option<String>,
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// One break in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainProblem {
    /// The entry at which the chain breaks.
    pub seq: i64,
    pub problem: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub entries: i64,
    pub ok: bool,
    pub head_hash: Option<String>,
    pub problems: Vec<ChainProblem>,
    /// Copies of the chain head kept outside state.db that were compared
    /// (an environment's database, a backup manifest).
    pub anchors_checked: Vec<String>,
}

/// The stored text of an entry's fields, exactly as hashed.
struct RawEntry {
    seq: i64,
    at: String,
    actor: String,
    command: String,
    env: Option<String>,
    outcome: String,
    backup_ids: String,
    run_id: Option<String>,
    detail: String,
    prev_hash: String,
    hash: String,
}

impl RawEntry {
    /// Length-prefixed fields, so no field boundary can be shifted.
    fn compute_hash(&self) -> String {
        let mut h = blake3::Hasher::new();
        let seq = self.seq.to_string();
        let fields: [&str; 10] = [
            &seq,
            &self.at,
            &self.actor,
            &self.command,
            self.env.as_deref().unwrap_or("\u{0}none"),
            &self.outcome,
            &self.backup_ids,
            self.run_id.as_deref().unwrap_or("\u{0}none"),
            &self.detail,
            &self.prev_hash,
        ];
        for f in fields {
            h.update(&(f.len() as u64).to_le_bytes());
            h.update(f.as_bytes());
        }
        h.finalize().to_hex().to_string()
    }

    fn into_entry(self) -> AuditEntry {
        AuditEntry {
            seq: self.seq,
            at: self.at,
            actor: serde_json::from_str(&self.actor).unwrap_or_default(),
            command: self.command,
            env: self.env,
            outcome: self.outcome,
            backup_ids: serde_json::from_str(&self.backup_ids).unwrap_or_default(),
            run_id: self.run_id,
            detail: serde_json::from_str(&self.detail).unwrap_or(serde_json::Value::Null),
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

const SELECT: &str = "select seq, at, actor, command, env, outcome, backup_ids, run_id, detail, prev_hash, hash from audit";

fn raw_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawEntry> {
    Ok(RawEntry {
        seq: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        command: r.get(3)?,
        env: r.get(4)?,
        outcome: r.get(5)?,
        backup_ids: r.get(6)?,
        run_id: r.get(7)?,
        detail: r.get(8)?,
        prev_hash: r.get(9)?,
        hash: r.get(10)?,
    })
}

impl StateStore {
    /// Appends an entry, chained to the current head, atomically.
    pub fn append_audit(&mut self, e: &NewAuditEntry) -> Result<AuditEntry, StateError> {
        let path = self.path().to_path_buf();
        let sql_err = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn_mut()
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql_err)?;
        let head: Option<(i64, String)> = tx
            .query_row("select seq, hash from audit_head where id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(sql_err)?;
        let (prev_seq, prev_hash) = head.unwrap_or((0, GENESIS.to_string()));
        let mut raw = RawEntry {
            seq: prev_seq + 1,
            at: crate::clock::now_rfc3339(),
            actor: serde_json::to_string(&e.actor)?,
            command: e.command.clone(),
            env: e.env.clone(),
            outcome: e.outcome.clone(),
            backup_ids: serde_json::to_string(&e.backup_ids)?,
            run_id: e.run_id.clone(),
            detail: serde_json::to_string(&e.detail)?,
            prev_hash,
            hash: String::new(),
        };
        raw.hash = raw.compute_hash();
        tx.execute(
            "insert into audit (seq, at, actor, command, env, outcome, backup_ids, run_id, detail, prev_hash, hash) \
             values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                raw.seq, raw.at, raw.actor, raw.command, raw.env, raw.outcome,
                raw.backup_ids, raw.run_id, raw.detail, raw.prev_hash, raw.hash
            ],
        )
        .map_err(sql_err)?;
        tx.execute(
            "insert into audit_head (id, seq, hash) values (1, ?1, ?2) \
             on conflict (id) do update set seq = excluded.seq, hash = excluded.hash",
            params![raw.seq, raw.hash],
        )
        .map_err(sql_err)?;
        tx.commit().map_err(sql_err)?;
        Ok(raw.into_entry())
    }

    /// The chain head: the newest entry's sequence number and hash.
    pub fn audit_head(&self) -> Result<Option<(i64, String)>, StateError> {
        self.conn()
            .query_row("select seq, hash from audit_head where id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(|e| self.sql_err(e))
    }

    /// The hash of entry `seq`, if the log has it.
    pub fn audit_hash(&self, seq: i64) -> Result<Option<String>, StateError> {
        self.conn()
            .query_row("select hash from audit where seq = ?1", [seq], |r| r.get(0))
            .optional()
            .map_err(|e| self.sql_err(e))
    }

    /// Whether an entry with this run id and outcome exists.
    pub fn has_audit_entry(&self, run_id: &str, outcome: &str) -> Result<bool, StateError> {
        self.conn()
            .query_row(
                "select exists (select 1 from audit where run_id = ?1 and outcome = ?2)",
                [run_id, outcome],
                |r| r.get(0),
            )
            .map_err(|e| self.sql_err(e))
    }

    /// Entries, newest first, optionally for one environment.
    pub fn audit_entries(
        &self,
        env: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<AuditEntry>, StateError> {
        let sql = format!("{SELECT} where (?1 is null or env = ?1) order by seq desc limit ?2");
        let limit = limit.map_or(-1, |l| l as i64);
        let mut stmt = self.conn().prepare(&sql).map_err(|e| self.sql_err(e))?;
        let rows = stmt
            .query_map(params![env, limit], raw_from_row)
            .map_err(|e| self.sql_err(e))?;
        rows.map(|r| r.map(RawEntry::into_entry).map_err(|e| self.sql_err(e)))
            .collect()
    }

    /// Walks the whole chain and reports every break, naming the entry.
    pub fn verify_audit(&self) -> Result<ChainReport, StateError> {
        let mut stmt = self
            .conn()
            .prepare(&format!("{SELECT} order by seq"))
            .map_err(|e| self.sql_err(e))?;
        let rows = stmt
            .query_map([], raw_from_row)
            .map_err(|e| self.sql_err(e))?;
        let mut problems = Vec::new();
        let mut expected_seq = 1;
        let mut expected_prev = GENESIS.to_string();
        let mut count = 0;
        let mut last: Option<(i64, String)> = None;
        for row in rows {
            let raw = row.map_err(|e| self.sql_err(e))?;
            count += 1;
            if raw.seq != expected_seq {
                let missing = if raw.seq == expected_seq + 1 {
                    format!("entry {expected_seq} is missing")
                } else {
                    format!("entries {expected_seq} to {} are missing", raw.seq - 1)
                };
                problems.push(ChainProblem {
                    seq: expected_seq,
                    problem: format!("{missing} (deleted): the next entry found is {}", raw.seq),
                });
            } else if raw.prev_hash != expected_prev {
                problems.push(ChainProblem {
                    seq: raw.seq,
                    problem: format!(
                        "entry {} does not follow entry {}: its recorded previous hash differs (entries reordered, or entry {} changed)",
                        raw.seq,
                        raw.seq - 1,
                        raw.seq - 1
                    ),
                });
            }
            if raw.compute_hash() != raw.hash {
                problems.push(ChainProblem {
                    seq: raw.seq,
                    problem: format!(
                        "entry {} was altered: its contents ({} {} at {}) do not match its hash",
                        raw.seq,
                        raw.command,
                        raw.env.as_deref().unwrap_or("-"),
                        raw.at
                    ),
                });
            }
            expected_seq = raw.seq + 1;
            expected_prev = raw.hash.clone();
            last = Some((raw.seq, raw.hash));
        }
        let head: Option<(i64, String)> = self
            .conn()
            .query_row("select seq, hash from audit_head where id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(|e| self.sql_err(e))?;
        match (&head, &last) {
            (Some((hs, hh)), Some((ls, lh))) if hs != ls || hh != lh => {
                problems.push(ChainProblem {
                    seq: (*ls + 1).min(*hs),
                    problem: if hs > ls {
                        format!(
                            "the log ends at entry {ls}, but entries up to {hs} were written: entries {} to {hs} were deleted",
                            ls + 1
                        )
                    } else {
                        format!("the chain head records entry {hs}, but the log ends at entry {ls}: the head or the newest entries were altered")
                    },
                });
            }
            (Some((hs, _)), None) => problems.push(ChainProblem {
                seq: 1,
                problem: format!("all {hs} entries were deleted"),
            }),
            (None, Some((ls, _))) => problems.push(ChainProblem {
                seq: *ls,
                problem: "the chain head record is missing: the log was tampered with".into(),
            }),
            _ => {}
        }
        problems.sort_by_key(|p| p.seq);
        Ok(ChainReport {
            entries: count,
            ok: problems.is_empty(),
            head_hash: last.map(|(_, h)| h),
            problems,
            anchors_checked: Vec::new(),
        })
    }
}
