//! The dashboard in a real browser: headless Chromium (Debian's `chromium`,
//! installed by scripts/setup) loads the pages of a `serve` started on a
//! random port against an environment with backups, a failed restore drill
//! and a rolled-back deploy, and one that is down. The rendered DOM is
//! asserted on; a screenshot is kept in target/test-artifacts/.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shipsafe_testkit::TestDb;

struct Serve(Child, u16);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path, extra: &[&str]) -> Serve {
    let port = shipsafe_testkit::servers::free_port();
    let child = Command::new(assert_cmd::cargo::cargo_bin("shipsafe"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .current_dir(dir)
        .env_remove("SHIPSAFE_CONFIG")
        .env_remove("SHIPSAFE_SERVE_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Serve(child, port)
}

fn chromium() -> Command {
    let mut c = Command::new("chromium");
    c.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--window-size=1400,900",
    ])
    .env("HOME", std::env::temp_dir())
    .stdin(Stdio::null());
    c
}

/// The DOM after the page loaded, as the browser rendered it.
fn dom(port: u16, path: &str) -> String {
    let out = chromium()
        .arg("--dump-dom")
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("chromium must be installed (scripts/setup installs it)");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("</html>"),
        "chromium rendered nothing for {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `<tr>` whose attribute is `attr` (for assertions on one row).
fn row<'a>(dom: &'a str, attr: &str) -> &'a str {
    let start = dom
        .find(attr)
        .unwrap_or_else(|| panic!("{attr} not in {dom}"));
    let end = dom[start..].find("</tr>").unwrap() + start;
    &dom[start..end]
}

#[tokio::test]
async fn the_dashboard_shows_backups_a_failed_drill_and_a_rolled_back_deploy_in_a_browser() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("create table orders (id int primary key, total int); insert into orders values (1, 10);")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    common::write(
        dir.path(),
        "shipsafe.toml",
        &format!(
            "[project]\nname = \"shop\"\n\
             [environments.prod]\ndatabase_url = \"{}\"\nprotection = \"guarded\"\n\
             [environments.legacy]\ndatabase_url = \"postgres://app:pw-s3cret-value@127.0.0.1:1/legacy\"\nprotection = \"open\"\n\
             [schedule.prod]\nbackup = \"0 3 * * *\"\nverify = \"0 4 * * 0\"\n\
             [serve]\ncatch_up = \"0s\"\n\
             [[checks]]\nname = \"no negative totals\"\nsql = \"select count(*) from orders where total < 0\"\nexpect = \"= 0\"\n",
            db.url().expose()
        ),
    );
    // A deploy whose check fails: rolled back by its pre-deploy backup.
    common::write(
        dir.path(),
        "migrations/20260101000000_refund/up.sql",
        "insert into orders values (2, -3);\n",
    );
    common::write(
        dir.path(),
        "migrations/20260101000000_refund/down.sql",
        "delete from orders where id = 2;\n",
    );
    let out = common::shipsafe(dir.path())
        .args(["deploy", "prod"])
        .output()
        .unwrap();
    assert_eq!(common::code(&out), 4, "{}", common::stderr(&out));
    let deploy_run = common::shipsafe(dir.path())
        .args(["--format", "json", "log", "--limit", "20"])
        .output()
        .unwrap();
    let log = common::json(&deploy_run);
    let run_id = log["entries"]
        .as_array()
        .or_else(|| log.as_array())
        .unwrap()
        .iter()
        .find(|e| e["command"] == "deploy")
        .unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    // A backup, and a restore drill of it that fails (its data breaks
    // the check on the restored copy).
    db.client()
        .await
        .batch_execute("insert into orders values (3, -1)")
        .await
        .unwrap();
    let out = common::shipsafe(dir.path())
        .args(["--format", "json", "backup", "create", "prod"])
        .output()
        .unwrap();
    let id = common::json(&out)["id"].as_str().unwrap().to_string();
    let out = common::shipsafe(dir.path())
        .args(["backup", "verify", &id])
        .output()
        .unwrap();
    assert_ne!(common::code(&out), 0, "the drill fails its check");

    let s = serve(dir.path(), &[]);
    let overview = dom(s.1, "/");
    let prod = row(&overview, "data-env=\"prod\"");
    assert!(prod.contains(&id), "newest backup named: {prod}");
    assert!(prod.contains("FAILED"), "failed drill shown: {prod}");
    assert!(
        prod.contains("class=\"bad\">rolled_back"),
        "rolled-back deploy shown as a failure: {prod}"
    );
    assert!(prod.contains(&run_id), "{prod}");
    assert!(prod.contains("on (TLS") || prod.contains("OFF"), "{prod}");
    let legacy = row(&overview, "data-env=\"legacy\"");
    assert!(legacy.contains("down"), "{legacy}");
    assert!(
        !overview.contains("<form"),
        "read-only without --allow-actions"
    );

    let backups = dom(s.1, "/backups");
    let b = row(&backups, &format!("data-backup=\"{id}\""));
    assert!(b.contains("FAILED") && b.contains("check"), "{b}");

    let run = dom(s.1, &format!("/runs/{run_id}"));
    for step in ["backup", "apply", "verify", "rollback"] {
        assert!(
            run.contains(&format!("data-step=\"{step}\"")),
            "{step} missing in the timeline: {run}"
        );
    }
    assert!(run.contains("no negative totals"), "the failure is shown");

    let audit = dom(s.1, "/audit");
    assert!(audit.contains("hash chain intact"), "{audit}");
    assert!(audit.contains("backup verify"), "{audit}");

    let schedules = dom(s.1, "/schedules");
    let line = row(&schedules, "data-job=\"prod/backup\"");
    assert!(
        line.contains("0 3 * * *") && line.contains("T03:00:00"),
        "next run at 03:00: {line}"
    );

    // No page renders a secret.
    for page in [&overview, &backups, &run, &audit, &schedules] {
        assert!(!page.contains("pw-s3cret-value"));
    }

    let shot = artifacts().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium()
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("http://127.0.0.1:{}/", s.1))
        .output()
        .unwrap();
    let png = std::fs::read(&shot)
        .unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}

/// A raw POST: (status, Location).
fn post(port: u16, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let location = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("location: ")
                .or_else(|| l.strip_prefix("Location: "))
        })
        .unwrap_or("")
        .to_string();
    (status, location)
}

#[tokio::test]
async fn actions_need_allow_actions_and_the_forms_csrf_value() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    common::write(
        dir.path(),
        "shipsafe.toml",
        &format!(
            "[environments.prod]\ndatabase_url = \"{}\"\nprotection = \"guarded\"\n\
             [[checks]]\nname = \"one\"\nsql = \"select 1\"\nexpect = \"= 1\"\n",
            db.url().expose()
        ),
    );
    {
        let s = serve(dir.path(), &[]);
        assert_eq!(post(s.1, "/actions", "csrf=x&env=prod&job=checks").0, 403);
    }
    let s = serve(dir.path(), &["--allow-actions"]);
    let page = dom(s.1, "/");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    assert_eq!(
        post(s.1, "/actions", "csrf=forged&env=prod&job=checks").0,
        403
    );
    assert_eq!(post(s.1, "/actions", "env=prod&job=checks").0, 422);
    let (status, location) = post(s.1, "/actions", &format!("csrf={csrf}&env=prod&job=checks"));
    assert_eq!((status, location.as_str()), (303, "/runs"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let runs = shipsafe_state::StateStore::open(&dir.path().join(".shipsafe"))
            .unwrap()
            .runs(None, 100)
            .unwrap();
        if runs
            .iter()
            .any(|r| r.command == "serve checks" && r.outcome == "passed")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the button ran no checks");
        std::thread::sleep(Duration::from_millis(100));
    }
    let audit = shipsafe_state::StateStore::open(&dir.path().join(".shipsafe"))
        .unwrap()
        .audit_entries(None, None)
        .unwrap();
    assert!(audit.iter().any(|a| a.detail["trigger"] == "dashboard"));
}
