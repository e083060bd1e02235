//! The dashboard's pages: server-rendered HTML that works without
//! JavaScript. Every value is escaped; reports are shown with secrets
//! masked; nothing from the configuration that could be secret (URLs,
//! tokens) is ever rendered.

use std::fmt::Write as _;

use shipsafe_backup::Manifest;
use shipsafe_state::{AuditEntry, ChainReport, JobState, RunRecord};

use super::metrics::Facts;

pub use shipsafe_readiness::report::esc;

/// Links keep the `?token=` a browser came with.
#[derive(Debug, Clone, Default)]
pub struct Nav {
    pub token: Option<String>,
    /// `--allow-actions`: the CSRF value forms must send back.
    pub csrf: Option<String>,
}

impl Nav {
    pub fn href(&self, path: &str) -> String {
        match &self.token {
            Some(t) => format!(
                "{path}{}token={}",
                if path.contains('?') { '&' } else { '?' },
                esc(t)
            ),
            None => path.to_string(),
        }
    }
}

fn age(at: &str) -> String {
    match at.parse::<jiff::Timestamp>() {
        Ok(t) => {
            let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
            format!("{} ago", shipsafe_readiness::human_age(secs as f64))
        }
        Err(_) => esc(at),
    }
}

/// The frame of every page.
pub fn layout(project: &str, title: &str, nav: &Nav, body: &str) -> String {
    let mut h = String::new();
    let _ = writeln!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><meta http-equiv=\"refresh\" content=\"30\"><title>{title} · shipsafe: {p}</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:1.5em 2em;color:#222}}\
         nav a{{margin-right:1em}}table{{border-collapse:collapse;margin:.5em 0 1.5em}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}\
         th{{background:#f4f4f4}}.bad{{color:#b00020;font-weight:bold}}.ok{{color:#176f2c}}\
         .bar{{display:inline-block;height:.8em;background:#6a8caf}}pre{{background:#f7f7f7;padding:1em;overflow:auto}}\
         form{{display:inline}}</style></head><body>\
         <header><strong>shipsafe: {p}</strong> <nav>\
         <a href=\"{o}\">Overview</a><a href=\"{b}\">Backups</a><a href=\"{r}\">Runs</a>\
         <a href=\"{a}\">Audit log</a><a href=\"{s}\">Schedules</a><a href=\"{m}\">Metrics</a></nav></header>\
         <h1>{title}</h1>{body}</body></html>",
        p = esc(project),
        title = esc(title),
        o = nav.href("/"),
        b = nav.href("/backups"),
        r = nav.href("/runs"),
        a = nav.href("/audit"),
        s = nav.href("/schedules"),
        m = nav.href("/metrics"),
    );
    h
}

/// Whether `outcome` is good news for `command`: a deploy that was rolled
/// back failed; a rollback that rolled back worked.
fn good_run(command: &str, outcome: &str) -> bool {
    match outcome {
        "rolled_back" => command.contains("rollback"),
        o => matches!(
            o,
            "deployed"
                | "nothing_to_do"
                | "complete"
                | "passed"
                | "verified"
                | "pruned"
                | "restored"
                | "skipped"
                | "bronze"
                | "silver"
                | "gold"
        ),
    }
}

fn outcome(command: &str, o: &str) -> String {
    format!(
        "<span class=\"{}\">{}</span>",
        if good_run(command, o) { "ok" } else { "bad" },
        esc(o)
    )
}

/// One status line per environment.
pub fn overview(f: &Facts, nav: &Nav) -> String {
    let mut h = String::from(
        "<table id=\"environments\"><tr><th>environment</th><th>database</th><th>TLS</th>\
         <th>last backup</th><th>last restore drill</th><th>pending migrations</th><th>last deploy</th>\
         <th>checks</th><th>readiness</th></tr>",
    );
    for e in &f.environments {
        let db = if e.up {
            "<span class=\"ok\">up</span>".to_string()
        } else {
            format!(
                "<span class=\"bad\">down</span> {}",
                esc(&shipsafe_config::mask_secrets(
                    e.error.as_deref().unwrap_or("")
                ))
            )
        };
        let backup = e
            .last_backup
            .as_ref()
            .map_or("<span class=\"bad\">none</span>".to_string(), |b| {
                format!("{} ({})", age(&b.at), esc(&b.id))
            });
        let drill =
            e.last_drill
                .as_ref()
                .map_or("<span class=\"bad\">never</span>".to_string(), |d| {
                    format!(
                        "<span class=\"{}\">{}</span> {}, restore {:.1} s ({})",
                        if d.ok { "ok" } else { "bad" },
                        if d.ok { "passed" } else { "FAILED" },
                        age(&d.at),
                        d.restore_seconds,
                        esc(&d.backup_id)
                    )
                });
        let deploy = e.last_deploy.as_ref().map_or("none".to_string(), |r| {
            format!(
                "{} <a href=\"{}\">{}</a>",
                outcome(&r.command, &r.outcome),
                nav.href(&format!("/runs/{}", r.run_id)),
                esc(&r.run_id)
            )
        });
        let checks = match e.checks_failing {
            None => "not run yet".to_string(),
            Some(0) => "<span class=\"ok\">passing</span>".to_string(),
            Some(n) => format!("<span class=\"bad\">{n} failing</span>"),
        };
        let mut actions = String::new();
        if let Some(csrf) = &nav.csrf {
            for (job, label) in [("verify", "Run a restore drill"), ("checks", "Run checks")] {
                let _ = write!(
                    actions,
                    "<form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                     <input type=\"hidden\" name=\"env\" value=\"{}\"><input type=\"hidden\" name=\"job\" value=\"{job}\">\
                     <button type=\"submit\">{label}</button></form> ",
                    nav.href("/actions"),
                    esc(csrf),
                    esc(&e.name)
                );
            }
        }
        let _ = write!(
            h,
            "<tr data-env=\"{n}\"><td>{n} ({prot}) {actions}</td><td class=\"database\">{db}</td><td class=\"tls\">{tls}</td>\
             <td class=\"backup\">{backup}</td><td class=\"drill\">{drill}</td><td class=\"pending\">{pending}</td>\
             <td class=\"deploy\">{deploy}</td><td class=\"checks\">{checks}</td><td class=\"readiness\">{level}</td></tr>",
            n = esc(&e.name),
            prot = esc(&e.protection),
            tls = esc(e.tls.as_deref().unwrap_or("?")),
            pending = e
                .pending_migrations
                .map_or("?".to_string(), |n| n.to_string()),
            level = esc(e.readiness.as_deref().unwrap_or("not measured")),
        );
    }
    h.push_str("</table>");
    match &f.heartbeat {
        Some(b) if b.stopped_at.is_none() => {
            let _ = write!(
                h,
                "<p id=\"heartbeat\">serve {} alive, last beat {}</p>",
                esc(&b.instance),
                age(&b.beat_at)
            );
        }
        _ => {}
    }
    if let Some(e) = &f.backups_error {
        let _ = write!(
            h,
            "<p class=\"bad\">backup storage unreadable: {}</p>",
            esc(&shipsafe_config::mask_secrets(e))
        );
    }
    h
}

/// The catalog, newest first, with verification state and measured RTO.
pub fn backups(all: &[Manifest]) -> String {
    let mut h = String::from(
        "<table id=\"backups\"><tr><th>backup</th><th>environment</th><th>taken</th><th>reason</th>\
         <th>size</th><th>status</th><th>restore drill</th></tr>",
    );
    for m in all {
        let drill = match m.verifications.last() {
            None => "<span class=\"bad\">unverified</span>".to_string(),
            Some(v) if v.ok => format!(
                "<span class=\"ok\">verified</span> {}, restore {:.1} s",
                age(&v.at),
                v.restore_seconds
            ),
            Some(v) => format!(
                "<span class=\"bad\">FAILED</span> {}: {}",
                age(&v.at),
                esc(v.error.as_deref().unwrap_or(""))
            ),
        };
        let _ = write!(
            h,
            "<tr data-backup=\"{id}\"><td>{id}</td><td>{env}</td><td>{at}</td><td>{reason}</td><td>{size}</td><td>{status}</td><td class=\"drill\">{drill}</td></tr>",
            id = esc(&m.id),
            env = esc(&m.env),
            at = esc(&m.created_at),
            reason = esc(&m.reason),
            size = shipsafe_protocol::rehearsal_text::mib(m.size_bytes as i64),
            status = esc(&format!("{:?}", m.status).to_lowercase()),
        );
    }
    h.push_str("</table>");
    h
}

/// Recent runs, newest first.
pub fn runs(all: &[RunRecord], nav: &Nav) -> String {
    let mut h = String::from(
        "<table id=\"runs\"><tr><th>run</th><th>command</th><th>environment</th><th>started</th>\
         <th>duration</th><th>outcome</th></tr>",
    );
    for r in all {
        let _ = write!(
            h,
            "<tr><td><a href=\"{}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td><td>{}</td></tr>",
            nav.href(&format!("/runs/{}", r.run_id)),
            esc(&r.command),
            esc(r.env.as_deref().unwrap_or("")),
            esc(&r.started_at),
            r.duration_ms,
            outcome(&r.command, &r.outcome),
            id = esc(&r.run_id),
        );
    }
    h.push_str("</table>");
    h
}

/// One run: its steps as a timeline, the rehearsal report, the report.
pub fn run(r: &RunRecord) -> String {
    let total = r.steps.iter().map(|s| s.duration_ms).sum::<u64>().max(1);
    let mut h = format!(
        "<p>{} of {}: {} · started {} · {} ms</p><h2>Steps</h2><table id=\"steps\"><tr><th>step</th><th>status</th><th>ms</th><th></th></tr>",
        esc(&r.command),
        esc(r.env.as_deref().unwrap_or("-")),
        outcome(&r.command, &r.outcome),
        esc(&r.started_at),
        r.duration_ms
    );
    for s in &r.steps {
        let width = (s.duration_ms * 300 / total).max(1);
        let _ = write!(
            h,
            "<tr data-step=\"{n}\"><td>{n}</td><td class=\"{cls}\">{st}</td><td>{ms}</td><td><span class=\"bar\" style=\"width:{width}px\"></span></td></tr>",
            n = esc(&s.name),
            cls = if s.status == "failed" { "bad" } else { "" },
            st = esc(&s.status),
            ms = s.duration_ms,
        );
    }
    h.push_str("</table>");
    if let Some(reh) = r.report.get("rehearsal").filter(|v| !v.is_null()) {
        let _ = write!(
            h,
            "<h2>Rehearsal</h2><pre id=\"rehearsal\">{}</pre>",
            esc(&shipsafe_config::mask_secrets(
                &shipsafe_protocol::rehearsal_text::render(reh)
            ))
        );
    }
    if let Some(e) = r.report.get("error").and_then(|e| e.as_str()) {
        let _ = write!(
            h,
            "<p class=\"bad\" id=\"error\">{}</p>",
            esc(&shipsafe_config::mask_secrets(e))
        );
    }
    let _ = write!(
        h,
        "<h2>Report</h2><pre id=\"report\">{}</pre>",
        esc(&shipsafe_config::mask_secrets(
            &serde_json::to_string_pretty(&r.report).unwrap_or_default()
        ))
    );
    h
}

/// The audit log, newest first, with the chain's state.
pub fn audit(entries: &[AuditEntry], chain: Option<&ChainReport>) -> String {
    let mut h = match chain {
        Some(c) if c.ok => format!(
            "<p id=\"chain\" class=\"ok\">hash chain intact: {} entries</p>",
            c.entries
        ),
        Some(c) => format!(
            "<p id=\"chain\" class=\"bad\">hash chain BROKEN: {}</p>",
            esc(&c
                .problems
                .iter()
                .map(|p| format!("{p:?}"))
                .collect::<Vec<_>>()
                .join("; "))
        ),
        None => "<p id=\"chain\">no audit log yet</p>".to_string(),
    };
    h.push_str(
        "<table id=\"audit\"><tr><th>#</th><th>time</th><th>who</th><th>command</th><th>environment</th>\
         <th>outcome</th><th>run</th><th>backups</th></tr>",
    );
    for e in entries {
        let who = match &e.actor.git_author {
            Some(g) => format!("{} ({g})", e.actor.os_user),
            None => e.actor.os_user.clone(),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.seq,
            esc(&e.at),
            esc(&who),
            esc(&e.command),
            esc(e.env.as_deref().unwrap_or("")),
            outcome(&e.command, &e.outcome),
            esc(e.run_id.as_deref().unwrap_or("")),
            esc(&e.backup_ids.join(", ")),
        );
    }
    h.push_str("</table>");
    h
}

/// A scheduled job as the schedules page shows it.
#[derive(Debug, Clone)]
pub struct ScheduleRow {
    pub env: String,
    pub job: String,
    pub line: String,
    pub next: Option<String>,
    pub state: Option<JobState>,
}

pub fn schedules(rows: &[ScheduleRow], tz: &str) -> String {
    let mut h = format!(
        "<p>Crontab lines are read in {}.</p><table id=\"schedules\"><tr><th>environment</th><th>job</th><th>schedule</th>\
         <th>next run</th><th>last run</th><th>outcome</th><th>last skipped tick</th></tr>",
        esc(tz)
    );
    for r in rows {
        let s = r.state.clone().unwrap_or_default();
        let _ = write!(
            h,
            "<tr data-job=\"{env}/{job}\"><td>{env}</td><td>{job}</td><td><code>{line}</code></td><td>{next}</td><td>{last}</td><td>{out}</td><td>{skip}</td></tr>",
            env = esc(&r.env),
            job = esc(&r.job),
            line = esc(&r.line),
            next = esc(r.next.as_deref().unwrap_or("never")),
            last = s.last_at.as_deref().map_or("never".to_string(), age),
            out = s
                .last_outcome
                .as_deref()
                .map_or(String::new(), |o| outcome(&r.job, o)),
            skip = match (&s.skipped_at, &s.skipped_why) {
                (Some(at), Some(why)) => format!("{}: {}", age(at), esc(why)),
                _ => String::new(),
            },
        );
    }
    h.push_str("</table>");
    h
}
