//! `[[notify]]`: telling people when a scheduled job or a deploy fails, and
//! when it works again. Slack-compatible webhooks, a generic JSON webhook,
//! and healthchecks.io-style pings. A notification that cannot be
//! delivered is retried with backoff and then logged: it never changes the
//! outcome or exit code of what it reports. Payloads carry summaries whose
//! secrets are masked, never a URL with a password, never the hook's URL.

use std::time::Duration;

use serde::Serialize;
use shipsafe_config::{Config, NotifyConfig, NotifyKind, NotifyOn, VarSource};

/// Something that happened, as notifications tell it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub project: String,
    pub env: String,
    /// `backup`, `verify`, `prune`, `checks`, `readiness`, `deploy`,
    /// `rollback`.
    pub job: String,
    pub outcome: String,
    pub ok: bool,
    pub run_id: String,
    pub summary: String,
    pub at: String,
    /// `schedule`, `catch-up`, `cli`.
    pub trigger: String,
}

/// Which kind of news an event is, given how the same job last ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Failure,
    Recovery,
    Success,
}

impl Class {
    pub fn of(ok: bool, previous_ok: Option<bool>) -> Self {
        match (ok, previous_ok) {
            (false, _) => Class::Failure,
            (true, Some(false)) => Class::Recovery,
            (true, _) => Class::Success,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Class::Failure => "failure",
            Class::Recovery => "recovery",
            Class::Success => "success",
        }
    }

    fn wanted(self, on: &[NotifyOn]) -> bool {
        match self {
            Class::Failure => on.contains(&NotifyOn::Failure),
            Class::Recovery => on.contains(&NotifyOn::Recovery) || on.contains(&NotifyOn::Success),
            Class::Success => on.contains(&NotifyOn::Success),
        }
    }
}

/// What happened to one notification.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub kind: String,
    pub attempts: u32,
    pub delivered: bool,
    pub error: Option<String>,
}

/// Attempts per notification and the first pause between them (doubled
/// each time).
const ATTEMPTS: u32 = 4;
const FIRST_PAUSE: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_secs(10);

fn applies(n: &NotifyConfig, env: &str, job: &str) -> bool {
    (n.envs.is_empty() || n.envs.iter().any(|x| x == env))
        && (n.jobs.is_empty() || n.jobs.iter().any(|x| x == job))
}

/// healthchecks.io pings `URL/start` when a job starts.
pub async fn started(config: &Config, vars: &dyn VarSource, env: &str, job: &str) {
    for n in &config.file().notify {
        if n.kind != NotifyKind::Healthchecks || !applies(n, env, job) {
            continue;
        }
        if let Ok(url) = n.url.get_ref().resolve(vars) {
            let _ = post(&format!("{}/start", url.trim_end_matches('/')), None).await;
        }
    }
}

/// Sends `event` to every `[[notify]]` that wants it. `previous_ok` is how
/// the same job of the same environment ended last time (recovery).
pub async fn send(
    config: &Config,
    vars: &dyn VarSource,
    event: &Event,
    previous_ok: Option<bool>,
) -> Vec<Delivery> {
    let class = Class::of(event.ok, previous_ok);
    let mut out = Vec::new();
    for n in &config.file().notify {
        if !applies(n, &event.env, &event.job) {
            continue;
        }
        // healthchecks.io expects every run: success pings the URL, a
        // failure `/fail`; a missing ping is what raises its alarm.
        if n.kind != NotifyKind::Healthchecks && !class.wanted(&n.on) {
            continue;
        }
        let url = match n.url.get_ref().resolve(vars) {
            Ok(u) => u,
            Err(e) => {
                let why = format!("${{{}}} is not set", e.name);
                tracing::warn!("notify: {why}");
                out.push(Delivery {
                    kind: kind_name(n.kind).into(),
                    attempts: 0,
                    delivered: false,
                    error: Some(why),
                });
                continue;
            }
        };
        let (target, body) = match n.kind {
            NotifyKind::Slack => (url, Some(slack(event, class))),
            NotifyKind::Webhook => (url, Some(webhook(event, class))),
            NotifyKind::Healthchecks => {
                let base = url.trim_end_matches('/').to_string();
                (
                    if event.ok {
                        base
                    } else {
                        format!("{base}/fail")
                    },
                    Some(serde_json::Value::String(line(event, class))),
                )
            }
        };
        let d = deliver(n.kind, &target, body).await;
        if !d.delivered {
            tracing::warn!(
                "notify: {} notification of {} {} not delivered after {} attempt(s): {}",
                kind_name(n.kind),
                event.job,
                event.env,
                d.attempts,
                d.error.as_deref().unwrap_or("")
            );
        }
        out.push(d);
    }
    out
}

/// After a CLI `deploy` or `rollback` of `env`: notifies about its newest
/// run of `command` (already recorded). `error` is what the command failed
/// with, if it did.
pub fn after_cli<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    env: &'a str,
    command: &'a str,
    error: Option<String>,
) -> shipsafe_protocol::Task<'a, Vec<Delivery>> {
    Box::pin(async move {
        if config.file().notify.is_empty() {
            return Vec::new();
        }
        let Some(store) = shipsafe_state::StateStore::open_existing(config.state_dir())
            .ok()
            .flatten()
        else {
            return Vec::new();
        };
        let runs: Vec<_> = store
            .runs_of(Some(env), &[command], None)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.command == command && r.outcome != "running")
            .collect();
        let Some(newest) = runs.first() else {
            return Vec::new();
        };
        let ok = error.is_none() && good(command, &newest.outcome);
        let previous_ok = runs.get(1).map(|r| good(command, &r.outcome));
        let event = Event {
            project: config.project_name(),
            env: env.to_string(),
            job: command.to_string(),
            outcome: newest.outcome.clone(),
            ok,
            run_id: newest.run_id.clone(),
            summary: error.unwrap_or_else(|| format!("{command} of {env}: {}", newest.outcome)),
            at: shipsafe_state::now_rfc3339(),
            trigger: "cli".into(),
        };
        send(config, vars, &event, previous_ok).await
    })
}

/// Whether a CLI run ended well: a deploy that was rolled back failed; a
/// rollback that rolled back worked.
fn good(command: &str, outcome: &str) -> bool {
    match command {
        "rollback" => matches!(outcome, "rolled_back" | "nothing_to_do"),
        _ => matches!(outcome, "deployed" | "nothing_to_do"),
    }
}

/// After a CLI `deploy` of `env` that ended in an error without a run
/// record (a missing variable, an unreachable server, a refused
/// connection): a failure like any other, outcome `error`, no run id.
pub fn after_cli_error<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    env: &'a str,
    command: &'a str,
    error: String,
) -> shipsafe_protocol::Task<'a, Vec<Delivery>> {
    Box::pin(async move {
        // An environment that is not configured is a typing error, not news.
        if config.file().notify.is_empty() || config.environment(env).is_err() {
            return Vec::new();
        }
        let previous_ok = shipsafe_state::StateStore::open_existing(config.state_dir())
            .ok()
            .flatten()
            .and_then(|store| store.runs_of(Some(env), &[command], None).ok())
            .and_then(|runs| {
                runs.into_iter()
                    .find(|r| r.command == command && r.outcome != "running")
            })
            .map(|r| good(command, &r.outcome));
        let event = Event {
            project: config.project_name(),
            env: env.to_string(),
            job: command.to_string(),
            outcome: "error".into(),
            ok: false,
            run_id: String::new(),
            summary: format!("{command} of {env} ended in an error before it finished: {error}"),
            at: shipsafe_state::now_rfc3339(),
            trigger: "cli".into(),
        };
        send(config, vars, &event, previous_ok).await
    })
}

fn kind_name(k: NotifyKind) -> &'static str {
    match k {
        NotifyKind::Slack => "slack",
        NotifyKind::Webhook => "webhook",
        NotifyKind::Healthchecks => "healthchecks",
    }
}

/// One line a person reads first.
pub fn line(e: &Event, class: Class) -> String {
    let head = match class {
        Class::Failure => "FAILED",
        Class::Recovery => "recovered",
        Class::Success => "ok",
    };
    shipsafe_config::mask_secrets(&format!(
        "[{}] {} of {} {head}: {} ({})",
        e.project, e.job, e.env, e.summary, e.outcome
    ))
}

/// A Slack incoming-webhook message: `text` (notifications, clients
/// without blocks) and `blocks`.
pub fn slack(e: &Event, class: Class) -> serde_json::Value {
    let text = line(e, class);
    serde_json::json!({
        "text": text,
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": text } },
            { "type": "context", "elements": [ { "type": "mrkdwn", "text": format!(
                "run `{}` · {} · {} · {}", e.run_id, e.env, e.trigger, e.at
            ) } ] }
        ]
    })
}

/// The generic webhook's document.
pub fn webhook(e: &Event, class: Class) -> serde_json::Value {
    serde_json::json!({
        "event": class.as_str(),
        "project": e.project,
        "env": e.env,
        "job": e.job,
        "outcome": e.outcome,
        "ok": e.ok,
        "run_id": e.run_id,
        "summary": shipsafe_config::mask_secrets(&e.summary),
        "at": e.at,
        "trigger": e.trigger,
    })
}

async fn deliver(kind: NotifyKind, url: &str, body: Option<serde_json::Value>) -> Delivery {
    let mut pause = FIRST_PAUSE;
    let mut last_error = None;
    for attempt in 1..=ATTEMPTS {
        match post(url, body.as_ref()).await {
            Ok(()) => {
                return Delivery {
                    kind: kind_name(kind).into(),
                    attempts: attempt,
                    delivered: true,
                    error: None,
                };
            }
            Err(e) => last_error = Some(e),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }
    Delivery {
        kind: kind_name(kind).into(),
        attempts: ATTEMPTS,
        delivered: false,
        error: last_error,
    }
}

/// POSTs `body` (JSON, or text when it is a JSON string). Errors name the
/// status or the failure, never the URL: it is a secret.
async fn post(url: &str, body: Option<&serde_json::Value>) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| format!("no HTTP client: {e}"))?;
    let req = client.post(url);
    let req = match body {
        Some(serde_json::Value::String(s)) => req.body(s.clone()),
        Some(v) => req
            .header("content-type", "application/json")
            .body(v.to_string()),
        None => req,
    };
    match req.send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("the server answered {}", r.status())),
        Err(e) => Err(if e.is_timeout() {
            "no answer within 10 s".into()
        } else if e.is_connect() {
            "cannot connect".into()
        } else {
            "the request failed".into()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_is_the_first_success_after_a_failure() {
        assert_eq!(Class::of(false, Some(true)), Class::Failure);
        assert_eq!(Class::of(true, Some(false)), Class::Recovery);
        assert_eq!(Class::of(true, Some(true)), Class::Success);
        assert_eq!(Class::of(true, None), Class::Success);
        let default = [NotifyOn::Failure, NotifyOn::Recovery];
        assert!(Class::Failure.wanted(&default));
        assert!(Class::Recovery.wanted(&default));
        assert!(!Class::Success.wanted(&default));
        assert!(Class::Recovery.wanted(&[NotifyOn::Success]));
    }

    #[test]
    fn payloads_mask_urls_with_passwords() {
        let e = Event {
            project: "shop".into(),
            env: "prod".into(),
            job: "backup".into(),
            outcome: "failed".into(),
            ok: false,
            run_id: "r1".into(),
            summary: "cannot connect to postgres://app:hunter2@db/app".into(),
            at: "2026-12-06T03:00:00Z".into(),
            trigger: "schedule".into(),
        };
        for body in [
            slack(&e, Class::Failure).to_string(),
            webhook(&e, Class::Failure).to_string(),
        ] {
            assert!(!body.contains("hunter2"), "{body}");
            assert!(body.contains("backup"), "{body}");
        }
    }
}
