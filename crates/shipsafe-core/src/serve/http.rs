//! The dashboard (server-rendered HTML, no JavaScript), `/metrics` and
//! `/healthz`. Read-only; when a token is set every request must carry it
//! (`Authorization: Bearer TOKEN`, or `?token=` for a browser).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use shipsafe_config::{Config, VarSource};

use super::metrics::{self, Facts};

pub struct AppState {
    pub config: Arc<Config>,
    pub vars: Arc<dyn VarSource + Send + Sync>,
    pub token: Option<String>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

pub fn router(state: Arc<AppState>) -> axum::Router {
    axum::Router::new()
        .route("/", get(overview))
        .route("/metrics", get(prometheus))
        .route("/healthz", get(healthz))
        .with_state(state)
}

#[derive(Debug, serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Compares in constant time: the token is a secret.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn authorized(state: &AppState, headers: &HeaderMap, q: &TokenQuery) -> bool {
    let Some(want) = &state.token else {
        return true;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer
        .or(q.token.as_deref())
        .is_some_and(|got| same(got, want))
}

fn denied() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a token is required (Authorization: Bearer TOKEN, or ?token=TOKEN)\n",
    )
        .into_response()
}

async fn prometheus(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Response {
    if !authorized(&state, &headers, &q) {
        return denied();
    }
    let facts = metrics::gather(&state.config, state.vars.as_ref()).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&facts),
    )
        .into_response()
}

async fn healthz(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Response {
    if !authorized(&state, &headers, &q) {
        return denied();
    }
    let beat = shipsafe_state::StateStore::open_existing(state.config.state_dir())
        .ok()
        .flatten()
        .and_then(|s| s.last_beat().ok().flatten());
    axum::Json(serde_json::json!({ "ok": true, "heartbeat": beat })).into_response()
}

async fn overview(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Response {
    if !authorized(&state, &headers, &q) {
        return denied();
    }
    let facts = metrics::gather(&state.config, state.vars.as_ref()).await;
    Html(page(&facts)).into_response()
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn age(unix: i64) -> String {
    let now = jiff::Timestamp::now().as_second();
    crate::readiness::human_age((now - unix).max(0) as f64)
}

/// The overview: one line per environment, then the schedules.
pub fn page(f: &Facts) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>shipsafe: {p}</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}.bad{{color:#b00020;font-weight:bold}}\
         .ok{{color:#176f2c}}</style></head><body><h1>shipsafe: {p}</h1>",
        p = esc(&f.project)
    );
    h.push_str(
        "<h2>Environments</h2><table id=\"environments\"><tr><th>environment</th><th>database</th><th>TLS</th>\
         <th>last backup</th><th>last restore drill</th><th>pending migrations</th><th>last deploy</th>\
         <th>checks</th><th>readiness</th></tr>",
    );
    for e in &f.environments {
        let db = if e.up {
            "<span class=\"ok\">up</span>".to_string()
        } else {
            format!(
                "<span class=\"bad\">down</span> {}",
                esc(e.error.as_deref().unwrap_or(""))
            )
        };
        let backup = e
            .last_backup
            .as_ref()
            .map_or("<span class=\"bad\">none</span>".to_string(), |b| {
                format!("{} ago ({})", age(b.unix), esc(&b.id))
            });
        let drill =
            e.last_drill
                .as_ref()
                .map_or("<span class=\"bad\">never</span>".to_string(), |d| {
                    format!(
                        "<span class=\"{}\">{}</span> {} ago, restore {:.1} s ({})",
                        if d.ok { "ok" } else { "bad" },
                        if d.ok { "passed" } else { "FAILED" },
                        age(d.unix),
                        d.restore_seconds,
                        esc(&d.backup_id)
                    )
                });
        let deploy = e.last_deploy.as_ref().map_or("none".to_string(), |r| {
            let good = matches!(r.outcome.as_str(), "deployed" | "nothing_to_do");
            format!(
                "<span class=\"{}\">{}</span> {}",
                if good { "ok" } else { "bad" },
                esc(&r.outcome),
                esc(&r.run_id)
            )
        });
        let checks = match e.checks_failing {
            None => "not run yet".to_string(),
            Some(0) => "<span class=\"ok\">passing</span>".to_string(),
            Some(n) => format!("<span class=\"bad\">{n} failing</span>"),
        };
        let _ = write!(
            h,
            "<tr data-env=\"{n}\"><td>{n} ({prot})</td><td class=\"database\">{db}</td><td>{tls}</td>\
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
    h.push_str("</table><h2>Schedules</h2><table id=\"schedules\"><tr><th>environment</th><th>job</th><th>last run</th><th>outcome</th><th>last skipped</th></tr>");
    for j in &f.jobs {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&j.env),
            esc(&j.job),
            esc(j.last_at.as_deref().unwrap_or("never")),
            esc(j.last_outcome.as_deref().unwrap_or("")),
            esc(&match (&j.skipped_at, &j.skipped_why) {
                (Some(at), Some(why)) => format!("{at}: {why}"),
                _ => String::new(),
            }),
        );
    }
    h.push_str("</table>");
    if let Some(b) = &f.heartbeat {
        let _ = write!(
            h,
            "<p id=\"heartbeat\">serve {} alive at {}</p>",
            esc(&b.instance),
            esc(&b.beat_at)
        );
    }
    h.push_str("</body></html>\n");
    h
}
