//! Rehearsals and the protected deploy protocol as a user drives them: what
//! the rehearsal measures on the clone (locks, rewrites, lost values, round
//! trip), the verdicts and what they let through, the clone providers, and
//! rollback by down only when the rehearsal proved it. The target database
//! is compared before and after every command that must not touch it.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Project, snapshot, write};
use shipsafe_testkit::TestDb;

const SCHEMA: &str = "
create table orders (id serial primary key, amount int not null, note text);
insert into orders (amount, note) select g, 'order ' || g from generate_series(1, 3000) g;
create table users (id serial primary key, username text not null unique, email text);
insert into users (username, email) select 'user' || g, 'user' || g || '@sme.example' from generate_series(1, 40) g;
update users set email = null where id <= 7;
";

async fn target() -> TestDb {
    let db = TestDb::new().await;
    db.client().await.batch_execute(SCHEMA).await.unwrap();
    db
}

/// The deploy report's lint finding of `rule`.
fn lint_finding(run: &serde_json::Value, rule: &str) -> serde_json::Value {
    run["report"]["lint"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == rule)
        .unwrap_or_else(|| panic!("no {rule} finding: {run}"))
        .clone()
}

fn migration(p: &Project, dir: &str, up: &str, down: Option<&str>) {
    write(p.dir.path(), &format!("migrations/{dir}/up.sql"), up);
    if let Some(d) = down {
        write(p.dir.path(), &format!("migrations/{dir}/down.sql"), d);
    }
}

fn step<'a>(run: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {run}"))
}

fn statement(run: &serde_json::Value, migration: usize, stmt: usize) -> &serde_json::Value {
    &run["report"]["rehearsal"]["migrations"][migration]["statements"][stmt]
}

#[tokio::test]
async fn column_type_change_reports_the_rewrite_and_the_exclusive_lock() {
    let db = target().await;
    let p = Project::new(&[("production", "protected", db.url())], "");
    migration(
        &p,
        "1_widen_amount",
        "-- shipsafe:allow ban-column-type-change amounts outgrow int\nalter table orders alter column amount type bigint;",
        Some("alter table orders alter column amount type int;"),
    );
    let before = snapshot(db.url()).await;
    let (code, run, err) = p.json(&["rehearse", "production"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "rehearsed");
    let r = &run["report"]["rehearsal"];
    assert_eq!(r["verdict"], "needs_ack", "{r}");
    let s = statement(&run, 0, 0);
    assert!(s["sql"].as_str().unwrap().contains("alter column amount"));
    let rewrites = s["rewrites"].as_array().unwrap();
    assert!(
        rewrites
            .iter()
            .any(|w| w["relation"] == "public.orders" && w["kind"] == "table"),
        "{s}"
    );
    let lock = s["locks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "public.orders" && l["mode"] == "AccessExclusiveLock")
        .unwrap_or_else(|| panic!("no ACCESS EXCLUSIVE on orders: {s}"));
    assert_eq!(s["locks_sampled"], false);
    // Held from the statement's start until commit: at least its own time.
    assert!(lock["held_ms"].as_u64().unwrap() >= s["duration_ms"].as_u64().unwrap());
    assert!(lock["relation_bytes"].as_i64().unwrap() > 0);
    let rows = s["rows"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["table"] == "public.orders" && r["before"] == 3000 && r["after"] == 3000),
        "{s}"
    );
    assert!(
        r["reasons"][0]
            .as_str()
            .unwrap()
            .contains("rewrites table public.orders"),
        "{r}"
    );
    assert_eq!(r["round_trip"]["status"], "proven");
    // The clone was made from the backup, so the backup is now verified.
    assert_eq!(r["backup_verified"], true);
    let (_, list, _) = p.json(&["backup", "list"]);
    assert_eq!(list[0]["verifications"][0]["ok"], true, "{list}");
    // The target was not touched.
    assert_eq!(snapshot(db.url()).await, before);
    // Text output names the lock and the rewrite too.
    let out = p.cmd().args(["rehearse", "production"]).output().unwrap();
    let text = common::stdout(&out);
    assert!(
        text.contains("lock AccessExclusiveLock on table public.orders"),
        "{text}"
    );
    assert!(text.contains("rewrites table public.orders"), "{text}");
}

#[tokio::test]
async fn dropping_a_column_reports_the_values_lost() {
    let db = target().await;
    let p = Project::new(&[("production", "protected", db.url())], "");
    migration(
        &p,
        "1_drop_email",
        "-- shipsafe:allow ban-drop-column emails move to contacts\nalter table users drop column email;",
        Some("alter table users add column email text;"),
    );
    let non_null: i64 = db
        .client()
        .await
        .query_one("select count(email) from users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(non_null, 33);
    let (code, run, err) = p.json(&["rehearse", "production"]);
    assert_eq!(code, 0, "{err}");
    let s = statement(&run, 0, 0);
    assert_eq!(s["dropped_columns"][0]["table"], "public.users", "{s}");
    assert_eq!(s["dropped_columns"][0]["column"], "email");
    assert_eq!(s["dropped_columns"][0]["non_null_values"], non_null);
    let r = &run["report"]["rehearsal"];
    assert_eq!(r["verdict"], "needs_ack");
    assert_eq!(r["loses_data"], true);
    assert!(
        r["reasons"][0]
            .as_str()
            .unwrap()
            .contains("drops column public.users.email with 33 non-null value(s)"),
        "{r}"
    );
    // down.sql brings the column back (round trip proven) but not its data.
    assert_eq!(r["round_trip"]["status"], "proven");
}

#[tokio::test]
async fn a_concurrent_index_build_is_not_a_table_rewrite() {
    let db = target().await;
    let p = Project::new(&[("production", "protected", db.url())], "");
    migration(
        &p,
        "1_note_index",
        "create index concurrently orders_note_idx on orders (note);",
        Some("drop index concurrently orders_note_idx;"),
    );
    let before = snapshot(db.url()).await;
    let (code, run, err) = p.json(&["rehearse", "production"]);
    assert_eq!(code, 0, "{err}");
    let r = &run["report"]["rehearsal"];
    assert_eq!(r["verdict"], "safe", "{r}");
    assert_eq!(r["migrations"][0]["transactional"], false);
    let s = statement(&run, 0, 0);
    assert_eq!(s["locks_sampled"], true);
    assert_eq!(s["rewrites"].as_array().unwrap().len(), 0, "{s}");
    assert_eq!(r["round_trip"]["status"], "proven");
    assert_eq!(snapshot(db.url()).await, before);
}

#[tokio::test]
async fn a_down_that_does_not_restore_the_schema_fails_the_round_trip() {
    let db = target().await;
    let p = Project::new(&[("production", "protected", db.url())], "");
    migration(
        &p,
        "1_add_status",
        "alter table orders add column status text;\ncreate index concurrently if not exists orders_amount_idx on orders (amount);",
        // Forgets the index.
        Some("alter table orders drop column status;"),
    );
    let before = snapshot(db.url()).await;
    let (code, run, err) = p.json(&["rehearse", "production"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(run["outcome"], "blocked");
    let r = &run["report"]["rehearsal"];
    assert_eq!(r["verdict"], "blocked");
    assert_eq!(r["round_trip"]["status"], "failed");
    let extra = r["round_trip"]["differences"]["extra"].as_array().unwrap();
    assert!(
        extra.iter().any(|l| l
            .as_str()
            .unwrap()
            .starts_with("index public.orders_amount_idx")),
        "{r}"
    );
    assert!(err.contains("orders_amount_idx"), "{err}");
    // A protected deploy of it is blocked by the rehearsal: exit 1, target untouched.
    let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(run["outcome"], "blocked");
    assert_eq!(step(&run, "rehearse")["status"], "failed");
    assert_eq!(snapshot(db.url()).await, before);
}

#[tokio::test]
async fn a_check_failing_on_the_clone_blocks_the_deploy() {
    let db = target().await;
    let checks = "[[checks]]\nname = \"orders are never empty\"\nsql = \"select count(*) from orders\"\nexpect = \"> 0\"\n";
    let p = Project::new(&[("production", "protected", db.url())], checks);
    migration(
        &p,
        "1_purge",
        "-- shipsafe:allow require-where-in-delete test of the check\ndelete from orders;",
        None,
    );
    let before = snapshot(db.url()).await;
    let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(run["outcome"], "blocked");
    assert!(err.contains("orders are never empty"), "{err}");
    assert_eq!(snapshot(db.url()).await, before);
}

#[tokio::test]
async fn protected_deploys_need_confirmation_and_acknowledged_risks() {
    let db = target().await;
    let p = Project::new(&[("production", "protected", db.url())], "");
    migration(
        &p,
        "1_drop_email",
        "-- shipsafe:allow ban-drop-column emails move to contacts\nalter table users drop column email;",
        Some("alter table users add column email text;"),
    );
    let before = snapshot(db.url()).await;
    let backups = || {
        std::fs::read_dir(p.backups_dir())
            .map(|d| d.count())
            .unwrap_or(0)
    };

    // No terminal, no --confirm: blocked before anything, not even a backup.
    let (code, run, err) = p.json(&["deploy", "production"]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(run["outcome"], "blocked");
    assert!(err.contains("--confirm production"), "{err}");
    assert_eq!(backups(), 0);
    // The wrong name.
    let (code, _, err) = p.json(&["deploy", "production", "--confirm", "staging"]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(backups(), 0);
    assert_eq!(snapshot(db.url()).await, before);

    // Confirmed, but the rehearsal says the change loses data.
    let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(run["outcome"], "blocked");
    assert!(err.contains("--accept-risk"), "{err}");
    assert_eq!(run["report"]["rehearsal"]["verdict"], "needs_ack");
    assert_eq!(snapshot(db.url()).await, before);

    // Acknowledged: deployed, every step recorded.
    let (code, run, err) = p.json(&[
        "deploy",
        "production",
        "--confirm",
        "production",
        "--accept-risk",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "deployed");
    let names: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "preflight",
            "lint",
            "backup",
            "rehearse",
            "confirm",
            "apply",
            "data",
            "verify",
            "retention"
        ]
    );
    assert_eq!(step(&run, "confirm")["status"], "ok");
    let report = std::fs::read_to_string(p.dir.path().join(format!(
        ".shipsafe/reports/{}.md",
        run["run_id"].as_str().unwrap()
    )))
    .unwrap();
    assert!(report.contains("## Rehearsal"), "{report}");
    assert!(
        report.contains("drops column public.users.email"),
        "{report}"
    );
    let (_, log, _) = p.json(&["log"]);
    assert_eq!(log["entries"][0]["detail"]["accept_risk"], true, "{log}");
}

#[tokio::test]
async fn protected_window_blocks_and_override_is_audited() {
    let db = target().await;
    // A window that is never now: one minute, a day of the week away.
    let now = jiff::Zoned::now().with_time_zone(jiff::tz::TimeZone::UTC);
    let other_day = now.checked_add(jiff::Span::new().days(3)).unwrap();
    let window = format!("{} 03:00-03:01 UTC", other_day.strftime("%a"));
    let p = Project::new(&[], "");
    write(
        p.dir.path(),
        "shipsafe.toml",
        &format!(
            "[environments.production]\ndatabase_url = \"${{PRODUCTION_URL}}\"\nprotection = \"protected\"\nwindow = \"{window}\"\n"
        ),
    );
    let p = Project {
        vars: vec![("PRODUCTION_URL".into(), db.url().expose().to_string())],
        ..p
    };
    migration(
        &p,
        "1_t",
        "create table audit_note (id int);",
        Some("drop table audit_note;"),
    );
    let before = snapshot(db.url()).await;
    let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(run["outcome"], "blocked");
    assert_eq!(snapshot(db.url()).await, before);
    let (code, run, err) = p.json(&[
        "deploy",
        "production",
        "--confirm",
        "production",
        "--override",
        "hotfix for the payroll bug",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "deployed");
    let (_, log, _) = p.json(&["log"]);
    assert_eq!(
        log["entries"][0]["detail"]["override"],
        "hotfix for the payroll bug"
    );
}

/// A check that passes on the scratch clone but fails on the target (it
/// looks at the server's port): a verification failure only the real
/// environment shows, like a smoke test against the app.
async fn target_only_failure(db: &TestDb) -> String {
    // The data directory names the server whatever the transport (a
    // scratch clone is reached over its private socket, with no port).
    let dir: String = db
        .client()
        .await
        .query_one("select current_setting('data_directory')", &[])
        .await
        .unwrap()
        .get(0);
    format!(
        "[[checks]]\nname = \"not the production server\"\nsql = \"select current_setting('data_directory') <> '{dir}'\"\nexpect = \"true\"\n"
    )
}

#[tokio::test]
async fn a_rehearsed_lossless_change_is_rolled_back_with_down() {
    let db = target().await;
    let p = Project::new(
        &[("production", "protected", db.url())],
        &target_only_failure(&db).await,
    );
    migration(
        &p,
        "1_status",
        "alter table orders add column status text;",
        Some("alter table orders drop column status;"),
    );
    let before = snapshot(db.url()).await;
    let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(run["outcome"], "rolled_back");
    assert_eq!(run["report"]["rehearsal"]["verdict"], "safe");
    assert_eq!(run["report"]["rollback"]["method"], "down", "{run}");
    assert_eq!(snapshot(db.url()).await, before);
}

#[tokio::test]
async fn a_rehearsed_change_that_loses_data_is_rolled_back_by_restore() {
    let db = target().await;
    let p = Project::new(
        &[("production", "protected", db.url())],
        &target_only_failure(&db).await,
    );
    migration(
        &p,
        "1_drop_email",
        "-- shipsafe:allow ban-drop-column emails move to contacts\nalter table users drop column email;",
        Some("alter table users add column email text;"),
    );
    let before = snapshot(db.url()).await;
    let (code, run, err) = p.json(&[
        "deploy",
        "production",
        "--confirm",
        "production",
        "--accept-risk",
    ]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(run["outcome"], "rolled_back");
    assert_eq!(run["report"]["rehearsal"]["round_trip"]["status"], "proven");
    assert_eq!(run["report"]["rollback"]["method"], "restore", "{run}");
    assert!(run["report"]["rollback"]["safety_backup"].is_string());
    assert_eq!(snapshot(db.url()).await, before);
    let emails: i64 = db
        .client()
        .await
        .query_one("select count(email) from users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(emails, 33, "the values came back from the backup");
}

#[tokio::test]
async fn rollback_uses_down_after_a_rehearsed_deploy_and_keeps_later_writes() {
    let db = target().await;
    let p = Project::new(&[("production", "protected", db.url())], "");
    migration(
        &p,
        "1_status",
        "alter table orders add column status text;",
        Some("alter table orders drop column status;"),
    );
    let (code, _, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 0, "{err}");
    // The app keeps writing after the deploy.
    db.client()
        .await
        .batch_execute("insert into orders (amount, status) values (99, 'new')")
        .await
        .unwrap();
    let (code, run, err) = p.json(&["rollback", "production", "--confirm", "production"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["report"]["method"], "down");
    let c = db.client().await;
    let n: i64 = c
        .query_one("select count(*) from orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3001, "the order written after the deploy survives");
    let has_status: bool = c
        .query_one(
            "select exists (select 1 from information_schema.columns where table_name = 'orders' and column_name = 'status')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!has_status);
}

#[tokio::test]
async fn an_environment_can_be_the_clone() {
    let prod = target().await;
    let staging = TestDb::new().await;
    staging
        .client()
        .await
        .batch_execute("create table stale (id int); insert into stale values (1);")
        .await
        .unwrap();
    let p = Project::new(
        &[
            ("production", "protected", prod.url()),
            ("staging", "open", staging.url()),
        ],
        "[rehearsal]\nclone = \"env:staging\"\n",
    );
    migration(
        &p,
        "1_status",
        "alter table orders add column status text;",
        Some("alter table orders drop column status;"),
    );
    let before = snapshot(prod.url()).await;
    let (code, run, err) = p.json(&["rehearse", "production"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["report"]["rehearsal"]["clone"], "env:staging");
    assert_eq!(run["report"]["rehearsal"]["round_trip"]["status"], "proven");
    assert_eq!(snapshot(prod.url()).await, before);
    // Staging now holds production's data with the migration applied.
    let c = staging.client().await;
    let (orders, stale): (i64, bool) = {
        let r = c
            .query_one(
                "select (select count(*) from orders), to_regclass('stale') is not null",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(orders, 3000);
    assert!(!stale);
    assert!(
        run["report"]["rehearsal"].get("privacy").is_none(),
        "no [mask], no note: {run}"
    );
    // With [mask] naming personal data, the report says staging received
    // it unmasked (a rehearsal measures the real data).
    let toml = std::fs::read_to_string(p.dir.path().join("shipsafe.toml")).unwrap();
    write(
        p.dir.path(),
        "shipsafe.toml",
        &format!("{toml}\n[mask]\n\"users.email\" = \"email\"\n"),
    );
    let (code, run, err) = p.json(&["rehearse", "production"]);
    assert_eq!(code, 0, "{err}");
    let privacy = run["report"]["rehearsal"]["privacy"]
        .as_str()
        .unwrap_or_default();
    assert!(
        privacy.contains("unmasked into staging") && privacy.contains("users.email"),
        "{run}"
    );
    let text = p.cmd().args(["rehearse", "production"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout)
            .contains("privacy: the rehearsal restored the backup unmasked into staging"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    // A protected environment is never used as a clone.
    let p2 = Project::new(
        &[
            ("production", "protected", prod.url()),
            ("other", "protected", staging.url()),
        ],
        "[rehearsal]\nclone = \"env:other\"\n",
    );
    migration(
        &p2,
        "1_status",
        "alter table orders add column status text;",
        None,
    );
    let (code, _, err) = p2.json(&["rehearse", "production"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("other is protected"), "{err}");
}

#[tokio::test]
async fn a_clone_command_can_provide_the_database() {
    let prod = target().await;
    let clone = TestDb::new().await;
    let p = Project::new(&[("production", "protected", prod.url())], "");
    // The command prints the URL of an empty database: shipsafe restores
    // the backup into it. It sees which environment and backup it is for.
    let script = p.dir.path().join("make-clone.sh");
    write(
        p.dir.path(),
        "make-clone.sh",
        &format!(
            "#!/bin/sh\necho \"$SHIPSAFE_ENV $SHIPSAFE_BACKUP_ID\" > clone-request.txt\necho 'creating a branch...'\necho '{}'\n",
            clone.url().expose()
        ),
    );
    let toml = std::fs::read_to_string(p.dir.path().join("shipsafe.toml")).unwrap();
    write(
        p.dir.path(),
        "shipsafe.toml",
        &format!(
            "{toml}[rehearsal]\nclone = 'command:\"sh {}\"'\n",
            script.display()
        ),
    );
    migration(
        &p,
        "1_status",
        "alter table orders add column status text;",
        Some("alter table orders drop column status;"),
    );
    let (code, run, err) = p.json(&["rehearse", "production"]);
    assert_eq!(code, 0, "{err}");
    let r = &run["report"]["rehearsal"];
    assert_eq!(r["clone"], "command");
    assert_eq!(r["round_trip"]["status"], "proven");
    let request = std::fs::read_to_string(p.dir.path().join("clone-request.txt")).unwrap();
    assert_eq!(
        request.trim(),
        format!("production {}", run["backup_id"].as_str().unwrap())
    );
    let n: i64 = clone
        .client()
        .await
        .query_one("select count(*) from orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3000);
}

/// Retention runs after every successful deploy and never deletes the
/// backup that `rollback` would restore, even with a zero policy.
#[tokio::test]
async fn retention_after_deploy_keeps_the_backup_rollback_needs() {
    let db = target().await;
    let p = Project::new(
        &[("staging", "guarded", db.url())],
        "[backups]\nretention = { keep_last = 0, keep_daily = 0, keep_monthly = 0 }\n",
    );
    migration(&p, "1_a", "create table a (id int);", Some("drop table a;"));
    let (code, first, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 0, "{err}");
    migration(&p, "2_b", "create table b (id int);", Some("drop table b;"));
    let (code, second, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 0, "{err}");
    let retention = step(&second, "retention");
    assert_eq!(retention["status"], "ok");
    assert_eq!(
        retention["detail"]["deleted"][0], first["backup_id"],
        "the first deploy's backup is no longer needed: {second}"
    );
    let (_, list, _) = p.json(&["backup", "list"]);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second["backup_id"].as_str().unwrap()]);
    // And it is what rollback restores.
    let (code, run, err) = p.json(&["rollback", "staging", "--confirm", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["report"]["method"], "restore");
    let b_exists: bool = db
        .client()
        .await
        .query_one("select to_regclass('b') is not null", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!b_exists);
}

/// On a terminal, a protected deploy asks for the environment's name after
/// showing the plan and the verdict (`script` gives the process a terminal).
#[tokio::test]
async fn on_a_terminal_the_typed_environment_name_confirms() {
    let db = target().await;
    let p = Project::new(&[("production", "protected", db.url())], "");
    migration(
        &p,
        "1_status",
        "alter table orders add column status text;",
        Some("alter table orders drop column status;"),
    );
    let shipsafe = std::path::Path::new(env!("CARGO_BIN_EXE_shipsafe"));
    let typed = |answer: &str| {
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec"])
            .arg(format!("{} deploy production", shipsafe.display()))
            .arg("/dev/null")
            .current_dir(p.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in &p.vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("script (util-linux) must be installed");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{answer}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let before = snapshot(db.url()).await;
    let (code, out) = typed("prod");
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("Type the environment name (production)"),
        "{out}"
    );
    assert!(out.contains("rehearsal on scratch: safe"), "{out}");
    assert_eq!(snapshot(db.url()).await, before);
    let (code, out) = typed("production");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("deploy production: deployed"), "{out}");
}

/// A clone command that hands back the target's own URL: the rehearsal
/// must notice before running anything.
#[tokio::test]
async fn a_clone_that_is_the_target_is_refused_before_anything_runs() {
    let prod = target().await;
    let p = Project::new(&[("production", "protected", prod.url())], "");
    let toml = std::fs::read_to_string(p.dir.path().join("shipsafe.toml")).unwrap();
    // Another spelling of the same database, as a clone script could print.
    let same = prod.url().expose().replace("127.0.0.1", "localhost");
    write(
        p.dir.path(),
        "same.sh",
        &format!("#!/bin/sh\necho '{same}'\n"),
    );
    write(
        p.dir.path(),
        "shipsafe.toml",
        &format!("{toml}[rehearsal]\nclone = 'command:\"sh same.sh\"'\n"),
    );
    migration(
        &p,
        "1_status",
        "alter table orders add column status text;",
        Some("alter table orders drop column status;"),
    );
    let before = snapshot(prod.url()).await;
    let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(run["outcome"], "blocked");
    assert!(err.contains("is the target database itself"), "{err}");
    assert_eq!(snapshot(prod.url()).await, before);
}

/// An external tool that ignores the clone's URL (it reads the production
/// URL from its own settings, as a tool reading `.env` would) changes the
/// target during the rehearsal: caught, blocked, nothing more applied, and
/// the exit code says a person must look.
#[tokio::test]
async fn a_tool_that_ignores_the_clone_url_cannot_reach_the_target() {
    let prod = target().await;
    let p = Project::new(
        &[("production", "protected", prod.url())],
        "[migrations]\n\
         up = \"psql \\\"$REAL_URL\\\" -qc 'create table evil (i int)'\"\n\
         down = \"psql \\\"$REAL_URL\\\" -qc 'drop table evil'\"\n\
         pending = \"psql \\\"$REAL_URL\\\" -tAc \\\"select to_regclass('evil') is not null\\\" | grep -q t\"\n",
    );
    let out = p
        .cmd()
        .env("REAL_URL", prod.url().expose())
        .args([
            "--format",
            "json",
            "deploy",
            "production",
            "--confirm",
            "production",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Its own connection to production fails inside the rehearsal's
    // network namespace: the rehearsal fails and production is untouched.
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(run["outcome"], "blocked");
    assert_eq!(run["report"]["rehearsal"]["target_changed"], false, "{run}");
    assert!(err.contains("failed on the clone"), "{err}");
    let evil: bool = prod
        .client()
        .await
        .query_one("select to_regclass('evil') is not null", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!evil, "the tool reached production");
    let steps: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "ok")
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(!steps.contains(&"apply"), "{steps:?}");
}

/// A lock/rewrite finding does not stop a protected deploy before its
/// rehearsal: the rehearsal measures the rewrite and the lock, its verdict
/// asks for --accept-risk, and the report shows the rule next to the
/// measurement. Here `orders` counts as large (over `[lint] small_table`),
/// so without a rehearsal the same finding blocks.
#[tokio::test]
async fn the_rehearsal_measures_what_the_lint_can_only_guess() {
    let db = target().await;
    db.client()
        .await
        .batch_execute("analyze orders")
        .await
        .unwrap();
    let p = Project::new(
        &[
            ("production", "protected", db.url()),
            ("staging", "guarded", db.url()),
        ],
        "[lint]\nsmall_table_rows = 100\n",
    );
    migration(
        &p,
        "1_widen_amount",
        "alter table orders alter column amount type bigint;",
        Some("alter table orders alter column amount type int;"),
    );
    let before = snapshot(db.url()).await;
    // Guarded without a rehearsal: the static finding blocks, with evidence.
    let (code, _, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("error[ban-column-type-change]"), "{err}");
    assert!(err.contains("orders: 3,000 rows"), "{err}");
    // Protected: rehearsed, the measured verdict needs acknowledging.
    let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(run["report"]["rehearsal"]["verdict"], "needs_ack", "{run}");
    assert!(err.contains("--accept-risk"), "{err}");
    let finding = lint_finding(&run, "ban-column-type-change");
    let evidence = finding["evidence"].as_str().unwrap();
    assert!(evidence.contains("left to the rehearsal"), "{evidence}");
    assert!(
        evidence.contains("measured on the clone: rewrite of public.orders"),
        "{evidence}"
    );
    assert!(
        evidence.contains("AccessExclusiveLock on public.orders held"),
        "{evidence}"
    );
    assert_eq!(snapshot(db.url()).await, before, "nothing changed");
    // Acknowledged: deployed.
    let (code, run, err) = p.json(&[
        "deploy",
        "production",
        "--confirm",
        "production",
        "--accept-risk",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "deployed");
    let ty: String = db
        .client()
        .await
        .query_one(
            "select data_type::text from information_schema.columns where table_name = 'orders' and column_name = 'amount'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ty, "bigint");

    // The same change on a table the catalog shows to be small (default
    // [lint] small_table): the finding is information, the rehearsal still
    // measures the rewrite and asks.
    let small = target().await;
    small
        .client()
        .await
        .batch_execute("analyze orders")
        .await
        .unwrap();
    let p = Project::new(&[("production", "protected", small.url())], "");
    migration(
        &p,
        "1_widen_amount",
        "alter table orders alter column amount type bigint;",
        Some("alter table orders alter column amount type int;"),
    );
    let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(run["report"]["rehearsal"]["verdict"], "needs_ack", "{run}");
    let f = lint_finding(&run, "ban-column-type-change");
    assert_eq!(f["severity"], "info", "{f}");
    let evidence = f["evidence"].as_str().unwrap();
    assert!(evidence.contains("orders: 3,000 rows"), "{evidence}");
    assert!(
        evidence.contains("measured on the clone: rewrite of public.orders"),
        "{evidence}"
    );
    let (code, _, err) = p.json(&[
        "deploy",
        "production",
        "--confirm",
        "production",
        "--accept-risk",
    ]);
    assert_eq!(code, 0, "{err}");
}

/// A foreign key added without NOT VALID to a table over `[lint]
/// small_table`: the rehearsal measures the lock it takes. Below the
/// rehearsal's lock limit the guess is refuted and the deploy goes through;
/// above it, it is confirmed and needs --accept-risk.
#[tokio::test]
async fn a_measured_lock_confirms_or_refutes_the_lint() {
    for (limit, want_code, word) in [("50MB", 0, "refuted"), ("1kB", 3, "confirmed")] {
        let db = target().await;
        db.client()
            .await
            .batch_execute("create table customers (id int primary key); insert into customers select g from generate_series(1, 3000) g; alter table orders add column customer_id int; analyze orders; analyze customers;")
            .await
            .unwrap();
        let p = Project::new(
            &[("production", "protected", db.url())],
            &format!(
                "[lint]\nsmall_table_rows = 100\n[rehearsal]\nexclusive_lock_limit = \"{limit}\"\n"
            ),
        );
        migration(
            &p,
            "1_fk",
            "alter table orders add constraint orders_customer foreign key (customer_id) references customers (id);",
            Some("alter table orders drop constraint orders_customer;"),
        );
        let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
        assert_eq!(code, want_code, "{limit}: {err}");
        let f = lint_finding(&run, "foreign-key-missing-not-valid");
        let evidence = f["evidence"].as_str().unwrap();
        assert!(
            evidence.contains("ShareRowExclusiveLock on public.orders held"),
            "{evidence}"
        );
        assert!(evidence.contains(word), "{limit}: {evidence}");
    }
}

/// The statements of a Prisma-style history (foreign key, index) against
/// tables that already hold more than `[lint] small_table`: blocked with the
/// catalog's evidence in a guarded environment; in a protected one the
/// rehearsal measures them and asks for --accept-risk with the numbers.
#[tokio::test]
async fn history_statements_on_large_existing_tables_still_need_a_decision() {
    let db = target().await;
    db.client()
        .await
        .batch_execute(
            "create table accounts (id bigint primary key);
             insert into accounts select g from generate_series(1, 3000) g;
             alter table orders add column account_id bigint;
             analyze orders; analyze accounts;",
        )
        .await
        .unwrap();
    let config = "[lint]\nsmall_table_rows = 100\n[rehearsal]\nexclusive_lock_limit = \"1kB\"\n";
    let p = Project::new(
        &[
            ("staging", "guarded", db.url()),
            ("production", "protected", db.url()),
        ],
        config,
    );
    migration(
        &p,
        "1_fk",
        "alter table orders add constraint orders_account foreign key (account_id) references accounts (id);",
        Some("alter table orders drop constraint orders_account;"),
    );
    migration(
        &p,
        "2_index",
        "create index orders_account_idx on orders (account_id);",
        Some("drop index orders_account_idx;"),
    );
    let before = snapshot(db.url()).await;
    let (code, _, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("error[foreign-key-missing-not-valid]"),
        "{err}"
    );
    assert!(
        err.contains("error[require-concurrent-index-creation]"),
        "{err}"
    );
    assert!(err.contains("evidence: orders: 3,000 rows"), "{err}");
    let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 3, "{err}");
    let reasons = run["report"]["rehearsal"]["reasons"].to_string();
    assert!(
        reasons.contains("ShareRowExclusiveLock on public.orders"),
        "{reasons}"
    );
    assert!(reasons.contains("ShareLock on public.orders"), "{reasons}");
    assert!(reasons.contains(" ms, blocking every write"), "{reasons}");
    assert_eq!(snapshot(db.url()).await, before, "nothing changed");
}

/// Ctrl-C during a step lets that step finish, then ends the run before
/// the next one: production is not changed, the run ends `interrupted`
/// (exit 4) and the audit log says so.
#[tokio::test]
async fn ctrl_c_during_the_rehearsal_ends_the_deploy_before_production_changes() {
    interrupted_during_the_rehearsal(nix::sys::signal::Signal::SIGINT).await;
}

/// SIGTERM (a supervisor stopping the job) is handled like Ctrl-C: it does
/// not kill shipsafe in the middle of a step.
#[tokio::test]
async fn sigterm_during_the_rehearsal_ends_the_deploy_before_production_changes() {
    interrupted_during_the_rehearsal(nix::sys::signal::Signal::SIGTERM).await;
}

async fn interrupted_during_the_rehearsal(signal: nix::sys::signal::Signal) {
    let prod = target().await;
    let clone = TestDb::new().await;
    let p = Project::new(&[("production", "protected", prod.url())], "");
    write(
        p.dir.path(),
        "make-clone.sh",
        &format!(
            "#!/bin/sh\ntouch cloning\nsleep 2\necho '{}'\n",
            clone.url().expose()
        ),
    );
    let toml = std::fs::read_to_string(p.dir.path().join("shipsafe.toml")).unwrap();
    write(
        p.dir.path(),
        "shipsafe.toml",
        &format!("{toml}[rehearsal]\nclone = 'command:\"sh make-clone.sh\"'\n"),
    );
    migration(
        &p,
        "1_status",
        "alter table orders add column status text;",
        Some("alter table orders drop column status;"),
    );
    let before = snapshot(prod.url()).await;
    let mut child = p.spawn(&["deploy", "production", "--confirm", "production"]);
    let marker = p.dir.path().join("cloning");
    wait_until_the_rehearsal_starts(|| marker.exists());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(4), "{signal}: {status:?}");
    assert_eq!(snapshot(prod.url()).await, before, "production changed");
    let (code, log, err) = p.json(&["log"]);
    assert_eq!(code, 0, "{err}");
    let last = log["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["command"], "deploy", "{log}");
    assert_eq!(last["outcome"], "interrupted", "{log}");
    // The next deploy (on a scratch clone) is not blocked by the interrupted one.
    write(p.dir.path(), "shipsafe.toml", &toml);
    let (code, _, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 0, "{err}");
}

/// A Ctrl-C at the terminal signals shipsafe's whole process group. The
/// scratch clone's server (and every tool, dump and restore) runs in a group
/// of its own, so the clone is not shut down under the rehearsal: the step
/// finishes and the deploy ends `interrupted` (exit 4), not as a failed
/// migration, and the clone is gone afterwards.
#[tokio::test]
async fn a_terminal_ctrl_c_during_the_rehearsal_is_an_interruption_not_a_failure() {
    use std::os::unix::process::CommandExt as _;
    let prod = target().await;
    let p = Project::new(&[("production", "protected", prod.url())], "");
    migration(
        &p,
        "1_slow",
        "alter table orders add column status text;\nselect pg_sleep(2);",
        Some("alter table orders drop column status;"),
    );
    let before = snapshot(prod.url()).await;
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("shipsafe"));
    cmd.current_dir(p.dir.path())
        .args(["deploy", "production", "--confirm", "production"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    for (k, v) in &p.vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let prefix = format!("shipsafe-scratch-{}-", child.id());
    let scratch = || {
        ["/dev/shm".into(), std::env::temp_dir()]
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
    };
    wait_until_the_rehearsal_starts(scratch);
    // The clone is being restored or the migration sleeps on it.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(4), "{status:?}");
    assert_eq!(snapshot(prod.url()).await, before, "production changed");
    let (_, log, _) = p.json(&["log"]);
    let last = log["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["outcome"], "interrupted", "{log}");
    assert!(!scratch(), "the scratch clone was left behind");
}

/// Polls `started` until it holds (60 s at most).
fn wait_until_the_rehearsal_starts(started: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !started() {
        assert!(
            std::time::Instant::now() < deadline,
            "the rehearsal never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// When the target's schema changes during a native rehearsal, shipsafe
/// cannot tell the app's own DDL from a migration that reached the target
/// from the clone's server (dblink, postgres_fdw): the run stays on the
/// safe side, `target_changed`, and says it cannot tell which.
#[tokio::test]
async fn a_change_to_the_target_during_a_native_rehearsal_is_never_called_harmless() {
    let prod = target().await;
    let staging = TestDb::new().await;
    let p = Project::new(
        &[
            ("production", "protected", prod.url()),
            ("staging", "open", staging.url()),
        ],
        "[rehearsal]\nclone = \"env:staging\"\n",
    );
    migration(
        &p,
        "1_slow",
        "-- shipsafe:allow prefer-robust-stmts a test migration\nalter table orders add column status text;\nselect pg_sleep(2);",
        Some("alter table orders drop column status;"),
    );
    let child = p.spawn_capturing(&["rehearse", "production", "--format", "json"]);
    let c = staging.client().await;
    common::wait_for_sessions(
        &c,
        "select count(*) from pg_stat_activity where datname = current_database() and query like '%pg_sleep(2)%' and pid <> pg_backend_pid()",
        "the migration on the clone",
    )
    .await;
    prod.client()
        .await
        .batch_execute("create table events_2026_12 (id int)")
        .await
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}\n{run}");
    assert_eq!(run["outcome"], "target_changed", "{run}");
    assert!(err.contains("cannot tell which"), "{err}");
}

/// The app changes the schema after the backup for the rehearsal was
/// taken (here, while the clone is being provided). The rehearsal then ran
/// on a copy without that change: the deploy stops before applying
/// anything instead of calling it safe.
#[tokio::test]
async fn a_schema_change_after_the_rehearsals_backup_stops_the_deploy() {
    let prod = target().await;
    let clone = TestDb::new().await;
    let p = Project::new(&[("production", "protected", prod.url())], "");
    write(
        p.dir.path(),
        "make-clone.sh",
        &format!(
            "#!/bin/sh\npsql -X -q '{}' -c 'create table audit_2026_12 (id int)' >/dev/null\necho '{}'\n",
            prod.url().expose(),
            clone.url().expose()
        ),
    );
    let toml = std::fs::read_to_string(p.dir.path().join("shipsafe.toml")).unwrap();
    write(
        p.dir.path(),
        "shipsafe.toml",
        &format!("{toml}[rehearsal]\nclone = 'command:\"sh make-clone.sh\"'\n"),
    );
    migration(
        &p,
        "1_status",
        "alter table orders add column status text;",
        Some("alter table orders drop column status;"),
    );
    let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 1, "{err}\n{run}");
    assert_eq!(run["outcome"], "blocked", "{run}");
    assert!(
        err.contains("changed after its backup for the rehearsal"),
        "{err}"
    );
    let status: bool = prod
        .client()
        .await
        .query_one(
            "select exists (select 1 from information_schema.columns where table_name = 'orders' and column_name = 'status')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!status, "nothing was applied");
}
