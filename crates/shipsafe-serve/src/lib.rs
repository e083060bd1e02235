//! `shipsafe serve`: the long-running process. It runs `[schedule.ENV]`
//! jobs (never two runs of one job at once; one missed run caught up after
//! downtime), writes a heartbeat, and serves the dashboard and `/metrics`.
//! On shutdown it stops scheduling, gives running jobs a grace period, and
//! abandons what is left: a backup is only published when complete, and
//! an abandoned run stays `running` for the next start to report.

pub mod http;
pub mod jobs;
pub mod metrics;
pub mod notify;
pub mod pages;
pub mod schedule;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use shipsafe_config::{Config, Job, VarSource};
use tokio::sync::watch;
use tokio::task::JoinSet;

use shipsafe_protocol::CoreError;

/// The token a non-loopback address requires.
pub const TOKEN_ENV: &str = "SHIPSAFE_SERVE_TOKEN";

pub use shipsafe_pg::scratch::stop_gracefully_on_signals;

/// How often the heartbeat is written.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// How long running jobs get to finish after a stop signal.
const GRACE: Duration = Duration::from_secs(7);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub token: Option<String>,
    /// Dashboard buttons that run a restore drill or the checks.
    pub allow_actions: bool,
}

/// Where to listen: the flag, else `[serve] listen`, else 127.0.0.1:7373;
/// and the token, which any address but loopback requires.
pub fn options(
    config: &Config,
    flag: Option<&str>,
    allow_actions: bool,
    vars: &dyn VarSource,
) -> Result<ServeOptions, CoreError> {
    let text = flag
        .map(str::to_string)
        .or_else(|| {
            config
                .file()
                .serve
                .listen
                .as_ref()
                .map(|l| l.get_ref().clone())
        })
        .unwrap_or_else(|| shipsafe_config::serve::DEFAULT_LISTEN.to_string());
    let listen: SocketAddr = text.parse().map_err(|_| {
        CoreError::Usage(format!(
            "--listen {text:?} is not an address and port, e.g. 127.0.0.1:7373"
        ))
    })?;
    let token = vars.var(TOKEN_ENV).filter(|t| !t.is_empty());
    if !listen.ip().is_loopback() {
        match &token {
            None => {
                return Err(CoreError::Usage(format!(
                    "listening on {listen} makes the dashboard reachable from other machines: set {TOKEN_ENV} (16 characters or more) and send it as `Authorization: Bearer TOKEN`"
                )));
            }
            Some(t) if t.len() < 16 => {
                return Err(CoreError::Usage(format!(
                    "{TOKEN_ENV} is {} characters; use 16 or more",
                    t.len()
                )));
            }
            Some(_) => {}
        }
    }
    Ok(ServeOptions {
        listen,
        token,
        allow_actions,
    })
}

/// What a `serve` process did, for its last line.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ServeSummary {
    pub listen: String,
    pub runs: usize,
    pub skipped: usize,
    /// Jobs still running when the grace period ended.
    pub abandoned: Vec<String>,
}

type Running = Arc<Mutex<HashSet<(String, Job)>>>;

struct Shared {
    config: Arc<Config>,
    vars: Arc<dyn VarSource + Send + Sync>,
    cwd: PathBuf,
    running: Running,
    log: Arc<dyn Fn(&str) + Send + Sync>,
    counts: Mutex<(usize, usize)>,
}

/// Runs until `stop` resolves. `log` gets one line per event.
pub fn serve<'a>(
    config: Arc<Config>,
    vars: Arc<dyn VarSource + Send + Sync>,
    cwd: PathBuf,
    opts: ServeOptions,
    log: Arc<dyn Fn(&str) + Send + Sync>,
    stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>,
) -> shipsafe_protocol::Task<'a, Result<ServeSummary, CoreError>> {
    Box::pin(async move {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|e| CoreError::io(format!("cannot listen on {}", opts.listen), e))?;
        let listen = listener
            .local_addr()
            .map_err(|e| CoreError::io("cannot read the listening address", e))?;
        let instance = format!(
            "{}:{}",
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "localhost".into()),
            std::process::id()
        );
        let started_at = shipsafe_state::now_rfc3339();
        beat(&config, &instance, &started_at, &listen.to_string())?;
        log(&format!(
            "serve: listening on http://{listen}/ (dashboard, /metrics, /healthz){}",
            if opts.token.is_some() {
                ", token required"
            } else {
                ""
            }
        ));

        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            config: config.clone(),
            vars: vars.clone(),
            cwd,
            running: Arc::new(Mutex::new(HashSet::new())),
            log: log.clone(),
            counts: Mutex::new((0, 0)),
        });
        let mut jobs: JoinSet<()> = JoinSet::new();
        let jobs_handle = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));

        // The dashboard; its buttons go through the scheduler's own path.
        let actions = if opts.allow_actions {
            let shared = shared.clone();
            let handle = jobs_handle.clone();
            let trigger: http::Trigger = Arc::new(move |env: String, job: Job| {
                let shared = shared.clone();
                let handle = handle.clone();
                Box::pin(async move { fire(&shared, &handle, &env, job, "dashboard").await })
            });
            Some((csrf_value()?, trigger))
        } else {
            None
        };
        let app = http::router(Arc::new(http::AppState {
            config: config.clone(),
            vars: vars.clone(),
            token: opts.token.clone(),
            actions,
            pending: metrics::PendingCache::default(),
        }));
        let mut http_stop = stop_rx.clone();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    stopped(&mut http_stop).await;
                })
                .await;
        });

        // The heartbeat.
        {
            let config = config.clone();
            let instance = instance.clone();
            let started_at = started_at.clone();
            let mut stop = stop_rx.clone();
            jobs.spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(HEARTBEAT) => {
                            let _ = beat(&config, &instance, &started_at, &listen.to_string());
                        }
                        _ = stopped(&mut stop) => break,
                    }
                }
            });
        }

        // The schedule: one loop per crontab line, plus one catch-up.
        let tz = config.file().serve.timezone();
        let window = config.file().serve.catch_up();
        let states = shipsafe_state::StateStore::open(config.state_dir())
            .and_then(|s| s.job_states())
            .unwrap_or_default();
        for entry in schedule::entries(&config) {
            let last = states
                .iter()
                .find(|s| s.env == entry.env && s.job == entry.job.as_str())
                .and_then(|s| s.last_at.as_deref())
                .and_then(schedule::parse_time);
            if let Some(tick) = schedule::missed(&entry, Utc::now(), tz, window, last) {
                log(&format!(
                    "serve: {} of {} missed its run at {tick}; running it once now",
                    entry.job.as_str(),
                    entry.env
                ));
                fire(&shared, &jobs_handle, &entry.env, entry.job, "catch-up").await;
            }
            let shared = shared.clone();
            let handle = jobs_handle.clone();
            let mut stop = stop_rx.clone();
            jobs.spawn(async move {
                let mut after = Utc::now();
                while let Some(next) = entry.next_after(after, tz) {
                    let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {
                            fire(&shared, &handle, &entry.env, entry.job, "schedule").await;
                            after = next;
                        }
                        _ = stopped(&mut stop) => break,
                    }
                }
            });
        }

        stop.await;
        log("serve: stopping: no new runs; waiting for running jobs");
        let _ = stop_tx.send(true);
        while jobs.join_next().await.is_some() {}
        let mut running_jobs = std::mem::take(&mut *jobs_handle.lock().await);
        let deadline = tokio::time::sleep(GRACE);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = running_jobs.join_next() => if next.is_none() { break },
                _ = &mut deadline => break,
            }
        }
        let abandoned: Vec<String> = shared
            .running
            .lock()
            .map(|r| {
                r.iter()
                    .map(|(e, j)| format!("{} of {e}", j.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        // Dropping a job stops its children (pg_dump, restores): nothing
        // half-written is ever published, and its run stays `running`.
        running_jobs.abort_all();
        while running_jobs.join_next().await.is_some() {}
        for a in &abandoned {
            log(&format!(
                "serve: abandoned {a}; the next start reports its run as interrupted"
            ));
        }
        // Open requests get a moment to finish; a slow scrape does not hold
        // the stop past its 10 seconds.
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
        if let Ok(mut s) = shipsafe_state::StateStore::open(config.state_dir()) {
            let _ = s.stopped(&instance, &shipsafe_state::now_rfc3339());
        }
        let (runs, skipped) = shared.counts.lock().map(|c| *c).unwrap_or((0, 0));
        Ok(ServeSummary {
            listen: listen.to_string(),
            runs,
            skipped,
            abandoned,
        })
    })
}

/// Resolves once a stop was asked for (the guard `wait_for` returns is
/// dropped here, not held across the caller's awaits).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// A per-process secret the dashboard's forms carry (CSRF).
fn csrf_value() -> Result<String, CoreError> {
    use std::io::Read as _;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| CoreError::io("cannot read /dev/urandom", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn beat(config: &Config, instance: &str, started_at: &str, listen: &str) -> Result<(), CoreError> {
    let mut s = shipsafe_state::StateStore::open(config.state_dir())?;
    s.beat(instance, started_at, listen, &shipsafe_state::now_rfc3339())?;
    Ok(())
}

/// Starts `job` for `env` unless a run of it is still going (then the tick
/// is skipped and recorded).
async fn fire(
    shared: &Arc<Shared>,
    handle: &Arc<tokio::sync::Mutex<JoinSet<()>>>,
    env: &str,
    job: Job,
    trigger: &'static str,
) {
    let key = (env.to_string(), job);
    let fresh = shared
        .running
        .lock()
        .map(|mut r| r.insert(key.clone()))
        .unwrap_or(false);
    if !fresh {
        let why = "the previous run is still going";
        (shared.log)(&format!("serve: {} of {env} skipped: {why}", job.as_str()));
        if let Ok(mut s) = shipsafe_state::StateStore::open(shared.config.state_dir()) {
            let _ = s.record_skip(env, job.as_str(), &shipsafe_state::now_rfc3339(), why);
        }
        if let Ok(mut c) = shared.counts.lock() {
            c.1 += 1;
        }
        return;
    }
    (shared.log)(&format!(
        "serve: {} of {env} started ({trigger})",
        job.as_str()
    ));
    let shared = shared.clone();
    let env = env.to_string();
    let mut set = handle.lock().await;
    // Reap finished jobs so a process running for months holds none.
    while set.try_join_next().is_some() {}
    set.spawn(async move {
        let r = jobs::run(
            &shared.config,
            shared.vars.as_ref(),
            &shared.cwd,
            &env,
            job,
            trigger,
        )
        .await;
        (shared.log)(&format!(
            "serve: {} of {env}: {} (run {}): {}",
            job.as_str(),
            r.outcome,
            r.run_id,
            r.summary
        ));
        if let Ok(mut c) = shared.counts.lock() {
            c.0 += 1;
        }
        if let Ok(mut running) = shared.running.lock() {
            running.remove(&(env, job));
        }
    });
}
