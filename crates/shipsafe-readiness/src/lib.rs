//! `shipsafe readiness ENV`: the production-readiness scorecard (seed 002,
//! SPEC §10), measured, never self-reported. Every item is computed from
//! something shipsafe can read itself (the catalog, backup manifests, run
//! history, the audit log, the config, the repository, the app's URL) and
//! cites it; what cannot be measured is `unknown`, which holds a level
//! back exactly as a failure does.

mod credentials;
mod deployment;
pub mod facts;
mod health;
pub mod model;
mod operations;
mod recovery;
pub mod runbook;
pub use shipsafe_protocol::repo;
pub mod report;
mod security;
mod waivers;

use std::path::Path;

use serde::Serialize;
use shipsafe_config::{Config, DbUrl, VarSource};
use shipsafe_state::{ReadinessRecord, StateStore};

pub use model::{Category, CategoryScore, Evidence, Item, Level, Status};

pub use facts::human_age;
use facts::{Db, Facts};
use model::Def;
use shipsafe_protocol::CoreError;

/// Every item, in the order shown.
pub fn definitions() -> Vec<Def> {
    let mut all = Vec::new();
    all.extend_from_slice(recovery::DEFS);
    all.extend_from_slice(deployment::DEFS);
    all.extend_from_slice(security::DEFS);
    all.extend_from_slice(health::DEFS);
    all.extend_from_slice(operations::DEFS);
    all
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Show the trend of stored scorecards this far back.
    pub since: Option<std::time::Duration>,
    /// Overrides `[readiness] min_level`.
    pub min_level: Option<Level>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scorecard {
    pub id: String,
    pub project: String,
    pub env: String,
    pub protection: String,
    pub measured_at: String,
    pub level: Level,
    pub score: u32,
    /// The level CI asks for (`[readiness] min_level` or `--min-level`).
    pub min_level: Option<Level>,
    /// False when `min_level` is set and not reached (exit 1).
    pub meets_min_level: bool,
    pub categories: Vec<CategoryScore>,
    pub items: Vec<Item>,
    /// Waivers that stop holding within 14 days, or already stopped.
    pub expiring_waivers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trend: Option<Trend>,
}

/// Stored scorecards of this environment since a time, and what changed.
#[derive(Debug, Clone, Serialize)]
pub struct Trend {
    pub since: String,
    pub points: Vec<TrendPoint>,
    /// Items failing (or unknown) at the first point that pass now.
    pub fixed: Vec<String>,
    /// Items passing at the first point that do not now.
    pub regressed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrendPoint {
    pub at: String,
    pub level: String,
    pub score: f64,
    pub failing: usize,
}

/// Measures every item for `env`, applies waivers, scores, stores the
/// scorecard in the state folder and, with `since`, adds the trend.
pub fn readiness<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    cwd: &'a Path,
    env: &'a str,
    opts: &'a Options,
) -> shipsafe_protocol::Task<'a, Result<Scorecard, CoreError>> {
    Box::pin(async move {
        let environment = config.environment(env)?;
        waivers::validate(&config.file().readiness.waive, &definitions())?;
        let url = config.database_url(env, vars)?;
        let now = jiff::Timestamp::now();
        let db = connect(config, &url).await;
        let backups = shipsafe_protocol::store::list(config, vars, Some(env))
            .await
            .map_err(|e| e.to_string());
        let facts = Facts {
            config,
            vars,
            env,
            protection: environment.protection(),
            url: &url,
            db,
            backups,
            now,
        };
        let mut items = Vec::new();
        items.extend(recovery::items(&facts).await);
        items.extend(deployment::items(&facts).await);
        items.extend(security::items(&facts).await);
        items.extend(health::items(&facts).await);
        items.extend(operations::items(&facts).await);
        let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
        let expiring = waivers::apply(&mut items, &config.file().readiness.waive, today);

        let level = model::level_of(items.iter());
        let min_level = opts
            .min_level
            .or(config.file().readiness.min_level.map(Level::of));
        let mut card = Scorecard {
            id: shipsafe_protocol::runs::new_run_id(),
            project: config.project_name(),
            env: env.to_string(),
            protection: environment.protection().as_str().to_string(),
            measured_at: shipsafe_state::now_rfc3339(),
            level,
            score: model::score_of(items.iter()),
            min_level,
            meets_min_level: min_level.is_none_or(|m| level >= m),
            categories: model::category_scores(&items),
            items,
            expiring_waivers: expiring,
            trend: None,
        };
        store(config, cwd, &mut card, opts)?;
        Ok(card)
    })
}

/// How long a readiness query waits for a lock (a migration's ACCESS
/// EXCLUSIVE, say) before its item says so and the scorecard goes on. A
/// session `lock_timeout`, not `statement_timeout`: the session's
/// `statement_timeout` is what the timeouts item reads for the app role.
const LOCK_WAIT: &str = "5s";

async fn connect(config: &Config, url: &DbUrl) -> Result<Db, String> {
    let client = shipsafe_pg::connect(url).await.map_err(|e| e.to_string())?;
    client
        .batch_execute(&format!("set lock_timeout = '{LOCK_WAIT}'"))
        .await
        .map_err(|e| shipsafe_pg::describe(&e))?;
    let info = shipsafe_pg::server_info(&client, url)
        .await
        .map_err(|e| e.to_string())?;
    let app_role = config
        .file()
        .readiness
        .app_role
        .clone()
        .unwrap_or_else(|| info.user.clone());
    Ok(Db {
        client,
        user: info.user,
        app_role,
        tls: info.tls,
        excluded: config.file().backups.exclude_schemas.clone(),
        tables: tokio::sync::OnceCell::new(),
    })
}

/// Saves the scorecard, audits the waivers it applied, and reads the trend.
fn store(
    config: &Config,
    cwd: &Path,
    card: &mut Scorecard,
    opts: &Options,
) -> Result<(), CoreError> {
    let mut state = StateStore::open(config.state_dir())?;
    let since = opts.since.map(|d| {
        let span = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
        jiff::Timestamp::now()
            .checked_sub(span)
            .unwrap_or(jiff::Timestamp::MIN)
    });
    let earlier = match since {
        Some(t) => Some(state.readiness_since(&card.env, &format!("{t:.3}"))?),
        None => None,
    };
    state.save_readiness(&ReadinessRecord {
        id: card.id.clone(),
        env: card.env.clone(),
        at: card.measured_at.clone(),
        level: card.level.as_str().to_string(),
        score: f64::from(card.score),
        report: serde_json::to_value(&*card).unwrap_or(serde_json::Value::Null),
    })?;
    drop(state);
    let waived: Vec<serde_json::Value> = card
        .items
        .iter()
        .filter_map(|i| {
            let w = i.waiver.as_ref().filter(|w| w.state == "applied")?;
            Some(serde_json::json!({
                "id": i.id, "reason": w.reason, "until": w.until,
                "status_without": w.status_without,
            }))
        })
        .collect();
    // Accepting a failing item is a decision someone answers for.
    if !waived.is_empty() {
        shipsafe_protocol::audit::record_with(
            config.state_dir(),
            cwd,
            "readiness",
            Some(&card.env),
            card.level.as_str(),
            Vec::new(),
            serde_json::json!({ "scorecard": card.id, "waived": waived }),
        )?;
    }
    if let (Some(t), Some(earlier)) = (since, earlier) {
        card.trend = Some(trend(t, &earlier, card));
    }
    Ok(())
}

fn trend(since: jiff::Timestamp, earlier: &[ReadinessRecord], now: &Scorecard) -> Trend {
    let failing = |report: &serde_json::Value| -> Vec<String> {
        report["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|i| matches!(i["status"].as_str(), Some("fail" | "unknown")))
                    .filter_map(|i| i["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut points: Vec<TrendPoint> = earlier
        .iter()
        .map(|r| TrendPoint {
            at: r.at.clone(),
            level: r.level.clone(),
            score: r.score,
            failing: failing(&r.report).len(),
        })
        .collect();
    let now_json = serde_json::to_value(now).unwrap_or_default();
    let failing_now = failing(&now_json);
    points.push(TrendPoint {
        at: now.measured_at.clone(),
        level: now.level.as_str().to_string(),
        score: f64::from(now.score),
        failing: failing_now.len(),
    });
    let (fixed, regressed) = match earlier.first() {
        Some(first) => {
            let failing_then = failing(&first.report);
            let passing_then: Vec<String> = first.report["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter(|i| i["status"] == "pass")
                        .filter_map(|i| i["id"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let passing_now: Vec<&str> = now
                .items
                .iter()
                .filter(|i| i.status == Status::Pass)
                .map(|i| i.id)
                .collect();
            (
                failing_then
                    .iter()
                    .filter(|id| passing_now.contains(&id.as_str()))
                    .cloned()
                    .collect(),
                passing_then
                    .into_iter()
                    .filter(|id| failing_now.contains(id))
                    .collect(),
            )
        }
        None => (Vec::new(), Vec::new()),
    };
    Trend {
        since: format!("{since:.0}"),
        points,
        fixed,
        regressed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_kebab_case_and_documented() {
        let doc = include_str!("../../../docs/readiness.md");
        let defs = definitions();
        let mut seen = std::collections::BTreeSet::new();
        for d in &defs {
            assert!(seen.insert(d.id), "{} defined twice", d.id);
            assert!(
                d.id.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{} is not kebab-case",
                d.id
            );
            assert!(
                doc.contains(&format!("| `{}` | {} |", d.id, d.level.as_str())),
                "{} ({}) is not in docs/readiness.md with its level",
                d.id,
                d.level.as_str()
            );
        }
        assert_eq!(defs.len(), 46, "README and docs say 46 items");
    }
}
