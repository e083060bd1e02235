//! `shipsafe serve` as a process: schedules with seconds-level crontab
//! lines, a held lock, a killed backup, SIGTERM, `/metrics` read by a
//! Prometheus text parser and compared with the catalog, the token.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shipsafe_testkit::TestDb;

struct Serve {
    child: Child,
    port: u16,
}

impl Serve {
    fn start(dir: &Path, vars: &[(&str, &str)]) -> Self {
        let port = shipsafe_testkit::servers::free_port();
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("shipsafe"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .current_dir(dir)
            .env_remove("SHIPSAFE_CONFIG")
            .env_remove("SHIPSAFE_STATE_DIR")
            .env_remove("SHIPSAFE_SERVE_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let s = Serve { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while get(s.port, "/healthz", None).is_none() {
            assert!(Instant::now() < deadline, "serve did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// SIGTERM, then the exit code, stderr, and how long it took.
    fn stop(mut self) -> (Option<i32>, String, Duration) {
        let t = Instant::now();
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                self.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return (status.code(), err, t.elapsed());
            }
            assert!(Instant::now() < deadline, "serve ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET: (status, body).
fn get(port: u16, path: &str, bearer: Option<&str>) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    // Chunked bodies: good enough to drop the chunk-size lines.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.lines()
            .filter(|l| !l.chars().all(|c| c.is_ascii_hexdigit()) || l.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        body
    };
    Some((status, body))
}

fn project(db: &TestDb, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::write(
        dir.path(),
        "shipsafe.toml",
        &format!(
            "[environments.prod]\ndatabase_url = \"{}\"\nprotection = \"guarded\"\n{extra}",
            db.url().expose()
        ),
    );
    dir
}

fn store(dir: &Path) -> shipsafe_state::StateStore {
    shipsafe_state::StateStore::open(&dir.join(".shipsafe")).unwrap()
}

fn runs_of(dir: &Path, command: &str) -> Vec<shipsafe_state::RunRecord> {
    store(dir)
        .runs(None, 10_000)
        .unwrap()
        .into_iter()
        .filter(|r| r.command == command)
        .collect()
}

/// The state an earlier serve left: the backup last ran long ago, so the
/// newest tick of an hourly line is a missed run.
fn ran_long_ago(dir: &Path) {
    store(dir)
        .record_job(
            "prod",
            "backup",
            "2026-01-01T00:00:00Z",
            "complete",
            true,
            None,
        )
        .unwrap();
}

/// The `serve-heartbeat` item of prod's scorecard.
fn heartbeat_item(dir: &Path) -> serde_json::Value {
    let out = common::shipsafe(dir)
        .args(["--format", "json", "readiness", "prod"])
        .output()
        .unwrap();
    let card = common::json(&out);
    card["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "serve-heartbeat")
        .unwrap()
        .clone()
}

/// `backup list prod` as JSON objects.
fn backups(dir: &Path) -> Vec<serde_json::Value> {
    let out = common::shipsafe(dir)
        .args(["--format", "json", "backup", "list", "prod"])
        .output()
        .unwrap();
    let list = common::json(&out);
    list["backups"]
        .as_array()
        .or_else(|| list.as_array())
        .unwrap()
        .clone()
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn scrape(port: u16) -> prometheus_parse::Scrape {
    let (status, body) = get(port, "/metrics", None).unwrap();
    assert_eq!(status, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap()
}

fn value(s: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[tokio::test]
async fn scheduled_runs_are_recorded_and_metrics_match_the_catalog() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("create table orders (id int primary key, total int); insert into orders values (1, 10), (2, -5);")
        .await
        .unwrap();
    let dir = project(
        &db,
        "\n[schedule.prod]\nbackup = \"*/2 * * * * *\"\nchecks = \"*/2 * * * * *\"\n\n[[checks]]\nname = \"no negative totals\"\nsql = \"select count(*) from orders where total < 0\"\nexpect = \"= 0\"\n",
    );
    let serve = Serve::start(dir.path(), &[]);
    wait_for("a scheduled backup and check run", 30, || {
        runs_of(dir.path(), "serve backup")
            .iter()
            .any(|r| r.outcome == "complete")
            && runs_of(dir.path(), "serve checks")
                .iter()
                .any(|r| r.outcome == "failed")
    });
    // Readiness sees serve alive while it runs.
    let item = heartbeat_item(dir.path());
    assert_eq!(item["status"], "pass", "{item}");

    let m = scrape(serve.port);
    let env = [("env", "prod")];
    assert_eq!(value(&m, "shipsafe_database_up", &env), Some(1.0));
    assert_eq!(value(&m, "shipsafe_checks_failing", &env), Some(1.0));
    assert_eq!(value(&m, "shipsafe_pending_migrations", &env), Some(0.0));
    assert_eq!(
        value(
            &m,
            "shipsafe_restore_drill_last_success_timestamp_seconds",
            &env
        ),
        Some(0.0),
        "never drilled"
    );
    // The newest backup in the catalog is the one the metric names.
    let backups = backups(dir.path());
    let ts = value(&m, "shipsafe_backup_last_success_timestamp_seconds", &env).unwrap();
    let newest_at = jiff::Timestamp::from_second(ts as i64).unwrap();
    assert!(
        backups.iter().any(|b| {
            b["created_at"]
                .as_str()
                .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                .is_some_and(|t| t.as_second() == newest_at.as_second())
        }),
        "{ts} names no backup in {backups:?}"
    );
    let size = value(&m, "shipsafe_backup_last_size_bytes", &env).unwrap();
    assert!(
        backups
            .iter()
            .any(|b| b["size_bytes"].as_f64() == Some(size)),
        "{size} is no backup's size"
    );
    // Finished runs counted per kind and outcome, as the state has them
    // (the scrape and the state read are close, not atomic: count at least).
    let counted = value(
        &m,
        "shipsafe_runs_total",
        &[
            ("env", "prod"),
            ("kind", "serve_backup"),
            ("outcome", "complete"),
        ],
    )
    .unwrap();
    assert!(counted >= 1.0);
    assert!(counted <= runs_of(dir.path(), "serve backup").len() as f64);

    let (status, page) = get(serve.port, "/", None).unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("data-env=\"prod\""), "{page}");
    assert!(page.contains("1 failing"), "{page}");

    let (code, err, took) = serve.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let beat = store(dir.path()).last_beat().unwrap().unwrap();
    assert!(beat.stopped_at.is_some());
    // Every scheduled run has its audit entry, naming the trigger.
    let audit = store(dir.path()).audit_entries(None, None).unwrap();
    let finished: Vec<_> = runs_of(dir.path(), "serve backup")
        .into_iter()
        .filter(|r| r.outcome != "running")
        .collect();
    for r in &finished {
        assert!(
            audit
                .iter()
                .any(|a| a.run_id.as_deref() == Some(r.run_id.as_str())
                    && (a.detail["trigger"] == "schedule" || a.detail["trigger"] == "catch-up")),
            "run {} has no audit entry",
            r.run_id
        );
    }
    // Stopped: readiness now fails the item, naming when.
    let item = heartbeat_item(dir.path());
    assert_eq!(item["status"], "fail", "{item}");
    assert!(
        item["evidence"]["summary"]
            .as_str()
            .unwrap()
            .contains("stopped"),
        "{item}"
    );
}

#[tokio::test]
async fn a_drill_of_a_backup_older_than_a_check_passes_on_the_checks_it_recorded() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("create table users (id int primary key); insert into users values (1);")
        .await
        .unwrap();
    let users = "\n[[checks]]\nname = \"users exist\"\nsql = \"select count(*) from users\"\nexpect = \">= 1\"\n";
    let dir = project(&db, users);
    let out = common::shipsafe(dir.path())
        .args(["backup", "create", "prod"])
        .output()
        .unwrap();
    assert_eq!(common::code(&out), 0, "{}", common::stderr(&out));
    // A migration adds a column, and a check on it comes with it.
    db.client()
        .await
        .batch_execute("alter table users add column timezone text not null default 'UTC'")
        .await
        .unwrap();
    let dir_path = dir.path().join("shipsafe.toml");
    let mut toml = std::fs::read_to_string(&dir_path).unwrap();
    toml.push_str(
        "\n[[checks]]\nname = \"time zones set\"\nsql = \"select count(*) from users where timezone = ''\"\nexpect = \"= 0\"\n\
         \n[schedule.prod]\nverify = \"* * * * * *\"\n",
    );
    std::fs::write(&dir_path, toml).unwrap();
    let serve = Serve::start(dir.path(), &[]);
    wait_for("a restore drill", 60, || {
        runs_of(dir.path(), "serve verify")
            .iter()
            .any(|r| r.outcome != "running")
    });
    let m = scrape(serve.port);
    let (code, err, _) = serve.stop();
    assert_eq!(code, Some(0), "{err}");
    let drill = runs_of(dir.path(), "serve verify")
        .into_iter()
        .find(|r| r.outcome != "running")
        .unwrap();
    assert_eq!(drill.outcome, "verified", "{:?}", drill.report);
    let report = drill.report.to_string();
    assert!(
        report.contains(r#"column \"timezone\" does not exist"#),
        "the newer check's error is reported, apart: {report}"
    );
    assert_eq!(
        value(&m, "shipsafe_restore_drill_last_ok", &[("env", "prod")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_tick_while_the_previous_run_is_going_is_skipped_and_sigterm_lets_it_finish() {
    let db = TestDb::new().await;
    let dir = project(
        &db,
        "\n[schedule.prod]\nchecks = \"* * * * * *\"\n\n[[checks]]\nname = \"slow\"\nsql = \"select pg_sleep(2.5) is not null\"\nexpect = \"true\"\n",
    );
    let serve = Serve::start(dir.path(), &[]);
    wait_for("a skipped tick", 20, || {
        store(dir.path())
            .job_states()
            .unwrap()
            .iter()
            .any(|j| j.skipped_why.as_deref() == Some("the previous run is still going"))
    });
    // Stop while a check is running: it finishes within the grace period.
    wait_for("a running check", 10, || {
        runs_of(dir.path(), "serve checks")
            .iter()
            .any(|r| r.outcome == "running")
    });
    let (code, err, took) = serve.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(
        err.contains("skipped: the previous run is still going"),
        "{err}"
    );
    let runs = runs_of(dir.path(), "serve checks");
    assert!(
        runs.iter().all(|r| r.outcome == "passed"),
        "the running check finished, none left running: {:?}",
        runs.iter().map(|r| &r.outcome).collect::<Vec<_>>()
    );
    // Never two at once: every run took 2.5 s, so they cannot overlap.
    let mut spans: Vec<(jiff::Timestamp, jiff::Timestamp)> = runs
        .iter()
        .map(|r| {
            let s: jiff::Timestamp = r.started_at.parse().unwrap();
            (
                s,
                s + jiff::SignedDuration::from_millis(r.duration_ms as i64),
            )
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1, "overlapping runs: {spans:?}");
    }
}

#[tokio::test]
async fn one_missed_run_is_caught_up_once_and_a_held_lock_skips_the_backup() {
    let db = TestDb::new().await;
    // Hourly: the last tick is less than an hour ago, the next one (up to
    // an hour away) does not come during the test.
    let dir = project(&db, "\n[schedule.prod]\nbackup = \"0 * * * *\"\n");
    ran_long_ago(dir.path());
    let serve = Serve::start(dir.path(), &[]);
    wait_for("the catch-up backup", 20, || {
        runs_of(dir.path(), "serve backup")
            .iter()
            .any(|r| r.outcome == "complete")
    });
    let (code, err, _) = serve.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("missed its run"), "{err}");
    assert_eq!(
        runs_of(dir.path(), "serve backup").len(),
        1,
        "caught up once"
    );

    // Started again: that tick is done, nothing to catch up.
    let serve = Serve::start(dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let (_, err, _) = serve.stop();
    assert!(!err.contains("missed its run"), "{err}");
    assert_eq!(runs_of(dir.path(), "serve backup").len(), 1);

    // A deploy holds the migration lock: the (caught-up) backup is skipped,
    // naming it, and takes no backup.
    let holder = db.client().await;
    shipsafe_migrate::history::lock(&holder).await.unwrap();
    ran_long_ago(dir.path());
    let serve = Serve::start(dir.path(), &[]);
    wait_for("the skipped backup", 20, || {
        runs_of(dir.path(), "serve backup")
            .iter()
            .any(|r| r.outcome == "skipped")
    });
    serve.stop();
    let skipped = runs_of(dir.path(), "serve backup")
        .into_iter()
        .find(|r| r.outcome == "skipped")
        .unwrap();
    assert!(
        skipped.report["skipped"]
            .as_str()
            .unwrap()
            .contains("migration lock"),
        "{}",
        skipped.report
    );
    let list = backups(dir.path());
    assert_eq!(list.len(), 1, "only the first catch-up's backup: {list:?}");
}

#[tokio::test]
async fn serve_killed_during_a_backup_leaves_no_half_backup_and_the_next_start_reports_it() {
    let db = TestDb::new().await;
    common::add_noise(&db, 60).await;
    let dir = project(&db, "\n[schedule.prod]\nbackup = \"0 * * * *\"\n");
    ran_long_ago(dir.path());
    let serve = Serve::start(dir.path(), &[]);
    wait_for("the backup to be running", 20, || {
        runs_of(dir.path(), "serve backup")
            .iter()
            .any(|r| r.outcome == "running")
    });
    std::thread::sleep(Duration::from_millis(300));
    serve.signal(nix::sys::signal::Signal::SIGKILL);
    drop(serve);
    let killed = runs_of(dir.path(), "serve backup").pop().unwrap();
    assert_eq!(killed.outcome, "running");

    // No complete backup was published; nothing half-written is listed.
    let list = backups(dir.path());
    assert!(
        list.iter().all(|b| b["status"] != "complete"),
        "a backup killed mid-way was published: {list:?}"
    );
    // The next start reports the run as interrupted, once.
    let audit = store(dir.path()).audit_entries(None, None).unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.outcome == "interrupted"
                && a.run_id.as_deref() == Some(killed.run_id.as_str())),
        "the `backup list` above started shipsafe and noted it"
    );
}

#[test]
fn other_addresses_need_a_long_token_and_requests_must_carry_it() {
    let dir = tempfile::tempdir().unwrap();
    common::write(
        dir.path(),
        "shipsafe.toml",
        "[environments.prod]\ndatabase_url = \"postgres://nobody@127.0.0.1:1/none\"\n",
    );
    let out = common::shipsafe(dir.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(common::code(&out), 64, "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("SHIPSAFE_SERVE_TOKEN"));
    let out = common::shipsafe(dir.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env("SHIPSAFE_SERVE_TOKEN", "short")
        .output()
        .unwrap();
    assert_eq!(common::code(&out), 64, "{}", common::stderr(&out));

    let token = "a-long-enough-serve-token";
    let port = shipsafe_testkit::servers::free_port();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("shipsafe"))
        .args(["serve", "--listen", &format!("0.0.0.0:{port}")])
        .current_dir(dir.path())
        .env("SHIPSAFE_SERVE_TOKEN", token)
        .env_remove("SHIPSAFE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("serve to listen", 20, || {
        get(port, "/healthz", Some(token)).is_some()
    });
    assert_eq!(get(port, "/metrics", None).unwrap().0, 401);
    assert_eq!(
        get(port, "/", Some("wrong-token-of-the-same-len"))
            .unwrap()
            .0,
        401
    );
    let (status, body) = get(port, "/metrics", Some(token)).unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("shipsafe_database_up{env=\"prod\"} 0"),
        "{body}"
    );
    assert!(!body.contains(token));
    let _ = child.kill();
    let _ = child.wait();
}

/// A local webhook receiver: records every request; answers 500 to the
/// first `fail_first` requests to `/hook/...`.
struct Hook {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Hook {
    fn start(fail_first: usize) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            let mut n = 0usize;
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then Content-Length bytes of body.
                let (head, body) = loop {
                    let k = s.read(&mut chunk).unwrap_or(0);
                    if k == 0 {
                        break (String::from_utf8_lossy(&buf).into_owned(), String::new());
                    }
                    buf.extend_from_slice(&chunk[..k]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some((h, b)) = text.split_once("\r\n\r\n") {
                        let len = h
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if b.len() >= len {
                            break (h.to_string(), b.to_string());
                        }
                    }
                };
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                if path.starts_with("/hook/") {
                    n += 1;
                }
                let refuse = path.starts_with("/hook/") && n <= fail_first;
                let status = if refuse {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                log.lock().unwrap().push((path, body));
            }
        });
        Hook { port, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn bodies(&self, path: &str) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

#[tokio::test]
async fn failures_and_recoveries_are_notified_retried_and_carry_no_secret() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("create table orders (id int primary key, total int); insert into orders values (1, -5);")
        .await
        .unwrap();
    let hook = Hook::start(1);
    let dir = tempfile::tempdir().unwrap();
    common::write(
        dir.path(),
        "shipsafe.toml",
        &format!(
            "[environments.prod]\ndatabase_url = \"{}\"\nprotection = \"open\"\n\
             [environments.broken]\ndatabase_url = \"postgres://app:pw-s3cret-value@127.0.0.1:1/x\"\nprotection = \"open\"\n\
             [schedule.prod]\nchecks = \"* * * * * *\"\n\
             [schedule.broken]\nchecks = \"*/2 * * * * *\"\n\
             [[checks]]\nname = \"no negative totals\"\nsql = \"select count(*) from orders where total < 0\"\nexpect = \"= 0\"\n\
             [[notify]]\nkind = \"webhook\"\nurl = \"${{HOOK_URL}}\"\n\
             [[notify]]\nkind = \"slack\"\nurl = \"${{SLACK_URL}}\"\nenvs = [\"prod\"]\njobs = [\"checks\"]\n\
             [[notify]]\nkind = \"healthchecks\"\nurl = \"${{PING_URL}}\"\nenvs = [\"prod\"]\n",
            db.url().expose()
        ),
    );
    let vars = [
        ("HOOK_URL", hook.url("/hook/tok-123")),
        ("SLACK_URL", hook.url("/slack/tok-456")),
        ("PING_URL", hook.url("/ping/uuid-789")),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let serve = Serve::start(dir.path(), &vars);
    wait_for("a failure notification", 20, || {
        hook.bodies("/hook/tok-123")
            .iter()
            .any(|b| b.contains("\"event\":\"failure\"") && b.contains("\"env\":\"prod\""))
    });
    // Fixed: the next run is a recovery, told once; then plain successes
    // are not sent to the webhook (default: failure and recovery).
    db.client()
        .await
        .batch_execute("update orders set total = 5")
        .await
        .unwrap();
    wait_for("a recovery notification", 20, || {
        hook.bodies("/hook/tok-123")
            .iter()
            .any(|b| b.contains("\"event\":\"recovery\""))
    });
    std::thread::sleep(Duration::from_millis(2500));
    let (code, err, _) = serve.stop();
    assert_eq!(code, Some(0), "{err}");

    let hook_bodies = hook.bodies("/hook/tok-123");
    let prod: Vec<serde_json::Value> = hook_bodies
        .iter()
        .filter_map(|b| serde_json::from_str(b).ok())
        .filter(|v: &serde_json::Value| v["env"] == "prod")
        .collect();
    assert_eq!(
        prod.iter().filter(|v| v["event"] == "recovery").count(),
        1,
        "{prod:?}"
    );
    assert!(prod.iter().all(|v| v["event"] != "success"), "{prod:?}");
    let failure = prod.iter().find(|v| v["event"] == "failure").unwrap();
    for key in [
        "project", "env", "job", "outcome", "ok", "run_id", "summary", "at",
    ] {
        assert!(failure.get(key).is_some(), "{key} missing: {failure}");
    }
    assert_eq!(failure["job"], "checks");
    assert_eq!(failure["ok"], false);
    // The first request got a 500 and was retried: more requests than
    // distinct payloads reached the receiver.
    let all: Vec<(String, String)> = hook.seen.lock().unwrap().clone();
    let first = &hook_bodies[0];
    assert!(
        hook_bodies.iter().filter(|b| *b == first).count() >= 2,
        "the refused first delivery was sent again: {hook_bodies:?}"
    );
    // Slack: text and blocks; the healthchecks URL got start, fail and
    // success pings.
    let slack: serde_json::Value = serde_json::from_str(&hook.bodies("/slack/tok-456")[0]).unwrap();
    assert!(
        slack["text"].as_str().unwrap().contains("checks of prod"),
        "{slack}"
    );
    assert!(slack["blocks"].is_array());
    let paths: Vec<String> = all.iter().map(|(p, _)| p.clone()).collect();
    for p in [
        "/ping/uuid-789/start",
        "/ping/uuid-789/fail",
        "/ping/uuid-789",
    ] {
        assert!(paths.iter().any(|x| x == p), "{p} not pinged: {paths:?}");
    }
    // The broken environment's failures were told with its URL masked.
    assert!(
        hook_bodies.iter().any(|b| b.contains("\"env\":\"broken\"")),
        "{hook_bodies:?}"
    );
    for (_, body) in &all {
        assert!(!body.contains("pw-s3cret-value"), "{body}");
        assert!(
            !body.contains("tok-123") && !body.contains("uuid-789"),
            "{body}"
        );
    }
    // The jobs' outcomes did not depend on the webhook.
    assert!(
        runs_of(dir.path(), "serve checks")
            .iter()
            .any(|r| r.outcome == "passed")
    );
}

#[tokio::test]
async fn a_cli_deploy_that_fails_is_notified_and_the_next_good_one_is_a_recovery() {
    let db = TestDb::new().await;
    let hook = Hook::start(0);
    let dir = tempfile::tempdir().unwrap();
    common::write(
        dir.path(),
        "shipsafe.toml",
        &format!(
            "[environments.dev]\ndatabase_url = \"{}\"\nprotection = \"open\"\n\
             [[checks]]\nname = \"no negative totals\"\nsql = \"select count(*) from orders where total < 0\"\nexpect = \"= 0\"\n\
             [[notify]]\nkind = \"webhook\"\nurl = \"${{HOOK_URL}}\"\njobs = [\"deploy\", \"rollback\"]\n",
            db.url().expose()
        ),
    );
    common::write(
        dir.path(),
        "migrations/20260101000000_orders/up.sql",
        "create table orders (id int primary key, total int);\ninsert into orders values (1, -5);\n",
    );
    common::write(
        dir.path(),
        "migrations/20260101000000_orders/down.sql",
        "drop table orders;\n",
    );
    let deploy = || {
        common::shipsafe(dir.path())
            .args(["deploy", "dev"])
            .env("HOOK_URL", hook.url("/hook/x"))
            .output()
            .unwrap()
    };
    let out = deploy();
    assert_eq!(common::code(&out), 4, "{}", common::stderr(&out));
    common::write(
        dir.path(),
        "migrations/20260101000000_orders/up.sql",
        "create table orders (id int primary key, total int);\ninsert into orders values (1, 5);\n",
    );
    let out = deploy();
    assert_eq!(common::code(&out), 0, "{}", common::stderr(&out));
    let events: Vec<serde_json::Value> = hook
        .bodies("/hook/x")
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        (
            events[0]["event"].as_str(),
            events[0]["job"].as_str(),
            events[0]["outcome"].as_str()
        ),
        (Some("failure"), Some("deploy"), Some("rolled_back"))
    );
    assert!(
        events[0]["summary"]
            .as_str()
            .unwrap()
            .contains("no negative totals")
    );
    assert_eq!(events[1]["event"], "recovery");
    assert_eq!(events[1]["trigger"], "cli");
}

#[tokio::test]
async fn a_cli_deploy_that_cannot_reach_its_database_is_notified() {
    let db = TestDb::new().await;
    let hook = Hook::start(0);
    let dir = tempfile::tempdir().unwrap();
    common::write(
        dir.path(),
        "shipsafe.toml",
        "[environments.dev]\ndatabase_url = \"${DEV_URL}\"\nprotection = \"open\"\n\
         [[checks]]\nname = \"server answers\"\nsql = \"select 1\"\nexpect = \"= 1\"\n\
         [[notify]]\nkind = \"webhook\"\nurl = \"${HOOK_URL}\"\njobs = [\"deploy\"]\n",
    );
    common::write(
        dir.path(),
        "migrations/20260101000000_notes/up.sql",
        "create table notes (id int primary key);\n",
    );
    let deploy = |url: &str| {
        common::shipsafe(dir.path())
            .args(["deploy", "dev"])
            .env("HOOK_URL", hook.url("/hook/x"))
            .env("DEV_URL", url)
            .output()
            .unwrap()
    };
    // The variable is set; nothing listens there.
    let out = deploy("postgres://app:pw-s3cret-value@127.0.0.1:1/app");
    assert_ne!(common::code(&out), 0, "{}", common::stderr(&out));
    let events: Vec<serde_json::Value> = hook
        .bodies("/hook/x")
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(
        (e["event"].as_str(), e["job"].as_str(), e["ok"].as_bool()),
        (Some("failure"), Some("deploy"), Some(false)),
        "{e}"
    );
    assert_eq!(e["outcome"], "error", "{e}");
    assert_eq!(e["trigger"], "cli");
    let summary = e["summary"].as_str().unwrap();
    assert!(summary.contains("127.0.0.1:1"), "says where: {summary}");
    assert!(!e.to_string().contains("pw-s3cret-value"), "{e}");
    // The checks and the variable were fine; the database was not. Once it
    // answers, the deploy goes through (and a success is not news).
    let out = deploy(db.url().expose());
    assert_eq!(common::code(&out), 0, "{}", common::stderr(&out));
    assert_eq!(hook.bodies("/hook/x").len(), 1);
}

/// docs/alerts.yml: valid for Prometheus (`promtool check rules`, from
/// Debian's prometheus package, unpacked by scripts/setup) and every metric
/// it uses is one /metrics renders.
#[test]
fn the_documented_alert_rules_pass_promtool_and_name_real_metrics() {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/alerts.yml");
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| Path::new(&std::env::var("HOME").unwrap()).join(".cache"));
    let unpacked = cache.join("shipsafe-test-tools/usr/bin/promtool");
    let promtool = if unpacked.is_file() {
        unpacked
    } else {
        "promtool".into()
    };
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} (scripts/setup provides promtool): {e}",
                promtool.display()
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS: 5 rules found"), "{text}");

    let env = shipsafe_serve::metrics::EnvFacts {
        name: "prod".into(),
        up: true,
        last_backup: Some(shipsafe_serve::metrics::BackupFact {
            id: "b".into(),
            at: "2026-12-06T03:00:00Z".into(),
            unix: 1,
            size_bytes: 1,
            duration_seconds: 1.0,
        }),
        last_drill: Some(shipsafe_serve::metrics::DrillFact {
            backup_id: "b".into(),
            at: "2026-12-06T04:00:00Z".into(),
            unix: 1,
            ok: true,
            restore_seconds: 1.0,
            last_ok_unix: Some(1),
            last_ok_seconds: Some(1.0),
        }),
        pending_migrations: Some(0),
        checks_failing: Some(0),
        readiness: Some("gold".into()),
        ..Default::default()
    };
    let rendered = shipsafe_serve::metrics::render(&shipsafe_serve::metrics::Facts {
        environments: vec![env],
        ..Default::default()
    });
    let yaml = std::fs::read_to_string(&rules).unwrap();
    let used = regex::Regex::new(r"shipsafe_[a-z_]+").unwrap();
    for m in used.find_iter(&yaml) {
        assert!(
            rendered.contains(&format!("# TYPE {} ", m.as_str())),
            "{} is not a metric /metrics renders",
            m.as_str()
        );
    }
}

#[tokio::test]
async fn a_job_still_running_after_the_grace_period_is_abandoned_and_reported_next_start() {
    let db = TestDb::new().await;
    let dir = project(
        &db,
        "\n[schedule.prod]\nchecks = \"* * * * * *\"\n\n[[checks]]\nname = \"stuck\"\nsql = \"select pg_sleep(60) is not null\"\nexpect = \"true\"\n",
    );
    let serve = Serve::start(dir.path(), &[]);
    wait_for("a running check", 20, || {
        runs_of(dir.path(), "serve checks")
            .iter()
            .any(|r| r.outcome == "running")
    });
    let (code, err, took) = serve.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(err.contains("abandoned checks of prod"), "{err}");
    let run = runs_of(dir.path(), "serve checks").pop().unwrap();
    assert_eq!(run.outcome, "running", "left for the next start");
    // The next start of any command reports it, once.
    for _ in 0..2 {
        let out = common::shipsafe(dir.path()).args(["log"]).output().unwrap();
        assert_eq!(common::code(&out), 0);
    }
    let audit = store(dir.path()).audit_entries(None, None).unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(
                |a| a.outcome == "interrupted" && a.run_id.as_deref() == Some(run.run_id.as_str())
            )
            .count(),
        1
    );
}
