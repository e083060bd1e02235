//! Before a deploy or a rollback changes ENV, with its lock held: settling
//! the runs a dead process left `running` (kill -9, OOM, a closed laptop).
//!
//! - Its backend on ENV, if the server still runs it (servers before 14
//!   have no `client_connection_check_interval` to end it), is terminated:
//!   a statement of a dead client would otherwise go on holding its locks.
//! - A run that died before its change ended, and whose database is as it
//!   was before (schema fingerprint, the migration history), changed
//!   nothing: it is recorded `interrupted`, so `rollback` never restores
//!   its pre-deploy backup over the writes made since.
//!
//! Anything else stays `running`: a change was (or may have been) made, and
//! `rollback` undoes it.

use std::time::{Duration, Instant};

use serde::Serialize;
use shipsafe_config::Config;
use shipsafe_state::{RunRecord, StateStore};
use tokio_postgres::Client;

use crate::error::CoreError;
use crate::source::Source;

/// What settling found, for the run's record.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Settled {
    /// Backends of dead runs that were still running, now terminated.
    pub terminated_backends: Vec<i32>,
    /// Dead runs that changed nothing, now recorded `interrupted`.
    pub changed_nothing: Vec<String>,
    /// Dead runs that may have changed ENV: `rollback` undoes them.
    pub may_have_changed: Vec<String>,
}

impl Settled {
    pub fn is_empty(&self) -> bool {
        self.terminated_backends.is_empty()
            && self.changed_nothing.is_empty()
            && self.may_have_changed.is_empty()
    }
}

/// Who is running a run: this process, identified so that a later start
/// tells it from a dead one (and from a new process given the same pid).
pub fn this_process() -> serde_json::Value {
    let pid = std::process::id();
    serde_json::json!({ "pid": pid, "pid_start": process_start(pid) })
}

/// The recorded process of `run` no longer runs.
pub fn is_dead(run: &RunRecord) -> bool {
    let Some(pid) = run.report["pid"].as_u64() else {
        return false;
    };
    match process_start(pid as u32) {
        None => true,
        Some(start) => run.report["pid_start"]
            .as_u64()
            .is_some_and(|recorded| recorded != start),
    }
}

/// The start time of process `pid` (clock ticks since boot), from
/// /proc/PID/stat; `None` when there is no such process.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// The backend of `client`, to record with a run that changes a database.
pub async fn backend(client: &Client) -> serde_json::Value {
    let row = client
        .query_one(
            "select pg_backend_pid(), backend_start::text from pg_stat_activity where pid = pg_backend_pid()",
            &[],
        )
        .await;
    match row {
        Ok(r) => serde_json::json!({ "pid": r.get::<_, i32>(0), "started": r.get::<_, String>(1) }),
        Err(_) => serde_json::Value::Null,
    }
}

/// Terminates the backend `recorded` (pid and start time, as [`backend`]
/// recorded them) if it still runs, and waits up to 10 s for it to end.
/// Returns its pid when it was running.
pub async fn terminate(
    client: &Client,
    recorded: &serde_json::Value,
) -> Result<Option<i32>, CoreError> {
    let (Some(pid), Some(started)) = (recorded["pid"].as_i64(), recorded["started"].as_str())
    else {
        return Ok(None);
    };
    let pid = pid as i32;
    let alive = "select exists (select 1 from pg_stat_activity where pid = $1 and backend_start::text = $2)";
    let running = || {
        let started = started.to_string();
        async move {
            client
                .query_one(alive, &[&pid, &started])
                .await
                .map(|r| r.get::<_, bool>(0))
                .map_err(|e| CoreError::Failed(shipsafe_pg::describe(&e)))
        }
    };
    if !running().await? {
        return Ok(None);
    }
    client
        .execute("select pg_terminate_backend($1)", &[&pid])
        .await
        .map_err(|e| {
            CoreError::Blocked(format!(
                "the backend {pid} of a run whose process died still runs and cannot be terminated ({}); end it (`select pg_terminate_backend({pid})` as a superuser or its role) and try again; nothing was changed",
                shipsafe_pg::describe(&e)
            ))
        })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while running().await? {
        if Instant::now() > deadline {
            return Err(CoreError::Blocked(format!(
                "the backend {pid} of a run whose process died did not end within 10 s of pg_terminate_backend; nothing was changed"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Some(pid))
}

/// Settles the dead runs of `env` (see the module's comment). Call with
/// `env`'s lock held on `client`.
pub async fn dead_runs(config: &Config, client: &Client, env: &str) -> Result<Settled, CoreError> {
    let mut out = Settled::default();
    let Some(store) = StateStore::open_existing(config.state_dir())? else {
        return Ok(out);
    };
    let dead: Vec<RunRecord> = store
        .running_runs()?
        .into_iter()
        .filter(|r| r.env.as_deref() == Some(env) && is_dead(r))
        .filter_map(|r| store.run(&r.run_id).ok().flatten())
        .collect();
    drop(store);
    if dead.is_empty() {
        return Ok(out);
    }
    let source = Source::of(config);
    for run in dead {
        if let Some(pid) = terminate(client, &run.report["backend"]).await? {
            out.terminated_backends.push(pid);
        }
        let change_ended = run.steps.iter().any(|s| s.name == "apply");
        if !change_ended && source.changed_nothing_since(client, &run).await {
            let mut rec = run.clone();
            rec.outcome = "interrupted".into();
            rec.report["settled"] = serde_json::json!(format!(
                "the process ended during the change, and {env}'s schema and migration history are as they were before it: nothing was changed"
            ));
            StateStore::open(config.state_dir())?.save_run(&rec)?;
            out.changed_nothing.push(run.run_id);
        } else {
            out.may_have_changed.push(run.run_id);
        }
    }
    Ok(out)
}
