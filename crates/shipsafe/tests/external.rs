//! External mode with a real alembic project: shipsafe runs the team's own
//! tool with the target URL in `url_env`, decides "pending" by the tool's
//! exit code, and rolls back by restoring the pre-deploy backup.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{Project, snapshot, write};
use shipsafe_testkit::TestDb;

const CONFIG: &str = r#"
[migrations]
up = "alembic upgrade head"
down = "alembic downgrade -1"
pending = "alembic current | grep -q '(head)'"
url_env = "DATABASE_URL"
"#;

fn revision(p: &Project, rev: &str, down: Option<&str>, upgrade: &str, downgrade: &str) {
    write(
        p.dir.path(),
        &format!("alembic/versions/{rev}.py"),
        &format!(
            "from alembic import op\nimport sqlalchemy as sa\n\nrevision = {rev:?}\ndown_revision = {}\nbranch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n    {upgrade}\n\n\ndef downgrade():\n    {downgrade}\n",
            down.map_or("None".to_string(), |d| format!("{d:?}"))
        ),
    );
}

/// A real alembic project (`alembic init`), whose env.py reads DATABASE_URL.
fn alembic_project(envs: &[(&str, &str, &shipsafe_config::DbUrl)], extra: &str) -> Project {
    let p = Project::new(envs, &format!("{CONFIG}{extra}"));
    let out = Command::new("alembic")
        .args(["init", "alembic"])
        .current_dir(p.dir.path())
        .output()
        .expect("alembic must be installed (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env_py = p.dir.path().join("alembic/env.py");
    let text = std::fs::read_to_string(&env_py).unwrap().replacen(
        "config = context.config\n",
        "config = context.config\nimport os\nconfig.set_main_option(\"sqlalchemy.url\", os.environ[\"DATABASE_URL\"].replace(\"postgres://\", \"postgresql+psycopg2://\", 1))\n",
        1,
    );
    std::fs::write(env_py, text).unwrap();
    p
}

#[tokio::test]
async fn alembic_upgrades_through_shipsafe_and_second_run_has_nothing_to_do() {
    let db = TestDb::new().await;
    let p = alembic_project(&[("dev", "open", db.url())], "");
    revision(
        &p,
        "0001",
        None,
        "op.create_table('accounts', sa.Column('id', sa.BigInteger, primary_key=True), sa.Column('email', sa.Text))",
        "op.drop_table('accounts')",
    );
    let (code, plan, err) = p.json(&["plan", "dev"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(plan["external_pending"], true);

    let (code, run, err) = p.json(&["deploy", "dev"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "deployed");
    assert_eq!(
        run["report"]["tool_output"][1]["command"],
        "alembic upgrade head"
    );
    let exists: bool = db
        .client()
        .await
        .query_one("select to_regclass('accounts') is not null", &[])
        .await
        .unwrap()
        .get(0);
    assert!(exists);

    let (code, run, _) = p.json(&["deploy", "dev"]);
    assert_eq!(code, 0);
    assert_eq!(
        run["outcome"], "nothing_to_do",
        "the pending command says alembic is at head"
    );
}

#[tokio::test]
async fn a_failing_check_after_alembic_restores_the_pre_deploy_backup() {
    let db = TestDb::new().await;
    let checks = "\n[[checks]]\nname = \"no account without email\"\nsql = \"select count(*) from accounts where email is null\"\nexpect = \"= 0\"\n";
    let p = alembic_project(&[("staging", "guarded", db.url())], checks);
    revision(
        &p,
        "0001",
        None,
        "op.create_table('accounts', sa.Column('id', sa.BigInteger, primary_key=True), sa.Column('email', sa.Text))\n    op.execute(\"insert into accounts (email) values ('a@example.com')\")",
        "op.drop_table('accounts')",
    );
    let (code, _, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 0, "{err}");
    let before = snapshot(db.url()).await;

    revision(
        &p,
        "0002",
        Some("0001"),
        "op.execute(\"insert into accounts (email) values (null)\")",
        "op.execute(\"delete from accounts where email is null\")",
    );
    let (code, run, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(run["outcome"], "rolled_back");
    assert_eq!(run["report"]["rollback"]["method"], "restore");
    assert!(err.contains("no account without email"), "{err}");
    assert_eq!(
        snapshot(db.url()).await,
        before,
        "data and alembic_version as before the deploy"
    );
    let version: String = db
        .client()
        .await
        .query_one("select version_num from alembic_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, "0001");
}

#[tokio::test]
async fn a_failed_alembic_run_that_changed_nothing_is_not_undone_further() {
    let db = TestDb::new().await;
    let p = alembic_project(&[("dev", "open", db.url())], "");
    revision(
        &p,
        "0001",
        None,
        "op.create_table('a', sa.Column('id', sa.BigInteger, primary_key=True))",
        "op.drop_table('a')",
    );
    assert_eq!(p.json(&["deploy", "dev"]).0, 0);
    let before = snapshot(db.url()).await;
    revision(&p, "0002", Some("0001"), "op.execute('select 1/0')", "pass");
    let (code, run, err) = p.json(&["deploy", "dev"]);
    assert_eq!(code, 4, "{err}");
    // alembic rolled 0002 back itself; running `down` now would undo 0001.
    assert_eq!(run["report"]["rollback"]["method"], "transaction", "{err}");
    assert_eq!(
        snapshot(db.url()).await,
        before,
        "0001's table is still there"
    );
}

#[tokio::test]
async fn a_half_applied_alembic_run_is_undone_with_down() {
    let db = TestDb::new().await;
    let p = alembic_project(&[("dev", "open", db.url())], "");
    revision(
        &p,
        "0001",
        None,
        "op.create_table('a', sa.Column('id', sa.BigInteger, primary_key=True))",
        "op.drop_table('a')",
    );
    assert_eq!(p.json(&["deploy", "dev"]).0, 0);
    let before = snapshot(db.url()).await;
    // 0002 commits its DDL (autocommit block), then fails: half applied.
    revision(
        &p,
        "0002",
        Some("0001"),
        "with op.get_context().autocommit_block():\n        op.execute('create table b (id bigint)')\n    op.execute('select 1/0')",
        "op.execute('drop table if exists b')",
    );
    // This team's `down` removes what the half-applied revision left.
    let cfg = std::fs::read_to_string(p.dir.path().join("shipsafe.toml")).unwrap();
    let cfg = cfg.replace(
        "down = \"alembic downgrade -1\"",
        "down = 'psql \"$DATABASE_URL\" -qc \"drop table if exists b\"'",
    );
    write(p.dir.path(), "shipsafe.toml", &cfg);
    let (code, run, err) = p.json(&["deploy", "dev"]);
    assert_eq!(run["report"]["rollback"]["method"], "down", "{err}");
    assert_eq!(code, 4, "{err}");
    assert_eq!(snapshot(db.url()).await, before);
}

/// A protected deploy through alembic: the tool runs on a scratch clone
/// first (up, checks, down, schema compared, up again), then on the target.
/// A downgrade that forgets an index fails the round trip and blocks.
#[tokio::test]
async fn protected_alembic_deploys_are_rehearsed_on_a_clone() {
    let db = TestDb::new().await;
    let p = alembic_project(&[("production", "protected", db.url())], "");
    revision(
        &p,
        "0001",
        None,
        "op.create_table('accounts', sa.Column('id', sa.BigInteger, primary_key=True), sa.Column('email', sa.Text))\n    op.create_index('accounts_email', 'accounts', ['email'])",
        "op.drop_table('accounts')",
    );
    let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "deployed");
    let r = &run["report"]["rehearsal"];
    assert_eq!(r["verdict"], "safe", "{r}");
    assert_eq!(r["round_trip"]["status"], "proven", "{r}");
    assert_eq!(r["backup_verified"], true);
    let added = r["schema_changes"]["extra"].as_array().unwrap();
    assert!(
        added
            .iter()
            .any(|l| l.as_str().unwrap().starts_with("relation public.accounts")),
        "{r}"
    );

    // The next revision's downgrade forgets its index.
    revision(
        &p,
        "0002",
        Some("0001"),
        "op.add_column('accounts', sa.Column('plan', sa.Text))\n    op.create_index('accounts_plan', 'accounts', ['plan'])",
        "op.drop_column('accounts', 'plan')\n    op.execute('create index accounts_plan on accounts (email)')",
    );
    let before = snapshot(db.url()).await;
    // `rehearse` alone says the same and touches nothing.
    let (code, run, err) = p.json(&["rehearse", "production"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(run["report"]["rehearsal"]["round_trip"]["status"], "failed");
    assert_eq!(snapshot(db.url()).await, before);
    let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(run["outcome"], "blocked");
    assert_eq!(run["report"]["rehearsal"]["round_trip"]["status"], "failed");
    assert!(err.contains("accounts_plan"), "{err}");
    assert_eq!(snapshot(db.url()).await, before);
}

/// A preset whose app reads its URL from `.env` (production's) instead of
/// the variable shipsafe sets: the rehearsal's `alembic upgrade heads`
/// reaches production itself. The guard sees production's schema change
/// during the rehearsal, stops before the apply step, and names the backup
/// (exit 5).
#[tokio::test]
async fn a_preset_that_reads_dotenv_instead_of_the_clone_url_is_caught() {
    let db = TestDb::new().await;
    let p = Project::new(
        &[("production", "protected", db.url())],
        "\n[migrations]\ntool = \"alembic\"\n",
    );
    let out = Command::new("alembic")
        .args(["init", "alembic"])
        .current_dir(p.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let env_py = p.dir.path().join("alembic/env.py");
    let text = std::fs::read_to_string(&env_py).unwrap().replacen(
        "config = context.config\n",
        "config = context.config\nimport pathlib\nconfig.set_main_option(\"sqlalchemy.url\", pathlib.Path(\".env\").read_text().split(\"=\", 1)[1].strip().replace(\"postgres://\", \"postgresql+psycopg2://\", 1))\n",
        1,
    );
    std::fs::write(env_py, text).unwrap();
    write(
        p.dir.path(),
        ".env",
        &format!("DATABASE_URL={}\n", db.url().expose()),
    );
    revision(
        &p,
        "0001",
        None,
        "op.create_table('accounts', sa.Column('id', sa.BigInteger, primary_key=True))",
        "op.drop_table('accounts')",
    );
    let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 5, "{err}");
    assert_eq!(run["report"]["rehearsal"]["target_changed"], true, "{run}");
    assert!(err.contains("backup restore"), "{err}");
    assert!(
        !run["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "apply"),
        "apply never ran: {run}"
    );
}

/// Without a preset: `current` is recorded before the deploy and `down`
/// gets it as `{revision}` (shell-quoted), so a failed two-step deploy
/// without a backup (open environment) goes back to exactly where it was,
/// not one step.
#[tokio::test]
async fn a_custom_tool_goes_back_to_the_recorded_current_revision() {
    let db = TestDb::new().await;
    let p = Project::new(
        &[("dev", "open", db.url())],
        "\n[migrations]\ntool = \"command\"\nup = \"sh tool.sh up\"\npending = \"sh tool.sh pending\"\ncurrent = \"sh tool.sh current\"\ndown = \"sh tool.sh down {revision}\"\n\n[[checks]]\nname = \"no negative stock\"\nsql = \"select count(*) from items where stock < 0\"\nexpect = \"= 0\"\n",
    );
    // A small migration tool: m/N.up.sql and m/N.down.sql, applied versions
    // in table ver.
    write(
        p.dir.path(),
        "tool.sh",
        r#"set -e
q() { psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" "$@"; }
q -c "create table if not exists ver (v int primary key)" 2>/dev/null
cur=$(q -Atc "select coalesce(max(v), 0) from ver")
case "$1" in
  current) echo "$cur" ;;
  pending) for f in m/*.up.sql; do n=$(basename "$f" .up.sql); [ "$n" -le "$cur" ] || exit 1; done ;;
  up) for f in $(ls m/*.up.sql | sort -V); do n=$(basename "$f" .up.sql)
        if [ "$n" -gt "$cur" ]; then q -f "$f"; q -c "insert into ver values ($n)"; fi; done ;;
  down) for n in $(q -Atc "select v from ver where v > $2 order by v desc"); do
          q -f "m/$n.down.sql"; q -c "delete from ver where v = $n"; done ;;
esac
"#,
    );
    write(
        p.dir.path(),
        "m/1.up.sql",
        "create table items (id int primary key, stock int not null);\ninsert into items values (1, 5);\n",
    );
    write(p.dir.path(), "m/1.down.sql", "drop table items;\n");
    let (code, _, err) = p.json(&["deploy", "dev"]);
    assert_eq!(code, 0, "{err}");

    write(
        p.dir.path(),
        "m/2.up.sql",
        "alter table items add column note text;\n",
    );
    write(
        p.dir.path(),
        "m/2.down.sql",
        "alter table items drop column note;\n",
    );
    write(p.dir.path(), "m/3.up.sql", "update items set stock = -1;\n");
    write(
        p.dir.path(),
        "m/3.down.sql",
        "update items set stock = 5;\n",
    );
    let (code, run, err) = p.json(&["deploy", "dev"]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(
        run["report"]["external"]["before"]["revisions"],
        serde_json::json!(["1"])
    );
    assert_eq!(run["report"]["rollback"]["method"], "down", "{run}");
    assert!(
        run["report"]["rollback"]["detail"]
            .as_str()
            .unwrap()
            .contains("sh tool.sh down 1"),
        "{run}"
    );
    let c = db.client().await;
    let v: i32 = c
        .query_one("select max(v) from ver", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 1, "both steps undone, not one");
    let note: bool = c
        .query_one("select exists (select 1 from information_schema.columns where table_name = 'items' and column_name = 'note')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!note);
    let stock: i32 = c
        .query_one("select stock from items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stock, 5);
}
