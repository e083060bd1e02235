//! `[serve]`, `[schedule.ENV]` and `[[notify]]`: the long-running process,
//! its crontab lines and who it tells when something fails.

use std::str::FromStr;

use serde::Deserialize;
use toml::Spanned;

use crate::duration::Duration;
use crate::template::Template;

/// `[serve]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address of the dashboard and `/metrics`; default `127.0.0.1:7373`.
    /// Any other address than loopback needs `SHIPSAFE_SERVE_TOKEN`.
    pub listen: Option<Spanned<String>>,
    /// IANA time zone the crontab lines are read in; default `UTC`.
    pub timezone: Option<Spanned<String>>,
    /// A run missed (shipsafe was down) by at most this long is run once at
    /// start; default 6h. `"0s"` never catches up.
    pub catch_up: Option<Duration>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7373";

impl ServeConfig {
    pub fn timezone(&self) -> chrono_tz::Tz {
        self.timezone
            .as_ref()
            .and_then(|t| chrono_tz::Tz::from_str(t.get_ref()).ok())
            .unwrap_or(chrono_tz::UTC)
    }

    pub fn catch_up(&self) -> std::time::Duration {
        self.catch_up
            .map_or(std::time::Duration::from_secs(6 * 3600), |d| d.as_std())
    }
}

/// The jobs `serve` can run on a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Job {
    /// `backup create ENV`.
    Backup,
    /// `backup verify` of ENV's newest backup: a restore drill.
    Verify,
    /// `backup prune ENV`.
    Prune,
    /// `[[checks]]` and `[[smoke]]` now.
    Checks,
    /// The readiness scorecard.
    Readiness,
}

impl Job {
    pub const ALL: [Job; 5] = [
        Job::Backup,
        Job::Verify,
        Job::Prune,
        Job::Checks,
        Job::Readiness,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Job::Backup => "backup",
            Job::Verify => "verify",
            Job::Prune => "prune",
            Job::Checks => "checks",
            Job::Readiness => "readiness",
        }
    }
}

/// `[schedule.ENV]`: a crontab line per job (5 fields, or 6 with seconds
/// first), read in `[serve] timezone`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub backup: Option<Spanned<String>>,
    pub verify: Option<Spanned<String>>,
    pub prune: Option<Spanned<String>>,
    pub checks: Option<Spanned<String>>,
    pub readiness: Option<Spanned<String>>,
}

impl ScheduleConfig {
    /// The configured jobs with their crontab lines.
    pub fn jobs(&self) -> Vec<(Job, &Spanned<String>)> {
        Job::ALL
            .iter()
            .filter_map(|&j| self.line(j).map(|l| (j, l)))
            .collect()
    }

    pub fn line(&self, job: Job) -> Option<&Spanned<String>> {
        match job {
            Job::Backup => self.backup.as_ref(),
            Job::Verify => self.verify.as_ref(),
            Job::Prune => self.prune.as_ref(),
            Job::Checks => self.checks.as_ref(),
            Job::Readiness => self.readiness.as_ref(),
        }
    }
}

/// Parses a crontab line (croner: 5 fields, or 6 with seconds first).
pub fn parse_cron(line: &str) -> Result<croner::Cron, String> {
    croner::Cron::from_str(line).map_err(|e| e.to_string())
}

/// `[[notify]]`: where to say that a job failed, recovered or succeeded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    pub kind: NotifyKind,
    /// The webhook or ping URL; usually a `${VARIABLE}`: it is a secret.
    pub url: Spanned<Template>,
    /// Default: failure and recovery (`[]` would never notify: refused).
    #[serde(default = "default_on", deserialize_with = "crate::model::non_empty")]
    pub on: Vec<NotifyOn>,
    /// Only these environments; left out: all.
    #[serde(default, deserialize_with = "crate::model::non_empty")]
    pub envs: Vec<String>,
    /// Only these jobs or commands (`backup`, `verify`, `prune`, `checks`,
    /// `readiness`, `deploy`, `rollback`); left out: all.
    #[serde(default, deserialize_with = "crate::model::non_empty")]
    pub jobs: Vec<String>,
}

/// What `[[notify]] jobs` may name.
pub const NOTIFY_JOBS: &[&str] = &[
    "backup",
    "verify",
    "prune",
    "checks",
    "readiness",
    "deploy",
    "rollback",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyKind {
    /// Slack-compatible incoming webhook: `text` plus `blocks`.
    Slack,
    /// A JSON document describing the run.
    Webhook,
    /// healthchecks.io-style pings: `URL/start`, `URL/fail`, `URL`.
    Healthchecks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyOn {
    Failure,
    /// The first success after a failure of the same job and environment.
    Recovery,
    Success,
}

fn default_on() -> Vec<NotifyOn> {
    vec![NotifyOn::Failure, NotifyOn::Recovery]
}
