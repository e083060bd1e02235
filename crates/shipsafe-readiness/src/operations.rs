//! Monitoring and operations: the checks and the app's health endpoint pass
//! now, and a disaster-recovery runbook exists with current facts.

use std::time::Duration;

use shipsafe_pg::run_checks;

use super::model::{Category, Def, Evidence, Item, Level};
use crate::facts::{Facts, age_secs, human_age, some_of};

const CHECKS: Def = Def {
    id: "checks-passing",
    category: Category::Operations,
    level: Level::Bronze,
    title: "[[checks]] pass on the database now",
};
const SMOKE: Def = Def {
    id: "smoke-passing",
    category: Category::Operations,
    level: Level::Bronze,
    title: "The app's [[smoke]] requests pass now",
};
const RUNBOOK: Def = Def {
    id: "runbook-current",
    category: Category::Operations,
    level: Level::Silver,
    title: "A disaster-recovery runbook with current facts exists",
};

const SERVE: Def = Def {
    id: "serve-heartbeat",
    category: Category::Operations,
    level: Level::Silver,
    title: "shipsafe serve runs the environment's schedules",
};

pub(super) const DEFS: &[Def] = &[CHECKS, SMOKE, RUNBOOK, SERVE];

/// A heartbeat older than this means `serve` is not running (it beats
/// every 10 s).
const HEARTBEAT_STALE: f64 = 120.0;

/// How long readiness waits for the app to answer at all.
const APP_WAIT: Duration = Duration::from_secs(5);

pub(super) async fn items(f: &Facts<'_>) -> Vec<Item> {
    vec![checks(f).await, smoke(f).await, runbook(f), serve(f)]
}

async fn checks(f: &Facts<'_>) -> Item {
    let configured = f.config.checks_for(f.env);
    if configured.is_empty() {
        return CHECKS.unknown(
            "config",
            format!(
                "no [[checks]] configured for {}: nothing says what a correct database looks like",
                f.env
            ),
            Some("add [[checks]] with the invariants of your data".into()),
        );
    }
    let db = match f.db(&CHECKS) {
        Ok(db) => db,
        Err(item) => return *item,
    };
    let outcomes = run_checks(&db.client, &configured, false).await;
    let failed = shipsafe_protocol::checks::check_failures(&outcomes);
    let names: Vec<&str> = outcomes.iter().map(|c| c.name.as_str()).collect();
    CHECKS.judge(
        failed.is_empty(),
        Evidence::new(
            "database",
            if failed.is_empty() {
                format!("{} checks pass: {}", outcomes.len(), names.join(", "))
            } else {
                format!(
                    "{} of {} checks fail: {}",
                    failed.len(),
                    outcomes.len(),
                    failed.join("; ")
                )
            },
        )
        .value(&outcomes),
        format!(
            "shipsafe verify {} shows each failure; fix the data or the check",
            f.env
        ),
    )
}

async fn smoke(f: &Facts<'_>) -> Item {
    let tests = &f.config.file().smoke;
    if tests.is_empty() {
        return SMOKE.unknown(
            "config",
            "no [[smoke]] tests configured: the app's health is not measured",
            Some("add a [[smoke]] request to the app's health endpoint (path = \"/health\", expect_status = 200)".into()),
        );
    }
    let base = match f.config.app_url(f.env, f.vars) {
        Ok(Some(b)) => b,
        Ok(None) => {
            return SMOKE.unknown(
                "config",
                format!(
                    "environments.{}.app_url is not set: the smoke tests have nowhere to go",
                    f.env
                ),
                Some(format!("set app_url under [environments.{}]", f.env)),
            );
        }
        Err(e) => return SMOKE.unknown("config", e.to_string(), None),
    };
    let outcomes = shipsafe_protocol::smoke::run(&base, tests, f.vars, APP_WAIT).await;
    let failed = shipsafe_protocol::checks::smoke_failures(&outcomes);
    let shown: Vec<String> = outcomes
        .iter()
        .map(|s| {
            format!(
                "{} {} -> {}",
                s.method,
                s.path,
                s.status
                    .map_or_else(|| "no answer".into(), |c| c.to_string())
            )
        })
        .collect();
    SMOKE.judge(
        failed.is_empty(),
        Evidence::new(
            "http",
            if failed.is_empty() {
                format!(
                    "{} requests to {} pass: {}",
                    outcomes.len(),
                    shipsafe_config::mask_secrets(&base),
                    some_of(&shown, 4)
                )
            } else {
                format!("failing: {}", failed.join("; "))
            },
        )
        .value(&outcomes),
        format!("shipsafe verify {} shows each failure", f.env),
    )
}

fn runbook(f: &Facts<'_>) -> Item {
    let path = crate::runbook::default_path(f.config, f.env);
    let shown = path.display().to_string();
    let fix = format!("shipsafe runbook {}", f.env);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return RUNBOOK.fail(
            Evidence::new("repository", format!("no runbook at {shown}")),
            fix,
        );
    };
    let Some(generated) = crate::runbook::generated_at(&text) else {
        return RUNBOOK.fail(
            Evidence::new(
                "repository",
                format!("{shown} was not written by `shipsafe runbook`"),
            ),
            fix,
        );
    };
    // Current: written after the newest restore drill, whose facts it gives.
    let last_drill = f.backups.as_ref().ok().and_then(|all| {
        all.iter()
            .flat_map(|m| {
                m.verifications
                    .iter()
                    .filter(|v| v.ok)
                    .map(|v| v.at.clone())
            })
            .max()
    });
    let age = age_secs(&generated, f.now).unwrap_or(f64::INFINITY);
    let value =
        serde_json::json!({ "path": shown, "generated_at": generated, "last_drill": last_drill });
    match &last_drill {
        Some(d) if d.as_str() > generated.as_str() => RUNBOOK.fail(
            Evidence::new(
                "repository",
                format!("{shown} was written {generated}, before the last restore drill ({d}): its restore time is stale"),
            )
            .value(value),
            fix,
        ),
        _ => RUNBOOK.pass(
            Evidence::new("repository", format!("{shown} written {generated} ({} ago)", human_age(age))).value(value),
        ),
    }
}

/// Where `[schedule.ENV]` is configured, `serve` must be alive: its last
/// heartbeat recent and not marked stopped.
fn serve(f: &Facts<'_>) -> Item {
    let jobs: Vec<&str> = f
        .config
        .file()
        .schedule
        .get(f.env)
        .map(|s| s.jobs().iter().map(|(j, _)| j.as_str()).collect())
        .unwrap_or_default();
    let fix = format!(
        "run `shipsafe serve` as a service (systemd, a container) so [schedule.{}] runs",
        f.env
    );
    if jobs.is_empty() {
        return SERVE.warn(
            Evidence::new(
                "config",
                format!(
                    "no [schedule.{}]: backups and restore drills depend on something shipsafe cannot see (cron?) or on people",
                    f.env
                ),
            ),
            format!(
                "add [schedule.{}] backup and verify lines and run `shipsafe serve`",
                f.env
            ),
        );
    }
    let beat = shipsafe_state::StateStore::open_existing(f.config.state_dir())
        .ok()
        .flatten()
        .and_then(|s| s.last_beat().ok().flatten());
    let Some(b) = beat else {
        return SERVE.fail(
            Evidence::new(
                "state",
                format!(
                    "[schedule.{}] has {} but no `shipsafe serve` has ever run here",
                    f.env,
                    jobs.join(", ")
                ),
            ),
            fix,
        );
    };
    let age = age_secs(&b.beat_at, f.now).unwrap_or(f64::INFINITY);
    let value = serde_json::json!({ "heartbeat": b, "jobs": jobs });
    if let Some(stopped) = &b.stopped_at {
        return SERVE.fail(
            Evidence::new(
                "state",
                format!(
                    "serve {} stopped at {stopped} ({} ago)",
                    b.instance,
                    human_age(age)
                ),
            )
            .value(value),
            fix,
        );
    }
    if age > HEARTBEAT_STALE {
        return SERVE.fail(
            Evidence::new(
                "state",
                format!(
                    "serve {} last beat {} ago (at {}): it is not running",
                    b.instance,
                    human_age(age),
                    b.beat_at
                ),
            )
            .value(value),
            fix,
        );
    }
    SERVE.pass(
        Evidence::new(
            "state",
            format!(
                "serve {} alive ({} ago), listening on {}, running {} for {}",
                b.instance,
                human_age(age),
                b.listen,
                jobs.join(", "),
                f.env
            ),
        )
        .value(value),
    )
}
