//! docs/adopt/*.md run as written: each page's files are written and its
//! `sh run` blocks executed in order, in a fresh project folder, against
//! real PostgreSQL databases for staging and production, with the built
//! `shipsafe` first on PATH. A command's exit code must be the one its
//! `# exit N` comment gives (0 without one). Then each test checks what the
//! page claims happened, in the databases themselves.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use shipsafe_testkit::TestDb;

#[derive(Debug)]
enum Step {
    File { path: String, text: String },
    Run { command: String, exit: i32 },
}

/// The steps of a page: blocks whose info string has `file=PATH`, and the
/// lines of `sh run` blocks.
fn steps(markdown: &str) -> Vec<Step> {
    let mut out = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let words: Vec<&str> = info.split_whitespace().collect();
        let mut body = Vec::new();
        for l in lines.by_ref() {
            if l.trim_end() == "```" {
                break;
            }
            body.push(l);
        }
        if let Some(path) = words.iter().find_map(|w| w.strip_prefix("file=")) {
            out.push(Step::File {
                path: path.to_string(),
                text: body.join("\n") + "\n",
            });
        } else if words.first() == Some(&"sh") && words.contains(&"run") {
            for l in body {
                let l = l.trim();
                if l.is_empty() || l.starts_with('#') {
                    continue;
                }
                let (command, exit) = match l.rsplit_once("# exit ") {
                    Some((c, n)) => (c.trim().to_string(), n.trim().parse().unwrap()),
                    None => (l.to_string(), 0),
                };
                out.push(Step::Run { command, exit });
            }
        }
    }
    out
}

fn page(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../docs/adopt/{name}.md"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Runs the page in a new folder; returns the folder.
fn run_page(name: &str, vars: &[(&str, &shipsafe_config::DbUrl)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("shipsafe");
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let all = steps(&page(name));
    assert!(
        all.iter().any(|s| matches!(s, Step::Run { .. })),
        "docs/adopt/{name}.md has no `sh run` block"
    );
    for step in all {
        match step {
            Step::File { path, text } => common::write(dir.path(), &path, &text),
            Step::Run { command, exit } => {
                let mut cmd = std::process::Command::new("sh");
                cmd.arg("-c")
                    .arg(&command)
                    .current_dir(dir.path())
                    .env("PATH", &path)
                    .env_remove("SHIPSAFE_CONFIG")
                    .env_remove("SHIPSAFE_STATE_DIR")
                    .env_remove("SHIPSAFE_FORMAT")
                    .env_remove("DATABASE_URL")
                    .env("PYTHONDONTWRITEBYTECODE", "1")
                    .stdin(std::process::Stdio::null());
                for (k, v) in vars {
                    cmd.env(k, v.expose());
                }
                let out = cmd.output().unwrap();
                assert_eq!(
                    out.status.code(),
                    Some(exit),
                    "docs/adopt/{name}.md: `{command}` exited {:?}, the page says {exit}\nstdout:\n{}\nstderr:\n{}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    dir
}

async fn one<T: for<'a> tokio_postgres::types::FromSql<'a>>(db: &TestDb, sql: &str) -> T {
    db.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

/// The runs in the project's history, newest first.
fn runs(dir: &Path) -> Vec<serde_json::Value> {
    let store = shipsafe_state::StateStore::open(&dir.join(".shipsafe")).unwrap();
    store
        .runs(None, 1000)
        .unwrap()
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect()
}

#[test]
fn the_page_parser_reads_files_commands_and_exit_codes() {
    let s = steps(
        "text\n```python file=app.py\nprint(1)\n```\n```sh\npip install x\n```\n```sh run\n# a comment\nshipsafe plan production\nshipsafe deploy staging  # exit 4\n```\n",
    );
    assert_eq!(s.len(), 3, "{s:?}");
    assert!(matches!(&s[0], Step::File { path, text } if path == "app.py" && text == "print(1)\n"));
    assert!(
        matches!(&s[1], Step::Run { command, exit: 0 } if command == "shipsafe plan production")
    );
    assert!(
        matches!(&s[2], Step::Run { command, exit: 4 } if command == "shipsafe deploy staging")
    );
}

#[tokio::test]
async fn flask_migrate_page_deploys_rolls_back_a_failed_check_and_returns_to_the_exact_revision() {
    let (staging, production, dir) = run_with_two_databases("flask-migrate").await;
    // The two-revision deploy (0002 and 0003) was undone to 0001, not to
    // 0002 as `flask db downgrade` (one step) would, and by the tool: Grace,
    // written after the deploy, is still there (a restore would lose her).
    let version: String = one(&production, "select version_num::text from alembic_version").await;
    assert_eq!(version, "0001");
    let plan_column: bool = one(
        &production,
        "select exists (select 1 from information_schema.columns where table_name = 'accounts' and column_name = 'plan')",
    )
    .await;
    assert!(!plan_column);
    assert_eq!(
        emails(&production).await,
        ["ada@example.com", "grace@example.com"]
    );
    // Staging's failed check was undone by restoring its backup: 0001, Ada.
    let version: String = one(&staging, "select version_num::text from alembic_version").await;
    assert_eq!(version, "0001");

    let runs = runs(dir.path());
    let rollback = runs
        .iter()
        .find(|r| r["command"] == "rollback" && r["env"] == "production")
        .expect("a rollback of production");
    assert_eq!(rollback["outcome"], "rolled_back", "{rollback}");
    assert_eq!(rollback["report"]["method"], "down", "{rollback}");
    let deploys: Vec<&serde_json::Value> = runs
        .iter()
        .filter(|r| r["command"] == "deploy" && r["env"] == "production")
        .collect();
    let last = deploys
        .iter()
        .find(|r| {
            r["outcome"] == "deployed"
                && r["report"]["external"]["before"]["revisions"] == serde_json::json!(["0001"])
        })
        .expect("the two-revision deploy recorded 0001 before it");
    let pending: Vec<&str> = last["report"]["external"]["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(pending, ["0002", "0003"]);
    assert!(
        deploys.iter().any(|r| r["outcome"] == "blocked"),
        "the production deploy with the failing check was stopped by its rehearsal: {deploys:?}"
    );

    // After the rollback 0002 and 0003 are pending again: plan names them,
    // lints what `flask db upgrade --sql 0001:head` prints (the plain
    // CREATE INDEX on accounts) and warns of a Procfile that migrates on boot.
    common::write(
        dir.path(),
        "Procfile",
        "web: flask db upgrade && gunicorn app:app
",
    );
    let out = common::shipsafe(dir.path())
        .args(["--format", "json", "plan", "production"])
        .env("PRODUCTION_DATABASE_URL", production.url().expose())
        .env("STAGING_DATABASE_URL", staging.url().expose())
        .output()
        .unwrap();
    assert_eq!(common::code(&out), 0, "{}", common::stderr(&out));
    let plan = common::json(&out);
    assert_eq!(plan["tool"], "flask-migrate");
    assert_eq!(plan["external_pending"], true);
    let ids: Vec<&str> = plan["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["version"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["0002", "0003"], "{plan}");
    assert_eq!(plan["pending"][0]["name"], "accounts get a plan");
    let lint = plan["lint"].as_array().unwrap();
    assert!(
        lint.iter()
            .any(|f| f["table"].as_str().is_some_and(|t| t.contains("accounts"))),
        "the tool's SQL was linted: {plan}"
    );
    // Readiness lints the same SQL for its pending-migrations item: 0002's
    // `update accounts set plan = 'free'` has no WHERE. Offline SQL: a warning.
    let out = common::shipsafe(dir.path())
        .args(["--format", "json", "readiness", "production"])
        .env("PRODUCTION_DATABASE_URL", production.url().expose())
        .output()
        .unwrap();
    let card = common::json(&out);
    let item = card["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "pending-migrations-lint")
        .unwrap()
        .clone();
    assert_eq!(item["status"], "warn", "{item}");
    assert!(
        item["evidence"]["value"]["errors"][0]
            .as_str()
            .unwrap()
            .ends_with("require-where-in-update"),
        "{item}"
    );
    assert_eq!(
        item["evidence"]["value"]["pending"],
        serde_json::json!(["0002", "0003"]),
        "{item}"
    );
    let out = common::shipsafe(dir.path())
        .args(["--format", "json", "status", "production"])
        .env("PRODUCTION_DATABASE_URL", production.url().expose())
        .output()
        .unwrap();
    assert_eq!(common::code(&out), 0, "{}", common::stderr(&out));
    let status = common::json(&out);
    assert_eq!(
        status["environments"][0]["pending_migrations"], 2,
        "{status}"
    );
    assert!(
        plan["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("Procfile:1")),
        "{plan}"
    );
}

/// The first column of every row `sql` returns, as text.
async fn texts(db: &TestDb, sql: &str) -> Vec<String> {
    db.client()
        .await
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn emails(db: &TestDb) -> Vec<String> {
    texts(db, "select email from accounts order by id").await
}

/// Runs the page against two new databases: (staging, production, folder).
async fn run_with_two_databases(name: &str) -> (TestDb, TestDb, tempfile::TempDir) {
    let staging = TestDb::new().await;
    let production = TestDb::new().await;
    let dir = run_page(
        name,
        &[
            ("STAGING_DATABASE_URL", staging.url()),
            ("PRODUCTION_DATABASE_URL", production.url()),
        ],
    );
    (staging, production, dir)
}

/// The rollback went back with the tool (not a restore), running `command`.
fn went_back_with(rollback: &serde_json::Value, command: &str) {
    assert_eq!(rollback["report"]["method"], "down", "{rollback}");
    assert!(
        rollback["report"]["detail"]
            .as_str()
            .unwrap()
            .contains(command),
        "{rollback}"
    );
}

async fn has_column(db: &TestDb, table: &str, column: &str) -> bool {
    db.client()
        .await
        .query_one(
            "select exists (select 1 from information_schema.columns where table_name = $1 and column_name = $2)",
            &[&table, &column],
        )
        .await
        .unwrap()
        .get(0)
}

/// The rollback of production, and the deploys of production, newest first.
fn production_runs(dir: &Path) -> (serde_json::Value, Vec<serde_json::Value>) {
    let all = runs(dir);
    let rollback = all
        .iter()
        .find(|r| r["command"] == "rollback" && r["env"] == "production")
        .cloned()
        .expect("a rollback of production");
    let deploys = all
        .into_iter()
        .filter(|r| r["command"] == "deploy" && r["env"] == "production")
        .collect();
    (rollback, deploys)
}

#[tokio::test]
async fn alembic_page_returns_to_the_recorded_revision_and_keeps_later_writes() {
    let (staging, production, dir) = run_with_two_databases("alembic").await;
    let version: String = one(&production, "select version_num::text from alembic_version").await;
    assert_eq!(version, "0001");
    assert!(!has_column(&production, "invoices", "currency").await);
    let totals: Vec<i64> = production
        .client()
        .await
        .query("select total_cents from invoices order by id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        totals,
        [1200, 990],
        "the invoice written after the deploy is kept"
    );
    let (rollback, deploys) = production_runs(dir.path());
    went_back_with(&rollback, "alembic downgrade 0001");
    assert!(
        deploys.iter().any(|d| d["outcome"] == "blocked"),
        "{deploys:?}"
    );
    // Staging's failed check was undone by its backup.
    assert!(!has_column(&staging, "invoices", "currency").await);
    let version: String = one(&staging, "select version_num::text from alembic_version").await;
    assert_eq!(version, "0001");
}

#[tokio::test]
async fn django_page_migrates_each_app_back_to_its_recorded_migration() {
    let (staging, production, dir) = run_with_two_databases("django").await;
    let applied = texts(
        &production,
        "select name from django_migrations where app = 'accounts' order by id",
    )
    .await;
    assert_eq!(applied, ["0001_accounts"]);
    assert!(!has_column(&production, "accounts", "plan").await);
    assert_eq!(
        emails(&production).await,
        ["ada@example.com", "grace@example.com"]
    );
    let (rollback, deploys) = production_runs(dir.path());
    went_back_with(&rollback, "python manage.py migrate accounts 0001_accounts");
    let good = deploys
        .iter()
        .find(|d| {
            d["outcome"] == "deployed"
                && d["report"]["external"]["pending"]
                    .as_array()
                    .is_some_and(|p| p.len() == 2)
        })
        .expect("the two-migration deploy");
    assert_eq!(
        good["report"]["external"]["before"]["revisions"],
        serde_json::json!(["accounts.0001_accounts"])
    );
    assert!(
        good["report"]["lint"].is_array(),
        "sqlmigrate's SQL was linted: {good}"
    );
    assert!(!has_column(&staging, "accounts", "plan").await);
}

#[tokio::test]
async fn prisma_page_counts_prismas_own_history_and_keeps_it_in_step() {
    let (staging, production, dir) = run_with_two_databases("prisma").await;
    let (rollback, deploys) = production_runs(dir.path());
    // The first production deploy found Prisma's row: nothing to do.
    assert_eq!(
        deploys.last().unwrap()["outcome"],
        "nothing_to_do",
        "{deploys:?}"
    );
    assert_eq!(rollback["report"]["method"], "restore", "{rollback}");
    assert!(!has_column(&production, "accounts", "plan").await);
    assert_eq!(emails(&production).await, ["ada@example.com"]);
    let names = texts(
        &production,
        "select migration_name from _prisma_migrations where finished_at is not null order by 1",
    )
    .await;
    assert_eq!(names, ["20260101000000_accounts"], "restored with the data");

    // Staging got the first migration from shipsafe, with Prisma's checksum.
    let row: (String, String) = {
        let r = staging
            .client()
            .await
            .query_one(
                "select migration_name, checksum from _prisma_migrations where finished_at is not null and rolled_back_at is null",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    let sum = std::process::Command::new("sha256sum")
        .arg(
            dir.path()
                .join("prisma/migrations/20260101000000_accounts/migration.sql"),
        )
        .output()
        .unwrap();
    let sum = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(row, ("20260101000000_accounts".to_string(), sum));

    // A migration.sql changed after Prisma applied it is drift.
    common::write(
        dir.path(),
        "prisma/migrations/20260101000000_accounts/migration.sql",
        "CREATE TABLE \"accounts\" (\"id\" BIGSERIAL PRIMARY KEY);\n",
    );
    let out = common::shipsafe(dir.path())
        .args(["plan", "production"])
        .env("PRODUCTION_DATABASE_URL", production.url().expose())
        .env("STAGING_DATABASE_URL", staging.url().expose())
        .output()
        .unwrap();
    assert_eq!(common::code(&out), 1, "{}", common::stderr(&out));
    assert!(
        common::stderr(&out).contains("20260101000000"),
        "{}",
        common::stderr(&out)
    );
}

#[tokio::test]
async fn rails_page_migrates_back_to_the_recorded_version() {
    let (staging, production, dir) = run_with_two_databases("rails").await;
    let versions = texts(
        &production,
        "select version from schema_migrations order by 1",
    )
    .await;
    assert_eq!(versions, ["20260101000000"]);
    assert!(!has_column(&production, "accounts", "plan").await);
    assert_eq!(
        emails(&production).await,
        ["ada@example.com", "grace@example.com"]
    );
    let (rollback, deploys) = production_runs(dir.path());
    went_back_with(&rollback, "bin/rails db:migrate VERSION=20260101000000");
    // The first deploy found every file pending before schema_migrations existed.
    let first = deploys.last().unwrap();
    assert_eq!(first["outcome"], "deployed", "{first}");
    assert_eq!(
        first["report"]["external"]["pending"][0]["id"],
        "20260101000000"
    );
    assert!(
        deploys.iter().any(|d| d["outcome"] == "blocked"),
        "{deploys:?}"
    );
    assert!(!has_column(&staging, "accounts", "plan").await);
}

/// Copies a fixture folder (tests/fixtures/NAME) into `to`.
fn copy_fixture(name: &str, to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let mut stack = vec![from.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(&from).unwrap().to_path_buf();
            if e.file_type().unwrap().is_dir() {
                std::fs::create_dir_all(to.join(&rel)).unwrap();
                stack.push(e.path());
            } else {
                std::fs::copy(e.path(), to.join(&rel)).unwrap();
            }
        }
    }
}

/// A real public Flask-Migrate app (miguelgrinberg/microblog: nine
/// revisions, a config.py that loads `.env`, a Procfile and boot.sh that
/// migrate on boot) adopted by the commands of docs/adopt/flask-migrate.md:
/// `init`, plan, a guarded then a protected deploy of its whole history,
/// 300 users, a new revision deployed and rolled back with the tool to the
/// exact revision (a user written in between kept), and a `.env` naming
/// production loaded with override=True, which a rehearsal cannot reach.
#[tokio::test]
async fn microblog_adopts_shipsafe_as_the_flask_migrate_page_says() {
    let staging = TestDb::new().await;
    let production = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    copy_fixture("microblog", dir.path());
    // A developer's .env naming production: microblog's config.py loads it,
    // without overriding what shipsafe passes in DATABASE_URL.
    common::write(
        dir.path(),
        ".env",
        &format!("DATABASE_URL={}\n", production.url().expose()),
    );
    let run = |args: &[&str]| {
        let out = common::shipsafe(dir.path())
            .args(["--format", "json"])
            .args(args)
            .env("STAGING_DATABASE_URL", staging.url().expose())
            .env("PRODUCTION_DATABASE_URL", production.url().expose())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .unwrap();
        (common::code(&out), common::json(&out), common::stderr(&out))
    };
    let out = common::shipsafe(dir.path()).arg("init").output().unwrap();
    assert_eq!(common::code(&out), 0, "{}", common::stderr(&out));
    let starter = std::fs::read_to_string(dir.path().join("shipsafe.toml")).unwrap();
    assert!(starter.contains("flask-migrate"), "{starter}");
    assert!(starter.contains("${PRODUCTION_DATABASE_URL}"), "{starter}");
    common::write(
        dir.path(),
        "shipsafe.toml",
        "[project]\nname = \"microblog\"\n\n[environments.staging]\ndatabase_url = \"${STAGING_DATABASE_URL}\"\nprotection = \"guarded\"\n\n[environments.production]\ndatabase_url = \"${PRODUCTION_DATABASE_URL}\"\nprotection = \"protected\"\n\n[migrations]\ntool = \"flask-migrate\"\nurl_env = \"DATABASE_URL\"\n\n[[checks]]\nname = \"users have unique emails\"\nsql = \"select count(*) - count(distinct email) from \\\"user\\\"\"\nexpect = \"= 0\"\n",
    );
    let (code, plan, err) = run(&["plan", "production"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(plan["pending"].as_array().unwrap().len(), 9, "{plan}");
    let warnings = plan["warnings"].to_string();
    assert!(
        warnings.contains("Procfile") && warnings.contains("boot.sh"),
        "{plan}"
    );
    for args in [
        &["deploy", "staging"][..],
        &["deploy", "production", "--confirm", "production"],
    ] {
        let (code, run, err) = run(args);
        assert_eq!(code, 0, "{args:?}: {err}\n{run}");
    }
    let head: String = one(&production, "select version_num::text from alembic_version").await;
    assert_eq!(head, "834b1a697901");
    production
        .client()
        .await
        .batch_execute(
            "insert into \"user\" (username, email) select 'u' || g, 'u' || g || '@example.com' from generate_series(1, 300) g",
        )
        .await
        .unwrap();
    // A new revision, as `flask db migrate` writes it.
    common::write(
        dir.path(),
        "migrations/versions/a1b2c3d4e5f6_user_timezone.py",
        "\"\"\"user timezone\n\nRevision ID: a1b2c3d4e5f6\nRevises: 834b1a697901\n\"\"\"\nfrom alembic import op\nimport sqlalchemy as sa\n\nrevision = 'a1b2c3d4e5f6'\ndown_revision = '834b1a697901'\nbranch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n    with op.batch_alter_table('user', schema=None) as batch_op:\n        batch_op.add_column(sa.Column('timezone', sa.String(length=64), nullable=True))\n\n\ndef downgrade():\n    with op.batch_alter_table('user', schema=None) as batch_op:\n        batch_op.drop_column('timezone')\n",
    );
    let (code, deployed, err) = run(&["deploy", "production", "--confirm", "production"]);
    assert_eq!(code, 0, "{err}\n{deployed}");
    assert_eq!(
        deployed["report"]["rehearsal"]["round_trip"]["status"], "proven",
        "{deployed}"
    );
    production
        .client()
        .await
        .batch_execute("insert into \"user\" (username, email) values ('late', 'late@example.com')")
        .await
        .unwrap();
    let (code, back, err) = run(&["rollback", "production", "--confirm", "production"]);
    assert_eq!(code, 0, "{err}\n{back}");
    assert_eq!(back["report"]["method"], "down", "{back}");
    let head: String = one(&production, "select version_num::text from alembic_version").await;
    assert_eq!(head, "834b1a697901");
    let users: i64 = one(&production, "select count(*) from \"user\"").await;
    assert_eq!(users, 301, "the user written after the deploy is kept");
    let tz: bool = one(
        &production,
        "select exists (select 1 from information_schema.columns where table_name = 'user' and column_name = 'timezone')",
    )
    .await;
    assert!(!tz);
    // Now the app lets .env override what it is given: a rehearsal's tool
    // reads production's URL, cannot reach it, and production is untouched.
    let config = std::fs::read_to_string(dir.path().join("config.py")).unwrap();
    let overriding = config.replace(
        "load_dotenv(os.path.join(basedir, '.env'))",
        "load_dotenv(os.path.join(basedir, '.env'), override=True)",
    );
    assert_ne!(config, overriding);
    common::write(dir.path(), "config.py", &overriding);
    let before = common::snapshot(production.url()).await;
    let (code, rehearsed, err) = run(&["rehearse", "production"]);
    assert_eq!(code, 1, "{err}\n{rehearsed}");
    assert_eq!(
        common::snapshot(production.url()).await,
        before,
        "production changed"
    );
}
