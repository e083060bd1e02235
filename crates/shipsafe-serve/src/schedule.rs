//! When each scheduled job runs next, and whether a start after downtime
//! catches one missed run up. Pure: the clock is a parameter.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use shipsafe_config::{Config, Job};

/// One crontab line of one environment.
#[derive(Debug, Clone)]
pub struct Entry {
    pub env: String,
    pub job: Job,
    pub line: String,
    cron: croner::Cron,
}

impl Entry {
    /// The first tick strictly after `after`, read in `tz`.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The last tick at or before `at`.
    pub fn previous(&self, at: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&at.with_timezone(&tz), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// Every `[schedule.ENV]` line (validated when the config was loaded).
pub fn entries(config: &Config) -> Vec<Entry> {
    let mut out = Vec::new();
    for (env, schedule) in &config.file().schedule {
        for (job, line) in schedule.jobs() {
            if let Ok(cron) = shipsafe_config::serve::parse_cron(line.get_ref()) {
                out.push(Entry {
                    env: env.clone(),
                    job,
                    line: line.get_ref().clone(),
                    cron,
                });
            }
        }
    }
    out
}

/// At start: the tick a job missed while nothing ran it, if it is to be
/// caught up. Only the newest missed tick counts (one catch-up however
/// long the downtime), and only within `window` of now; a job that ran at
/// or after that tick missed nothing.
pub fn missed(
    entry: &Entry,
    now: DateTime<Utc>,
    tz: Tz,
    window: std::time::Duration,
    last_run: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let tick = entry.previous(now, tz)?;
    let age = now.signed_duration_since(tick).to_std().ok()?;
    if age > window {
        return None;
    }
    match last_run {
        Some(last) if last >= tick => None,
        _ => Some(tick),
    }
}

/// Parses an RFC 3339 time from the state database.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(line: &str) -> Entry {
        Entry {
            env: "prod".into(),
            job: Job::Backup,
            line: line.into(),
            cron: shipsafe_config::serve::parse_cron(line).unwrap(),
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    #[test]
    fn crontab_lines_are_read_in_the_configured_time_zone() {
        let e = entry("0 3 * * *");
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 03:00 in Berlin in December is 02:00 UTC; in July, 01:00 UTC.
        assert_eq!(
            e.next_after(t("2026-12-06T10:00:00Z"), berlin),
            Some(t("2026-12-07T02:00:00Z"))
        );
        assert_eq!(
            e.next_after(t("2026-07-06T10:00:00Z"), berlin),
            Some(t("2026-07-07T01:00:00Z"))
        );
        assert_eq!(
            e.next_after(t("2026-12-06T10:00:00Z"), chrono_tz::UTC),
            Some(t("2026-12-07T03:00:00Z"))
        );
        let every_5s = entry("*/5 * * * * *");
        assert_eq!(
            every_5s.next_after(t("2026-12-06T10:00:03Z"), chrono_tz::UTC),
            Some(t("2026-12-06T10:00:05Z"))
        );
    }

    #[test]
    fn one_missed_run_within_the_window_is_caught_up() {
        let e = entry("0 3 * * *");
        let utc = chrono_tz::UTC;
        let six_hours = std::time::Duration::from_secs(6 * 3600);
        let now = t("2026-12-06T05:00:00Z");
        // Down since yesterday: the 03:00 tick is caught up (once).
        assert_eq!(
            missed(&e, now, utc, six_hours, Some(t("2026-12-05T03:00:02Z"))),
            Some(t("2026-12-06T03:00:00Z"))
        );
        // Never ran: due too.
        assert_eq!(
            missed(&e, now, utc, six_hours, None),
            Some(t("2026-12-06T03:00:00Z"))
        );
        // It ran at 03:00: nothing missed.
        assert_eq!(
            missed(&e, now, utc, six_hours, Some(t("2026-12-06T03:00:01Z"))),
            None
        );
        // The tick is older than the window: left to the next one.
        assert_eq!(
            missed(&e, t("2026-12-06T10:00:00Z"), utc, six_hours, None),
            None
        );
        // A zero window never catches up.
        assert_eq!(missed(&e, now, utc, std::time::Duration::ZERO, None), None);
    }
}
