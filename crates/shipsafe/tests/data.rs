//! Reference data, wipe and masked clone as seeds 001, 002 and 004 did them
//! by hand: tool definitions and grants promoted from local to staging and
//! production (different surrogate ids everywhere), a wipe of everything but
//! one admin, and a production copy without personal data.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Project, snapshot};
use shipsafe_testkit::TestDb;

const SCHEMA: &str = "
create table users (id serial primary key, username text not null, email text not null, unique (username, email));
create table tools (id serial primary key, name text not null unique, description text not null default '', is_active boolean not null default true);
create table tool_access (
    user_id int not null references users (id),
    tool_id int not null references tools (id) on delete cascade,
    granted_at timestamptz not null default '2025-08-11 09:00:00+00',
    primary key (user_id, tool_id));
";

const SETS: &str = r#"
[data.tools]
table = "tools"
key = ["name"]
columns = ["name", "description", "is_active"]
renames = { "Email Templates management" = "Email Templates" }
deletes = ["Legacy Exporter"]

[data.tool_access]
table = "tool_access"
key = ["user", "tool"]
references.user = { table = "users", key = ["username", "email"], column = "user_id" }
references.tool = { table = "tools", key = ["name"], column = "tool_id" }
"#;

/// A masking key for the tests (a real one is random and kept secret).
const MASK_KEY: &str = "test-mask-key-0123456789abcdef";

fn grant(user: &str, tool: &str) -> String {
    format!(
        "insert into tool_access (user_id, tool_id) select u.id, t.id from users u, tools t where u.username = '{user}' and t.name = '{tool}';"
    )
}

/// Local: the tools after the change; Invoice Generator for everybody but user_a.
async fn local() -> TestDb {
    let db = TestDb::new().await;
    let mut sql = SCHEMA.to_string();
    sql.push_str(
        "insert into users (username, email) values ('admin', 'admin@sme.example'), ('hr_lead', 'hr@sme.example'), \
           ('user_a', 'user_a@sme.example'), ('bob', 'bob@sme.example');
         insert into tools (name, description) values ('Payroll', 'Monthly payroll runs'), \
           ('Email Templates', 'Edit outgoing email templates'), ('Invoice Generator', 'Create customer invoices');",
    );
    for (u, t) in [
        ("admin", "Payroll"),
        ("hr_lead", "Payroll"),
        ("admin", "Email Templates"),
        ("admin", "Invoice Generator"),
        ("hr_lead", "Invoice Generator"),
        ("bob", "Invoice Generator"),
    ] {
        sql.push_str(&grant(u, t));
    }
    db.client().await.batch_execute(&sql).await.unwrap();
    db
}

/// Staging or production before the change, with other surrogate ids.
async fn remote(padding: i32) -> TestDb {
    let db = TestDb::new().await;
    let mut sql = SCHEMA.to_string();
    sql.push_str(&format!(
        "insert into users (username, email) select 'old' || g, 'old' || g || '@x' from generate_series(1, {padding}) g;
         insert into users (username, email) values ('bob', 'bob@sme.example'), ('user_a', 'user_a@sme.example'), \
           ('hr_lead', 'hr@sme.example'), ('admin', 'admin@sme.example');
         insert into tools (name, description) select 'Old tool ' || g, '' from generate_series(1, {padding}) g;
         insert into tools (name, description, is_active) values ('Legacy Exporter', 'Old CSV export', false), \
           ('Email Templates management', 'Edit outgoing email templates', true), ('Payroll', 'Monthly payroll runs', true);"
    ));
    for (u, t) in [
        ("admin", "Payroll"),
        ("hr_lead", "Payroll"),
        ("admin", "Email Templates management"),
        ("bob", "Legacy Exporter"),
    ] {
        sql.push_str(&grant(u, t));
    }
    db.client().await.batch_execute(&sql).await.unwrap();
    db
}

async fn grants(db: &TestDb) -> Vec<(String, String)> {
    db.client()
        .await
        .query(
            "select u.username, t.name from tool_access a join users u on u.id = a.user_id join tools t on t.id = a.tool_id order by 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn tool_id(db: &TestDb, name: &str) -> Option<i32> {
    db.client()
        .await
        .query_opt("select id from tools where name = $1", &[&name])
        .await
        .unwrap()
        .map(|r| r.get(0))
}

/// Carol, with a grant to Payroll: a user other environments do not have.
async fn add_carol(db: &TestDb) {
    db.client()
        .await
        .batch_execute(&format!(
            "insert into users (username, email) values ('carol', 'carol@sme.example'); {}",
            grant("carol", "Payroll")
        ))
        .await
        .unwrap();
}

/// Local's sets exported to data/, and one more environment `env` (before
/// the change, `padding` rows of other ids) to import them into.
async fn exported(env: &str, protection: &str, padding: i32) -> (TestDb, TestDb, Project) {
    let local = local().await;
    let target = remote(padding).await;
    let p = Project::new(
        &[
            ("local", "open", local.url()),
            (env, protection, target.url()),
        ],
        SETS,
    );
    let (code, _, err) = p.json(&["data", "export", "--all", "--env", "local"]);
    assert_eq!(code, 0, "{err}");
    (local, target, p)
}

fn set<'a>(run: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    run["report"]["sets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["set"] == name)
        .unwrap()
}

#[tokio::test]
async fn seed_001_tools_and_grants_promote_by_natural_key() {
    let local = local().await;
    let staging = remote(3).await;
    let production = remote(11).await;
    let p = Project::new(
        &[
            ("local", "open", local.url()),
            ("staging", "guarded", staging.url()),
            ("production", "protected", production.url()),
        ],
        SETS,
    );
    let (code, out, err) = p.json(&["data", "export", "--all", "--env", "local"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out["sets"][1]["rows"], 6);
    let file = std::fs::read_to_string(p.dir.path().join("data/tool_access.json")).unwrap();
    // Natural keys only, sorted, one row per line.
    assert!(
        !file.contains("user_id") && !file.contains("tool_id"),
        "{file}"
    );
    assert!(
        file.contains(r#""user": {"email": "admin@sme.example", "username": "admin"}"#),
        "{file}"
    );
    assert_eq!(
        file.lines().filter(|l| l.contains("\"tool\": {")).count(),
        6
    );
    let (_, _, _) = p.json(&["data", "export", "--all", "--env", "local"]);
    assert_eq!(
        std::fs::read_to_string(p.dir.path().join("data/tool_access.json")).unwrap(),
        file,
        "a second export writes the same bytes"
    );

    let email_templates_id = tool_id(&staging, "Email Templates management").await;
    let (code, diff, err) = p.json(&["data", "diff", "--all", "--env", "staging"]);
    assert_eq!(code, 0, "{err}");
    let tools = &diff["sets"][0];
    assert_eq!(tools["set"], "tools");
    assert_eq!(tools["renamed"][0][1], "Email Templates");
    assert_eq!(tools["inserts"], 1);
    assert_eq!(tools["deletes"], 1);
    assert_eq!(diff["sets"][1]["inserts"], 3, "{diff}");
    assert_eq!(
        tool_id(&staging, "Email Templates").await,
        None,
        "diff changes nothing"
    );

    for (env, db) in [("staging", &staging), ("production", &production)] {
        let before = grants(db).await;
        let (code, run, err) = p.json(&["data", "import", "--all", "--env", env, "--confirm", env]);
        assert_eq!(code, 0, "{env}: {err}");
        assert_eq!(run["outcome"], "imported");
        assert!(run["backup_id"].is_string(), "a backup first in {env}");
        assert_ne!(before, grants(db).await);
        let g = grants(db).await;
        assert_eq!(g, grants(&local).await, "{env} has local's grants");
        assert!(
            !g.iter()
                .any(|(u, t)| u == "user_a" && t == "Invoice Generator"),
            "user_a excluded in {env}"
        );
        assert_eq!(tool_id(db, "Legacy Exporter").await, None);
        // Second import: a no-op.
        let (code, run, err) = p.json(&["data", "import", "--all", "--env", env, "--confirm", env]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(run["outcome"], "nothing_to_do", "{run}");
        assert_eq!(set(&run, "tool_access")["unchanged"], 6);
    }
    // The rename kept the tool's id, so its grant rows survived as they were.
    assert_eq!(
        tool_id(&staging, "Email Templates").await,
        email_templates_id
    );

    // Somebody edits a grant in production; the next import reports it.
    production
        .client()
        .await
        .batch_execute(
            "update tool_access set granted_at = '2026-01-01' where user_id = (select id from users where username = 'hr_lead') \
               and tool_id = (select id from tools where name = 'Payroll')",
        )
        .await
        .unwrap();
    let before = snapshot(production.url()).await;
    let (code, diff, _) = p.json(&["data", "diff", "tool_access", "--env", "production"]);
    assert_eq!(code, 1);
    assert_eq!(diff["sets"][0]["conflicts"][0]["kind"], "changed_in_target");
    let (code, run, err) = p.json(&[
        "data",
        "import",
        "--all",
        "--env",
        "production",
        "--confirm",
        "production",
    ]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(run["outcome"], "blocked");
    assert!(err.contains("edited in the target"), "{err}");
    let conflict = &set(&run, "tool_access")["conflicts"][0];
    assert_eq!(conflict["key"][0]["username"], "hr_lead");
    assert_eq!(conflict["key"][1]["name"], "Payroll");
    assert!(
        conflict["target"]["granted_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-01-01")
    );
    assert_eq!(snapshot(production.url()).await, before, "nothing changed");
    // --force overwrites, and says so in the audit log.
    let (code, run, err) = p.json(&[
        "data",
        "import",
        "--all",
        "--env",
        "production",
        "--confirm",
        "production",
        "--force",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(set(&run, "tool_access")["forced"], 1);
    let (_, log, _) = p.json(&["log", "--env", "production"]);
    assert_eq!(log["entries"][0]["detail"]["force"], true);
}

#[tokio::test]
async fn unresolved_references_stop_the_import_unless_skipped() {
    let local = local().await;
    add_carol(&local).await;
    let staging = remote(2).await;
    let p = Project::new(
        &[
            ("local", "open", local.url()),
            ("staging", "guarded", staging.url()),
        ],
        SETS,
    );
    let (code, _, err) = p.json(&["data", "export", "--all", "--env", "local"]);
    assert_eq!(code, 0, "{err}");
    let before = snapshot(staging.url()).await;
    let (code, run, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("carol@sme.example"), "{err}");
    let u = &set(&run, "tool_access")["unresolved"][0];
    assert_eq!(u["value"]["username"], "carol");
    assert_eq!(snapshot(staging.url()).await, before);
    let (code, run, err) = p.json(&[
        "data",
        "import",
        "--all",
        "--env",
        "staging",
        "--skip-unresolved",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "imported");
    assert_eq!(grants(&staging).await, {
        let mut g = grants(&local).await;
        g.retain(|(u, _)| u != "carol");
        g
    });
}

/// Runs `shipsafe -v --format json ARGS`: (exit code, JSON, the sets a
/// rerun recognised as unchanged without comparing).
fn verbose(p: &Project, args: &[&str]) -> (i32, serde_json::Value, Vec<String>) {
    let out = p
        .cmd()
        .args(["-v", "--format", "json"])
        .args(args)
        .output()
        .unwrap();
    let err = common::stderr(&out);
    let shortcut = err
        .lines()
        .filter(|l| l.contains("as the last import left them"))
        .filter_map(|l| l.split("data set ").nth(1)?.split(':').next())
        .map(str::to_string)
        .collect();
    (common::code(&out), common::json(&out), shortcut)
}

/// A rerun of the file last imported is known to change nothing without
/// loading a row (the last clean import's fingerprint); every change since
/// (in the target, in a referenced table, in the file, or rows left out)
/// takes the full comparison and is found.
#[tokio::test]
async fn an_unchanged_rerun_is_recognised_and_every_change_since_is_still_found() {
    let (local, staging, p) = exported("staging", "open", 3).await;
    let (code, run, shortcut) = verbose(&p, &["data", "import", "--all", "--env", "staging"]);
    assert_eq!((code, run["outcome"].as_str()), (0, Some("imported")));
    assert!(shortcut.is_empty(), "{shortcut:?}");

    let (code, run, shortcut) = verbose(&p, &["data", "import", "--all", "--env", "staging"]);
    assert_eq!((code, run["outcome"].as_str()), (0, Some("nothing_to_do")));
    assert_eq!(shortcut, ["tools", "tool_access"]);
    assert_eq!(set(&run, "tool_access")["unchanged"], 6);
    assert_eq!(set(&run, "tool_access")["rows_in_file"], 6);
    assert_eq!(set(&run, "tools")["unchanged"], 3);
    let (code, diff, shortcut) = verbose(&p, &["data", "diff", "--all", "--env", "staging"]);
    assert_eq!(code, 0, "{diff}");
    assert_eq!(shortcut, ["tools", "tool_access"]);
    assert_eq!(diff["sets"][1]["set"], "tool_access");
    assert_eq!(diff["sets"][1]["unchanged"], 6);

    let db = staging.client().await;
    let hr_payroll = "user_id = (select id from users where username = 'hr_lead') \
                      and tool_id = (select id from tools where name = 'Payroll')";
    // An edit in the target is a conflict; undone, the shortcut is back.
    db.batch_execute(&format!(
        "update tool_access set granted_at = '2026-01-01' where {hr_payroll}"
    ))
    .await
    .unwrap();
    let (code, diff, shortcut) = verbose(&p, &["data", "diff", "tool_access", "--env", "staging"]);
    assert_eq!(code, 1, "{diff}");
    assert_eq!(diff["sets"][0]["conflicts"][0]["kind"], "changed_in_target");
    assert!(shortcut.is_empty());
    db.batch_execute(&format!(
        "update tool_access set granted_at = '2025-08-11 09:00:00+00' where {hr_payroll}"
    ))
    .await
    .unwrap();
    let (code, _, shortcut) = verbose(&p, &["data", "diff", "tool_access", "--env", "staging"]);
    assert_eq!(
        (code, shortcut.as_slice()),
        (0, ["tool_access".to_string()].as_slice())
    );

    // A row deleted in the target.
    db.batch_execute(&format!("delete from tool_access where {hr_payroll}"))
        .await
        .unwrap();
    let (code, diff, _) = verbose(&p, &["data", "diff", "tool_access", "--env", "staging"]);
    assert_eq!(code, 1, "{diff}");
    assert_eq!(diff["sets"][0]["conflicts"][0]["kind"], "deleted_in_target");
    // Named by the file's row, which the report shows.
    let c = &diff["sets"][0]["conflicts"][0];
    assert_eq!(c["key"][0]["username"], "hr_lead", "{c}");
    assert_eq!(c["file"]["tool"]["name"], "Payroll", "{c}");
    db.batch_execute(&grant("hr_lead", "Payroll"))
        .await
        .unwrap();

    // A referenced row's natural key changed: bob's grant no longer resolves.
    db.batch_execute("update users set email = 'bob@elsewhere.example' where username = 'bob'")
        .await
        .unwrap();
    let (code, diff, shortcut) = verbose(&p, &["data", "diff", "tool_access", "--env", "staging"]);
    assert_eq!(code, 1, "{diff}");
    // (bob's grant no longer matches by key: as if deleted in the target)
    assert_eq!(
        diff["sets"][0]["conflicts"][0]["key"][0]["username"], "bob",
        "{diff}"
    );
    assert!(shortcut.is_empty());
    db.batch_execute("update users set email = 'bob@sme.example' where username = 'bob'")
        .await
        .unwrap();

    // Another file: one value changed in it is an update.
    let path = p.dir.path().join("data/tool_access.json");
    let file = std::fs::read_to_string(&path).unwrap();
    let changed = file.replacen("2025-08-11T09:00:00+00:00", "2025-09-01T09:00:00+00:00", 1);
    assert_ne!(changed, file, "{file}");
    std::fs::write(&path, &changed).unwrap();
    let (code, diff, shortcut) = verbose(&p, &["data", "diff", "tool_access", "--env", "staging"]);
    assert_eq!(code, 0, "{diff}");
    assert_eq!(diff["sets"][0]["updates"], 1, "{diff}");
    let change = &diff["sets"][0]["changes"][0];
    assert_eq!(change["action"], "update", "{diff}");
    assert_eq!(
        change["fields"],
        serde_json::json!(["granted_at"]),
        "{diff}"
    );
    assert!(change["key"][0]["username"].is_string(), "{diff}");
    assert!(shortcut.is_empty());
    std::fs::write(&path, &file).unwrap();
    // ... and so is the same file in another mode: mirror deletes what merge keeps.
    db.batch_execute(&grant("user_a", "Payroll")).await.unwrap();
    let (code, diff, _) = verbose(
        &p,
        &[
            "data",
            "diff",
            "tool_access",
            "--env",
            "staging",
            "--mode",
            "mirror",
        ],
    );
    assert_eq!(code, 0, "{diff}");
    assert_eq!(diff["sets"][0]["deletes"], 1, "{diff}");

    let args = ["data", "import", "tool_access", "--env", "staging"];
    let (code, _, _) = verbose(&p, &[&args[..], &["--mode", "mirror"]].concat());
    assert_eq!(code, 0);

    // Rows left out (--skip-unresolved) leave no fingerprint behind: the
    // rerun compares, and names them again.
    add_carol(&local).await;
    let (code, _, err) = p.json(&["data", "export", "tool_access", "--env", "local"]);
    assert_eq!(code, 0, "{err}");
    let (code, run, _) = verbose(&p, &[&args[..], &["--skip-unresolved"]].concat());
    assert_eq!(code, 0, "{run}");
    assert_eq!(
        set(&run, "tool_access")["unresolved"][0]["value"]["username"],
        "carol"
    );
    let (code, run, shortcut) = verbose(&p, &args);
    assert_eq!(code, 1, "{run}");
    assert_eq!(
        set(&run, "tool_access")["unresolved"][0]["value"]["username"],
        "carol"
    );
    assert!(shortcut.is_empty());
    db.batch_execute("insert into users (username, email) values ('carol', 'carol@sme.example')")
        .await
        .unwrap();
    let (code, run, shortcut) = verbose(&p, &args);
    assert_eq!(
        (code, set(&run, "tool_access")["inserts"].as_i64()),
        (0, Some(1)),
        "{run}"
    );
    assert!(shortcut.is_empty());
    let (code, run, shortcut) = verbose(&p, &args);
    assert_eq!((code, run["outcome"].as_str()), (0, Some("nothing_to_do")));
    assert_eq!(shortcut, ["tool_access"]);
    assert_eq!(set(&run, "tool_access")["unchanged"], 7);
    assert_eq!(grants(&staging).await, grants(&local).await);
}

/// Thousands of inserted rows are checked against their references once
/// for all (as a superuser; row by row otherwise): a referenced row that
/// disappears during the import is still caught, nothing is changed, and
/// the table's foreign-key triggers are all in place afterwards.
#[tokio::test]
async fn a_bulk_insert_checks_its_references_at_once_and_misses_none() {
    let fill = "insert into users (username, email) select 'u' || g, 'u' || g || '@x' from generate_series(1, 100) g; \
                insert into tools (name) select 'Tool ' || g from generate_series(1, 25) g;";
    let local = TestDb::new().await;
    local
        .client()
        .await
        .batch_execute(&format!(
            "{SCHEMA} {fill} insert into tool_access (user_id, tool_id) select u.id, t.id from users u, tools t;"
        ))
        .await
        .unwrap();
    let staging = TestDb::new().await;
    let db = staging.client().await;
    db.batch_execute(&format!(
        "{SCHEMA} insert into users (username, email) values ('old', 'old@x'); {fill}
         create function vanish() returns trigger language plpgsql as
           $$ begin delete from users where username = 'u42'; return null; end $$;
         create trigger vanish before insert on tool_access for each statement execute function vanish();"
    ))
    .await
    .unwrap();
    let p = Project::new(
        &[
            ("local", "open", local.url()),
            ("staging", "open", staging.url()),
        ],
        SETS,
    );
    let (code, _, err) = p.json(&["data", "export", "tool_access", "--env", "local"]);
    assert_eq!(code, 0, "{err}");
    let disabled = "select count(*) from pg_trigger where tgrelid = 'tool_access'::regclass and tgenabled <> 'O'";
    let before = snapshot(staging.url()).await;
    let (code, run, err) = p.json(&["data", "import", "tool_access", "--env", "staging"]);
    assert_eq!(code, 1, "{run}");
    assert!(err.contains("no longer exist"), "{err}");
    assert_eq!(snapshot(staging.url()).await, before, "nothing changed");
    let n: i64 = db.query_one(disabled, &[]).await.unwrap().get(0);
    assert_eq!(n, 0);

    db.batch_execute("drop trigger vanish on tool_access")
        .await
        .unwrap();
    let (code, run, err) = p.json(&["data", "import", "tool_access", "--env", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(set(&run, "tool_access")["inserts"], 2500);
    // The report lists the first inserts by key, in the file's order.
    let changes = set(&run, "tool_access")["changes"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(changes.len(), 20, "{changes:?}");
    assert!(
        changes
            .iter()
            .all(|c| c["action"] == "insert" && c["key"][1]["name"].is_string())
    );
    assert_eq!(grants(&staging).await, grants(&local).await);
    let n: i64 = db.query_one(disabled, &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "every trigger enabled again");
    let e = db
        .batch_execute("insert into tool_access (user_id, tool_id) values (-1, -1)")
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("foreign key"), "{e:?}");

    // With an event trigger listening, the import makes no DDL on the
    // user's tables for it to see: the keys are checked row by row instead.
    // (Its own tables, created on the first import, and temporary ones are.)
    db.batch_execute(
        "truncate tool_access; drop schema shipsafe cascade;
         create table ddl_seen (tag text, object text);
         create function ddl_seen() returns event_trigger language plpgsql as
           $$ begin insert into ddl_seen select command_tag, object_identity
                      from pg_event_trigger_ddl_commands(); end $$;
         create event trigger ddl_seen on ddl_command_end execute function ddl_seen();",
    )
    .await
    .unwrap();
    let (code, run, err) = p.json(&["data", "import", "tool_access", "--env", "staging"]);
    db.batch_execute("drop event trigger ddl_seen")
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(set(&run, "tool_access")["inserts"], 2500);
    let seen: Vec<(String, String)> = db
        .query("select tag, coalesce(object, '') from ddl_seen", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        seen.iter().all(|(_, o)| o.starts_with("shipsafe.")
            || o == "shipsafe"
            || o.starts_with("pg_temp.")),
        "{seen:?}"
    );
    assert!(seen.iter().any(|(t, _)| t == "CREATE TABLE"), "{seen:?}");
}

const JSONB_WAY: &str = "rows go as jsonb";
const FORCED: [&str; 6] = [
    "data",
    "import",
    "tool_access",
    "--env",
    "staging",
    "--force",
];
const HR_PAYROLL: &str = "user_id = (select id from users where username = 'hr_lead') \
                          and tool_id = (select id from tools where name = 'Payroll')";

/// Rewrites the exported file of `set` through `edit` (each row a JSON object).
fn edit_rows(p: &Project, set: &str, edit: impl Fn(&mut Vec<serde_json::Value>)) {
    let path = p.dir.path().join(format!("data/{set}.json"));
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(file["rows"].as_array_mut().unwrap());
    std::fs::write(&path, serde_json::to_string_pretty(&file).unwrap()).unwrap();
}

fn row_of<'a>(
    rows: &'a mut [serde_json::Value],
    user: &str,
    tool: &str,
) -> &'a mut serde_json::Value {
    rows.iter_mut()
        .find(|r| r["user"]["username"] == user && r["tool"]["name"] == tool)
        .unwrap()
}

/// A row the file no longer has but the target edited since the last
/// import is a conflict in mirror mode, not a silent delete: the target's
/// key, hashed from its own columns and referenced rows, finds the base
/// the file's rows wrote.
#[tokio::test]
async fn a_row_dropped_from_the_file_but_edited_in_the_target_is_a_conflict() {
    let (_local, staging, p) = exported("staging", "open", 2).await;
    let (code, _, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 0, "{err}");
    edit_rows(&p, "tool_access", |rows| {
        rows.retain(|r| r["user"]["username"] != "hr_lead" && r["user"]["username"] != "bob")
    });
    staging
        .client()
        .await
        .batch_execute(&format!(
            "update tool_access set granted_at = '2026-02-02' where {HR_PAYROLL}"
        ))
        .await
        .unwrap();
    let before = grants(&staging).await;
    let args = [
        "-v",
        "data",
        "import",
        "tool_access",
        "--env",
        "staging",
        "--mode",
        "mirror",
    ];
    let (code, run, err) = p.json(&args);
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains(JSONB_WAY), "{err}");
    let plan = set(&run, "tool_access");
    assert_eq!(plan["conflicts"].as_array().unwrap().len(), 1, "{plan}");
    assert_eq!(plan["conflicts"][0]["kind"], "changed_in_target");
    assert_eq!(plan["conflicts"][0]["key"][0]["username"], "hr_lead");
    // hr_lead's Invoice Generator and bob's grant were not edited: deletes.
    assert_eq!(plan["deletes"], 2, "{plan}");
    assert_eq!(grants(&staging).await, before, "a conflict changes nothing");
}

/// A file that must be read the `jsonb` way (a value with an exponent)
/// hashes its keys as the split way did: an edit in the target since the
/// last import is still found.
#[tokio::test]
async fn a_file_read_the_jsonb_way_finds_the_same_keys() {
    let (_local, staging, p) = exported("staging", "open", 2).await;
    let (code, _, err) = p.json(&["-v", "data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains(JSONB_WAY), "{err}");
    let db = staging.client().await;
    db.batch_execute(&format!(
        "update tool_access set granted_at = '2026-02-02' where {HR_PAYROLL}"
    ))
    .await
    .unwrap();
    edit_rows(&p, "tool_access", |rows| {
        row_of(rows, "hr_lead", "Payroll")["granted_at"] = "2025-09-09T00:00:00+00:00".into();
        // Not written (the reference is), but typed: 1e0 needs the server.
        rows[0]["user_id"] = "EXPONENT".into();
    });
    let path = p.dir.path().join("data/tool_access.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"EXPONENT\"", "1e0")).unwrap();
    let (code, run, err) = p.json(&["-v", "data", "import", "tool_access", "--env", "staging"]);
    assert!(err.contains(JSONB_WAY), "{err}");
    assert_eq!(code, 1, "{err}");
    let plan = set(&run, "tool_access");
    assert_eq!(plan["conflicts"][0]["kind"], "changed_in_target", "{plan}");
    assert_eq!(plan["conflicts"][0]["key"][0]["username"], "hr_lead");
    assert_eq!(
        (plan["inserts"].as_i64(), plan["updates"].as_i64()),
        (Some(0), Some(0))
    );
    // Forced, the file's value is written; the rerun (split way again once
    // the exponent is gone) finds nothing to do.
    let (code, _, err) = p.json(&FORCED);
    assert_eq!(code, 0, "{err}");
    edit_rows(&p, "tool_access", |rows| {
        rows[0].as_object_mut().unwrap().remove("user_id");
    });
    let (code, run, err) = p.json(&["-v", "data", "import", "tool_access", "--env", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains(JSONB_WAY), "{err}");
    assert_eq!(set(&run, "tool_access")["unchanged"], 6, "{run}");
    assert_eq!(run["outcome"], "nothing_to_do");
}

/// A base an earlier version kept (`shipsafe.data_imported`, keys hashed
/// as JSON) still tells an edit in the target from a change in the file,
/// and moves to the new table on the next import.
#[tokio::test]
async fn a_base_from_an_earlier_version_is_converted_and_still_finds_conflicts() {
    let (_local, staging, p) = exported("staging", "open", 2).await;
    let (code, _, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 0, "{err}");
    let db = staging.client().await;
    // The base as the earlier version wrote it, one entry naming a grant
    // neither the file nor the target has, and no fingerprint.
    db.batch_execute(
        "create table shipsafe.data_imported (set_name text primary key, kh bigint[] not null, \
           rh bigint[] not null, imported_at timestamptz not null default now());
         insert into shipsafe.data_imported (set_name, kh, rh)
         select 'tool_access', array_agg(k) || 4242::int8, array_agg(r) || 4242::int8 from (
           select jsonb_hash_extended(jsonb_build_array(
                    jsonb_build_object('username', u.username, 'email', u.email),
                    jsonb_build_object('name', t.name)), 0) as k,
                  hash_record_extended(row(a.granted_at, a.user_id, a.tool_id), 0) as r
             from tool_access a join users u on u.id = a.user_id join tools t on t.id = a.tool_id) x;
         delete from shipsafe.data_base where set_name = 'tool_access';
         delete from shipsafe.data_fingerprint;",
    )
    .await
    .unwrap();
    db.batch_execute(&format!(
        "update tool_access set granted_at = '2026-02-02' where {HR_PAYROLL}"
    ))
    .await
    .unwrap();
    let (code, run, err) = p.json(&["data", "import", "tool_access", "--env", "staging"]);
    assert_eq!(code, 1, "{err}");
    let plan = set(&run, "tool_access");
    assert_eq!(plan["conflicts"][0]["kind"], "changed_in_target", "{plan}");
    assert_eq!(plan["conflicts"][0]["key"][0]["username"], "hr_lead");
    assert_eq!(
        plan["conflicts"][0]["file"]["granted_at"],
        "2025-08-11T09:00:00+00:00"
    );
    assert_eq!(
        plan["conflicts"][0]["target"]["granted_at"],
        "2026-02-02T00:00:00+00:00"
    );
    let (code, _, err) = p.json(&FORCED);
    assert_eq!(code, 0, "{err}");
    let moved = db
        .query_one(
            "select (select count(*) from shipsafe.data_imported), \
                    (select cardinality(kh) from shipsafe.data_base where set_name = 'tool_access')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (moved.get::<_, i64>(0), moved.get::<_, Option<i32>>(1)),
        (0, Some(6))
    );
    let (code, run, err) = p.json(&["data", "import", "tool_access", "--env", "staging"]);
    assert_eq!(
        (code, run["outcome"].as_str()),
        (0, Some("nothing_to_do")),
        "{err}"
    );
}

/// Two rows of a file with one natural key stop the import, naming the key;
/// nothing is changed.
#[tokio::test]
async fn a_natural_key_twice_in_the_file_is_refused_by_name() {
    let (_local, staging, p) = exported("staging", "open", 2).await;
    edit_rows(&p, "tool_access", |rows| {
        let twice = row_of(rows, "hr_lead", "Payroll").clone();
        rows.push(twice);
    });
    let before = snapshot(staging.url()).await;
    let (code, _, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("two rows with the natural key"), "{err}");
    assert!(err.contains("hr_lead") && err.contains("Payroll"), "{err}");
    assert_eq!(snapshot(staging.url()).await, before, "nothing changed");
}

#[tokio::test]
async fn dry_run_and_mirror() {
    let (local, staging, p) = exported("staging", "open", 1).await;
    staging
        .client()
        .await
        .batch_execute(&grant("user_a", "Payroll"))
        .await
        .unwrap();
    let before = snapshot(staging.url()).await;
    let (code, run, err) = p.json(&["data", "import", "--all", "--env", "staging", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "dry_run");
    assert_eq!(set(&run, "tool_access")["inserts"], 3);
    assert_eq!(
        snapshot(staging.url()).await,
        before,
        "a dry run changes nothing"
    );
    // Merge keeps user_a's extra grant; mirror removes it.
    let (code, _, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        grants(&staging)
            .await
            .contains(&("user_a".into(), "Payroll".into()))
    );
    let (code, run, err) = p.json(&[
        "data",
        "import",
        "tool_access",
        "--env",
        "staging",
        "--mode",
        "mirror",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(set(&run, "tool_access")["deletes"], 1);
    assert_eq!(grants(&staging).await, grants(&local).await);
}

/// Seed 004's production: a booking app with an admin (id 14) invited by
/// user 3, salons, masters, services and bookings, and a settings table.
const SALON_SCHEMA: &str = "
create table users (id serial primary key, phone text not null, role text not null, invited_by int references users (id));
create table salons (id serial primary key, owner_id int not null references users (id), name text not null);
create table masters (id serial primary key, salon_id int not null references salons (id), user_id int references users (id));
create table services (id serial primary key, salon_id int not null references salons (id), name text not null);
create table bookings (id serial primary key, client_id int not null references users (id),
    master_id int not null references masters (id), service_id int not null references services (id));
create table settings (key text primary key, value text not null);
insert into users (phone, role) select '+7 900 ' || g, case when g = 14 then 'admin' else 'client' end from generate_series(1, 40) g;
update users set invited_by = 3 where id = 14;
update users set invited_by = id - 1 where id between 20 and 40;
insert into salons (owner_id, name) select 20 + g, 'Salon ' || g from generate_series(1, 5) g;
insert into masters (salon_id, user_id) select 1 + g % 5, 25 + g % 10 from generate_series(1, 12) g;
insert into services (salon_id, name) select 1 + g % 5, 'Service ' || g from generate_series(1, 20) g;
insert into bookings (client_id, master_id, service_id) select 1 + g % 40, 1 + g % 12, 1 + g % 20 from generate_series(1, 300) g;
insert into settings values ('currency', 'RUB'), ('timezone', 'Europe/Moscow');
";

const ADMIN_CHECK: &str = "[[checks]]\nname = \"an admin remains\"\nsql = \"select count(*) from users where role = 'admin'\"\nexpect = \">= 1\"\n";

fn counts(run: &serde_json::Value) -> std::collections::BTreeMap<String, (i64, i64)> {
    run["report"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_string(),
                (t["before"].as_i64().unwrap(), t["after"].as_i64().unwrap()),
            )
        })
        .collect()
}

#[tokio::test]
async fn seed_004_wipe_all_but_the_admin() {
    let db = TestDb::new().await;
    db.client().await.batch_execute(SALON_SCHEMA).await.unwrap();
    let p = Project::new(&[("production", "protected", db.url())], ADMIN_CHECK);
    let original = snapshot(db.url()).await;
    let wipe = |extra: &[&str]| {
        let mut args = vec![
            "wipe",
            "production",
            "--keep",
            "users:id = 14",
            "--keep-table",
            "settings",
            "--reset-sequences",
        ];
        args.extend_from_slice(extra);
        p.json(&args)
    };

    // Protected: no confirmation, no wipe.
    let (code, _, err) = wipe(&[]);
    assert_eq!(code, 3, "{err}");
    // A dry run shows the counts and changes nothing.
    let (code, run, err) = wipe(&["--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "dry_run");
    assert_eq!(counts(&run)["public.users"], (40, 2));
    assert_eq!(snapshot(db.url()).await, original);

    let (code, run, err) = wipe(&["--confirm", "production"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "wiped");
    let c = counts(&run);
    assert_eq!(
        c["public.users"],
        (40, 2),
        "admin 14 and user 3, who invited them"
    );
    assert_eq!(c["public.bookings"], (300, 0));
    assert_eq!(c["public.salons"], (5, 0));
    assert_eq!(c["public.masters"], (12, 0));
    assert_eq!(c["public.settings"], (2, 2));
    assert_eq!(run["report"]["deleted_rows"], 38 + 300 + 5 + 12 + 20);
    let users = run["report"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "public.users")
        .unwrap();
    assert!(
        users["kept_because"]
            .to_string()
            .contains("referenced by kept rows of public.users"),
        "{users}"
    );
    let client = db.client().await;
    let kept: Vec<i32> = client
        .query("select id from users order by id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kept, [3, 14]);
    // Sequences restart at the smallest safe value.
    let next: (i32, i32) = {
        let r = client
            .query_one(
                "select nextval('users_id_seq')::int, nextval('salons_id_seq')::int",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(next, (15, 1));

    // The pre-wipe backup gives everything back.
    let backup = run["backup_id"].as_str().unwrap();
    let (code, _, err) = p.json(&[
        "backup",
        "restore",
        backup,
        "--to",
        "production",
        "--confirm",
        "production",
    ]);
    assert_eq!(code, 0, "{err}");
    let restored = snapshot(db.url()).await;
    assert_eq!(restored.rows, original.rows);
    assert_eq!(restored.schema, original.schema);
}

#[tokio::test]
async fn a_wipe_that_fails_its_checks_is_rolled_back() {
    let db = TestDb::new().await;
    db.client().await.batch_execute(SALON_SCHEMA).await.unwrap();
    let p = Project::new(&[("staging", "open", db.url())], ADMIN_CHECK);
    let before = snapshot(db.url()).await;
    let (code, run, err) = p.json(&["wipe", "staging", "--keep", "users:id = 1"]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(run["outcome"], "rolled_back");
    assert!(err.contains("an admin remains"), "{err}");
    assert_eq!(snapshot(db.url()).await, before);
    // A predicate that is not SQL is named.
    let (code, _, err) = p.json(&["wipe", "staging", "--keep", "users:id = = 1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--keep users:id = = 1"), "{err}");
    let (code, _, err) = p.json(&["wipe", "staging", "--keep", "nosuch:id = 1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nosuch"), "{err}");
    assert_eq!(snapshot(db.url()).await, before);
}

#[tokio::test]
async fn a_restrict_cycle_is_named_and_a_deferrable_one_is_wiped() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "create table a (id int primary key, b_id int);
             create table b (id int primary key, a_id int references a (id) on delete restrict);
             alter table a add constraint a_b foreign key (b_id) references b (id) on delete restrict;
             insert into a values (1, null), (2, null); insert into b values (1, 1), (2, 2);
             update a set b_id = id;
             create table keepme (id int primary key); insert into keepme values (1);",
        )
        .await
        .unwrap();
    let p = Project::new(&[("dev", "open", db.url())], "");
    let before = snapshot(db.url()).await;
    let (code, _, err) = p.json(&["wipe", "dev", "--keep", "keepme:true"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("public.a, public.b") || err.contains("public.b, public.a"),
        "{err}"
    );
    assert!(err.contains("ON DELETE RESTRICT"), "{err}");
    assert_eq!(snapshot(db.url()).await, before);
    db.client()
        .await
        .batch_execute(
            "alter table a drop constraint a_b;
             alter table a add constraint a_b foreign key (b_id) references b (id) deferrable;
             alter table b drop constraint b_a_id_fkey;
             alter table b add constraint b_a foreign key (a_id) references a (id);",
        )
        .await
        .unwrap();
    let (code, run, err) = p.json(&["wipe", "dev", "--keep", "a:id = 2"]);
    assert_eq!(code, 0, "{err}");
    let c = counts(&run);
    assert_eq!(c["public.a"], (2, 1));
    assert_eq!(c["public.b"], (2, 1), "b 2 is referenced by the kept a 2");
    assert_eq!(c["public.keepme"], (1, 0));
}

#[tokio::test]
async fn a_masked_clone_has_no_personal_data_and_its_joins_still_match() {
    let prod = TestDb::new().await;
    let staging = TestDb::new().await;
    prod.client()
        .await
        .batch_execute(
            "create table users (id serial primary key, email text not null unique, phone text, full_name text not null);
             create table orders (id serial primary key, user_id int not null references users (id), total numeric not null);
             create table newsletter (email text primary key, since date not null);
             insert into users (email, phone, full_name)
               select 'person' || g || '@real.example', case when g % 4 = 0 then null else '+49 151 ' || (1000000 + g) end, 'Real Name ' || g
               from generate_series(1, 500) g;
             insert into orders (user_id, total) select 1 + g % 500, g from generate_series(1, 2000) g;
             insert into newsletter select email, '2025-01-01' from users where id % 3 = 0;",
        )
        .await
        .unwrap();
    staging
        .client()
        .await
        .batch_execute("create table old_stuff (x int); insert into old_stuff values (1);")
        .await
        .unwrap();
    let mask = "[mask]\n\"users.email\" = \"email\"\n\"users.phone\" = \"phone\"\n\"users.full_name\" = \"name\"\n\"newsletter.email\" = \"email\"\n\n[[checks]]\nname = \"users exist\"\nsql = \"select count(*) from users\"\nexpect = \"= 500\"\n";
    let p = Project::new(
        &[
            ("production", "protected", prod.url()),
            ("staging", "guarded", staging.url()),
        ],
        mask,
    );
    let mut p = p;
    // Without a key, masking is refused before anything (exit 78).
    let (code, _, err) = p.json(&["clone", "production", "staging", "--mask"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("SHIPSAFE_MASK_KEY"), "{err}");
    p.vars.push(("SHIPSAFE_MASK_KEY".into(), MASK_KEY.into()));
    let (code, run, err) = p.json(&["clone", "production", "staging", "--mask"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "cloned");
    assert_eq!(run["report"]["source"], "fresh backup");
    assert!(run["report"]["safety_backup"].is_string());
    let s = staging.client().await;
    let q = |sql: &'static str| {
        let s = &s;
        async move { s.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let originals = prod.client().await;
    let emails: Vec<String> = originals
        .query("select email from users", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let phones: Vec<String> = originals
        .query("select phone from users where phone is not null", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let leaked: i64 = s
        .query_one(
            "select count(*) from users where email = any($1) or phone = any($2) or full_name like 'Real Name%'",
            &[&emails, &phones],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0, "no original email, phone or name in staging");
    let leaked_newsletter: i64 = s
        .query_one(
            "select count(*) from newsletter where email = any($1)",
            &[&emails],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked_newsletter, 0);
    assert_eq!(
        q("select count(distinct email) from users").await,
        500,
        "unique stays unique"
    );
    assert_eq!(
        q("select count(*) from users where phone is null").await,
        125,
        "NULL stays NULL"
    );
    assert_eq!(
        q("select count(*) from newsletter n join users u on u.email = n.email").await,
        166,
        "the masked emails still join"
    );
    assert_eq!(
        q("select count(*) from orders o join users u on u.id = o.user_id").await,
        2000
    );
    assert_eq!(
        q("select count(*) from pg_tables where tablename = 'old_stuff'").await,
        0
    );
    // The same input gives the same output: a second clone is identical.
    let first: Vec<String> = s
        .query(
            "select email || coalesce(phone, '') || full_name from users order by id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (code, run, err) = p.json(&["clone", "production", "staging", "--mask"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["report"]["source"], "fresh backup");
    let second: Vec<String> = staging
        .client()
        .await
        .query(
            "select email || coalesce(phone, '') || full_name from users order by id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(first, second);
    // Into a protected environment only with confirmation.
    let (code, _, err) = p.json(&["clone", "staging", "production", "--mask"]);
    assert_eq!(code, 3, "{err}");
}

/// The files of the server behind `db` that hold its data and the WAL
/// written since `since`: what a provider snapshot or a physical backup of
/// that database would carry.
async fn server_files(db: &TestDb, since: std::time::SystemTime) -> Vec<std::path::PathBuf> {
    let c = db.client().await;
    c.batch_execute("checkpoint").await.unwrap();
    let row = c
        .query_one(
            "select current_setting('data_directory'), (select oid::text from pg_database where datname = current_database())",
            &[],
        )
        .await
        .unwrap();
    let (dir, oid): (String, String) = (row.get(0), row.get(1));
    let dir = std::path::Path::new(&dir);
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join("base").join(&oid))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.extend(
        std::fs::read_dir(dir.join("pg_wal"))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| {
                e.file_type().unwrap().is_file()
                    && e.metadata().unwrap().modified().unwrap() >= since
            })
            .map(|e| e.path()),
    );
    files
}

/// A masked clone never writes the original values into TO: not as dead
/// row versions, not in an index, not in the WAL. (Masking inside TO's
/// restore transaction left all three.) FROM runs on a server of its own,
/// so the only way an original can reach TO's server is the clone.
#[tokio::test]
async fn a_masked_clone_leaves_no_original_in_the_targets_files_or_wal() {
    let from_server = tokio::task::spawn_blocking(shipsafe_pg::ScratchCluster::start)
        .await
        .unwrap()
        .unwrap();
    let prod_url = from_server.url("postgres");
    let token = format!(
        "orig{}x{}",
        std::process::id(),
        jiff::Timestamp::now().as_millisecond()
    );
    let prod = shipsafe_pg::connect(&prod_url).await.unwrap();
    // A rule and a partition's own trigger that copy the old value
    // elsewhere when the masking updates it.
    prod.batch_execute(&format!(
        "create table users (id serial primary key, email text not null unique, full_name text not null);
         insert into users (email, full_name)
           select 'p' || g || '.{token}@real.example', 'Name {token} ' || g from generate_series(1, 300) g;
         create table audit (old_email text);
         create rule users_audit as on update to users do also insert into audit values (old.email);
         create table contacts (region text, email text) partition by list (region);
         create table contacts_eu partition of contacts for values in ('eu');
         create table contacts_hist (email text);
         create function keep_old() returns trigger language plpgsql as $$ begin insert into contacts_hist values (old.email); return new; end $$;
         create trigger contacts_eu_hist before update on contacts_eu for each row execute function keep_old();
         insert into contacts values ('eu', 'c.{token}@real.example');"
    ))
    .await
    .unwrap();
    let staging = TestDb::new().await;
    let started = std::time::SystemTime::now() - std::time::Duration::from_secs(2);
    let mut p = Project::new(
        &[
            ("production", "protected", &prod_url),
            ("staging", "guarded", staging.url()),
        ],
        "[mask]\n\"users.email\" = \"email\"\n\"users.full_name\" = \"name\"\n\"contacts.email\" = \"email\"\n",
    );
    p.vars.push(("SHIPSAFE_MASK_KEY".into(), MASK_KEY.into()));
    let (code, run, err) = p.json(&["clone", "production", "staging", "--mask"]);
    assert_eq!(code, 0, "{err}\n{run}");
    let users: i64 = staging
        .client()
        .await
        .query_one("select count(*) from users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(users, 300);
    let finder = memchr::memmem::Finder::new(token.as_bytes());
    let files = server_files(&staging, started).await;
    assert!(files.len() > 3, "{files:?}");
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        assert!(
            finder.find(&bytes).is_none(),
            "an original value is in {}",
            f.display()
        );
    }
    drop(prod);
    tokio::task::spawn_blocking(move || from_server.stop())
        .await
        .unwrap()
        .unwrap();
}

/// Seed 001's production workflow as one command: the migration, then the
/// reference data from data/ (merge), then verification; a conflict in the
/// data step rolls the whole deploy back.
#[tokio::test]
async fn deploy_imports_the_reference_data_and_rolls_back_with_it() {
    let (local, production, p) = exported("production", "protected", 5).await;
    common::write(
        p.dir.path(),
        "migrations/1_tool_category/up.sql",
        "alter table tools add column category text;",
    );
    common::write(
        p.dir.path(),
        "migrations/1_tool_category/down.sql",
        "alter table tools drop column category;",
    );
    let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "deployed");
    let data = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "data")
        .unwrap();
    assert_eq!(data["status"], "ok", "{run}");
    assert_eq!(grants(&production).await, grants(&local).await);

    // A grant edited in production since: the next deploy's data step stops
    // on the conflict and the deploy is rolled back, migration included.
    production
        .client()
        .await
        .batch_execute(
            "update tool_access set granted_at = '2026-02-02' where tool_id = (select id from tools where name = 'Invoice Generator') \
               and user_id = (select id from users where username = 'bob')",
        )
        .await
        .unwrap();
    local
        .client()
        .await
        .batch_execute(&grant("user_a", "Payroll"))
        .await
        .unwrap();
    p.json(&["data", "export", "--all", "--env", "local"]);
    common::write(
        p.dir.path(),
        "migrations/2_tool_owner/up.sql",
        "alter table tools add column owner text;",
    );
    common::write(
        p.dir.path(),
        "migrations/2_tool_owner/down.sql",
        "alter table tools drop column owner;",
    );
    let before = snapshot(production.url()).await;
    let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(run["outcome"], "rolled_back");
    assert!(err.contains("edited in the target"), "{err}");
    assert_eq!(snapshot(production.url()).await, before);
}

#[tokio::test]
async fn a_wipe_keeps_reference_data_tables_whole() {
    let db = TestDb::new().await;
    db.client().await.batch_execute(SALON_SCHEMA).await.unwrap();
    let p = Project::new(
        &[("staging", "open", db.url())],
        &format!("{ADMIN_CHECK}\n[data.settings]\ntable = \"settings\"\nkey = [\"key\"]\n"),
    );
    let (code, run, err) = p.json(&["wipe", "staging", "--keep", "users:role = 'admin'"]);
    assert_eq!(code, 0, "{err}");
    let c = counts(&run);
    assert_eq!(
        c["public.settings"],
        (2, 2),
        "configured reference data stays"
    );
    assert_eq!(c["public.users"], (40, 2));
    assert!(
        run["backup_id"].is_string(),
        "a wipe backs up even an open environment"
    );
}

/// Nobody can read unmasked rows in the target, even while the clone runs:
/// a second session polls for original emails the whole time.
#[tokio::test]
async fn no_session_sees_unmasked_rows_during_a_masked_clone() {
    let prod = TestDb::new().await;
    let staging = TestDb::new().await;
    prod.client()
        .await
        .batch_execute(
            "create table users (id serial primary key, email text not null unique);
             insert into users (email) select 'person' || g || '@real.example' from generate_series(1, 30000) g;",
        )
        .await
        .unwrap();
    staging
        .client()
        .await
        .batch_execute("create table users (id serial primary key, email text not null unique);")
        .await
        .unwrap();
    let p = Project::new(
        &[
            ("production", "open", prod.url()),
            ("staging", "open", staging.url()),
        ],
        "[mask]\n\"users.email\" = \"email\"\n",
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let client = staging.client().await;
        tokio::spawn(async move {
            let (mut polls, mut seen) = (0u64, 0i64);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(r) = client
                    .query_one(
                        "select count(*) from users where email like '%@real.example'",
                        &[],
                    )
                    .await
                {
                    seen += r.get::<_, i64>(0);
                    polls += 1;
                }
            }
            (polls, seen)
        })
    };
    let mut p = p;
    p.vars.push(("SHIPSAFE_MASK_KEY".into(), MASK_KEY.into()));
    let out = tokio::task::spawn_blocking(move || {
        let r = p.json(&["clone", "production", "staging", "--mask"]);
        (r, p)
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (polls, seen) = watcher.await.unwrap();
    let ((code, run, err), _p) = out;
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "cloned");
    assert!(
        polls > 10,
        "the watcher polled during the clone ({polls} times)"
    );
    assert_eq!(seen, 0, "an unmasked email was visible in staging");
    let masked: i64 = staging
        .client()
        .await
        .query_one(
            "select count(*) from users where email like '%@example.invalid'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(masked, 30000);
}

/// Command lines that cannot work are usage errors (64) that say what to
/// write instead, before anything connects or changes.
#[tokio::test]
async fn impossible_requests_are_usage_errors() {
    let db = TestDb::new().await;
    db.client().await.batch_execute(SCHEMA).await.unwrap();
    let p = Project::new(
        &[("staging", "open", db.url()), ("dev", "open", db.url())],
        &format!("{SETS}\n[rehearsal]\nclone = \"env:staging\"\n"),
    );
    let before = snapshot(db.url()).await;
    for (args, says) in [
        (&["wipe", "staging"][..], "--keep TABLE:PREDICATE"),
        (
            &["wipe", "staging", "--keep", "users"][..],
            "must be TABLE:PREDICATE",
        ),
        (
            &["clone", "staging", "staging"][..],
            "must be different environments",
        ),
        (
            &["clone", "dev", "staging", "--mask"][..],
            "--mask needs a [mask] table",
        ),
        (&["data", "import", "--env", "staging"][..], "or pass --all"),
        (
            &["data", "import", "nosuch", "--env", "staging"][..],
            "no data set \"nosuch\"",
        ),
        (
            &["data", "diff", "tools", "--env", "staging"][..],
            "write it with `shipsafe data export`",
        ),
    ] {
        let (code, _, err) = p.json(args);
        assert_eq!(code, 64, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    common::write(
        p.dir.path(),
        "migrations/1_t/up.sql",
        "create table t (id int);",
    );
    let (code, _, err) = p.json(&["rehearse", "staging"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("names the environment being changed"), "{err}");
    assert_eq!(snapshot(db.url()).await, before);
}

/// `setval` is not transactional: a dry run, or a wipe its checks roll back,
/// must not leave sequences moved (the next insert would hit a duplicate key).
#[tokio::test]
async fn dry_runs_and_rolled_back_wipes_leave_sequences_alone() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "create table people (id serial primary key, name text not null);
             insert into people (name) select 'p' || g from generate_series(1, 10) g;",
        )
        .await
        .unwrap();
    let check = "[[checks]]\nname = \"ten people\"\nsql = \"select count(*) from people\"\nexpect = \"= 10\"\n";
    let p = Project::new(&[("dev", "open", db.url())], "");
    let (code, run, err) = p.json(&[
        "wipe",
        "dev",
        "--keep",
        "people:id = 3",
        "--reset-sequences",
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "dry_run");
    let insert = "insert into people (name) values ('new') returning id";
    let id: i32 = db
        .client()
        .await
        .query_one(insert, &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(id, 11, "the dry run moved the sequence");
    // A real wipe whose check fails is rolled back, sequence included.
    let p = Project::new(&[("dev", "open", db.url())], check);
    let (code, run, err) = p.json(&[
        "wipe",
        "dev",
        "--keep",
        "people:id = 3",
        "--reset-sequences",
    ]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(run["outcome"], "rolled_back");
    let id: i32 = db
        .client()
        .await
        .query_one(insert, &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(id, 12, "the rolled-back wipe moved the sequence");
    let n: i64 = db
        .client()
        .await
        .query_one("select count(*) from people", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 12);
}

/// `data diff` and `data import --dry-run` leave nothing behind on the
/// target, not even through a trigger: an audit trigger on the renamed table
/// writes rows with a sequence, and sequences do not roll back. A second
/// session compares everything before and after.
#[tokio::test]
async fn diff_and_dry_runs_leave_nothing_behind() {
    let src = TestDb::new().await;
    src.client()
        .await
        .batch_execute(&format!(
            "{SCHEMA} insert into tools (name, description) values ('Email Templates', 'Edit templates'), ('Payroll', 'Runs');"
        ))
        .await
        .unwrap();
    let target = TestDb::new().await;
    target
        .client()
        .await
        .batch_execute(&format!(
            "{SCHEMA} insert into tools (name, description) values ('Email Templates management', 'Edit templates'), ('Legacy Exporter', 'old');
             create table tools_audit (id serial primary key, tool_id int, old_name text, new_name text);
             create function tools_audit() returns trigger language plpgsql as $$
               begin insert into tools_audit (tool_id, old_name, new_name) values (old.id, old.name, new.name); return new; end $$;
             create trigger tools_audit after update on tools for each row execute function tools_audit();"
        ))
        .await
        .unwrap();
    let p = Project::new(
        &[
            ("local", "open", src.url()),
            ("staging", "guarded", target.url()),
        ],
        SETS,
    );
    let (code, _, err) = p.json(&["data", "export", "tools", "--env", "local"]);
    assert_eq!(code, 0, "{err}");
    let observer = target.client().await;
    let state = || async {
        let seq: i64 = observer
            .query_one("select last_value from tools_audit_id_seq", &[])
            .await
            .unwrap()
            .get(0);
        let called: bool = observer
            .query_one("select is_called from tools_audit_id_seq", &[])
            .await
            .unwrap()
            .get(0);
        let shipsafe: i64 = observer
            .query_one(
                "select count(*) from pg_namespace where nspname = 'shipsafe'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (seq, called, shipsafe)
    };
    // Something is in the audit log already, so a change would copy its
    // head into the target: a dry run must not.
    let (code, _, err) = p.json(&["data", "import", "tools", "--env", "local"]);
    assert_eq!(code, 0, "{err}");
    let before = state().await;
    let snap = snapshot(target.url()).await;
    let (code, diff, err) = p.json(&["data", "diff", "tools", "--env", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        diff["sets"][0]["renamed"][0][0], "Email Templates management",
        "{diff}"
    );
    let (code, run, err) = p.json(&["data", "import", "tools", "--env", "staging", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "dry_run");
    assert_eq!(
        state().await,
        before,
        "a dry run left a trace (sequence or schema)"
    );
    assert_eq!(snapshot(target.url()).await, snap);
    // The real import renames, and the trigger sees it.
    let (code, _, err) = p.json(&["data", "import", "tools", "--env", "staging"]);
    assert_eq!(code, 0, "{err}");
    let audited: i64 = observer
        .query_one("select count(*) from tools_audit", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(audited, 1);
}

/// Masking leaves no original personal data in TO: an audit trigger that
/// copies old values on update does not fire for the masking, and a
/// materialized view restored with the originals is refreshed.
#[tokio::test]
async fn a_masked_clone_leaves_no_originals_in_history_tables_or_materialized_views() {
    let prod = TestDb::new().await;
    let staging = TestDb::new().await;
    prod.client()
        .await
        .batch_execute(
            "create table users (id serial primary key, email text not null unique, full_name text not null);
             create table users_history (id serial primary key, user_id int, old_email text, old_name text);
             create function users_history() returns trigger language plpgsql as $$
               begin insert into users_history (user_id, old_email, old_name) values (old.id, old.email, old.full_name); return new; end $$;
             create trigger users_history after update on users for each row execute function users_history();
             insert into users (email, full_name) select 'person' || g || '@real.example', 'Real Name ' || g from generate_series(1, 200) g;
             create materialized view user_directory as select id, email, full_name from users;",
        )
        .await
        .unwrap();
    let mut p = Project::new(
        &[
            ("production", "protected", prod.url()),
            ("staging", "guarded", staging.url()),
        ],
        "[mask]\n\"users.email\" = \"email\"\n\"users.full_name\" = \"name\"\n",
    );
    p.vars.push(("SHIPSAFE_MASK_KEY".into(), MASK_KEY.into()));
    let (code, run, err) = p.json(&["clone", "production", "staging", "--mask"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "cloned");
    let s = staging.client().await;
    let count = |sql: &'static str| {
        let s = &s;
        async move { s.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(
        count("select count(*) from users where email like '%@real.example'").await,
        0
    );
    assert_eq!(
        count("select count(*) from users_history where old_email like '%@real.example' or old_name like 'Real Name%'").await,
        0,
        "the audit trigger copied originals during masking"
    );
    assert_eq!(
        count("select count(*) from user_directory where email like '%@real.example' or full_name like 'Real Name%'").await,
        0,
        "the materialized view still shows originals"
    );
    assert_eq!(count("select count(*) from user_directory").await, 200);
    // The trigger is back on afterwards.
    s.batch_execute("update users set full_name = 'x' where id = 1")
        .await
        .unwrap();
    assert_eq!(count("select count(*) from users_history").await, 1);
}

/// A wipe or an import inside another run's window (a deploy holding ENV's
/// migration lock) would be undone by that run's rollback: both wait their
/// turn like a second deploy, and change nothing.
#[tokio::test]
async fn wipe_and_import_are_refused_while_another_run_holds_the_lock() {
    let (_local, target, p) = exported("staging", "open", 3).await;
    let holder = common::hold_migration_lock(target.url()).await;
    let before = snapshot(target.url()).await;
    let (code, run, err) = p.json(&["wipe", "staging", "--keep-table", "tools"]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(run["outcome"], "blocked", "{run}");
    assert!(err.contains("holds the migration lock"), "{err}");
    let (code, run, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(run["outcome"], "blocked", "{run}");
    assert!(err.contains("holds the migration lock"), "{err}");
    assert_eq!(snapshot(target.url()).await, before, "nothing changed");
    // A dry run reads only: it goes ahead.
    let (code, _, err) = p.json(&["wipe", "staging", "--keep-table", "tools", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    holder
        .execute("select pg_advisory_unlock_all()", &[])
        .await
        .unwrap();
    let (code, _, err) = p.json(&["data", "import", "--all", "--env", "staging"]);
    assert_eq!(code, 0, "{err}");
}

/// A clone from FROM's newest verified backup says how old that backup is,
/// in the confirmation a protected TO asks for and in the report: a copy
/// from last month is not what a person expects from "clone".
#[tokio::test]
async fn a_clone_says_how_old_the_backup_it_copies_is() {
    let prod = local().await;
    let staging = TestDb::new().await;
    let p = Project::new(
        &[
            ("production", "protected", prod.url()),
            ("staging", "protected", staging.url()),
        ],
        "",
    );
    let (code, b, err) = p.json(&["backup", "create", "production"]);
    assert_eq!(code, 0, "{err}");
    let id = b["id"].as_str().unwrap().to_string();
    let (code, _, err) = p.json(&["backup", "verify", &id]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = p.json(&["clone", "production", "staging"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!("newest verified backup {id} (taken "))
            && err.contains("less than a minute ago"),
        "the confirmation names the backup and its age: {err}"
    );
    let (code, run, err) = p.json(&["clone", "production", "staging", "--confirm", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        run["report"]["source"],
        "newest verified backup, taken less than a minute ago"
    );
    assert_eq!(run["report"]["source_backup"], id.as_str());
}
