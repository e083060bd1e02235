//! Smoke tests against a real HTTP server started by the test. Its health
//! endpoint looks at the database, so a migration that breaks the app makes
//! the deploy's smoke test fail and the deploy roll back.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Project, load_sample, snapshot, write};
use shipsafe_testkit::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "smoke-Pa55-never-printed";

/// A tiny app: /health is 200 while users.email exists, else 500;
/// POST /auth/login returns a token for the right password; GET /me needs it.
async fn start_app(db: shipsafe_config::DbUrl) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let db = db.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                let mut got = 0;
                loop {
                    let Ok(n) = sock.read(&mut buf[got..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got += n;
                    let text = String::from_utf8_lossy(&buf[..got]).to_string();
                    if let Some(h) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if got >= h + 4 + len {
                            break;
                        }
                    }
                }
                let req = String::from_utf8_lossy(&buf[..got]).to_string();
                let line = req.lines().next().unwrap_or_default().to_string();
                let (status, body) = if line.starts_with("GET /health ") {
                    let c = shipsafe_pg::connect(&db).await.unwrap();
                    let n: i64 = c
                        .query_one("select count(*) from information_schema.columns where table_name = 'users' and column_name = 'email'", &[])
                        .await
                        .unwrap()
                        .get(0);
                    if n == 1 {
                        (200, r#"{"status":"healthy","db":{"ok":true}}"#)
                    } else {
                        (500, r#"{"status":"broken"}"#)
                    }
                } else if line.starts_with("POST /auth/login ") {
                    if req.contains(&format!("\"password\":\"{PASSWORD}\"")) {
                        (200, r#"{"access_token":"tok-123"}"#)
                    } else {
                        (401, r#"{"error":"bad credentials"}"#)
                    }
                } else if line.starts_with("GET /me ") {
                    if req
                        .to_ascii_lowercase()
                        .contains("authorization: bearer tok-123")
                    {
                        (200, r#"{"user":"admin"}"#)
                    } else {
                        (401, "{}")
                    }
                } else {
                    (404, "{}")
                };
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}

const SMOKE: &str = r#"
[[smoke]]
name = "health"
path = "/health"
expect_status = 200
expect_json = { status = "healthy", db = { ok = true } }

[[smoke]]
name = "admin login"
method = "POST"
path = "/auth/login"
json = { username = "admin", password = "${SMOKE_PASSWORD}" }
expect_status = 200
capture = { token = "access_token" }

[[smoke]]
name = "who am i"
path = "/me"
headers = { Authorization = "Bearer {{token}}" }
expect_json = { user = "admin" }
"#;

fn project(db: &TestDb, port: u16, protection: &str) -> Project {
    let mut p = Project::new(&[("staging", protection, db.url())], SMOKE);
    let toml = std::fs::read_to_string(p.dir.path().join("shipsafe.toml"))
        .unwrap()
        .replacen(
            "protection = ",
            &format!("app_url = \"http://127.0.0.1:{port}\"\nprotection = "),
            1,
        );
    write(p.dir.path(), "shipsafe.toml", &toml);
    p.vars.push(("SMOKE_PASSWORD".into(), PASSWORD.into()));
    p
}

async fn json_in_thread(p: &Project, args: &[&str]) -> (i32, serde_json::Value, String, String) {
    let mut cmd = p.cmd();
    cmd.args(["--format", "json"]).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        common::code(&out),
        common::json(&out),
        common::stderr(&out),
        common::stdout(&out),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_runs_smoke_tests_with_secrets_and_captures() {
    let db = TestDb::new().await;
    load_sample(db.url()).await;
    let port = start_app(db.url().clone()).await;
    let p = project(&db, port, "guarded");
    let (code, v, err, out) = json_in_thread(&p, &["verify", "staging"]).await;
    assert_eq!(code, 0, "{err}");
    let smoke = v["smoke"].as_array().unwrap();
    assert_eq!(smoke.len(), 3);
    assert!(smoke.iter().all(|s| s["ok"] == true), "{v}");
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD));

    let mut wrong = project(&db, port, "guarded");
    wrong.vars.retain(|(k, _)| k != "SMOKE_PASSWORD");
    wrong
        .vars
        .push(("SMOKE_PASSWORD".into(), "wrong-password".into()));
    let (code, v, _, _) = json_in_thread(&wrong, &["verify", "staging"]).await;
    assert_eq!(code, 1);
    assert_eq!(v["smoke"][1]["ok"], false);
    assert!(
        v["smoke"][1]["error"]
            .as_str()
            .unwrap()
            .contains("expected status 200, got 401"),
        "{v}"
    );
    assert_eq!(v["smoke"][2]["ok"], false, "no token was captured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_smoke_test_deploys_and_a_500_after_the_change_rolls_back() {
    let db = TestDb::new().await;
    load_sample(db.url()).await;
    let port = start_app(db.url().clone()).await;
    let p = project(&db, port, "guarded");

    write(
        p.dir.path(),
        "migrations/1_note/up.sql",
        "alter table users add column note text;",
    );
    write(
        p.dir.path(),
        "migrations/1_note/down.sql",
        "alter table users drop column note;",
    );
    let (code, run, err, _) = json_in_thread(&p, &["deploy", "staging"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "deployed");
    assert_eq!(run["report"]["smoke"].as_array().unwrap().len(), 3);

    let before = snapshot(db.url()).await;
    // Dropping data has no honest down.sql (it could not bring the emails
    // back), so the migration says so and the pre-deploy backup is the way back.
    write(
        p.dir.path(),
        "migrations/2_drop_email/up.sql",
        "-- shipsafe:irreversible\n-- shipsafe:allow ban-drop-column the app reads contacts now\nalter table users drop column email;",
    );
    let (code, run, err, _) = json_in_thread(&p, &["deploy", "staging"]).await;
    assert_eq!(code, 4, "{err}");
    assert_eq!(run["outcome"], "rolled_back");
    assert_eq!(run["report"]["rollback"]["method"], "restore");
    assert!(err.contains("smoke \"health\""), "{err}");
    assert!(err.contains("expected status 200, got 500"), "{err}");
    assert_eq!(
        snapshot(db.url()).await,
        before,
        "schema and every row as before the deploy"
    );
    // And the app is healthy again.
    let (code, _, err, _) = json_in_thread(&p, &["verify", "staging"]).await;
    assert_eq!(code, 0, "{err}");
}
