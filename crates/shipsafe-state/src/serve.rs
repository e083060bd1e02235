//! `serve`'s heartbeat and the last run of each scheduled job.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::error::StateError;
use crate::store::StateStore;

/// The newest heartbeat of a `serve` process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heartbeat {
    /// `host:pid`.
    pub instance: String,
    pub started_at: String,
    pub beat_at: String,
    pub listen: String,
    /// Set when it stopped cleanly.
    pub stopped_at: Option<String>,
}

/// Where one scheduled job of one environment stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobState {
    pub env: String,
    pub job: String,
    /// When its last run started (RFC 3339).
    pub last_at: Option<String>,
    pub last_outcome: Option<String>,
    pub last_run_id: Option<String>,
    pub last_ok_at: Option<String>,
    /// The last tick skipped, and why (a run still going, a deploy holding
    /// the lock).
    pub skipped_at: Option<String>,
    pub skipped_why: Option<String>,
}

impl StateStore {
    /// Records that `instance` is alive now.
    pub fn beat(
        &mut self,
        instance: &str,
        started_at: &str,
        listen: &str,
        at: &str,
    ) -> Result<(), StateError> {
        self.conn()
            .execute(
                "insert into serve (instance, started_at, beat_at, listen) values (?1, ?2, ?3, ?4) \
                 on conflict (instance) do update set beat_at = excluded.beat_at, stopped_at = null",
                params![instance, started_at, at, listen],
            )
            .map_err(|e| self.sql_err(e))?;
        Ok(())
    }

    /// Records that `instance` stopped cleanly.
    pub fn stopped(&mut self, instance: &str, at: &str) -> Result<(), StateError> {
        self.conn()
            .execute(
                "update serve set stopped_at = ?2, beat_at = ?2 where instance = ?1",
                params![instance, at],
            )
            .map_err(|e| self.sql_err(e))?;
        Ok(())
    }

    /// The most recent heartbeat of any instance.
    pub fn last_beat(&self) -> Result<Option<Heartbeat>, StateError> {
        self.conn()
            .query_row(
                "select instance, started_at, beat_at, listen, stopped_at from serve order by beat_at desc limit 1",
                [],
                |r| {
                    Ok(Heartbeat {
                        instance: r.get(0)?,
                        started_at: r.get(1)?,
                        beat_at: r.get(2)?,
                        listen: r.get(3)?,
                        stopped_at: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.sql_err(e))
    }

    /// Records the end of a scheduled run.
    pub fn record_job(
        &mut self,
        env: &str,
        job: &str,
        at: &str,
        outcome: &str,
        ok: bool,
        run_id: Option<&str>,
    ) -> Result<(), StateError> {
        self.conn()
            .execute(
                "insert into schedule (env, job, last_at, last_outcome, last_run_id, last_ok_at) \
                 values (?1, ?2, ?3, ?4, ?5, case when ?6 then ?3 end) \
                 on conflict (env, job) do update set last_at = excluded.last_at, \
                   last_outcome = excluded.last_outcome, last_run_id = excluded.last_run_id, \
                   last_ok_at = coalesce(excluded.last_ok_at, schedule.last_ok_at)",
                params![env, job, at, outcome, run_id, ok],
            )
            .map_err(|e| self.sql_err(e))?;
        Ok(())
    }

    /// Records a tick that did not run, and why.
    pub fn record_skip(
        &mut self,
        env: &str,
        job: &str,
        at: &str,
        why: &str,
    ) -> Result<(), StateError> {
        self.conn()
            .execute(
                "insert into schedule (env, job, skipped_at, skipped_why) values (?1, ?2, ?3, ?4) \
                 on conflict (env, job) do update set skipped_at = excluded.skipped_at, skipped_why = excluded.skipped_why",
                params![env, job, at, why],
            )
            .map_err(|e| self.sql_err(e))?;
        Ok(())
    }

    /// Every job's state, by environment and job.
    pub fn job_states(&self) -> Result<Vec<JobState>, StateError> {
        let mut stmt = self
            .conn()
            .prepare(
                "select env, job, last_at, last_outcome, last_run_id, last_ok_at, skipped_at, skipped_why \
                 from schedule order by env, job",
            )
            .map_err(|e| self.sql_err(e))?;
        stmt.query_map([], |r| {
            Ok(JobState {
                env: r.get(0)?,
                job: r.get(1)?,
                last_at: r.get(2)?,
                last_outcome: r.get(3)?,
                last_run_id: r.get(4)?,
                last_ok_at: r.get(5)?,
                skipped_at: r.get(6)?,
                skipped_why: r.get(7)?,
            })
        })
        .map_err(|e| self.sql_err(e))?
        .collect::<Result<_, _>>()
        .map_err(|e| self.sql_err(e))
    }
}

/// How many runs of each command ended with each outcome, per environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunCount {
    pub command: String,
    pub env: Option<String>,
    pub outcome: String,
    pub count: u64,
}

impl StateStore {
    pub fn run_counts(&self) -> Result<Vec<RunCount>, StateError> {
        let mut stmt = self
            .conn()
            .prepare(
                "select command, env, outcome, count(*) from runs group by command, env, outcome order by 1, 2, 3",
            )
            .map_err(|e| self.sql_err(e))?;
        stmt.query_map([], |r| {
            Ok(RunCount {
                command: r.get(0)?,
                env: r.get(1)?,
                outcome: r.get(2)?,
                count: r.get::<_, i64>(3)? as u64,
            })
        })
        .map_err(|e| self.sql_err(e))?
        .collect::<Result<_, _>>()
        .map_err(|e| self.sql_err(e))
    }

    /// The level and time of `env`'s newest stored scorecard.
    pub fn latest_readiness(&self, env: &str) -> Result<Option<(String, String)>, StateError> {
        self.conn()
            .query_row(
                "select level, at from readiness where env = ?1 order by at desc, id desc limit 1",
                params![env],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.sql_err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_and_job_states_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StateStore::open(dir.path()).unwrap();
        assert_eq!(s.last_beat().unwrap(), None);
        s.beat(
            "h:1",
            "2026-12-06T10:00:00Z",
            "127.0.0.1:7373",
            "2026-12-06T10:00:00Z",
        )
        .unwrap();
        s.beat(
            "h:1",
            "2026-12-06T10:00:00Z",
            "127.0.0.1:7373",
            "2026-12-06T10:00:30Z",
        )
        .unwrap();
        let b = s.last_beat().unwrap().unwrap();
        assert_eq!(
            (b.beat_at.as_str(), b.stopped_at),
            ("2026-12-06T10:00:30Z", None)
        );
        s.stopped("h:1", "2026-12-06T10:01:00Z").unwrap();
        assert_eq!(
            s.last_beat().unwrap().unwrap().stopped_at.as_deref(),
            Some("2026-12-06T10:01:00Z")
        );

        s.record_job(
            "prod",
            "backup",
            "2026-12-06T03:00:00Z",
            "complete",
            true,
            Some("r1"),
        )
        .unwrap();
        s.record_job(
            "prod",
            "backup",
            "2026-12-07T03:00:00Z",
            "failed",
            false,
            Some("r2"),
        )
        .unwrap();
        s.record_skip(
            "prod",
            "backup",
            "2026-12-07T03:00:05Z",
            "a run is still going",
        )
        .unwrap();
        let j = &s.job_states().unwrap()[0];
        assert_eq!(j.last_outcome.as_deref(), Some("failed"));
        assert_eq!(
            j.last_ok_at.as_deref(),
            Some("2026-12-06T03:00:00Z"),
            "kept from the earlier success"
        );
        assert_eq!(j.skipped_why.as_deref(), Some("a run is still going"));
    }
}
