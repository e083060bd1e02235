//! `shipsafe plan ENV` as a person reads it: the text says what the JSON
//! says (start-up commands that migrate on boot), and a revision of the
//! team's tool whose `downgrade()` is empty is named as irreversible, read
//! from the tool's own offline downgrade SQL, in text and JSON.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{Project, code, stderr, stdout, write};
use shipsafe_testkit::TestDb;

#[tokio::test]
async fn plan_text_shows_the_migrate_on_boot_warnings_the_json_has() {
    let db = TestDb::new().await;
    let p = Project::new(
        &[("prod", "guarded", db.url())],
        "[migrations]\ndir = \"migrations\"\n",
    );
    let root = p.dir.path();
    write(
        root,
        "migrations/20260101000000_accounts/up.sql",
        "create table accounts (id bigint primary key);\n",
    );
    write(
        root,
        "migrations/20260101000000_accounts/down.sql",
        "drop table accounts;\n",
    );
    write(
        root,
        "Procfile",
        "web: flask db upgrade && gunicorn app:app\n",
    );
    write(
        root,
        "boot.sh",
        "#!/bin/sh\nset -e\nflask db upgrade\nexec gunicorn app:app\n",
    );
    write(
        root,
        "docker-entrypoint.sh",
        "#!/bin/sh\npython manage.py migrate --noinput\nexec \"$@\"\n",
    );

    let (c, plan, err) = p.json(&["plan", "prod"]);
    assert_eq!(c, 0, "{err}");
    let warnings: Vec<String> = plan["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    for start in ["Procfile:1", "boot.sh:3", "docker-entrypoint.sh:2"] {
        assert!(
            warnings.iter().any(|w| w.starts_with(start)),
            "{start}: {warnings:?}"
        );
    }

    let out = p.cmd().args(["plan", "prod"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    for w in &warnings {
        assert!(text.contains(&format!("warning: {w}")), "{w}\n{text}");
    }
    assert!(text.contains("20260101000000"), "{text}");
}

/// A revision file as `flask db migrate` / `alembic revision` would write it.
fn revision(dir: &Path, rev: &str, down: Option<&str>, upgrade: &str, downgrade: &str) {
    write(
        dir,
        &format!("{rev}_step.py"),
        &format!(
            "\"\"\"step {rev}\n\nRevision ID: {rev}\n\"\"\"\nfrom alembic import op\nimport sqlalchemy as sa\n\nrevision = {rev:?}\ndown_revision = {}\nbranch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n    {upgrade}\n\n\ndef downgrade():\n    {downgrade}\n",
            down.map_or("None".to_string(), |d| format!("{d:?}"))
        ),
    );
}

/// 0001 creates a table, 0002 fixes data and its downgrade is `pass`, 0003
/// adds a column and drops it again.
fn three_revisions(versions: &Path) {
    revision(
        versions,
        "0001",
        None,
        "op.create_table('accounts', sa.Column('id', sa.BigInteger, primary_key=True), sa.Column('email', sa.Text))",
        "op.drop_table('accounts')",
    );
    revision(
        versions,
        "0002",
        Some("0001"),
        "op.execute(\"update accounts set email = lower(email)\")",
        "pass",
    );
    revision(
        versions,
        "0003",
        Some("0002"),
        "op.add_column('accounts', sa.Column('plan', sa.Text))",
        "op.drop_column('accounts', 'plan')",
    );
}

fn run(dir: &Path, program: &str, args: &[&str], url: &str) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("DATABASE_URL", url)
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed (scripts/setup): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Flask-Migrate project (docs/adopt/flask-migrate.md): `migrations/`
/// with `alembic.ini`, the app reading DATABASE_URL.
fn flask_project(url: &shipsafe_config::DbUrl) -> Project {
    let p = Project::new(
        &[("production", "protected", url)],
        "[migrations]\ntool = \"flask-migrate\"\nurl_env = \"DATABASE_URL\"\n",
    );
    write(
        p.dir.path(),
        "app.py",
        "import os\nfrom flask import Flask\nfrom flask_migrate import Migrate\nfrom flask_sqlalchemy import SQLAlchemy\n\n\
         app = Flask(__name__)\napp.config['SQLALCHEMY_DATABASE_URI'] = os.environ.get('DATABASE_URL', 'postgresql://localhost/none')\n\
         db = SQLAlchemy(app)\nmigrate = Migrate(app, db)\n",
    );
    run(
        p.dir.path(),
        "flask",
        &["db", "init"],
        "postgresql://localhost/none",
    );
    three_revisions(&p.dir.path().join("migrations/versions"));
    p
}

/// A plain alembic project (`alembic init`), its env.py reading DATABASE_URL.
fn alembic_project(url: &shipsafe_config::DbUrl) -> Project {
    let p = Project::new(
        &[("production", "protected", url)],
        "[migrations]\ntool = \"alembic\"\nurl_env = \"DATABASE_URL\"\n",
    );
    run(
        p.dir.path(),
        "alembic",
        &["init", "alembic"],
        "postgresql://localhost/none",
    );
    let env_py = p.dir.path().join("alembic/env.py");
    let text = std::fs::read_to_string(&env_py).unwrap().replacen(
        "config = context.config\n",
        "config = context.config\nimport os\nconfig.set_main_option(\"sqlalchemy.url\", os.environ[\"DATABASE_URL\"].replace(\"postgres://\", \"postgresql+psycopg2://\", 1))\n",
        1,
    );
    std::fs::write(env_py, text).unwrap();
    three_revisions(&p.dir.path().join("alembic/versions"));
    p
}

fn entry<'a>(plan: &'a serde_json::Value, version: &str) -> &'a serde_json::Value {
    plan["pending"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["version"] == version)
        .unwrap_or_else(|| panic!("{version} is not pending: {plan}"))
}

/// Plan of production, in JSON and in text.
fn plan_both(p: &Project) -> (serde_json::Value, String) {
    let (c, plan, err) = p.json(&["plan", "production"]);
    assert_eq!(c, 0, "{err}");
    let out = p.cmd().args(["plan", "production"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    (plan, stdout(&out))
}

fn assert_0002_is_irreversible(plan: &serde_json::Value, text: &str, what: &str) {
    let e = entry(plan, "0002");
    assert_eq!(e["empty_down"], true, "{what}: {plan}");
    assert_eq!(e["irreversible"], true, "{what}: {plan}");
    // The keys plan always had are kept.
    for key in ["version", "name", "transactional", "has_down", "has_verify"] {
        assert!(e.get(key).is_some(), "{what}: {key} in {e}");
    }
    let e = entry(plan, "0003");
    assert_eq!(e["empty_down"], false, "{what}: {plan}");
    assert_eq!(e["irreversible"], false, "{what}: {plan}");
    let warning = plan["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .find(|w| w.starts_with("revision 0002"))
        .unwrap_or_else(|| panic!("{what}: no warning for 0002: {plan}"));
    assert!(warning.contains("empty downgrade()"), "{warning}");
    assert!(
        warning.contains("only the pre-deploy backup undoes it"),
        "{warning}"
    );
    assert!(
        !plan["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("revision 0003")),
        "{plan}"
    );
    assert!(
        text.contains(&format!("warning: {warning}")),
        "{what}: {text}"
    );
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("0002"))
        .unwrap_or_else(|| panic!("{what}: no row for 0002: {text}"));
    assert!(row.contains("irreversible (empty downgrade)"), "{row}");
}

#[tokio::test]
async fn plan_names_an_empty_flask_migrate_downgrade_as_irreversible() {
    let db = TestDb::new().await;
    let p = flask_project(db.url());
    // Nothing applied: the offline downgrade runs from head to base.
    let (plan, text) = plan_both(&p);
    assert_eq!(entry(&plan, "0001")["empty_down"], false, "{plan}");
    assert_0002_is_irreversible(&plan, &text, "from base");
    // 0001 applied: from head back to 0001.
    run(
        p.dir.path(),
        "flask",
        &["db", "upgrade", "0001"],
        &db.url().expose().replace("postgres://", "postgresql://"),
    );
    let (plan, text) = plan_both(&p);
    assert_eq!(plan["applied"], 1, "{plan}");
    assert_eq!(plan["tool_state"], "0001", "{plan}");
    assert!(text.contains("at 0001, 1 applied, 2 pending"), "{text}");
    assert_0002_is_irreversible(&plan, &text, "from 0001");
    assert!(
        plan["pending"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["version"] != "0001"),
        "{plan}"
    );
    // alembic keeps only its head in the database: two revisions applied
    // are counted from the tool's history, not from that one row.
    run(
        p.dir.path(),
        "flask",
        &["db", "upgrade", "0002"],
        &db.url().expose().replace("postgres://", "postgresql://"),
    );
    let (plan, text) = plan_both(&p);
    assert_eq!(plan["applied"], 2, "{plan}");
    assert!(text.contains("at 0002, 2 applied, 1 pending"), "{text}");
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("0003"))
        .unwrap_or_else(|| panic!("no row for 0003: {text}"));
    assert!(
        row.contains("tool's down") && !row.contains("down.sql"),
        "{row}"
    );
}

#[tokio::test]
async fn plan_names_an_empty_alembic_downgrade_as_irreversible() {
    let db = TestDb::new().await;
    let p = alembic_project(db.url());
    let (plan, text) = plan_both(&p);
    assert_0002_is_irreversible(&plan, &text, "alembic");
    assert_eq!(plan["tool"], "alembic");
}

/// Readiness does not call a history reversible when one revision's
/// `downgrade()` is `pass`: going back over it leaves its change in place.
#[tokio::test]
async fn readiness_fails_reversible_for_an_empty_downgrade() {
    let db = TestDb::new().await;
    let p = alembic_project(db.url());
    let (_, card, err) = p.json(&["readiness", "production"]);
    let item = card["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{err}"))
        .iter()
        .find(|i| i["id"] == "migrations-reversible")
        .unwrap_or_else(|| panic!("{card}"))
        .clone();
    assert_eq!(item["status"], "fail", "{item}");
    assert_eq!(
        item["evidence"]["value"]["empty_down"],
        serde_json::json!(["0002"]),
        "{item}"
    );
    assert!(item["fix"].as_str().unwrap().contains("0002"), "{item}");
}

/// Two unmerged alembic heads: `flask db upgrade` refuses to choose (and
/// says nothing), so plan names the heads as a problem instead of showing a
/// deploy that would fail.
#[tokio::test]
async fn plan_names_unmerged_heads_the_flask_preset_cannot_upgrade() {
    let db = TestDb::new().await;
    let p = flask_project(db.url());
    revision(
        &p.dir.path().join("migrations/versions"),
        "0004",
        Some("0002"),
        "op.add_column('accounts', sa.Column('region', sa.Text))",
        "op.drop_column('accounts', 'region')",
    );
    let (code, plan, err) = p.json(&["plan", "production"]);
    assert_eq!(code, 1, "{err}\n{plan}");
    let problems = plan["problems"].to_string();
    assert!(
        problems.contains("2 heads") && problems.contains("0003") && problems.contains("0004"),
        "{plan}"
    );
}

/// The text of `plan` shows every lint finding of the team's tool's SQL
/// that its JSON holds, errors included (they inform; they were left out
/// as if they were listed among the problems).
#[tokio::test]
async fn plan_text_shows_the_tools_lint_errors() {
    let db = TestDb::new().await;
    let p = alembic_project(db.url());
    revision(
        &p.dir.path().join("alembic/versions"),
        "0004",
        Some("0003"),
        "op.drop_column('accounts', 'email')",
        "op.add_column('accounts', sa.Column('email', sa.Text))",
    );
    // The table exists before the pending batch: dropping its column is a
    // change to an existing table.
    run(
        p.dir.path(),
        "alembic",
        &["upgrade", "0003"],
        &db.url().expose().replace("postgres://", "postgresql://"),
    );
    let (plan, text) = plan_both(&p);
    let errors: Vec<&str> = plan["lint"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert!(errors.contains(&"ban-drop-column"), "{plan}");
    for rule in errors {
        assert!(text.contains(rule), "{rule} missing from: {text}");
    }
}

/// An offline downgrade SQL longer than what is kept of a tool's output
/// (4 MiB) is not read as if it were whole: the older revisions it cut off
/// (here 0002, whose downgrade is empty) would go unseen, and readiness
/// would pass. It is unknown instead.
#[tokio::test]
async fn readiness_does_not_pass_on_a_cut_offline_downgrade() {
    let db = TestDb::new().await;
    let p = alembic_project(db.url());
    revision(
        &p.dir.path().join("alembic/versions"),
        "0004",
        Some("0003"),
        "op.execute('select 1')",
        "op.execute('select ' + '1+' * 2600000 + '1')",
    );
    let (_, card, err) = p.json(&["readiness", "production"]);
    let item = card["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{err}"))
        .iter()
        .find(|i| i["id"] == "migrations-reversible")
        .unwrap_or_else(|| panic!("{card}"))
        .clone();
    assert_eq!(item["status"], "unknown", "{item}");
    assert!(
        item["evidence"]["summary"].to_string().contains("4 MiB"),
        "{item}"
    );
}
