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
    local
        .client()
        .await
        .batch_execute(&format!(
            "insert into users (username, email) values ('carol', 'carol@sme.example'); {}",
            grant("carol", "Payroll")
        ))
        .await
        .unwrap();
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

#[tokio::test]
async fn dry_run_and_mirror() {
    let local = local().await;
    let staging = remote(1).await;
    let p = Project::new(
        &[
            ("local", "open", local.url()),
            ("staging", "open", staging.url()),
        ],
        SETS,
    );
    p.json(&["data", "export", "--all", "--env", "local"]);
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
