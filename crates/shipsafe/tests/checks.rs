//! `[[checks]]` as every command runs them: a query that cannot run is an
//! error with the server's message, never a failed expectation; backups
//! carry the checks of their time; `envs` scopes a check; row counts read
//! two rows at most; a check stuck behind a lock ends at its timeout.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Project, code, stderr, stdout};
use shipsafe_testkit::TestDb;

const USERS: &str = "create table users (id int primary key, name text not null);
                     insert into users values (1, 'ann');";

fn check(name: &str, sql: &str, expect: &str, more: &str) -> String {
    format!("\n[[checks]]\nname = \"{name}\"\nsql = \"{sql}\"\nexpect = \"{expect}\"\n{more}")
}

async fn with_users() -> TestDb {
    let db = TestDb::new().await;
    db.client().await.batch_execute(USERS).await.unwrap();
    db
}

fn outcome<'a>(checks: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {checks}"))
}

#[tokio::test]
async fn a_check_whose_query_errors_is_an_error_with_the_servers_message() {
    let db = with_users().await;
    let p = Project::new(
        &[("dev", "open", db.url())],
        &(check("five users", "select count(*) from users", "= 5", "")
            + &check(
                "every user has a time zone",
                "select count(*) from users where timezone is null",
                "= 0",
                "",
            )
            + &check("users exist", "select count(*) from users", ">= 1", "")),
    );
    let (code, v, err) = p.json(&["verify", "dev"]);
    assert_eq!(code, 1, "{err}");
    let failed = outcome(&v["checks"], "five users");
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["ok"], false);
    assert_eq!(failed["actual"], "1");
    assert!(failed["error"].is_null(), "{failed}");
    let errored = outcome(&v["checks"], "every user has a time zone");
    assert_eq!(errored["status"], "error", "{errored}");
    assert_eq!(errored["ok"], false);
    assert!(
        errored["error"]
            .as_str()
            .unwrap()
            .contains(r#"column "timezone" does not exist"#),
        "{errored}"
    );
    assert_eq!(outcome(&v["checks"], "users exist")["status"], "passed");

    // Text: the three words, and the server's message.
    let out = p.cmd().args(["verify", "dev"]).output().unwrap();
    let text = stdout(&out);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no line for {name}: {text}"))
            .to_string()
    };
    assert!(line("five users").starts_with("FAIL"), "{text}");
    assert!(line("time zone").starts_with("ERROR"), "{text}");
    assert!(
        line("time zone").contains(r#"column "timezone" does not exist"#),
        "{text}"
    );
    assert!(line("users exist").starts_with("ok"), "{text}");

    // Readiness says it the same way.
    let (_, v, _) = p.json(&["readiness", "dev"]);
    let item = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "checks-passing")
        .unwrap();
    let said = item.to_string();
    assert!(
        said.contains(r#"could not run: column \"timezone\" does not exist"#),
        "{said}"
    );
}

/// A database whose newest migration added `users.timezone`, with a check
/// on it added at the same time, and a backup taken before: (project,
/// backup id).
async fn a_backup_older_than_a_check() -> (TestDb, Project, String) {
    let db = with_users().await;
    let older = check("users exist", "select count(*) from users", ">= 1", "");
    let p = Project::new(&[("prod", "guarded", db.url())], &older);
    let (code, m, err) = p.json(&["backup", "create", "prod"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        m["checks"],
        serde_json::json!([{ "name": "users exist", "sql": "select count(*) from users", "expect": ">= 1" }]),
        "the manifest records the checks of its time: {m}"
    );
    db.client()
        .await
        .batch_execute("alter table users add column timezone text not null default 'UTC'")
        .await
        .unwrap();
    let config = p.dir.path().join("shipsafe.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&check(
        "every user has a time zone",
        "select count(*) from users where timezone = ''",
        "= 0",
        "",
    ));
    std::fs::write(&config, text).unwrap();
    let (code, v, err) = p.json(&["verify", "prod"]);
    assert_eq!(code, 0, "both checks pass on the database now: {v} {err}");
    let id = m["id"].as_str().unwrap().to_string();
    (db, p, id)
}

#[tokio::test]
async fn verifying_an_older_backup_runs_its_recorded_checks_and_reports_newer_ones_apart() {
    let (_db, p, id) = a_backup_older_than_a_check().await;
    let (code, v, err) = p.json(&["backup", "verify", &id]);
    assert_eq!(
        code, 0,
        "a check newer than the backup does not fail it: {err}"
    );
    let last = v["verifications"].as_array().unwrap().last().unwrap();
    assert_eq!(last["ok"], true, "{last}");
    assert_eq!(last["checks_passed"], 1);
    assert_eq!(last["checks_failed"], 0);
    assert_eq!(
        outcome(&v["check_results"], "users exist")["status"],
        "passed"
    );
    let newer = outcome(&v["current_check_results"], "every user has a time zone");
    assert_eq!(newer["status"], "error", "{newer}");
    assert!(
        newer["error"]
            .as_str()
            .unwrap()
            .contains(r#"column "timezone" does not exist"#),
        "{newer}"
    );
    // Said in the verification's record too, as a warning.
    assert!(
        last["proof"]["warnings"].to_string().contains("timezone"),
        "{last}"
    );
    // The catalog counts it verified.
    let list = p.cmd().args(["backup", "list"]).output().unwrap();
    assert!(
        !stdout(&list).contains("VERIFY FAILED"),
        "{}",
        stdout(&list)
    );
}

#[tokio::test]
async fn a_manifest_without_recorded_checks_is_verified_with_todays_checks_and_says_why_it_fails() {
    let (_db, p, id) = a_backup_older_than_a_check().await;
    // As written before manifests recorded checks.
    let path = p.backups_dir().join(format!("{id}.json"));
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    m.as_object_mut().unwrap().remove("checks").unwrap();
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();

    let (code, v, err) = p.json(&["backup", "verify", &id]);
    assert_eq!(code, 1, "today's checks decide, as before: {v}");
    assert!(
        err.contains("every user has a time zone")
            && err.contains(r#"column "timezone" does not exist"#),
        "the real cause is shown: {err}"
    );
    assert!(err.contains("could not run"), "{err}");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let last = m["verifications"].as_array().unwrap().last().unwrap();
    assert_eq!(last["ok"], false);
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains(r#"column "timezone" does not exist"#),
        "{last}"
    );
}

#[tokio::test]
async fn restoring_an_older_backup_commits_on_its_recorded_checks() {
    let (db, p, id) = a_backup_older_than_a_check().await;
    db.client()
        .await
        .batch_execute("insert into users values (2, 'bob', 'UTC')")
        .await
        .unwrap();
    let (code, v, err) = p.json(&["backup", "restore", &id, "--to", "prod"]);
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(v["outcome"], "restored");
    assert_eq!(
        outcome(&v["report"]["checks"], "users exist")["status"],
        "passed"
    );
    let newer = outcome(&v["report"]["current_checks"], "every user has a time zone");
    assert_eq!(newer["status"], "error", "{newer}");
    // The database is the backup's: one user, no time zone column.
    let rows = db
        .client()
        .await
        .query("select count(*) from users", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 1);
}

#[tokio::test]
async fn a_check_scoped_to_production_runs_only_there() {
    let dev = TestDb::new().await;
    let prod = with_users().await;
    let checks = check(
        "at least one user",
        "select count(*) from users",
        ">= 1",
        "envs = [\"production\"]\n",
    ) + &check("server answers", "select 1", "= 1", "");
    let p = Project::new(
        &[
            ("dev", "open", dev.url()),
            ("production", "guarded", prod.url()),
        ],
        &checks,
    );
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (code, v, err) = p.json(&["verify", "dev"]);
    assert_eq!(code, 0, "an empty dev database need not have users: {err}");
    assert_eq!(names(&v["checks"]), ["server answers"]);
    let (code, v, err) = p.json(&["verify", "production"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(names(&v["checks"]), ["at least one user", "server answers"]);

    // A backup records the checks of its environment.
    let (code, m, err) = p.json(&["backup", "create", "dev"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(m["checks"].as_array().unwrap().len(), 1, "{m}");
    let (code, m, err) = p.json(&["backup", "create", "production"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(m["checks"].as_array().unwrap().len(), 2, "{m}");

    // A deploy to dev verifies with dev's checks, rehearsal included.
    common::write(
        p.dir.path(),
        "migrations/20260101000000_notes/up.sql",
        "create table notes (id int primary key);\n",
    );
    common::write(
        p.dir.path(),
        "migrations/20260101000000_notes/down.sql",
        "drop table notes;\n",
    );
    let (code, run, err) = p.json(&["deploy", "dev", "--rehearse"]);
    assert_eq!(code, 0, "{run} {err}");
    assert_eq!(names(&run["report"]["checks"]), ["server answers"]);
    assert_eq!(
        names(&run["report"]["rehearsal"]["checks"]),
        ["server answers"]
    );

    // Readiness judges dev by dev's checks.
    let (_, v, _) = p.json(&["readiness", "dev"]);
    let item = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "checks-passing")
        .unwrap();
    assert_eq!(item["status"], "pass", "{item}");
}

#[test]
fn an_unknown_environment_in_a_checks_envs_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    common::write(
        dir.path(),
        "shipsafe.toml",
        &("[environments.dev]\ndatabase_url = \"postgres://localhost/dev\"\nprotection = \"open\"\n\
           [environments.production]\ndatabase_url = \"${DATABASE_URL}\"\n"
            .to_string()
            + &check(
                "at least one user",
                "select count(*) from users",
                ">= 1",
                "envs = [\"prod\"]\n",
            )),
    );
    let out = common::shipsafe(dir.path())
        .args(["verify", "dev"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("at least one user") && err.contains("\"prod\""),
        "names the check and the environment: {err}"
    );
    assert!(err.contains("production"), "lists the known ones: {err}");
}

#[test]
fn an_empty_envs_or_jobs_list_is_a_config_error_not_every_environment() {
    let dir = tempfile::tempdir().unwrap();
    let envs =
        "[environments.dev]\ndatabase_url = \"postgres://localhost/dev\"\nprotection = \"open\"\n";
    for extra in [
        check(
            "at least one user",
            "select count(*) from users",
            ">= 1",
            "envs = []\n",
        ),
        "[[notify]]\nkind = \"slack\"\nurl = \"https://hooks.example/x\"\nenvs = []\n".to_string(),
        "[[notify]]\nkind = \"slack\"\nurl = \"https://hooks.example/x\"\njobs = []\n".to_string(),
        "[[notify]]\nkind = \"slack\"\nurl = \"https://hooks.example/x\"\non = []\n".to_string(),
    ] {
        common::write(dir.path(), "shipsafe.toml", &format!("{envs}{extra}"));
        let out = common::shipsafe(dir.path())
            .args(["verify", "dev"])
            .output()
            .unwrap();
        assert_eq!(code(&out), 78, "{extra}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("leave the key out"),
            "says how to mean every one: {}",
            stderr(&out)
        );
    }
}

#[tokio::test]
async fn empty_and_nonempty_read_two_rows_at_most() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("create table t (g int); insert into t select generate_series(1, 5);")
        .await
        .unwrap();
    // Reading the third row divides by zero: only a query stopped after
    // two rows passes.
    let checks = check(
        "stops after two rows",
        "select g from t where 1 / (3 - g) is not null",
        "nonempty",
        "",
    ) + &check("none", "select g from t where g > 100;", "empty", "")
        + &check(
            "one",
            "select g from t where g = 1 -- the first",
            "nonempty",
            "",
        )
        + &check("not a select", "show server_version", "nonempty", "")
        + &check("too many", "select g from t", "empty", "");
    let p = Project::new(&[("dev", "open", db.url())], &checks);
    let (code, v, err) = p.json(&["verify", "dev"]);
    assert_eq!(code, 1, "{err}");
    let actual = |name: &str| {
        let c = outcome(&v["checks"], name);
        (
            c["status"].as_str().unwrap().to_string(),
            c["actual"].clone(),
        )
    };
    assert_eq!(
        actual("stops after two rows"),
        ("passed".into(), "2 or more rows".into())
    );
    assert_eq!(actual("none"), ("passed".into(), "0 rows".into()));
    assert_eq!(actual("one"), ("passed".into(), "1 row".into()));
    assert_eq!(actual("not a select"), ("passed".into(), "1 row".into()));
    assert_eq!(
        actual("too many"),
        ("failed".into(), "2 or more rows".into())
    );
}

#[tokio::test]
async fn a_check_behind_a_migrations_lock_ends_at_its_timeout() {
    let db = with_users().await;
    let holder = db.client().await;
    holder
        .batch_execute("begin; lock table users in access exclusive mode")
        .await
        .unwrap();
    let p = Project::new(
        &[("dev", "open", db.url())],
        &check(
            "users exist",
            "select count(*) from users",
            ">= 1",
            "timeout = \"1s\"\n",
        ),
    );
    let started = Instant::now();
    let out = p
        .cmd()
        .args(["--format", "json", "verify", "dev"])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        took < Duration::from_secs(20),
        "ended at its timeout, not after {took:?}"
    );
    let v = common::json(&out);
    let c = outcome(&v["checks"], "users exist");
    assert_eq!(c["status"], "error", "{c}");
    let e = c["error"].as_str().unwrap();
    assert!(e.contains("statement timeout") && e.contains("1s"), "{e}");
    assert!(
        c["duration_ms"].as_u64().unwrap() >= 900,
        "it waited its second: {c}"
    );
    holder.batch_execute("rollback").await.unwrap();
}

#[tokio::test]
async fn checks_leave_a_shared_connections_settings_as_they_were() {
    let db = with_users().await;
    let client = db.client().await;
    client
        .batch_execute("set statement_timeout = '7s'")
        .await
        .unwrap();
    let check =
        |name: &str, sql: &str, expect: &str, timeout: Option<&str>| shipsafe_config::CheckConfig {
            name: name.into(),
            sql: sql.into(),
            expect: shipsafe_config::Expectation::parse(expect).unwrap(),
            envs: Vec::new(),
            timeout: timeout.map(|t| shipsafe_config::Duration::parse(t).unwrap()),
        };
    let checks = vec![
        check("a", "select count(*) from users", ">= 1", None),
        check("b", "select nope", "= 1", Some("2s")),
    ];
    let show = || async {
        client
            .query_one("show statement_timeout", &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    let out = shipsafe_pg::run_checks(&client, &checks, false).await;
    assert_eq!(
        out.iter().map(|c| c.status).collect::<Vec<_>>(),
        [
            shipsafe_pg::CheckStatus::Passed,
            shipsafe_pg::CheckStatus::Error
        ]
    );
    assert_eq!(show().await, "7s");
    // Inside a transaction, which goes on afterwards.
    client
        .batch_execute("begin; set local statement_timeout = '9s'")
        .await
        .unwrap();
    let out = shipsafe_pg::run_checks(&client, &checks, true).await;
    assert_eq!(out[0].status, shipsafe_pg::CheckStatus::Passed);
    assert_eq!(show().await, "9s");
    client.batch_execute("commit").await.unwrap();
    assert_eq!(show().await, "7s");
}

/// Restored into another environment, a backup must hold that
/// environment's checks (what it recorded is its own environment's): a
/// staging backup without a superadmin does not replace production.
#[tokio::test]
async fn a_backup_restored_into_another_environment_must_hold_that_environments_checks() {
    let staging = TestDb::new().await;
    let prod = TestDb::new().await;
    for (db, role) in [(&staging, "user"), (&prod, "superadmin")] {
        db.client()
            .await
            .batch_execute(&format!(
                "create table users (id int primary key, role text); insert into users values (1, '{role}');"
            ))
            .await
            .unwrap();
    }
    let p = Project::new(
        &[
            ("staging", "guarded", staging.url()),
            ("prod", "guarded", prod.url()),
        ],
        "[[checks]]\nname = \"prod has a superadmin\"\nsql = \"select count(*) from users where role = 'superadmin'\"\nexpect = \">= 1\"\nenvs = [\"prod\"]\n",
    );
    let (code, b, err) = p.json(&["backup", "create", "staging"]);
    assert_eq!(code, 0, "{err}");
    let id = b["report"]["backup_id"]
        .as_str()
        .or_else(|| b["backup_id"].as_str())
        .or_else(|| b["id"].as_str())
        .unwrap_or_else(|| panic!("{b}"))
        .to_string();
    let (code, out, err) = p.json(&[
        "backup",
        "restore",
        &id,
        "--to",
        "prod",
        "--confirm",
        "prod",
    ]);
    assert_eq!(code, 4, "{err}\n{out}");
    let role: String = prod
        .client()
        .await
        .query_one("select role from users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(role, "superadmin", "production was replaced");
}
