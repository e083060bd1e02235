//! One scheduled job of one environment, run as a normal run: a run record
//! (checkpointed first, so a killed `serve` leaves it `running` for the next
//! start to report), an audit entry, and the job's state for the schedule.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use shipsafe_config::{Config, Job, VarSource};

use shipsafe_protocol::CoreError;
use shipsafe_protocol::progress::{Progress, Silent};
use shipsafe_protocol::runs::Run;

/// What a job did.
#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    pub env: String,
    pub job: String,
    pub run_id: String,
    pub outcome: String,
    pub ok: bool,
    /// One line for logs and notifications.
    pub summary: String,
    /// `schedule`, `catch-up` or `dashboard`.
    pub trigger: String,
}

/// The run's command: `serve backup`, `serve verify`, ...
pub fn command(job: Job) -> String {
    format!("serve {}", job.as_str())
}

/// Runs `job` for `env` and records it. Never fails: a failure is the
/// job's outcome.
pub async fn run(
    config: &Config,
    vars: &dyn VarSource,
    cwd: &Path,
    env: &str,
    job: Job,
    trigger: &str,
) -> JobResult {
    // How this job last ended, for "recovered" notifications.
    let previous_ok = shipsafe_state::StateStore::open_existing(config.state_dir())
        .ok()
        .flatten()
        .and_then(|s| s.job_states().ok())
        .and_then(|all| {
            all.into_iter()
                .find(|j| j.env == env && j.job == job.as_str())
                .and_then(|j| {
                    j.last_at
                        .map(|at| j.last_ok_at.as_deref() == Some(at.as_str()))
                })
        });
    crate::notify::started(config, vars, env, job.as_str()).await;
    let mut run = Run::start(&command(job), Some(env));
    let run_id = run.record.run_id.clone();
    let _ = run.checkpoint(config.state_dir(), serde_json::Value::Null);
    run.begin(job.as_str());
    let progress: Arc<dyn Progress> = Arc::new(Silent);
    let result = execute(config, vars, cwd, env, job, &progress).await;
    let (outcome, ok, summary, report, ids) = match result {
        Ok(done) => (done.outcome, done.ok, done.summary, done.report, done.ids),
        Err(e) => (
            "failed".to_string(),
            false,
            e.to_string(),
            serde_json::json!({ "error": e.to_string() }),
            Vec::new(),
        ),
    };
    run.end(
        if ok { "ok" } else { "failed" },
        serde_json::json!({ "summary": summary }),
    );
    let detail = serde_json::json!({ "trigger": trigger, "summary": summary });
    let recorded = run.finish(&outcome, &report, config.state_dir(), cwd, ids, detail);
    let summary = match recorded {
        Ok(_) => summary,
        Err(e) => format!("{summary} (and the run could not be recorded: {e})"),
    };
    if let Ok(mut store) = shipsafe_state::StateStore::open(config.state_dir()) {
        let _ = store.record_job(
            env,
            job.as_str(),
            &shipsafe_state::now_rfc3339(),
            &outcome,
            ok,
            Some(&run_id),
        );
    }
    let event = crate::notify::Event {
        project: config.project_name(),
        env: env.to_string(),
        job: job.as_str().to_string(),
        outcome: outcome.clone(),
        ok,
        run_id: run_id.clone(),
        summary: summary.clone(),
        at: shipsafe_state::now_rfc3339(),
        trigger: trigger.to_string(),
    };
    crate::notify::send(config, vars, &event, previous_ok).await;
    JobResult {
        env: env.to_string(),
        job: job.as_str().to_string(),
        run_id,
        outcome,
        ok,
        summary,
        trigger: trigger.to_string(),
    }
}

struct Done {
    outcome: String,
    ok: bool,
    summary: String,
    report: serde_json::Value,
    ids: Vec<String>,
}

async fn execute(
    config: &Config,
    vars: &dyn VarSource,
    cwd: &Path,
    env: &str,
    job: Job,
    progress: &Arc<dyn Progress>,
) -> Result<Done, CoreError> {
    match job {
        Job::Backup => {
            // The lock a deploy holds: a scheduled backup never runs in the
            // middle of one (nor a deploy in the middle of the backup).
            let url = config.database_url(env, vars)?;
            let client = shipsafe_protocol::connection::open(
                config,
                env,
                &url,
                shipsafe_protocol::connection::Access::Read,
            )
            .await?;
            if let Err(e) = shipsafe_migrate::history::lock(&client).await {
                return Ok(Done {
                    outcome: "skipped".into(),
                    ok: true,
                    summary: format!("backup of {env} skipped: {e}"),
                    report: serde_json::json!({ "skipped": e.to_string() }),
                    ids: Vec::new(),
                });
            }
            let made = shipsafe_protocol::commands::backup::create(
                config,
                vars,
                cwd,
                env,
                "scheduled",
                progress,
            )
            .await;
            shipsafe_migrate::history::unlock(&client).await;
            let m = made?;
            Ok(Done {
                outcome: "complete".into(),
                ok: true,
                summary: format!("backup {} of {env}: {} bytes", m.id, m.size_bytes),
                report: serde_json::json!({ "backup_id": m.id, "size_bytes": m.size_bytes }),
                ids: vec![m.id],
            })
        }
        Job::Verify => {
            let all = shipsafe_protocol::store::list(config, vars, Some(env)).await?;
            let Some(newest) = all.iter().find(|m| m.is_complete()) else {
                return Ok(Done {
                    outcome: "nothing_to_do".into(),
                    ok: false,
                    summary: format!("no complete backup of {env} to drill"),
                    report: serde_json::json!({}),
                    ids: Vec::new(),
                });
            };
            let id = newest.id.clone();
            let verified =
                shipsafe_protocol::commands::backup::verify(config, vars, cwd, &id, progress)
                    .await?;
            let checks = &verified.checks;
            let current = &verified.current_checks;
            let v = verified.manifest.verifications.last();
            let ok = v.is_some_and(|v| v.ok);
            let seconds = v.map_or(0.0, |v| v.restore_seconds);
            Ok(Done {
                outcome: if ok {
                    "verified"
                } else {
                    "verification_failed"
                }
                .into(),
                ok,
                summary: format!(
                    "restore drill of {id}: {} in {seconds:.1} s, {} check(s){}",
                    if ok { "restored" } else { "FAILED" },
                    checks.len(),
                    match shipsafe_protocol::checks::check_failures(current) {
                        f if f.is_empty() => String::new(),
                        f => format!(
                            "; not passing among the checks configured since the backup (not counted): {}",
                            f.join("; ")
                        ),
                    }
                ),
                report: serde_json::json!({ "backup_id": id, "restore_seconds": seconds, "checks": checks, "current_checks": current }),
                ids: vec![id],
            })
        }
        Job::Prune => {
            let r = shipsafe_protocol::commands::backup::prune(config, vars, cwd, Some(env), false)
                .await?;
            Ok(Done {
                outcome: if r.deleted.is_empty() {
                    "nothing_to_do"
                } else {
                    "pruned"
                }
                .into(),
                ok: true,
                summary: format!("retention on {env}: {} backup(s) deleted", r.deleted.len()),
                ids: r.deleted.clone(),
                report: serde_json::to_value(&r).unwrap_or_default(),
            })
        }
        Job::Checks => {
            let r = shipsafe_protocol::commands::verify::verify(config, vars, env).await?;
            let mut failed = shipsafe_protocol::checks::check_failures(&r.checks);
            failed.extend(shipsafe_protocol::checks::smoke_failures(&r.smoke));
            Ok(Done {
                outcome: if failed.is_empty() {
                    "passed"
                } else {
                    "failed"
                }
                .into(),
                ok: failed.is_empty(),
                summary: if failed.is_empty() {
                    format!(
                        "{} check(s) and {} smoke test(s) pass on {env}",
                        r.checks.len(),
                        r.smoke.len()
                    )
                } else {
                    format!("failing on {env}: {}", failed.join("; "))
                },
                report: serde_json::json!({ "failing": failed.len(), "verify": r }),
                ids: Vec::new(),
            })
        }
        Job::Readiness => {
            let card = shipsafe_readiness::readiness(
                config,
                vars,
                cwd,
                env,
                &shipsafe_readiness::Options::default(),
            )
            .await?;
            Ok(Done {
                outcome: card.level.as_str().to_string(),
                ok: card.meets_min_level,
                summary: format!(
                    "readiness of {env}: {} ({}/100)",
                    card.level.as_str(),
                    card.score
                ),
                report: serde_json::json!({ "scorecard": card.id, "level": card.level.as_str(), "score": card.score }),
                ids: Vec::new(),
            })
        }
    }
}
