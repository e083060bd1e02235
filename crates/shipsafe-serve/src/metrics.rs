//! What the dashboard and `/metrics` show, gathered once per request from
//! the environments, the backup catalog and the state database; and the
//! Prometheus text rendering of it.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;
use shipsafe_config::{Config, VarSource};

/// One environment as the overview shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EnvFacts {
    pub name: String,
    pub protection: String,
    pub up: bool,
    /// `on (TLSv1.3)`, `OFF`, or why it is unknown.
    pub tls: Option<String>,
    pub error: Option<String>,
    pub last_backup: Option<BackupFact>,
    pub last_drill: Option<DrillFact>,
    pub pending_migrations: Option<u64>,
    pub last_deploy: Option<RunFact>,
    /// From the newest `serve checks` run.
    pub checks_failing: Option<u64>,
    pub checks_at: Option<String>,
    pub readiness: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupFact {
    pub id: String,
    pub at: String,
    pub unix: i64,
    pub size_bytes: u64,
    pub duration_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillFact {
    pub backup_id: String,
    pub at: String,
    pub unix: i64,
    pub ok: bool,
    pub restore_seconds: f64,
    /// The newest successful drill, for the success timestamp.
    pub last_ok_unix: Option<i64>,
    pub last_ok_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunFact {
    pub command: String,
    pub run_id: String,
    pub outcome: String,
    pub at: String,
}

/// Everything one page or scrape shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Facts {
    pub project: String,
    pub environments: Vec<EnvFacts>,
    pub runs: Vec<shipsafe_state::RunCount>,
    pub jobs: Vec<shipsafe_state::JobState>,
    pub heartbeat: Option<shipsafe_state::Heartbeat>,
    pub backups_error: Option<String>,
}

fn seconds_between(from: &str, to: &str) -> f64 {
    match (
        from.parse::<jiff::Timestamp>(),
        to.parse::<jiff::Timestamp>(),
    ) {
        (Ok(a), Ok(b)) => (b.as_millisecond() - a.as_millisecond()).max(0) as f64 / 1000.0,
        _ => 0.0,
    }
}

fn unix(rfc3339: &str) -> i64 {
    rfc3339
        .parse::<jiff::Timestamp>()
        .map_or(0, |t| t.as_second())
}

/// Pending-migration counts per environment, reused for a minute: with a
/// preset each count starts the team's tool (a Python or Ruby process),
/// which a scrape every 15 seconds should not do each time.
#[derive(Debug, Default)]
pub struct PendingCache(
    std::sync::Mutex<std::collections::HashMap<String, (Instant, Option<u64>)>>,
);

const PENDING_FOR: Duration = Duration::from_secs(60);

impl PendingCache {
    async fn get(&self, config: &Config, vars: &dyn VarSource, env: &str) -> Option<u64> {
        let fresh = self.0.lock().ok().and_then(|m| {
            m.get(env)
                .filter(|(at, _)| at.elapsed() < PENDING_FOR)
                .map(|(_, n)| *n)
        });
        if let Some(n) = fresh {
            return n;
        }
        let n = pending(config, vars, env).await;
        if let Ok(mut m) = self.0.lock() {
            m.insert(env.to_string(), (Instant::now(), n));
        }
        n
    }
}

/// Gathers the facts. Each environment is probed with a short timeout, so
/// one unreachable server does not hold the page.
pub async fn gather(config: &Config, vars: &dyn VarSource, cache: &PendingCache) -> Facts {
    let mut facts = Facts {
        project: config.project_name(),
        ..Facts::default()
    };
    let backups = shipsafe_protocol::store::list(config, vars, None).await;
    if let Err(e) = &backups {
        facts.backups_error = Some(e.to_string());
    }
    let store = shipsafe_state::StateStore::open_existing(config.state_dir())
        .ok()
        .flatten();
    if let Some(s) = &store {
        facts.runs = s.run_counts().unwrap_or_default();
        facts.jobs = s.job_states().unwrap_or_default();
        facts.heartbeat = s.last_beat().ok().flatten();
    }
    for env in config.environments() {
        let mut f = EnvFacts {
            name: env.name.to_string(),
            protection: env.protection().as_str().to_string(),
            ..EnvFacts::default()
        };
        match config.database_url(env.name, vars) {
            Err(e) => f.error = Some(e.to_string()),
            Ok(url) => {
                let probe = async {
                    let client = shipsafe_pg::connect(&url).await?;
                    shipsafe_pg::server_info(&client, &url).await
                };
                match tokio::time::timeout(Duration::from_secs(5), probe).await {
                    Ok(Ok(info)) => {
                        f.up = true;
                        f.tls = Some(match info.tls {
                            Some(v) => format!("on ({v})"),
                            None => "OFF".into(),
                        });
                        f.pending_migrations = cache.get(config, vars, env.name).await;
                    }
                    Ok(Err(e)) => f.error = Some(e.to_string()),
                    Err(_) => f.error = Some("no answer within 5 s".into()),
                }
            }
        }
        if let Ok(all) = &backups {
            let mine: Vec<_> = all
                .iter()
                .filter(|m| m.env == env.name && m.is_complete())
                .collect();
            f.last_backup = mine.first().map(|m| BackupFact {
                id: m.id.clone(),
                at: m.created_at.clone(),
                unix: unix(&m.created_at),
                size_bytes: m.size_bytes,
                duration_seconds: seconds_between(&m.created_at, &m.finished_at),
            });
            let drills = mine
                .iter()
                .flat_map(|m| m.verifications.iter().map(move |v| (m, v)));
            let newest = drills.clone().max_by(|a, b| a.1.at.cmp(&b.1.at));
            let newest_ok = drills
                .filter(|(_, v)| v.ok)
                .max_by(|a, b| a.1.at.cmp(&b.1.at));
            f.last_drill = newest.map(|(m, v)| DrillFact {
                backup_id: m.id.clone(),
                at: v.at.clone(),
                unix: unix(&v.at),
                ok: v.ok,
                restore_seconds: v.restore_seconds,
                last_ok_unix: newest_ok.map(|(_, v)| unix(&v.at)),
                last_ok_seconds: newest_ok.map(|(_, v)| v.restore_seconds),
            });
        }
        if let Some(s) = &store {
            let newest = |commands: &[&str]| {
                s.runs_of(Some(env.name), commands, Some(1))
                    .unwrap_or_default()
                    .pop()
            };
            f.last_deploy = newest(&["deploy", "rollback"]).map(|r| RunFact {
                command: r.command.clone(),
                run_id: r.run_id.clone(),
                outcome: r.outcome.clone(),
                at: r.started_at.clone(),
            });
            let checks = super::jobs::command(shipsafe_config::Job::Checks);
            if let Some(c) = newest(&[checks.as_str()]) {
                f.checks_failing = c.report["failing"].as_u64();
                f.checks_at = Some(c.started_at.clone());
            }
            f.readiness = s
                .latest_readiness(env.name)
                .ok()
                .flatten()
                .map(|(level, _)| level);
        }
        facts.environments.push(f);
    }
    facts
}

async fn pending(config: &Config, vars: &dyn VarSource, env: &str) -> Option<u64> {
    use shipsafe_protocol::connection::{Access, open};
    let url = config.database_url(env, vars).ok()?;
    let client = open(config, env, &url, Access::Read).await.ok()?;
    let source = shipsafe_protocol::source::Source::of(config);
    let n = source.pending_count(config, &url, &client).await.ok()??;
    Some(n as u64)
}

/// A label value as the text format wants it.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn level_number(level: &str) -> u8 {
    match level {
        "bronze" => 1,
        "silver" => 2,
        "gold" => 3,
        _ => 0,
    }
}

/// The Prometheus text exposition (version 0.0.4).
pub fn render(f: &Facts) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let per_env = |value: &dyn Fn(&EnvFacts) -> Option<String>| -> Vec<(String, String)> {
        f.environments
            .iter()
            .filter_map(|e| value(e).map(|v| (format!("env=\"{}\"", label(&e.name)), v)))
            .collect()
    };
    family(
        "shipsafe_database_up",
        "gauge",
        "1 when the environment's database answered the last probe.",
        per_env(&|e| Some(u8::from(e.up).to_string())),
    );
    family(
        "shipsafe_backup_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the newest complete backup; 0 when there is none.",
        per_env(&|e| Some(e.last_backup.as_ref().map_or(0, |b| b.unix).to_string())),
    );
    family(
        "shipsafe_backup_last_size_bytes",
        "gauge",
        "Size in storage of the newest complete backup.",
        per_env(&|e| e.last_backup.as_ref().map(|b| b.size_bytes.to_string())),
    );
    family(
        "shipsafe_backup_duration_seconds",
        "gauge",
        "How long the newest complete backup took.",
        per_env(&|e| {
            e.last_backup
                .as_ref()
                .map(|b| b.duration_seconds.to_string())
        }),
    );
    family(
        "shipsafe_restore_drill_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the newest successful restore drill; 0 when there is none.",
        per_env(&|e| {
            Some(
                e.last_drill
                    .as_ref()
                    .and_then(|d| d.last_ok_unix)
                    .unwrap_or(0)
                    .to_string(),
            )
        }),
    );
    family(
        "shipsafe_restore_drill_duration_seconds",
        "gauge",
        "Measured restore time of the newest successful restore drill (RTO).",
        per_env(&|e| {
            e.last_drill
                .as_ref()
                .and_then(|d| d.last_ok_seconds)
                .map(|s| s.to_string())
        }),
    );
    family(
        "shipsafe_restore_drill_last_ok",
        "gauge",
        "1 when the newest restore drill succeeded, 0 when it failed.",
        per_env(&|e| e.last_drill.as_ref().map(|d| u8::from(d.ok).to_string())),
    );
    family(
        "shipsafe_checks_failing",
        "gauge",
        "Checks and smoke tests failing in the newest scheduled check run.",
        per_env(&|e| e.checks_failing.map(|n| n.to_string())),
    );
    family(
        "shipsafe_pending_migrations",
        "gauge",
        "Migrations not yet applied to the environment.",
        per_env(&|e| e.pending_migrations.map(|n| n.to_string())),
    );
    family(
        "shipsafe_readiness_level",
        "gauge",
        "Readiness level of the newest scorecard: 0 not-ready, 1 bronze, 2 silver, 3 gold.",
        per_env(&|e| e.readiness.as_deref().map(|l| level_number(l).to_string())),
    );
    family(
        "shipsafe_runs_total",
        "counter",
        "Recorded runs by environment, kind and outcome.",
        // A run still going has no outcome yet.
        f.runs
            .iter()
            .filter(|r| r.outcome != "running")
            .map(|r| {
                (
                    format!(
                        "env=\"{}\",kind=\"{}\",outcome=\"{}\"",
                        label(r.env.as_deref().unwrap_or("")),
                        label(&r.command.replace(' ', "_")),
                        label(&r.outcome)
                    ),
                    r.count.to_string(),
                )
            })
            .collect(),
    );
    out
}
