//! The one place that runs a protocol's steps in order: each step is
//! recorded in the run (name, status, duration, detail); a failure stops
//! the sequence with an outcome that says truthfully whether the database
//! changed; Ctrl-C is honoured between steps; and once the database may
//! have changed, a failure runs the compensation this module chooses.
//!
//! Outcomes and exit codes (SPEC §3), decided here and nowhere else:
//! - before the change: `blocked` (a gate, lint, the rehearsal's verdict,
//!   a confirmation: exit 1 or 3) or `failed_nothing_changed` (exit 4);
//!   a Ctrl-C is `interrupted` (exit 4: nothing was changed);
//! - after it: `rolled_back` when the compensation brought the database
//!   back (exit 4), `rollback_failed` when it could not (exit 5);
//! - `target_changed` when the target changed before the change step (a
//!   rehearsal's tool reached it; exit 5): a person must look.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use serde::Serialize;
use shipsafe_config::Config;
use shipsafe_state::RunRecord;

use crate::error::CoreError;
use crate::runs::Run;
use crate::source::{Applied, Source};

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

fn stop_channel() -> &'static tokio::sync::watch::Sender<bool> {
    static CHANNEL: OnceLock<tokio::sync::watch::Sender<bool>> = OnceLock::new();
    CHANNEL.get_or_init(|| tokio::sync::watch::channel(false).0)
}

/// Asks every running pipeline to stop (Ctrl-C): a step that changes
/// nothing (a backup, a rehearsal) is cancelled at once, any other ends
/// first.
pub fn request_stop() {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
    stop_channel().send_replace(true);
}

/// Turns true when a stop is asked for (for work that ends itself then).
pub fn stop_signal() -> tokio::sync::watch::Receiver<bool> {
    stop_channel().subscribe()
}

/// Whether a stop was asked for.
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

/// Resolves when a stop is asked for.
async fn stopped() {
    let mut rx = stop_channel().subscribe();
    let _ = rx.wait_for(|asked| *asked).await;
}

/// Runs `work` (a change); if a stop is asked for meanwhile, runs `cancel`
/// (which makes the change fail in its own transaction) and still waits for
/// `work` to end, so the protocol's rollback decides on what it did.
pub async fn cancel_on_stop<T>(
    work: impl Future<Output = T>,
    cancel: impl Future<Output = ()>,
) -> T {
    tokio::pin!(work);
    tokio::select! {
        done = &mut work => return done,
        () = async {
            stopped().await;
            cancel.await;
        } => {}
    }
    work.await
}

/// The run this process is carrying out, as last recorded: what a second
/// Ctrl-C saves before the process ends.
static CURRENT: Mutex<Option<(PathBuf, PathBuf, RunRecord)>> = Mutex::new(None);

/// What a second Ctrl-C left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Abandoned {
    /// No run was under way.
    Nothing,
    /// A run that had not changed anything, now recorded `interrupted`.
    Recorded(String),
    /// A run inside its change: its `running` record stays for `rollback`
    /// (the server rolls back the statement of a client that is gone).
    Changing(String),
}

/// For a process about to end on a second Ctrl-C: records the run under
/// way as `interrupted` (with its audit entry) unless it reached its change,
/// whose `running` record `rollback` must go on finding.
pub fn record_abandoned() -> Abandoned {
    let taken = CURRENT.lock().ok().and_then(|mut c| c.take());
    let Some((state_dir, cwd, rec)) = taken else {
        return Abandoned::Nothing;
    };
    if rec.outcome == "running" {
        return Abandoned::Changing(rec.run_id);
    }
    match save_abandoned(&state_dir, &cwd, rec) {
        Some(id) => Abandoned::Recorded(id),
        None => Abandoned::Nothing,
    }
}

fn save_abandoned(state_dir: &Path, cwd: &Path, mut rec: RunRecord) -> Option<String> {
    rec.outcome = "interrupted".into();
    rec.report = serde_json::json!({
        "error": "ended by a second Ctrl-C before it changed anything",
    });
    let mut store = shipsafe_state::StateStore::open(state_dir).ok()?;
    store.save_run(&rec).ok()?;
    let _ = store.append_audit(&shipsafe_state::NewAuditEntry {
        actor: shipsafe_state::Actor::detect(cwd),
        command: rec.command.clone(),
        env: rec.env.clone(),
        outcome: rec.outcome.clone(),
        backup_ids: rec.backup_id.iter().cloned().collect(),
        run_id: Some(rec.run_id.clone()),
        detail: rec.report.clone(),
    });
    Some(rec.run_id)
}

/// Removes this process's scratch clones and temporary copies at once, for
/// a process about to end on a second Ctrl-C.
pub use shipsafe_pg::scratch::remove_all_now as remove_scratch_now;

/// Why a pipeline stopped before the end: the run's outcome and the error.
#[derive(Debug)]
pub struct Stop {
    pub outcome: &'static str,
    pub error: CoreError,
}

impl Stop {
    /// A gate, a check or a person said no: nothing was changed.
    pub fn blocked(error: CoreError) -> Self {
        Self {
            outcome: "blocked",
            error,
        }
    }

    /// Something failed before any change.
    pub fn nothing_changed(error: CoreError) -> Self {
        Self {
            outcome: "failed_nothing_changed",
            error,
        }
    }

    /// The target changed although nothing of the protocol was meant to
    /// change it (a rehearsal's tool reached it): a person must look.
    pub fn target_changed(error: CoreError) -> Self {
        Self {
            outcome: "target_changed",
            error,
        }
    }

    /// A Ctrl-C cancelled `step`, which changes nothing.
    pub fn interrupted_during(step: &str) -> Self {
        Self {
            outcome: "interrupted",
            error: CoreError::RolledBack(format!(
                "interrupted (Ctrl-C) during the {step}, which was cancelled; nothing was changed"
            )),
        }
    }

    /// A Ctrl-C came before `step`: nothing was changed.
    pub fn interrupted(step: &str) -> Self {
        Self {
            outcome: "interrupted",
            error: CoreError::RolledBack(format!(
                "interrupted (Ctrl-C) before {step}; nothing was changed"
            )),
        }
    }
}

/// A step's failure: the stop, and the step's detail for the record.
#[derive(Debug)]
pub struct Failed {
    pub stop: Stop,
    pub detail: serde_json::Value,
}

impl Failed {
    pub fn new(stop: Stop) -> Self {
        let detail = serde_json::json!({ "error": stop.error.to_string() });
        Self { stop, detail }
    }

    pub fn blocked(e: CoreError) -> Self {
        Self::new(Stop::blocked(e))
    }

    pub fn nothing_changed(e: CoreError) -> Self {
        Self::new(Stop::nothing_changed(e))
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// A run being carried out step by step.
#[derive(Debug)]
pub struct Pipeline<'a> {
    config: &'a Config,
    cwd: &'a Path,
    run: Run,
    audit: serde_json::Value,
    backups: Vec<String>,
    /// What the checkpoint saved for a rollback after this process dies.
    known: serde_json::Value,
}

impl<'a> Pipeline<'a> {
    /// Starts the run of `command` on `env`; `audit` goes into its audit
    /// entry.
    pub fn start(
        config: &'a Config,
        cwd: &'a Path,
        command: &str,
        env: Option<&str>,
        audit: serde_json::Value,
    ) -> Self {
        Self {
            config,
            cwd,
            run: Run::start(command, env),
            audit,
            backups: Vec::new(),
            known: serde_json::Value::Null,
        }
    }

    /// Adds `key` to the run's audit entry.
    pub fn audit(&mut self, key: &str, value: serde_json::Value) {
        self.audit[key] = value;
    }

    /// Records the failed step `name` that stopped the run before it began
    /// (a lock that could not be taken: a step only when it stops the run).
    pub fn failed_step(&mut self, name: &str, failed: Failed) -> Stop {
        self.record(name, "failed", 0, failed.detail);
        failed.stop
    }

    pub fn run_id(&self) -> &str {
        &self.run.record.run_id
    }

    /// A backup this run made or used, named in its audit entry. The first
    /// one marked `primary` is the run's backup (what `rollback` restores).
    pub fn keep_backup(&mut self, id: &str, primary: bool) {
        if primary && self.run.record.backup_id.is_none() {
            self.run.record.backup_id = Some(id.to_string());
        }
        if !self.backups.iter().any(|b| b == id) {
            self.backups.push(id.to_string());
        }
    }

    /// Runs one step: refuses to start it after a Ctrl-C, times it, and
    /// records how it ended.
    pub async fn step<T>(
        &mut self,
        name: &str,
        work: impl Future<Output = Result<(T, serde_json::Value), Failed>>,
    ) -> Result<T, Stop> {
        if stop_requested() {
            return Err(Stop::interrupted(name));
        }
        self.run.begin(name);
        self.publish();
        match work.await {
            Ok((value, detail)) => {
                self.run.end("ok", detail);
                Ok(value)
            }
            Err(f) => {
                self.run.end("failed", f.detail);
                Err(f.stop)
            }
        }
    }

    /// [`Self::step`] for a step that changes nothing (a backup, a
    /// rehearsal): a Ctrl-C cancels it at once (its pg_dump, tool or scratch
    /// clone is stopped as it is dropped) and ends the run `interrupted`.
    pub async fn step_or_stop<T>(
        &mut self,
        name: &str,
        work: impl Future<Output = Result<(T, serde_json::Value), Failed>>,
    ) -> Result<T, Stop> {
        if stop_requested() {
            return Err(Stop::interrupted(name));
        }
        self.begin(name);
        match self.cancellable(name, work).await? {
            Ok((value, detail)) => {
                self.run.end("ok", detail);
                Ok(value)
            }
            Err(f) => {
                self.run.end("failed", f.detail);
                Err(f.stop)
            }
        }
    }

    /// The work of step `name` (begun with [`Self::begin`], which changes
    /// nothing), cancelled at once by a Ctrl-C: the step is then recorded
    /// `interrupted` and the run stops.
    pub async fn cancellable<T>(
        &mut self,
        name: &str,
        work: impl Future<Output = T>,
    ) -> Result<T, Stop> {
        tokio::select! {
            done = work => Ok(done),
            _ = stopped() => {
                self.run.end(
                    "interrupted",
                    serde_json::json!({ "reason": "cancelled by Ctrl-C" }),
                );
                Err(Stop::interrupted_during(name))
            }
        }
    }

    /// Makes the run as it stands what a second Ctrl-C records.
    fn publish(&self) {
        if let Ok(mut current) = CURRENT.lock() {
            *current = Some((
                self.config.state_dir().to_path_buf(),
                self.cwd.to_path_buf(),
                self.run.record.clone(),
            ));
        }
    }

    /// Runs a step whose failure does not stop the run (retention after a
    /// good deploy): it is recorded as failed and the run goes on.
    pub async fn step_or_note(
        &mut self,
        name: &str,
        work: impl Future<Output = Result<serde_json::Value, serde_json::Value>>,
    ) {
        self.run.begin(name);
        match work.await {
            Ok(d) => self.run.end("ok", d),
            Err(d) => self.run.end("failed", d),
        }
    }

    /// Records a step that ran but whose verdict is `status` (a change that
    /// failed and must be compensated still goes on to its rollback).
    pub fn record(
        &mut self,
        name: &str,
        status: &str,
        duration_ms: u64,
        detail: serde_json::Value,
    ) {
        self.run.record.steps.push(shipsafe_state::StepRecord {
            name: name.into(),
            status: status.into(),
            duration_ms,
            detail,
        });
    }

    /// Times a step whose outcome the caller judges (apply, verify, rollback).
    pub fn begin(&mut self, name: &str) {
        self.run.begin(name);
        self.publish();
    }

    pub fn end(&mut self, ok: bool, detail: serde_json::Value) {
        self.run.end(if ok { "ok" } else { "failed" }, detail);
    }

    pub fn skip(&mut self, name: &str, why: &str) {
        self.run.skip(name, why);
    }

    /// From here on the database may change: a record `rollback` finds is
    /// saved even if this process is killed. A Ctrl-C that came before is
    /// honoured here, the last moment nothing has changed.
    /// `known` is kept in the saved record (see [`crate::runs::Run::checkpoint`]).
    pub fn checkpoint(&mut self, known: serde_json::Value) -> Result<(), Stop> {
        if stop_requested() {
            return Err(Stop::interrupted("the change"));
        }
        self.known = known.clone();
        let saved = self
            .run
            .checkpoint(self.config.state_dir(), known)
            .map_err(Stop::nothing_changed);
        self.publish();
        saved
    }

    /// Saves the steps so far after the change ended (the `apply` step is in
    /// the record): a run that dies after this is never taken for one that
    /// changed nothing. A failure to save is noted in the log only: the
    /// run's outcome is saved again at its end.
    pub fn save_progress(&mut self) {
        if let Err(e) = self
            .run
            .checkpoint(self.config.state_dir(), self.known.clone())
        {
            tracing::warn!("cannot save the run's progress: {e}");
        }
    }

    /// Ends the run with `outcome` and `report`: saved, audited, written as
    /// Markdown.
    pub fn finish(self, outcome: &str, report: &impl Serialize) -> Result<RunRecord, CoreError> {
        let Self {
            config,
            cwd,
            run,
            audit,
            backups,
            ..
        } = self;
        if let Ok(mut current) = CURRENT.lock() {
            *current = None;
        }
        let rec = run.finish(outcome, report, config.state_dir(), cwd, backups, audit)?;
        crate::runs::write_markdown(config.state_dir(), &rec)?;
        Ok(rec)
    }

    /// Ends the run where it stopped.
    pub fn stop(
        self,
        stop: Stop,
        report: &impl Serialize,
    ) -> Result<(RunRecord, Option<CoreError>), CoreError> {
        let rec = self.finish(stop.outcome, report)?;
        Ok((rec, Some(stop.error)))
    }
}

/// How a failed deploy is undone (SPEC §6 step 9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compensation {
    /// The failing migration rolled back in its own transaction and nothing
    /// else was applied.
    Nothing,
    /// The source's own way back (down migrations, the tool's downgrade).
    GoBack,
    /// A safety backup, then a restore of the pre-deploy backup.
    Restore(String),
}

/// Chooses the compensation: nothing when nothing was applied; the source's
/// way back when there is no backup, or when the rehearsal proved it
/// faithful (`proven`) and the source prefers it; else the backup.
pub fn compensation(
    source: &Source,
    applied: &Applied,
    backup: Option<&str>,
    proven: bool,
) -> Compensation {
    if source.applied_nothing(applied) {
        return Compensation::Nothing;
    }
    match backup {
        Some(id) if !source.prefers_going_back(applied, proven) => {
            Compensation::Restore(id.to_string())
        }
        _ => Compensation::GoBack,
    }
}

/// The run's outcome and error after a compensation: what happened, and
/// when it failed, exactly what a person should do.
pub fn conclude(
    env: &str,
    ok: bool,
    detail: &str,
    failure: &str,
    backup_id: Option<&str>,
) -> (&'static str, CoreError) {
    if ok {
        return (
            "rolled_back",
            CoreError::RolledBack(format!(
                "deploy to {env} failed and was rolled back ({detail}); the database is as it was before: {failure}"
            )),
        );
    }
    let advice = match backup_id {
        Some(id) => {
            format!("restore the pre-deploy backup with `shipsafe backup restore {id} --to {env}`")
        }
        None => format!(
            "there is no pre-deploy backup (open environment): repair the database by hand, or restore an older backup (`shipsafe backup list {env}`)"
        ),
    };
    (
        "rollback_failed",
        CoreError::RollbackFailed(format!(
            "deploy to {env} failed and could NOT be rolled back: {failure}; rollback: {detail}. The database holds a partly applied change: {advice}"
        )),
    )
}
