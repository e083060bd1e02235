//! Recording a run (SPEC §3 "JSON of a run"): steps with durations, the
//! outcome, the state record and the audit entry.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use shipsafe_state::{Actor, NewAuditEntry, RunRecord, StateStore, StepRecord};

use crate::error::CoreError;

/// A run being built up step by step.
#[derive(Debug)]
pub struct Run {
    pub record: RunRecord,
    started: Instant,
    step_started: Option<(String, Instant)>,
}

/// Run ids: UTC time plus 4 hex digits, sortable and short enough to type.
pub fn new_run_id() -> String {
    let now = jiff::Timestamp::now();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let salt = format!("{:08x}", nanos ^ std::process::id().rotate_left(16));
    format!("{}-{}", now.strftime("%Y%m%d-%H%M%S"), &salt[..4])
}

impl Run {
    pub fn start(command: &str, env: Option<&str>) -> Self {
        Self {
            record: RunRecord {
                run_id: new_run_id(),
                command: command.to_string(),
                env: env.map(str::to_string),
                outcome: "failed_nothing_changed".into(),
                backup_id: None,
                started_at: shipsafe_state::now_rfc3339(),
                duration_ms: 0,
                steps: Vec::new(),
                report: serde_json::json!({}),
            },
            started: Instant::now(),
            step_started: None,
        }
    }

    /// Starts timing a step.
    pub fn begin(&mut self, name: &str) {
        self.step_started = Some((name.to_string(), Instant::now()));
    }

    /// Ends the current step.
    pub fn end(&mut self, status: &str, detail: serde_json::Value) {
        if let Some((name, t)) = self.step_started.take() {
            self.record.steps.push(StepRecord {
                name,
                status: status.to_string(),
                duration_ms: t.elapsed().as_millis() as u64,
                detail,
            });
        }
    }

    /// Records a step that was not run.
    pub fn skip(&mut self, name: &str, why: &str) {
        self.record.steps.push(StepRecord {
            name: name.to_string(),
            status: "skipped".into(),
            duration_ms: 0,
            detail: serde_json::json!({ "reason": why }),
        });
    }

    /// Saves the run as it is now, marked `running`, so a process killed
    /// later still leaves a record that `rollback` can find.
    ///
    /// `known` is what `rollback` needs if this process dies before the run
    /// ends (the team's tool's recorded state); it is kept in the report.
    pub fn checkpoint(
        &mut self,
        state_dir: &Path,
        known: serde_json::Value,
    ) -> Result<(), CoreError> {
        self.record.outcome = "running".into();
        let mut report = match known {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        // Who is running it: a later start tells a live run from a dead one.
        if let serde_json::Value::Object(who) = crate::steps::settle::this_process() {
            report.extend(who);
        }
        self.record.report = serde_json::Value::Object(report);
        self.record.duration_ms = self.started.elapsed().as_millis() as u64;
        StateStore::open(state_dir)?.save_run(&self.record)?;
        Ok(())
    }

    /// Finishes the run: saves it and appends the audit entry.
    pub fn finish(
        mut self,
        outcome: &str,
        report: &impl Serialize,
        state_dir: &Path,
        cwd: &Path,
        backup_ids: Vec<String>,
        detail: serde_json::Value,
    ) -> Result<RunRecord, CoreError> {
        self.record.outcome = outcome.to_string();
        self.record.duration_ms = self.started.elapsed().as_millis() as u64;
        self.record.report = serde_json::to_value(report).unwrap_or(serde_json::Value::Null);
        let saved = (|| {
            let mut store = StateStore::open(state_dir)?;
            store.save_run(&self.record)?;
            store.append_audit(&NewAuditEntry {
                actor: Actor::detect(cwd),
                command: self.record.command.clone(),
                env: self.record.env.clone(),
                outcome: outcome.to_string(),
                backup_ids,
                run_id: Some(self.record.run_id.clone()),
                detail,
            })?;
            Ok::<_, CoreError>(())
        })();
        saved.map_err(|e| unrecorded(&self.record, e))?;
        Ok(self.record)
    }
}

/// Gives every run left `running` by a process that no longer exists (killed,
/// crashed, machine restarted) an `interrupted` audit entry, once. Its record
/// stays `running`, so `rollback` still finds it. Returns how many it noted.
pub fn note_interrupted(state_dir: &Path, cwd: &Path) -> Result<usize, CoreError> {
    let Some(store) = StateStore::open_existing(state_dir)? else {
        return Ok(0);
    };
    let dead: Vec<RunRecord> = store
        .running_runs()?
        .into_iter()
        .filter(crate::steps::settle::is_dead)
        .collect();
    drop(store);
    let mut noted = 0;
    for r in dead {
        let mut store = StateStore::open(state_dir)?;
        if store.has_audit_entry(&r.run_id, "interrupted")? {
            continue;
        }
        store.append_audit(&NewAuditEntry {
            actor: Actor::detect(cwd),
            command: r.command.clone(),
            env: r.env.clone(),
            outcome: "interrupted".into(),
            backup_ids: r.backup_id.iter().cloned().collect(),
            run_id: Some(r.run_id.clone()),
            detail: serde_json::json!({
                "started_at": r.started_at,
                "pid": r.report["pid"],
                "note": "the process ended before the run did; `shipsafe rollback` can undo it",
            }),
        })?;
        noted += 1;
    }
    Ok(noted)
}

/// Whether a run that ended with `outcome` left a change in the database.
fn changed_database(run: &RunRecord) -> bool {
    matches!(
        run.outcome.as_str(),
        "deployed"
            | "wiped"
            | "imported"
            | "cloned"
            | "restored"
            | "rollback_failed"
            | "target_changed"
    ) || (run.command == "rollback" && run.outcome == "rolled_back")
}

/// A failure to record a run. After a change it is no "nothing changed"
/// (exit 4): the database holds the change and the record of it is
/// missing, which a person must know (exit 5).
fn unrecorded(run: &RunRecord, e: CoreError) -> CoreError {
    if changed_database(run) {
        CoreError::RollbackFailed(format!(
            "{} {} ended {} and the database holds its changes, but its record could not be written: {e}. Run `shipsafe status` and `shipsafe log verify`, and fix the state folder",
            run.command,
            run.env.as_deref().unwrap_or_default(),
            run.outcome
        ))
    } else {
        e
    }
}

/// Writes `<state_dir>/reports/<run_id>.md`.
pub fn write_markdown(state_dir: &Path, run: &RunRecord) -> Result<std::path::PathBuf, CoreError> {
    write_markdown_file(state_dir, run).map_err(|e| unrecorded(run, e))
}

fn write_markdown_file(state_dir: &Path, run: &RunRecord) -> Result<std::path::PathBuf, CoreError> {
    let dir = state_dir.join("reports");
    std::fs::create_dir_all(&dir)
        .map_err(|e| CoreError::io(format!("cannot create {}", dir.display()), e))?;
    let mut md = format!(
        "# shipsafe {} {}: {}\n\n- run: `{}`\n- started: {}\n- duration: {} ms\n- backup: {}\n\n## Steps\n\n| step | status | ms | detail |\n|---|---|---|---|\n",
        run.command,
        run.env.as_deref().unwrap_or("-"),
        run.outcome,
        run.run_id,
        run.started_at,
        run.duration_ms,
        run.backup_id
            .as_deref()
            .map_or_else(|| "none".to_string(), |b| format!("`{b}`")),
    );
    for s in &run.steps {
        let detail = shipsafe_config::mask_secrets(&s.detail.to_string()).replace('|', "\\|");
        md.push_str(&format!(
            "| {} | {} | {} | `{}` |\n",
            s.name, s.status, s.duration_ms, detail
        ));
    }
    if let Some(r) = run.report.get("rehearsal").filter(|r| !r.is_null()) {
        md.push_str(&format!(
            "\n## Rehearsal\n\n```text\n{}```\n",
            shipsafe_config::mask_secrets(&crate::rehearsal_text::render(r))
        ));
    }
    md.push_str(&format!(
        "\n## Report\n\n```json\n{}\n```\n",
        shipsafe_config::mask_secrets(
            &serde_json::to_string_pretty(&run.report).unwrap_or_default()
        )
    ));
    let path = dir.join(format!("{}.md", run.run_id));
    std::fs::write(&path, md)
        .map_err(|e| CoreError::io(format!("cannot write {}", path.display()), e))?;
    Ok(path)
}
