//! Stored readiness scorecards, for `readiness ENV --since`.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::error::StateError;
use crate::store::StateStore;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadinessRecord {
    pub id: String,
    pub env: String,
    pub at: String,
    pub level: String,
    pub score: f64,
    /// The whole scorecard as JSON.
    pub report: serde_json::Value,
}

impl StateStore {
    pub fn save_readiness(&mut self, r: &ReadinessRecord) -> Result<(), StateError> {
        let report = serde_json::to_string(&r.report)?;
        self.conn()
            .execute(
                "insert or replace into readiness (id, env, at, level, score, report) values (?1, ?2, ?3, ?4, ?5, ?6)",
                params![r.id, r.env, r.at, r.level, r.score, report],
            )
            .map_err(|e| self.sql_err(e))?;
        Ok(())
    }

    /// Scorecards of `env` taken at or after `since` (RFC 3339), oldest first.
    pub fn readiness_since(
        &self,
        env: &str,
        since: &str,
    ) -> Result<Vec<ReadinessRecord>, StateError> {
        let mut stmt = self
            .conn()
            .prepare(
                "select id, env, at, level, score, report from readiness where env = ?1 and at >= ?2 order by at, id",
            )
            .map_err(|e| self.sql_err(e))?;
        let rows: Vec<(String, String, String, String, f64, String)> = stmt
            .query_map(params![env, since], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .map_err(|e| self.sql_err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sql_err(e))?;
        rows.into_iter()
            .map(|(id, env, at, level, score, report)| {
                Ok(ReadinessRecord {
                    id,
                    env,
                    at,
                    level,
                    score,
                    report: serde_json::from_str(&report)?,
                })
            })
            .collect()
    }
}
