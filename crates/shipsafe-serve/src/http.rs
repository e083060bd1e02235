//! The dashboard (server-rendered HTML, no JavaScript), `/metrics` and
//! `/healthz`. Read-only unless `--allow-actions`: then POST buttons run a
//! restore drill or the checks, each form carrying a per-process CSRF value.
//! When a token is set every request must carry it (`Authorization: Bearer
//! TOKEN`, or `?token=` for a browser).

use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use shipsafe_config::{Config, Job, VarSource};

use super::metrics;
use super::pages::{self, Nav};

/// Starts a job from the dashboard (the scheduler's own path: it is
/// skipped when a run of it is going).
pub type Trigger = Arc<
    dyn Fn(String, Job) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

pub struct AppState {
    pub config: Arc<Config>,
    pub vars: Arc<dyn VarSource + Send + Sync>,
    pub token: Option<String>,
    /// Set with `--allow-actions`.
    pub actions: Option<(String, Trigger)>,
    pub pending: metrics::PendingCache,
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
        .route("/backups", get(backups))
        .route("/runs", get(runs))
        .route("/runs/{id}", get(run))
        .route("/audit", get(audit))
        .route("/schedules", get(schedules))
        .route("/actions", post(action))
        .route("/metrics", get(prometheus))
        .route("/healthz", get(healthz))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
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

/// Every route: the token first, when one is set.
async fn require_token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if authorized(&state, &headers, &q) {
        next.run(request).await
    } else {
        denied()
    }
}

fn denied() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a token is required (Authorization: Bearer TOKEN, or ?token=TOKEN)\n",
    )
        .into_response()
}

async fn prometheus(State(state): State<Arc<AppState>>) -> Response {
    let facts = metrics::gather(&state.config, state.vars.as_ref(), &state.pending).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&facts),
    )
        .into_response()
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let beat = shipsafe_state::StateStore::open_existing(state.config.state_dir())
        .ok()
        .flatten()
        .and_then(|s| s.last_beat().ok().flatten());
    axum::Json(serde_json::json!({ "ok": true, "heartbeat": beat })).into_response()
}

fn nav(state: &AppState, q: &TokenQuery) -> Nav {
    Nav {
        token: q.token.clone().filter(|_| state.token.is_some()),
        csrf: state.actions.as_ref().map(|(c, _)| c.clone()),
    }
}

fn html(state: &AppState, title: &str, nav: &Nav, body: &str) -> Response {
    Html(pages::layout(
        &state.config.project_name(),
        title,
        nav,
        body,
    ))
    .into_response()
}

async fn overview(State(state): State<Arc<AppState>>, Query(q): Query<TokenQuery>) -> Response {
    let facts = metrics::gather(&state.config, state.vars.as_ref(), &state.pending).await;
    let nav = nav(&state, &q);
    html(&state, "Overview", &nav, &pages::overview(&facts, &nav))
}

async fn backups(State(state): State<Arc<AppState>>, Query(q): Query<TokenQuery>) -> Response {
    let nav = nav(&state, &q);
    let body = match shipsafe_protocol::store::list(&state.config, state.vars.as_ref(), None).await
    {
        Ok(all) => pages::backups(&all),
        Err(e) => format!(
            "<p class=\"bad\">backup storage unreadable: {}</p>",
            pages::esc(&shipsafe_config::mask_secrets(&e.to_string()))
        ),
    };
    html(&state, "Backups", &nav, &body)
}

fn store(state: &AppState) -> Option<shipsafe_state::StateStore> {
    shipsafe_state::StateStore::open_existing(state.config.state_dir())
        .ok()
        .flatten()
}

async fn runs(State(state): State<Arc<AppState>>, Query(q): Query<TokenQuery>) -> Response {
    let nav = nav(&state, &q);
    let all = store(&state)
        .and_then(|s| s.runs(None, 200).ok())
        .unwrap_or_default();
    html(&state, "Runs", &nav, &pages::runs(&all, &nav))
}

async fn run(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
) -> Response {
    let nav = nav(&state, &q);
    match store(&state).and_then(|s| s.run(&id).ok().flatten()) {
        Some(r) => html(&state, &format!("Run {}", r.run_id), &nav, &pages::run(&r)),
        None => (StatusCode::NOT_FOUND, "no such run\n").into_response(),
    }
}

async fn audit(State(state): State<Arc<AppState>>, Query(q): Query<TokenQuery>) -> Response {
    let nav = nav(&state, &q);
    let s = store(&state);
    let entries = s
        .as_ref()
        .and_then(|s| s.audit_entries(None, Some(500)).ok())
        .unwrap_or_default();
    let chain = s.as_ref().and_then(|s| s.verify_audit().ok());
    html(
        &state,
        "Audit log",
        &nav,
        &pages::audit(&entries, chain.as_ref()),
    )
}

async fn schedules(State(state): State<Arc<AppState>>, Query(q): Query<TokenQuery>) -> Response {
    let nav = nav(&state, &q);
    let tz = state.config.file().serve.timezone();
    let states = store(&state)
        .and_then(|s| s.job_states().ok())
        .unwrap_or_default();
    let now = chrono::Utc::now();
    let rows: Vec<pages::ScheduleRow> = super::schedule::entries(&state.config)
        .into_iter()
        .map(|e| pages::ScheduleRow {
            next: e
                .next_after(now, tz)
                .map(|t| t.with_timezone(&tz).to_rfc3339()),
            state: states
                .iter()
                .find(|s| s.env == e.env && s.job == e.job.as_str())
                .cloned(),
            env: e.env,
            job: e.job.as_str().to_string(),
            line: e.line,
        })
        .collect();
    html(
        &state,
        "Schedules",
        &nav,
        &pages::schedules(&rows, tz.name()),
    )
}

#[derive(Debug, serde::Deserialize)]
struct ActionForm {
    csrf: String,
    env: String,
    job: String,
}

async fn action(
    State(state): State<Arc<AppState>>,
    Query(q): Query<TokenQuery>,
    Form(form): Form<ActionForm>,
) -> Response {
    let Some((csrf, trigger)) = &state.actions else {
        return (
            StatusCode::FORBIDDEN,
            "the dashboard is read-only (start serve with --allow-actions)\n",
        )
            .into_response();
    };
    if !same(&form.csrf, csrf) {
        return (
            StatusCode::FORBIDDEN,
            "stale or missing form value (csrf)\n",
        )
            .into_response();
    }
    let job = match form.job.as_str() {
        "verify" => Job::Verify,
        "checks" => Job::Checks,
        _ => return (StatusCode::BAD_REQUEST, "unknown action\n").into_response(),
    };
    if state.config.environment(&form.env).is_err() {
        return (StatusCode::BAD_REQUEST, "unknown environment\n").into_response();
    }
    trigger(form.env.clone(), job).await;
    Redirect::to(&nav(&state, &q).href("/runs")).into_response()
}
