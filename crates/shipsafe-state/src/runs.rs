//! Run history: every `deploy`, `rollback`, `rehearse`, restore, wipe,
//! import and clone, with its steps. The shapes are those of SPEC §3.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::StateError;
use crate::store::StateStore;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    /// `ok | failed | skipped`
    pub status: String,
    pub duration_ms: u64,
    #[serde(default)]
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub command: String,
    pub env: Option<String>,
    pub outcome: String,
    pub backup_id: Option<String>,
    pub started_at: String,
    pub duration_ms: u64,
    pub steps: Vec<StepRecord>,
    #[serde(default)]
    pub report: serde_json::Value,
}

impl StateStore {
    /// Inserts or replaces a run and its steps.
    pub fn save_run(&mut self, run: &RunRecord) -> Result<(), StateError> {
        let path = self.path().to_path_buf();
        let sql_err = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let report = serde_json::to_string(&run.report)?;
        let steps: Vec<(String, String)> = run
            .steps
            .iter()
            .map(|s| Ok((s.name.clone(), serde_json::to_string(&s.detail)?)))
            .collect::<Result<_, serde_json::Error>>()?;
        let tx = self.conn_mut().transaction().map_err(sql_err)?;
        tx.execute(
            "insert or replace into runs (run_id, command, env, outcome, backup_id, started_at, duration_ms, report) \
             values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                run.run_id, run.command, run.env, run.outcome, run.backup_id,
                run.started_at, run.duration_ms as i64, report
            ],
        )
        .map_err(sql_err)?;
        tx.execute("delete from steps where run_id = ?1", params![run.run_id])
            .map_err(sql_err)?;
        for (i, (s, (_, detail))) in run.steps.iter().zip(&steps).enumerate() {
            tx.execute(
                "insert into steps (run_id, seq, name, status, duration_ms, detail) values (?1, ?2, ?3, ?4, ?5, ?6)",
                params![run.run_id, i as i64, s.name, s.status, s.duration_ms as i64, detail],
            )
            .map_err(sql_err)?;
        }
        tx.commit().map_err(sql_err)
    }

    pub fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StateError> {
        let run = self
            .conn()
            .query_row(
                "select run_id, command, env, outcome, backup_id, started_at, duration_ms, report from runs where run_id = ?1",
                params![run_id],
                run_from_row,
            )
            .optional()
            .map_err(|e| self.sql_err(e))?;
        let Some(mut run) = run else { return Ok(None) };
        run.steps = self.steps(&run.run_id)?;
        Ok(Some(run))
    }

    /// Runs, newest first.
    pub fn runs(&self, env: Option<&str>, limit: usize) -> Result<Vec<RunRecord>, StateError> {
        let mut stmt = self
            .conn()
            .prepare(
                "select run_id, command, env, outcome, backup_id, started_at, duration_ms, report from runs \
                 where (?1 is null or env = ?1) order by started_at desc, run_id desc limit ?2",
            )
            .map_err(|e| self.sql_err(e))?;
        let runs: Vec<RunRecord> = stmt
            .query_map(params![env, limit as i64], run_from_row)
            .map_err(|e| self.sql_err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sql_err(e))?;
        runs.into_iter()
            .map(|mut r| {
                r.steps = self.steps(&r.run_id)?;
                Ok(r)
            })
            .collect()
    }

    /// Runs of `commands` (for `env`, when given), newest first, without
    /// their steps; all of them, or the newest `limit`. An indexed query:
    /// scheduled jobs, however many, never push a deploy out of reach.
    pub fn runs_of(
        &self,
        env: Option<&str>,
        commands: &[&str],
        limit: Option<usize>,
    ) -> Result<Vec<RunRecord>, StateError> {
        let marks = vec!["?"; commands.len()].join(", ");
        let sql = format!(
            "select run_id, command, env, outcome, backup_id, started_at, duration_ms, report from runs \
             where (?1 is null or env = ?1) and command in ({marks}) \
             order by started_at desc, run_id desc limit {}",
            limit.map_or(-1, |n| n as i64)
        );
        let mut stmt = self.conn().prepare(&sql).map_err(|e| self.sql_err(e))?;
        let mut args: Vec<&dyn rusqlite::ToSql> = vec![&env];
        args.extend(commands.iter().map(|c| c as &dyn rusqlite::ToSql));
        stmt.query_map(args.as_slice(), run_from_row)
            .map_err(|e| self.sql_err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sql_err(e))
    }

    /// Runs recorded as still `running` (without their steps): what a start
    /// checks for runs a dead process left behind, in one indexed query.
    pub fn running_runs(&self) -> Result<Vec<RunRecord>, StateError> {
        let mut stmt = self
            .conn()
            .prepare(
                "select run_id, command, env, outcome, backup_id, started_at, duration_ms, report from runs \
                 where outcome = 'running'",
            )
            .map_err(|e| self.sql_err(e))?;
        stmt.query_map([], run_from_row)
            .map_err(|e| self.sql_err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sql_err(e))
    }

    fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StateError> {
        let mut stmt = self
            .conn()
            .prepare("select name, status, duration_ms, detail from steps where run_id = ?1 order by seq")
            .map_err(|e| self.sql_err(e))?;
        stmt.query_map(params![run_id], |r| {
            let detail: String = r.get(3)?;
            Ok(StepRecord {
                name: r.get(0)?,
                status: r.get(1)?,
                duration_ms: r.get::<_, i64>(2)? as u64,
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
            })
        })
        .map_err(|e| self.sql_err(e))?
        .collect::<Result<_, _>>()
        .map_err(|e| self.sql_err(e))
    }
}

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    let report: String = r.get(7)?;
    Ok(RunRecord {
        run_id: r.get(0)?,
        command: r.get(1)?,
        env: r.get(2)?,
        outcome: r.get(3)?,
        backup_id: r.get(4)?,
        started_at: r.get(5)?,
        duration_ms: r.get::<_, i64>(6)? as u64,
        steps: Vec::new(),
        report: serde_json::from_str(&report).unwrap_or(serde_json::Value::Null),
    })
}
