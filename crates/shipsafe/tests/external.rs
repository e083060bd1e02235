//! External mode with a real alembic project: shipsafe runs the team's own
//! tool with the target URL in `url_env`, decides "pending" by the tool's
//! exit code, and rolls back by restoring the pre-deploy backup.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{Project, snapshot, write};
use shipsafe_testkit::TestDb;

/// A small migration tool: m/N.up.sql and m/N.down.sql, applied versions
/// in table ver. With a file `hold`, `up` sleeps that many seconds after
/// applying.
const TOOL_SH: &str = r#"set -e
q() { psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" "$@"; }
q -c "create table if not exists ver (v int primary key)" 2>/dev/null
cur=$(q -Atc "select coalesce(max(v), 0) from ver")
case "$1" in
  current) echo "$cur" ;;
  pending) for f in m/*.up.sql; do n=$(basename "$f" .up.sql); [ "$n" -le "$cur" ] || exit 1; done ;;
  up) for f in $(ls m/*.up.sql | sort -V); do n=$(basename "$f" .up.sql)
        if [ "$n" -gt "$cur" ]; then q -f "$f"; q -c "insert into ver values ($n)"; fi; done
      [ ! -e hold ] || sleep "$(cat hold)" ;;
  down) for n in $(q -Atc "select v from ver where v > $2 order by v desc"); do
          q -f "m/$n.down.sql"; q -c "delete from ver where v = $n"; done ;;
esac
"#;

/// [`TOOL_SH`] as the team's tool.
const TOOL_CONFIG: &str = "\n[migrations]\ntool = \"command\"\nup = \"sh tool.sh up\"\npending = \"sh tool.sh pending\"\ncurrent = \"sh tool.sh current\"\ndown = \"sh tool.sh down {revision}\"\n";

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
    alembic_with(envs, &format!("{CONFIG}{extra}"))
}

/// [`alembic_project`] with `config` as its shipsafe configuration.
fn alembic_with(envs: &[(&str, &str, &shipsafe_config::DbUrl)], config: &str) -> Project {
    let p = Project::new(envs, config);
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
/// the variable shipsafe sets: `rehearse` and a protected deploy run the
/// tool where it cannot reach production.
#[tokio::test]
async fn a_preset_that_reads_dotenv_cannot_reach_production_from_a_rehearsal() {
    let db = TestDb::new().await;
    let p = dotenv_alembic(&db, "");
    // On a scratch clone the tool runs in a network namespace of its own:
    // its connection to production (read from .env) fails, the rehearsal
    // fails, and production is never touched.
    let before = snapshot(db.url()).await;
    for args in [
        &["rehearse", "production"][..],
        &["deploy", "production", "--confirm", "production"],
    ] {
        let (code, run, err) = p.json(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        let r = &run["report"]["rehearsal"];
        assert_eq!(r["target_changed"], false, "{run}");
        assert!(
            r["tool_isolation"]
                .as_str()
                .unwrap()
                .starts_with("network namespace"),
            "{run}"
        );
        assert!(err.contains("failed on the clone"), "{err}");
        assert_eq!(snapshot(db.url()).await, before, "production was touched");
    }
}

/// The app changes the target's schema itself (a partition cron) while an
/// isolated rehearsal runs. Even a tool in the namespaces can reach the
/// target (through the clone's server: dblink, postgres_fdw; or a socket
/// shipsafe does not hide), so shipsafe cannot tell the app's change from
/// the tool's: the run stays on the safe side (`target_changed`, exit 5)
/// and says it cannot tell which, for a preset and a written command alike.
#[tokio::test]
async fn a_change_to_the_target_during_an_isolated_rehearsal_is_never_called_harmless() {
    for config in [
        "\n[migrations]\ntool = \"alembic\"\n".to_string(),
        CONFIG.to_string(),
    ] {
        let db = TestDb::new().await;
        let p = alembic_with(&[("production", "protected", db.url())], &config);
        revision(
            &p,
            "0001",
            None,
            "op.create_table('accounts', sa.Column('id', sa.BigInteger, primary_key=True))\n    if not op.get_context().as_sql:\n        open('upgrading', 'w').close()\n        import time; time.sleep(2)",
            "op.drop_table('accounts')",
        );
        let child = p.spawn_capturing(&[
            "deploy",
            "production",
            "--confirm",
            "production",
            "--format",
            "json",
        ]);
        let marker = p.dir.path().join("upgrading");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !marker.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the rehearsal never ran up"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        db.client()
            .await
            .batch_execute("create table events_2026_12 (id int)")
            .await
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{config}: {err}");
        assert_eq!(run["outcome"], "target_changed", "{run}");
        assert!(err.contains("cannot tell which"), "{err}");
        let accounts: bool = db
            .client()
            .await
            .query_one("select to_regclass('accounts') is not null", &[])
            .await
            .unwrap()
            .get(0);
        assert!(!accounts, "nothing was applied");
    }
}

/// A clone reached over TCP cannot be isolated: the tool runs with
/// `PGAPPNAME` naming the rehearsal, and its session on production (read
/// from `.env`) is ended as soon as it is seen; the rehearsal fails and
/// production is untouched (exit 1, nothing changed).
#[tokio::test]
async fn a_preset_that_reads_dotenv_on_a_tcp_clone_is_cut_off() {
    let db = TestDb::new().await;
    let clone = TestDb::new().await;
    let p = dotenv_alembic(&db, &tcp_clone(&clone));
    // The watch looks every 100 ms: a tool that commits its change sooner
    // is caught by the comparison after the command instead (next test).
    // This one takes a second between connecting and migrating.
    let env_py = p.dir.path().join("alembic/env.py");
    let text = std::fs::read_to_string(&env_py).unwrap();
    let connect = "    with connectable.connect() as connection:\n";
    assert!(text.contains(connect), "{text}");
    std::fs::write(
        &env_py,
        text.replacen(
            connect,
            &format!("{connect}        import time; time.sleep(1)\n"),
            1,
        ),
    )
    .unwrap();
    let before = snapshot(db.url()).await;
    let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(run["outcome"], "blocked", "{run}");
    assert_eq!(run["report"]["rehearsal"]["target_changed"], false, "{run}");
    let isolation = run["report"]["rehearsal"]["tool_isolation"]
        .as_str()
        .unwrap();
    assert!(
        isolation.starts_with("none (the clone is reached over TCP")
            && isolation.contains("PGAPPNAME=shipsafe-rehearsal-"),
        "{run}"
    );
    assert!(err.contains("connected to the target"), "{err}");
    assert_eq!(snapshot(db.url()).await, before, "production was touched");
}

/// A tool that escapes the watch (its URL names its own application_name)
/// changes production; the target is compared after every tool command,
/// so the rehearsal stops right after `up`, before its `downgrade` could
/// run there: outcome `target_changed` (exit 5), and `rollback` restores the
/// pre-deploy backup.
#[tokio::test]
async fn a_tool_that_escapes_the_watch_is_stopped_before_its_down_runs_on_production() {
    let db = TestDb::new().await;
    let clone = TestDb::new().await;
    let p = dotenv_alembic(&db, &tcp_clone(&clone));
    write(
        p.dir.path(),
        ".env",
        &format!("DATABASE_URL={}?application_name=app\n", db.url().expose()),
    );
    let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 5, "{err}\n{run}");
    assert_eq!(run["outcome"], "target_changed", "{run}");
    assert_eq!(run["report"]["rehearsal"]["target_changed"], true, "{run}");
    assert!(err.contains("backup restore"), "{err}");
    let commands: Vec<&str> = run["report"]["rehearsal"]["tool_output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["command"].as_str().unwrap())
        .collect();
    assert!(
        !commands.iter().any(|c| c.contains("downgrade")),
        "a downgrade ran: {commands:?}"
    );
    assert!(
        !run["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "apply"),
        "apply never ran: {run}"
    );
    let version: String = db
        .client()
        .await
        .query_one("select version_num::text from alembic_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, "0001", "the tool's up reached production");
    // The run is one `rollback` undoes: by its pre-deploy backup.
    let (code, out, err) = p.json(&["rollback", "production", "--confirm", "production"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out["report"]["method"], "restore", "{out}");
    let tables: i64 = db
        .client()
        .await
        .query_one(
            "select count(*) from pg_tables where tablename in ('accounts', 'alembic_version')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "production is as it was before the deploy");
}

/// A data-only revision through `.env` leaves production's schema as it
/// was but moves its alembic history: the comparison after `up` reads the
/// tool's history on the target too, so the rehearsal stops there
/// (`target_changed`) before its `downgrade` deletes production's rows.
#[tokio::test]
async fn a_data_only_revision_that_reaches_production_is_stopped_before_its_down() {
    let db = TestDb::new().await;
    let clone = TestDb::new().await;
    let p = dotenv_alembic(&db, &tcp_clone(&clone));
    write(
        p.dir.path(),
        ".env",
        &format!("DATABASE_URL={}?application_name=app\n", db.url().expose()),
    );
    // Production at 0001, as the app's own `alembic upgrade head` put it.
    let out = Command::new("alembic")
        .args(["upgrade", "head"])
        .current_dir(p.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    revision(
        &p,
        "0002",
        Some("0001"),
        "op.execute('insert into accounts values (7)')",
        "op.execute('delete from accounts')",
    );
    let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 5, "{err}\n{run}");
    assert_eq!(run["outcome"], "target_changed", "{run}");
    assert!(err.contains("history moved"), "{err}");
    let rows: i64 = db
        .client()
        .await
        .query_one("select count(*) from accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "the downgrade ran on production");
}

/// `.env` names a third database: on a TCP clone the tool's `up` succeeds
/// and the clone does not move. That proves nothing; the rehearsal fails
/// (exit 1) instead of going on to prove a round trip on the wrong database.
#[tokio::test]
async fn an_up_that_leaves_the_clone_as_it_was_fails_the_rehearsal() {
    let db = TestDb::new().await;
    let clone = TestDb::new().await;
    let elsewhere = TestDb::new().await;
    let p = dotenv_alembic_at(
        "production",
        "protected",
        &db,
        &elsewhere,
        &tcp_clone(&clone),
    );
    let before = snapshot(db.url()).await;
    let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 1, "{err}\n{run}");
    assert!(
        err.contains("the clone's alembic history did not move"),
        "{err}"
    );
    assert_ne!(
        run["report"]["rehearsal"]["round_trip"]["status"], "proven",
        "{run}"
    );
    assert_eq!(snapshot(db.url()).await, before, "production was touched");
}

/// An alembic revision whose `downgrade()` is empty (`pass`): going back
/// with the tool moves alembic_version and leaves the change, so `rollback`
/// restores the pre-deploy backup instead, and the rehearsal does not call
/// the round trip proven. Without a backup (open), rollback refuses.
#[tokio::test]
async fn a_revision_with_an_empty_downgrade_is_undone_by_the_backup_not_the_tool() {
    let prod = TestDb::new().await;
    let dev = TestDb::new().await;
    let p = alembic_with(
        &[
            ("production", "protected", prod.url()),
            ("dev", "open", dev.url()),
        ],
        "\n[migrations]\ntool = \"alembic\"\n",
    );
    revision(
        &p,
        "0001",
        None,
        "op.create_table('accounts', sa.Column('id', sa.BigInteger, primary_key=True), sa.Column('plan', sa.Text))\n    op.execute(\"insert into accounts values (1, 'free')\")",
        "op.drop_table('accounts')",
    );
    for env in [
        &["deploy", "production", "--confirm", "production"][..],
        &["deploy", "dev"],
    ] {
        let (code, _, err) = p.json(env);
        assert_eq!(code, 0, "{err}");
    }
    revision(
        &p,
        "0002",
        Some("0001"),
        "op.execute(\"update accounts set plan = 'pro'\")",
        "pass",
    );
    let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 0, "{err}");
    // The confirmation named the revision and the rehearsal's verdict.
    let shown = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "confirm")
        .unwrap()["detail"]["shown"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(shown.contains("  - 0002"), "{shown}");
    assert!(shown.contains("round trip: irreversible"), "{shown}");
    assert_eq!(
        run["report"]["external"]["empty_down"],
        serde_json::json!(["0002"]),
        "{run}"
    );
    assert_ne!(
        run["report"]["rehearsal"]["round_trip"]["status"], "proven",
        "{run}"
    );
    let (code, out, err) = p.json(&["rollback", "production", "--confirm", "production"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out["report"]["method"], "restore", "{out}");
    let plan: String = prod
        .client()
        .await
        .query_one("select plan from accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(plan, "free", "the revision's change was undone");
    // Open environment: no backup, and the tool cannot undo it.
    let (code, _, err) = p.json(&["deploy", "dev"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = p.json(&["rollback", "dev"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("a downgrade() is empty"), "{err}");
    let plan: String = dev
        .client()
        .await
        .query_one("select plan from accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(plan, "pro", "nothing was changed");
}

/// A network namespace blocks TCP, not a Unix socket: a `.env` naming
/// production through the server's socket folder reached it from a scratch
/// rehearsal. The tool's mount namespace covers the machine's other
/// PostgreSQL sockets, so its connection fails and production is not
/// changed (exit 1).
#[tokio::test]
async fn a_dotenv_naming_production_by_its_unix_socket_cannot_change_it_from_a_rehearsal() {
    let db = TestDb::new().await;
    let p = dotenv_alembic(&db, "");
    let socket_dir: String = db
        .client()
        .await
        .query_one(
            "select split_part(current_setting('unix_socket_directories'), ',', 1)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    write(
        p.dir.path(),
        ".env",
        &format!(
            "DATABASE_URL=postgresql://postgres@/{}?host={}\n",
            db.name(),
            socket_dir.trim()
        ),
    );
    let before = snapshot(db.url()).await;
    let (code, run, err) = p.json(&["rehearse", "production"]);
    assert_eq!(code, 1, "{err}\n{run}");
    assert_eq!(run["outcome"], "blocked", "{run}");
    assert_eq!(snapshot(db.url()).await, before, "production was changed");
}

/// A standalone `rehearse` whose tool changed production is what
/// `rollback` undoes next (by its pre-rehearsal backup), not an older
/// deploy.
#[tokio::test]
async fn rollback_undoes_a_rehearsal_that_changed_the_target() {
    let db = TestDb::new().await;
    let clone = TestDb::new().await;
    let p = dotenv_alembic(&db, &tcp_clone(&clone));
    write(
        p.dir.path(),
        ".env",
        &format!("DATABASE_URL={}?application_name=app\n", db.url().expose()),
    );
    let before = snapshot(db.url()).await;
    let (code, run, err) = p.json(&["rehearse", "production"]);
    assert_eq!(code, 5, "{err}\n{run}");
    assert_eq!(run["outcome"], "target_changed", "{run}");
    assert_ne!(snapshot(db.url()).await, before);
    let (code, out, err) = p.json(&["rollback", "production", "--confirm", "production"]);
    assert_eq!(code, 0, "{err}\n{out}");
    assert_eq!(out["report"]["rolled_back_run"], run["run_id"], "{out}");
    assert_eq!(out["report"]["method"], "restore", "{out}");
    assert_eq!(
        snapshot(db.url()).await,
        before,
        "production is as before the rehearsal"
    );
}

/// When the offline downgrade SQL cannot be printed (a downgrade that
/// reads the database), no pending revision's way back is known: the round
/// trip is not proven and rollback restores the backup, instead of going
/// back with the tool over a data change whose downgrade() is empty.
#[tokio::test]
async fn an_unreadable_offline_downgrade_makes_no_revision_trusted_to_go_back() {
    let prod = TestDb::new().await;
    let p = alembic_with(
        &[("production", "protected", prod.url())],
        "\n[migrations]\ntool = \"alembic\"\n",
    );
    revision(
        &p,
        "0001",
        None,
        "op.create_table('accounts', sa.Column('id', sa.BigInteger, primary_key=True), sa.Column('balance', sa.BigInteger))\n    op.execute('insert into accounts values (1, 100)')",
        "op.drop_table('accounts')",
    );
    let (code, _, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 0, "{err}");
    revision(
        &p,
        "0002",
        Some("0001"),
        "op.execute('update accounts set balance = balance * 100')",
        "pass",
    );
    revision(
        &p,
        "0003",
        Some("0002"),
        "op.add_column('accounts', sa.Column('plan', sa.Text))",
        "op.get_bind().execute(sa.text('select count(*) from accounts')).scalar()\n    op.drop_column('accounts', 'plan')",
    );
    let (code, run, err) = p.json(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 0, "{err}");
    assert_ne!(
        run["report"]["rehearsal"]["round_trip"]["status"], "proven",
        "{run}"
    );
    let (code, out, err) = p.json(&["rollback", "production", "--confirm", "production"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out["report"]["method"], "restore", "{out}");
    let balance: i64 = prod
        .client()
        .await
        .query_one("select balance from accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(balance, 100, "the data change was undone");
}

fn tcp_clone(clone: &TestDb) -> String {
    format!(
        "\n[environments.sandbox]\ndatabase_url = \"{}\"\nprotection = \"open\"\n\n[rehearsal]\nclone = \"env:sandbox\"\n",
        clone.url().expose()
    )
}

/// An alembic project whose env.py reads the database from `.env` (which
/// names production) instead of the URL shipsafe passes.
fn dotenv_alembic(db: &TestDb, extra: &str) -> Project {
    dotenv_alembic_at("production", "protected", db, db, extra)
}

/// [`dotenv_alembic`] for environment `env`, with `.env` naming `dotenv`.
fn dotenv_alembic_at(
    env: &str,
    protection: &str,
    db: &TestDb,
    dotenv: &TestDb,
    extra: &str,
) -> Project {
    let p = Project::new(
        &[(env, protection, db.url())],
        &format!("\n[migrations]\ntool = \"alembic\"\n{extra}"),
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
        &format!("DATABASE_URL={}\n", dotenv.url().expose()),
    );
    revision(
        &p,
        "0001",
        None,
        "op.create_table('accounts', sa.Column('id', sa.BigInteger, primary_key=True))",
        "op.drop_table('accounts')",
    );
    p
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
        &format!(
            "{TOOL_CONFIG}\n[[checks]]\nname = \"no negative stock\"\nsql = \"select count(*) from items where stock < 0\"\nexpect = \"= 0\"\n"
        ),
    );
    write(p.dir.path(), "tool.sh", TOOL_SH);
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

/// shipsafe killed while the team's tool runs: the run's saved record keeps
/// which tool made it and where the database stood, so `rollback` goes back
/// with the tool to exactly that revision.
#[tokio::test]
async fn a_killed_tool_deploy_is_rolled_back_with_the_tool_to_its_recorded_revision() {
    let db = TestDb::new().await;
    let p = Project::new(&[("dev", "open", db.url())], TOOL_CONFIG);
    write(p.dir.path(), "tool.sh", TOOL_SH);
    write(p.dir.path(), "m/1.up.sql", "create table items (id int);\n");
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
    write(p.dir.path(), "hold", "37");
    let mut child = p.spawn(&["deploy", "dev"]);
    let c = db.client().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let v: i32 = c
            .query_one("select max(v) from ver", &[])
            .await
            .unwrap()
            .get(0);
        if v == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "up never applied 2");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The tool outlives a SIGKILLed shipsafe (it has its own process group);
    // it has finished its work and only sleeps.
    let _ = Command::new("pkill").args(["-f", "sleep 37"]).status();
    std::fs::remove_file(p.dir.path().join("hold")).unwrap();
    let (code, run, err) = p.json(&["rollback", "dev"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "rolled_back", "{run}");
    assert!(
        run["report"]["detail"]
            .as_str()
            .unwrap()
            .contains("sh tool.sh down"),
        "{run}"
    );
    let v: i32 = c
        .query_one("select max(v) from ver", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 1);
}

/// The migration source changed since a deploy (native files, now the
/// team's tool): the old way back is gone, so `rollback` restores the
/// pre-deploy backup where there is one and otherwise refuses, changing
/// nothing.
#[tokio::test]
async fn a_rollback_after_the_migration_source_changed_restores_or_refuses() {
    let dev = TestDb::new().await;
    let staging = TestDb::new().await;
    let p = Project::new(
        &[
            ("dev", "open", dev.url()),
            ("staging", "guarded", staging.url()),
        ],
        "",
    );
    write(
        p.dir.path(),
        "migrations/1_t/up.sql",
        "create table t (id int);",
    );
    write(p.dir.path(), "migrations/1_t/down.sql", "drop table t;");
    for env in ["dev", "staging"] {
        let (code, _, err) = p.json(&["deploy", env]);
        assert_eq!(code, 0, "{err}");
    }
    let toml = std::fs::read_to_string(p.dir.path().join("shipsafe.toml")).unwrap();
    write(
        p.dir.path(),
        "shipsafe.toml",
        &format!("{toml}{TOOL_CONFIG}"),
    );
    write(p.dir.path(), "tool.sh", TOOL_SH);
    let exists = |db: &TestDb| {
        let url = db.url().clone();
        async move {
            shipsafe_pg::connect(&url)
                .await
                .unwrap()
                .query_one("select to_regclass('t') is not null", &[])
                .await
                .unwrap()
                .get::<_, bool>(0)
        }
    };
    let (code, _, err) = p.json(&["rollback", "dev"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no pre-deploy backup"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(exists(&dev).await);
    let (code, run, err) = p.json(&["rollback", "staging", "--confirm", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["report"]["method"], "restore", "{run}");
    assert!(!exists(&staging).await);
}

/// `sh` forks the tool: a timeout that stopped only `sh` left the tool
/// working on the database after shipsafe had decided the outcome. The
/// whole process group is stopped, and shipsafe waits for it, before the
/// rollback starts.
#[tokio::test]
async fn a_timed_out_tool_is_stopped_with_its_children_before_the_outcome() {
    let db = TestDb::new().await;
    let p = Project::new(
        &[("staging", "guarded", db.url())],
        "\n[migrations]\ntool = \"command\"\nup = \"python3 slow_up.py; true\"\npending = \"false\"\nstatement_timeout = \"2s\"\n",
    );
    write(
        p.dir.path(),
        "slow_up.py",
        "import os, subprocess, time\ntime.sleep(5)\nsubprocess.run(['psql', '-X', '-q', os.environ['DATABASE_URL'], '-c', 'create table orphan_marker (id int)'])\n",
    );
    let (code, run, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("statement_timeout"), "{err}");
    assert!(
        run["report"]["tool_output"]
            .to_string()
            .contains("its processes are gone"),
        "{run}"
    );
    std::thread::sleep(std::time::Duration::from_secs(5));
    let orphan: bool = db
        .client()
        .await
        .query_one("select to_regclass('orphan_marker') is not null", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!orphan, "the tool kept running after the outcome");
}

/// kill -9 of shipsafe while the team's tool runs: the tool (a child of
/// the tool's shell, in its own process group) is stopped too, instead of
/// going on to change the database after its run was left for dead.
#[tokio::test]
async fn the_tool_does_not_outlive_a_killed_shipsafe() {
    let db = TestDb::new().await;
    let p = Project::new(
        &[("dev", "open", db.url())],
        "\n[migrations]\ntool = \"command\"\nup = \"python3 slow_up.py\"\npending = \"false\"\n",
    );
    write(
        p.dir.path(),
        "slow_up.py",
        "import os, subprocess, time\nopen('started', 'w').close()\ntime.sleep(4)\nsubprocess.run(['psql', '-X', '-q', os.environ['DATABASE_URL'], '-c', 'create table orphan_marker (id int)'])\n",
    );
    let mut child = p.spawn(&["deploy", "dev"]);
    let started = p.dir.path().join("started");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the tool never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(6));
    let orphan: bool = db
        .client()
        .await
        .query_one("select to_regclass('orphan_marker') is not null", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!orphan, "the tool went on after shipsafe was killed");
}

/// kill -9 of shipsafe while the tool's statement runs on the target: the
/// tool is ended, and its server session is ended within a second or two
/// (the dead-client check shipsafe's own sessions have) instead of running
/// its statement to the end with its locks held.
#[tokio::test]
async fn a_killed_deploys_tool_session_does_not_run_on_without_its_client() {
    let db = TestDb::new().await;
    let p = Project::new(
        &[("dev", "open", db.url())],
        "\n[migrations]\ntool = \"command\"\nup = \"psql -X -q \\\"$DATABASE_URL\\\" -c 'select pg_sleep(40)'\"\npending = \"false\"\n",
    );
    let mut child = p.spawn(&["deploy", "dev"]);
    let c = db.client().await;
    let sleeping = "select count(*) from pg_stat_activity where datname = current_database() \
                    and query like 'select pg_sleep(40)%' and application_name like 'shipsafe-deploy-%'";
    common::wait_for_sessions(&c, sleeping, "the tool's statement").await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    let killed = std::time::Instant::now();
    loop {
        let n: i64 = c.query_one(sleeping, &[]).await.unwrap().get(0);
        if n == 0 {
            break;
        }
        assert!(
            killed.elapsed() < std::time::Duration::from_secs(10),
            "the tool's session ran on without its client"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A revision comes from where the app's role can write: it reaches the
/// way back as data ("$SHIPSAFE_REVISION"), never as shell text, and a
/// `{revision}` quoted by habit (which would splice it into the shell
/// text) is refused with the fix.
#[tokio::test]
async fn a_recorded_revision_reaches_down_as_data_never_as_shell() {
    let db = TestDb::new().await;
    let config = |down: &str| {
        format!(
            "\n[migrations]\ntool = \"command\"\nup = \"sh up.sh\"\npending = \"test \\\"$(cat state)\\\" = v2\"\ncurrent = \"cat state\"\ndown = \"{down}\"\n"
        )
    };
    let p = Project::new(
        &[("dev", "open", db.url())],
        &config("sh down.sh '{revision}'"),
    );
    write(p.dir.path(), "state", "$(touch pwned); x");
    write(
        p.dir.path(),
        "up.sh",
        "psql -X -q \"$DATABASE_URL\" -c 'create table t2 (i int)'\necho v2 > state\nexit 1\n",
    );
    write(
        p.dir.path(),
        "down.sh",
        "psql -X -q \"$DATABASE_URL\" -c 'drop table t2'\nprintf '%s' \"$1\" > got.txt\nprintf '%s' \"$1\" > state\n",
    );
    let (code, _, err) = p.json(&["deploy", "dev"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("quotes {revision}"), "{err}");
    let toml = std::fs::read_to_string(p.dir.path().join("shipsafe.toml"))
        .unwrap()
        .replace("'{revision}'", "{revision}");
    write(p.dir.path(), "shipsafe.toml", &toml);
    let (code, run, err) = p.json(&["deploy", "dev"]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(run["report"]["rollback"]["method"], "down", "{run}");
    assert_eq!(
        std::fs::read_to_string(p.dir.path().join("got.txt")).unwrap(),
        "$(touch pwned); x"
    );
    assert!(
        !p.dir.path().join("pwned").exists(),
        "the revision ran as shell"
    );
}

/// A deploy whose tool (reading `.env`) migrates another database: the
/// target's history did not move, so the deploy fails and says where to
/// look, instead of reporting `deployed`.
#[tokio::test]
async fn a_tool_that_migrates_another_database_does_not_pass_as_deployed() {
    let staging = TestDb::new().await;
    let other = TestDb::new().await;
    let p = dotenv_alembic_at("staging", "guarded", &staging, &other, "");
    let before = snapshot(staging.url()).await;
    let (code, run, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("applied the pending revisions to another database"),
        "{err}"
    );
    assert!(
        err.contains("staging's alembic history did not move"),
        "names the environment: {err}"
    );
    assert_eq!(run["report"]["rollback"]["method"], "transaction", "{run}");
    assert_eq!(snapshot(staging.url()).await, before);
    let migrated: bool = other
        .client()
        .await
        .query_one("select to_regclass('accounts') is not null", &[])
        .await
        .unwrap()
        .get(0);
    assert!(migrated, "the tool really went elsewhere");
}

/// A failed tool run that left the schema and the tool's history as they
/// were needs no undoing: the pre-deploy backup is not restored (which
/// would discard what the app wrote since it was taken).
#[tokio::test]
async fn a_failed_tool_run_that_changed_nothing_restores_nothing() {
    let db = TestDb::new().await;
    let p = alembic_with(
        &[("staging", "guarded", db.url())],
        "\n[migrations]\ntool = \"alembic\"\n",
    );
    revision(
        &p,
        "0001",
        None,
        "op.create_table('accounts', sa.Column('id', sa.BigInteger, primary_key=True))",
        "op.drop_table('accounts')",
    );
    let (code, _, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 0, "{err}");
    revision(
        &p,
        "0002",
        Some("0001"),
        "op.add_column('accounts', sa.Column('note', sa.Text)); op.execute('select 1/0')",
        "op.drop_column('accounts', 'note')",
    );
    let (code, run, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 4, "{err}");
    let rollback = &run["report"]["rollback"];
    assert_eq!(rollback["method"], "transaction", "{run}");
    assert!(
        rollback["detail"]
            .as_str()
            .unwrap()
            .contains("history as they were"),
        "{run}"
    );
    let restored = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "restore");
    assert!(!restored, "{run}");
}
