//! Migrations as a user drives them: deploy, verify, rollback on failure,
//! drift, dirty state, locks held by others, lock-timeout retries, and the
//! Prisma and Flyway layouts. Databases are compared before and after.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Project, load_sample, snapshot, write};
use shipsafe_testkit::TestDb;

/// Seed 003's schema before its migration.
const SEED_003_SCHEMA: &str = "
create type clinic_role as enum ('doctor', 'nurse');
create table customers (id serial primary key, name text not null, customer_code text);
create table workflow_states (id uuid primary key default gen_random_uuid(), name text);
create table sales_commissions (id serial primary key, amount numeric not null);
insert into customers (name, customer_code) values ('existing', 'CUST-000001');
insert into sales_commissions (amount) values (10), (20);
";

/// Seed 003's migration, as shipped (also linted by scripts/bench/lint).
const SEED_003_UP: &str = include_str!("fixtures/seed003_up.sql");

/// Seed 003's rollback procedure.
const SEED_003_DOWN: &str = "
DROP TRIGGER IF EXISTS set_customer_code ON customers;
DROP FUNCTION IF EXISTS generate_customer_code();
ALTER TABLE sales_commissions DROP COLUMN IF EXISTS workflow_id;
";

/// Seed 003's post-deployment check, as SQL: a new customer gets a code.
const SEED_003_VERIFY: &str = "
insert into customers (name) values ('verify test customer');
select customer_code like 'CUST-00%' from customers where name = 'verify test customer';
select exists (select 1 from pg_enum where enumlabel = 'beautician');
select count(*) = 0 from customers where name = 'verify test customer' and customer_code is null;
";

fn migration(p: &Project, dir: &str, up: &str, down: Option<&str>, verify: Option<&str>) {
    write(p.dir.path(), &format!("migrations/{dir}/up.sql"), up);
    if let Some(d) = down {
        write(p.dir.path(), &format!("migrations/{dir}/down.sql"), d);
    }
    if let Some(v) = verify {
        write(p.dir.path(), &format!("migrations/{dir}/verify.sql"), v);
    }
}

fn steps(run: &serde_json::Value) -> Vec<(String, String)> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn seed_003_migration_deploys_verifies_reverts_and_deploys_again() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(SEED_003_SCHEMA)
        .await
        .unwrap();
    let p = Project::new(&[("prod", "guarded", db.url())], "");
    // The linter rightly flags the non-concurrent index; this team accepts it.
    let up = SEED_003_UP.replace(
        "CREATE INDEX IF NOT EXISTS",
        "-- shipsafe:allow require-concurrent-index-creation sales_commissions has a few hundred rows\nCREATE INDEX IF NOT EXISTS",
    );
    migration(
        &p,
        "20260201120000_customer_code",
        &up,
        Some(SEED_003_DOWN),
        Some(SEED_003_VERIFY),
    );
    let before = snapshot(db.url()).await;

    let (code, run, err) = p.json(&["deploy", "prod"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "deployed");
    let names: Vec<String> = steps(&run).into_iter().map(|s| s.0).collect();
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
    assert_eq!(run["report"]["verified"][0]["assertions"], 3);
    let lint = run["report"]["lint"].as_array().unwrap();
    assert_eq!(lint.len(), 1);
    assert_eq!(lint[0]["suppressed"], true);
    assert_eq!(
        lint[0]["reason"],
        "sales_commissions has a few hundred rows"
    );
    assert!(run["backup_id"].as_str().unwrap().starts_with("prod-"));
    // verify.sql's test customer was rolled back.
    let c = db.client().await;
    let n: i64 = c
        .query_one("select count(*) from customers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let row = c
        .query_one(
            "insert into customers (name) values ('real') returning customer_code",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, String>(0).starts_with("CUST-00"));
    c.batch_execute("delete from customers where name = 'real'")
        .await
        .unwrap();

    // History records it.
    let h = c
        .query_one("select name, checksum, applied_by, run_id from shipsafe.migrations where version = '20260201120000'", &[])
        .await
        .unwrap();
    assert_eq!(h.get::<_, String>(0), "customer_code");
    assert!(h.get::<_, String>(1).starts_with("blake3:"));
    assert_eq!(
        h.get::<_, Option<String>>(3).as_deref(),
        run["run_id"].as_str()
    );

    // Down, then up again, through the engine.
    let migrations =
        shipsafe_migrate::discover(&p.dir.path().join("migrations"), Default::default()).unwrap();
    let opts = shipsafe_migrate::ApplyOptions {
        lock_timeout: std::time::Duration::from_secs(3),
        statement_timeout: std::time::Duration::from_secs(60),
        lock_retries: 0,
        applied_by: "test".into(),
        run_id: None,
    };
    shipsafe_migrate::apply::down(&c, &migrations[0], &opts)
        .await
        .unwrap();
    let cols: i64 = c
        .query_one("select count(*) from information_schema.columns where table_name = 'sales_commissions' and column_name = 'workflow_id'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(cols, 0, "down removed the column");
    let after_down = snapshot(db.url()).await;
    assert_eq!(after_down.rows, before.rows, "down keeps every row");
    let trigger: i64 = c
        .query_one(
            "select count(*) from pg_trigger where tgname = 'set_customer_code'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(trigger, 0, "down removed the trigger");
    let (code, run, err) = p.json(&["deploy", "prod"]);
    assert_eq!(code, 0, "up again: {err}");
    assert_eq!(run["outcome"], "deployed");
    let (code, run, _) = p.json(&["deploy", "prod"]);
    assert_eq!(code, 0);
    assert_eq!(run["outcome"], "nothing_to_do");
}

/// Without a rehearsal, down.sql is not trusted with the data: a guarded
/// deploy that fails is undone by restoring its backup, even when every
/// migration has a down.sql. (tests/rehearsal.rs covers the down path.)
#[tokio::test]
async fn a_failing_check_rolls_back_by_restore_when_down_was_not_rehearsed() {
    let db = TestDb::new().await;
    load_sample(db.url()).await;
    let checks = "[[checks]]\nname = \"every user has an email\"\nsql = \"select count(*) from users where email is null\"\nexpect = \"= 0\"\n";
    let p = Project::new(&[("staging", "guarded", db.url())], checks);
    let before = snapshot(db.url()).await;
    migration(
        &p,
        "20260301000000_optional_email",
        "alter table users alter column email drop not null;\nupdate users set email = null where username = 'user_a';",
        Some(
            "update users set email = 'user_a@sme.example' where username = 'user_a';\nalter table users alter column email set not null;",
        ),
        None,
    );
    let (code, run, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(run["outcome"], "rolled_back");
    assert_eq!(run["report"]["rollback"]["method"], "restore");
    assert!(run["report"]["rollback"]["safety_backup"].is_string());
    assert!(err.contains("every user has an email"), "{err}");
    let after = snapshot(db.url()).await;
    assert_eq!(after.rows, before.rows);
    assert_eq!(after.schema, before.schema, "schema as before");
    let report = p.dir.path().join(format!(
        ".shipsafe/reports/{}.md",
        run["run_id"].as_str().unwrap()
    ));
    assert!(
        std::fs::read_to_string(report)
            .unwrap()
            .contains("rolled_back")
    );
}

#[tokio::test]
async fn without_down_migrations_the_pre_deploy_backup_is_restored() {
    let db = TestDb::new().await;
    load_sample(db.url()).await;
    let p = Project::new(&[("staging", "guarded", db.url())], "");
    let before = snapshot(db.url()).await;
    migration(
        &p,
        "20260301000000_drop_phone",
        "-- shipsafe:irreversible\n-- shipsafe:allow ban-drop-column phone numbers move to contacts\nalter table users drop column phone;\n-- shipsafe:allow require-where-in-delete grants are re-imported\ndelete from tool_access;",
        None,
        Some("select count(*) > 0 from tool_access;"),
    );
    let (code, run, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(run["outcome"], "rolled_back");
    assert_eq!(run["report"]["rollback"]["method"], "restore");
    assert!(
        err.contains("verification of migration 20260301000000 failed"),
        "{err}"
    );
    assert!(err.contains("verify.sql:1:1"), "{err}");
    let after = snapshot(db.url()).await;
    assert_eq!(after.rows, before.rows);
    assert_eq!(after.schema, before.schema);
}

#[tokio::test]
async fn verify_select_false_fails_unlike_sqitch() {
    let db = TestDb::new().await;
    let p = Project::new(&[("dev", "open", db.url())], "");
    migration(
        &p,
        "1_t",
        "create table t (id int);",
        Some("drop table t;"),
        Some("select false;"),
    );
    let (code, run, err) = p.json(&["deploy", "dev"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("returned f, expected true"), "{err}");
    assert_eq!(run["report"]["rollback"]["method"], "down");
    let exists: bool = db
        .client()
        .await
        .query_one("select to_regclass('t') is not null", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!exists);
}

#[tokio::test]
async fn failure_in_the_third_statement_leaves_nothing_and_names_the_line() {
    let db = TestDb::new().await;
    load_sample(db.url()).await;
    let p = Project::new(&[("dev", "open", db.url())], "");
    let before = snapshot(db.url()).await;
    migration(
        &p,
        "1_three",
        "create table audit_trail (id int);\ninsert into audit_trail values (1);\n\ninsert into users (id) values (999);\n",
        None,
        None,
    );
    let (code, run, err) = p.json(&["deploy", "dev"]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(run["outcome"], "rolled_back");
    assert!(err.contains("migrations/1_three/up.sql:4:1"), "{err}");
    assert!(err.contains("violates not-null constraint"), "{err}");
    let after = snapshot(db.url()).await;
    assert_eq!(after.schema, before.schema);
    assert_eq!(after.rows, before.rows);
}

#[tokio::test]
async fn changed_file_after_apply_is_drift() {
    let db = TestDb::new().await;
    let p = Project::new(&[("dev", "open", db.url())], "");
    migration(&p, "1_t", "create table t (id int);", None, None);
    assert_eq!(p.json(&["deploy", "dev"]).0, 0);
    write(
        p.dir.path(),
        "migrations/1_t/up.sql",
        "create table t (id bigint);",
    );
    let (code, _, err) = p.json(&["plan", "dev"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("migration 1 was changed after it was applied"),
        "{err}"
    );
    let (code, run, err) = p.json(&["deploy", "dev"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(run["outcome"], "failed_nothing_changed");
}

#[tokio::test]
async fn half_applied_migration_blocks_the_next_deploy() {
    let db = TestDb::new().await;
    let p = Project::new(&[("dev", "open", db.url())], "");
    migration(
        &p,
        "1_half",
        "-- shipsafe:no-transaction\ncreate table a (id int);\nselect 1/0;\ncreate table b (id int);",
        None,
        None,
    );
    let (code, _, err) = p.json(&["deploy", "dev"]);
    assert_eq!(
        code, 5,
        "outside a transaction, the first statement stays: {err}"
    );
    assert!(err.contains("first 1 statement(s) stay applied"), "{err}");
    let (code, _, err) = p.json(&["deploy", "dev"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("migration 1 is half-applied"), "{err}");
}

#[tokio::test]
async fn a_second_concurrent_run_is_blocked() {
    let db = TestDb::new().await;
    let p = Project::new(&[("dev", "open", db.url())], "");
    migration(&p, "1_t", "create table t (id int);", None, None);
    let holder = common::hold_migration_lock(db.url()).await;
    let (code, run, err) = p.json(&["deploy", "dev"]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(run["outcome"], "blocked");
    assert!(
        err.contains("another shipsafe run holds the migration lock"),
        "{err}"
    );
    assert!(err.contains("pid "), "names the holder: {err}");
    let exists: bool = holder
        .query_one("select to_regclass('t') is not null", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!exists, "nothing changed");
    holder
        .execute("select pg_advisory_unlock_all()", &[])
        .await
        .unwrap();
    assert_eq!(p.json(&["deploy", "dev"]).0, 0);
}

#[tokio::test]
async fn lock_timeouts_are_retried_while_another_session_holds_the_table() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("create table busy (id int)")
        .await
        .unwrap();
    let cfg = "[migrations]\nlock_timeout = \"200ms\"\nlock_retries = 5\n";
    let p = Project::new(&[("dev", "open", db.url())], cfg);
    migration(
        &p,
        "1_add",
        "alter table busy add column note text;",
        None,
        None,
    );
    // Another session holds ACCESS EXCLUSIVE for a while, then lets go.
    let (blocker, conn) = tokio_postgres::connect(db.url().expose(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    blocker
        .batch_execute("begin; lock table busy in access exclusive mode")
        .await
        .unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        blocker.batch_execute("commit").await.unwrap();
        blocker
    });
    let (code, run, err) = tokio::task::spawn_blocking(move || {
        let r = p.json(&["deploy", "dev"]);
        (r.0, r.1, r.2)
    })
    .await
    .unwrap();
    release.await.unwrap();
    assert_eq!(code, 0, "{err}");
    let retries = run["report"]["applied"][0]["retries"].as_u64().unwrap();
    assert!(retries >= 1, "it had to retry: {run}");
}

/// A migration waiting for a lock queues the app's writes behind it: each
/// wait is kept short (at most 0.5 s) and retried after a pause, so while a
/// report query holds the table for 4 s the app's inserts never stall for
/// the whole `lock_timeout` (3 s) as they did with one long wait.
#[tokio::test]
async fn the_apps_writes_never_wait_long_behind_a_migration_waiting_for_its_lock() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("create table busy (id serial primary key, at timestamptz default now())")
        .await
        .unwrap();
    let p = Project::new(
        &[("dev", "open", db.url())],
        "[migrations]\nlock_timeout = \"3s\"\n",
    );
    migration(
        &p,
        "1_add",
        "alter table busy add column note text;",
        None,
        None,
    );
    let reader = db.client().await;
    reader
        .batch_execute("begin; select count(*) from busy")
        .await
        .unwrap();
    let writer = db.client().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let writes = tokio::spawn(async move {
        let mut worst = std::time::Duration::ZERO;
        let mut n = 0;
        while !stopping.load(std::sync::atomic::Ordering::SeqCst) {
            let t = std::time::Instant::now();
            writer
                .execute("insert into busy default values", &[])
                .await
                .unwrap();
            worst = worst.max(t.elapsed());
            n += 1;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        (worst, n)
    });
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(4)).await;
        reader.batch_execute("commit").await.unwrap();
    });
    let (code, run, err) = tokio::task::spawn_blocking(move || p.json(&["deploy", "dev"]))
        .await
        .unwrap();
    release.await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (worst, n) = writes.await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        run["report"]["applied"][0]["retries"].as_u64().unwrap() >= 2,
        "{run}"
    );
    assert!(n > 20, "the app wrote {n} rows");
    assert!(
        worst < std::time::Duration::from_millis(1500),
        "an app insert waited {worst:?} behind the migration"
    );
}

#[tokio::test]
async fn lock_timeout_without_retries_fails_and_says_so() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("create table busy (id int)")
        .await
        .unwrap();
    let p = Project::new(
        &[("dev", "open", db.url())],
        "[migrations]\nlock_timeout = \"100ms\"\nlock_retries = 0\n",
    );
    migration(
        &p,
        "1_add",
        "alter table busy add column note text;",
        None,
        None,
    );
    let blocker = db.client().await;
    blocker
        .batch_execute("begin; lock table busy in access exclusive mode")
        .await
        .unwrap();
    let (code, _, err) = p.json(&["deploy", "dev"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("lock timeout"), "{err}");
    assert!(err.contains("conflicting lock"), "{err}");
    blocker.batch_execute("rollback").await.unwrap();
}

#[tokio::test]
async fn concurrent_index_builds_run_outside_a_transaction_and_invalid_ones_are_dropped() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("create table t (email text); insert into t values ('a'), ('a'), ('b');")
        .await
        .unwrap();
    let p = Project::new(&[("dev", "open", db.url())], "");
    migration(
        &p,
        "1_idx",
        "create index concurrently t_email_idx on t (email);",
        Some("drop index concurrently t_email_idx;"),
        None,
    );
    let (code, run, err) = p.json(&["deploy", "dev"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["report"]["applied"][0]["transactional"], false);

    migration(
        &p,
        "2_unique",
        "create unique index concurrently t_email_key on t (email);",
        None,
        None,
    );
    let (code, _, err) = p.json(&["deploy", "dev"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("dropped the invalid index"), "{err}");
    let invalid: i64 = db
        .client()
        .await
        .query_one("select count(*) from pg_index where not indisvalid", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(invalid, 0, "no INVALID index left behind");
}

#[tokio::test]
async fn prisma_and_flyway_layouts_deploy() {
    let db = TestDb::new().await;
    let p = Project::new(
        &[("dev", "open", db.url())],
        "[migrations]\ndir = \"prisma/migrations\"\n",
    );
    write(
        p.dir.path(),
        "prisma/migrations/20260101000000_init/migration.sql",
        "create table p1 (id int);",
    );
    write(
        p.dir.path(),
        "prisma/migrations/20260102000000_more/migration.sql",
        "create table p2 (id int);",
    );
    write(
        p.dir.path(),
        "prisma/migrations/migration_lock.toml",
        "provider = \"postgresql\"",
    );
    let (code, run, err) = p.json(&["deploy", "dev"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["report"]["applied"].as_array().unwrap().len(), 2);

    let db2 = TestDb::new().await;
    let f = Project::new(
        &[("dev", "open", db2.url())],
        "[migrations]\ndir = \"db/migration\"\n",
    );
    write(
        f.dir.path(),
        "db/migration/V1__init.sql",
        "create table f1 (id int);",
    );
    write(
        f.dir.path(),
        "db/migration/V1.1__add.sql",
        "alter table f1 add column x int;",
    );
    let (code, run, err) = f.json(&["plan", "dev"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["pending"].as_array().unwrap().len(), 2);
    let (code, _, err) = f.json(&["deploy", "dev"]);
    assert_eq!(code, 0, "{err}");
    let cols: i64 = db2
        .client()
        .await
        .query_one(
            "select count(*) from information_schema.columns where table_name = 'f1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cols, 2);
}

/// `--rehearse` in a guarded environment: the check fails on the clone, so
/// the target is never touched.
#[tokio::test]
async fn a_guarded_deploy_with_rehearse_stops_on_the_clone() {
    let db = TestDb::new().await;
    load_sample(db.url()).await;
    let checks = "[[checks]]\nname = \"every user has an email\"\nsql = \"select count(*) from users where email is null\"\nexpect = \"= 0\"\n";
    let p = Project::new(&[("staging", "guarded", db.url())], checks);
    let before = snapshot(db.url()).await;
    migration(
        &p,
        "20260301000000_optional_email",
        "alter table users alter column email drop not null;\nupdate users set email = null where username = 'user_a';",
        Some("alter table users alter column email set not null;"),
        None,
    );
    let (code, run, err) = p.json(&["deploy", "staging", "--rehearse"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(run["outcome"], "blocked");
    assert!(err.contains("every user has an email"), "{err}");
    assert_eq!(snapshot(db.url()).await, before);
}

#[test]
fn new_creates_the_three_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "shipsafe.toml", "");
    let out = common::shipsafe(dir.path())
        .args(["--format", "json", "new", "Customer code!"])
        .output()
        .unwrap();
    assert_eq!(common::code(&out), 0, "{}", common::stderr(&out));
    let v = common::json(&out);
    let d = std::path::PathBuf::from(v["dir"].as_str().unwrap());
    assert!(
        d.file_name()
            .unwrap()
            .to_string_lossy()
            .ends_with("_customer_code")
    );
    for f in ["up.sql", "down.sql", "verify.sql"] {
        assert!(d.join(f).is_file(), "{f}");
    }
}

#[tokio::test]
async fn lint_errors_block_the_deploy_before_anything_changes() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(&format!("{SEED_003_SCHEMA} analyze sales_commissions;"))
        .await
        .unwrap();
    // Two rows count as a large table here, so the index finding stays an
    // error (small tables make it information: see the next test).
    let p = Project::new(
        &[("prod", "guarded", db.url())],
        "[lint]\nsmall_table_rows = 1\n",
    );
    migration(
        &p,
        "20260201120000_customer_code",
        SEED_003_UP,
        Some(SEED_003_DOWN),
        None,
    );
    let before = snapshot(db.url()).await;
    let (code, run, err) = p.json(&["deploy", "prod"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(run["outcome"], "blocked");
    assert!(
        err.contains("migrations/20260201120000_customer_code/up.sql:37:1: error[require-concurrent-index-creation]"),
        "{err}"
    );
    assert_eq!(snapshot(db.url()).await, before, "nothing changed");
    let (_, list, _) = p.json(&["backup", "list"]);
    assert_eq!(
        list.as_array().unwrap().len(),
        0,
        "blocked before the backup step"
    );
    let (code, plan, _) = p.json(&["plan", "prod"]);
    assert_eq!(code, 1);
    assert!(
        plan["problems"][0]
            .as_str()
            .unwrap()
            .contains("require-concurrent-index-creation")
    );
}

#[test]
fn lint_command_reports_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "shipsafe.toml", "");
    write(
        dir.path(),
        "migrations/1_a/up.sql",
        "create table t (id bigint primary key);\nalter table users drop column phone;\n",
    );
    write(dir.path(), "migrations/1_a/down.sql", "drop table t;");
    write(
        dir.path(),
        "migrations/2_b/up.sql",
        "-- shipsafe:allow ban-truncate staging data only\ntruncate sessions;\ncreate table e (at timestamp);\n",
    );
    let out = common::shipsafe(dir.path()).arg("lint").output().unwrap();
    assert_eq!(common::code(&out), 1);
    let text = common::stdout(&out);
    assert!(
        text.contains(
            "migrations/1_a/up.sql:2:1: error[ban-drop-column]: dropping column phone of users"
        ),
        "{text}"
    );
    assert!(text.contains("  help: "), "{text}");
    assert!(text.contains("warning[prefer-timestamptz]"), "{text}");
    assert!(text.contains("allowed: staging data only"), "{text}");
    assert!(
        !text.contains("down.sql"),
        "down.sql is not a forward migration: {text}"
    );
    assert!(
        text.contains("2 file(s) checked: 1 error(s), 1 warning(s), 0 info, 1 allowed"),
        "{text}"
    );

    let out = common::shipsafe(dir.path())
        .args(["--format", "json", "lint", "migrations/2_b/up.sql"])
        .output()
        .unwrap();
    assert_eq!(
        common::code(&out),
        0,
        "a suppressed error and a warning do not fail"
    );
    let v = common::json(&out);
    assert_eq!(v["files_checked"], 1);
    let f = &v["findings"][0];
    for key in [
        "rule",
        "severity",
        "file",
        "line",
        "column",
        "message",
        "help",
        "suppressed",
        "reason",
    ] {
        assert!(f.get(key).is_some(), "finding lacks {key}: {f}");
    }
    assert_eq!(f["rule"], "ban-truncate");
    assert_eq!(f["suppressed"], true);
    assert_eq!(f["reason"], "staging data only");
    assert_eq!(f["line"], 2);

    write(dir.path(), "bad.sql", "create tabel x (id int);");
    let out = common::shipsafe(dir.path())
        .args(["lint", "bad.sql"])
        .output()
        .unwrap();
    assert_eq!(common::code(&out), 1);
    assert!(
        common::stderr(&out).contains("bad.sql"),
        "{}",
        common::stderr(&out)
    );
}

#[tokio::test]
async fn status_counts_pending_migrations_and_reports_drift() {
    let db = TestDb::new().await;
    let p = Project::new(&[("dev", "open", db.url())], "");
    migration(&p, "1_a", "create table a (id bigint);", None, None);
    migration(&p, "2_b", "create table b (id bigint);", None, None);
    let (_, st, _) = p.json(&["status", "dev"]);
    assert_eq!(st["environments"][0]["pending_migrations"], 2);
    assert_eq!(p.json(&["deploy", "dev"]).0, 0);
    let (_, st, _) = p.json(&["status", "dev"]);
    assert_eq!(st["environments"][0]["pending_migrations"], 0);
    write(
        p.dir.path(),
        "migrations/1_a/up.sql",
        "create table a (id int);",
    );
    let out = p.cmd().args(["status", "dev"]).output().unwrap();
    let text = common::stdout(&out);
    assert!(text.contains("ERROR"), "{text}");
    assert!(
        text.contains("migration 1 was changed after it was applied"),
        "{text}"
    );
}

/// A window on the day after tomorrow (UTC): certainly closed now.
fn closed_window() -> String {
    let day = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .tomorrow()
        .unwrap()
        .tomorrow()
        .unwrap();
    format!("{} 00:00-24:00 UTC", day.strftime("%a"))
}

fn with_env_line(p: &Project, line: &str) {
    let cfg = std::fs::read_to_string(p.dir.path().join("shipsafe.toml")).unwrap();
    write(
        p.dir.path(),
        "shipsafe.toml",
        &cfg.replacen("protection = ", &format!("{line}\nprotection = "), 1),
    );
}

#[tokio::test]
async fn outside_the_window_deploy_is_blocked_and_override_is_audited() {
    let db = TestDb::new().await;
    let p = Project::new(&[("staging", "guarded", db.url())], "");
    with_env_line(&p, &format!("window = \"{}\"", closed_window()));
    migration(
        &p,
        "1_t",
        "create table t (id bigint);",
        Some("drop table t;"),
        None,
    );
    let (code, run, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(run["outcome"], "blocked");
    assert!(err.contains("outside the maintenance window"), "{err}");
    assert!(err.contains("--override"), "{err}");
    let exists: bool = db
        .client()
        .await
        .query_one("select to_regclass('t') is not null", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!exists, "nothing changed");

    let (code, run, err) = p.json(&["deploy", "staging", "--override", "hotfix for incident 42"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "deployed");
    let (_, log, _) = p.json(&["log", "--limit", "1"]);
    assert_eq!(log["entries"][0]["command"], "deploy");
    assert_eq!(
        log["entries"][0]["detail"]["override"],
        "hotfix for incident 42"
    );
    assert_eq!(log["entries"][0]["detail"]["gates"][0]["passed"], false);
    let out = p.cmd().arg("log").output().unwrap();
    assert!(common::stdout(&out).contains("deployed"));
}

#[tokio::test]
async fn inside_the_window_deploy_goes_ahead() {
    let db = TestDb::new().await;
    let p = Project::new(&[("staging", "guarded", db.url())], "");
    with_env_line(&p, "window = \"daily 00:00-24:00 UTC\"");
    migration(
        &p,
        "1_t",
        "create table t (id bigint);",
        Some("drop table t;"),
        None,
    );
    let (code, _, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 0, "{err}");
}

#[tokio::test]
async fn the_git_gate_needs_a_clean_tree_on_the_branch() {
    let db = TestDb::new().await;
    let p = Project::new(&[("staging", "guarded", db.url())], "");
    with_env_line(&p, "git_branch = \"main\"");
    migration(
        &p,
        "1_t",
        "create table t (id bigint);",
        Some("drop table t;"),
        None,
    );
    let (code, _, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("not a git checkout"), "{err}");

    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(p.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"]);
    write(p.dir.path(), ".gitignore", ".shipsafe/\n");
    git(&["add", "-A"]);
    git(&["commit", "-qm", "init"]);
    write(p.dir.path(), "migrations/1_t/verify.sql", "select true;");
    let (code, _, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("uncommitted changes on main"), "{err}");
    git(&["add", "-A"]);
    git(&["commit", "-qm", "verify"]);
    let (code, _, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 0, "{err}");
}

#[tokio::test]
async fn shipsafe_killed_between_apply_and_verify_then_rollback_restores_the_pre_deploy_state() {
    let db = TestDb::new().await;
    load_sample(db.url()).await;
    let p = Project::new(&[("staging", "guarded", db.url())], "");
    let before = snapshot(db.url()).await;
    // verify.sql takes a while: the migration has committed when it runs.
    migration(
        &p,
        "1_wreck",
        "-- shipsafe:allow require-where-in-delete the test deletes on purpose\ndelete from tool_access;\nalter table tools add column legacy boolean;",
        Some("alter table tools drop column legacy;"),
        Some("select pg_sleep(3) is not null;"),
    );
    let mut child = p.spawn(&["deploy", "staging"]);
    let c = db.client().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let applied: bool = c
            .query_one(
                "select to_regclass('shipsafe.migrations') is not null and exists (select 1 from shipsafe.migrations)",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(false);
        if applied {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the migration never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    child.kill().unwrap(); // SIGKILL: no cleanup, no rollback, no record of the end
    child.wait().unwrap();
    // The next start notes the killed run in the audit log, once.
    for _ in 0..2 {
        let (code, log, err) = p.json(&["log"]);
        assert_eq!(code, 0, "{err}");
        let interrupted = log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["outcome"] == "interrupted" && e["command"] == "deploy")
            .count();
        assert_eq!(interrupted, 1, "{log}");
    }
    let grants: i64 = c
        .query_one("select count(*) from tool_access", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(grants, 0, "the change is in the database");

    // The killed process's server session ends once the server notices its
    // client is gone (about a second, client_connection_check_interval);
    // while anything holds the migration lock a rollback is refused rather
    // than racing it. The test takes the lock itself as soon as the orphan
    // lets go, so the refusal does not depend on how fast that was.
    let holder = db.client().await;
    holder
        .query_one(
            "select pg_advisory_lock($1)",
            &[&shipsafe_migrate::history::LOCK_KEY],
        )
        .await
        .unwrap();
    let (code, _, err) = p.json(&["rollback", "staging"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("holds the migration lock"), "{err}");
    drop(holder);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let held: bool = c
            .query_one(
                "select exists (select 1 from pg_locks where locktype = 'advisory' and ((classid::bigint << 32) | objid::bigint) = $1)",
                &[&shipsafe_migrate::history::LOCK_KEY],
            )
            .await
            .unwrap()
            .get(0);
        if !held {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was never let go"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A restore discards what was written since the backup: said first,
    // and not done without a confirmation in a guarded environment.
    c.batch_execute("insert into tools (name) values ('written after the deploy')")
        .await
        .unwrap();
    // Statistics reach the server's counters when a session flushes them.
    c.batch_execute("select pg_stat_force_next_flush()")
        .await
        .unwrap();
    c.batch_execute("select 1").await.unwrap();
    let after_write = snapshot(db.url()).await;
    let (code, _, err) = p.json(&["rollback", "staging"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("ago)"), "{err}");
    assert!(err.contains("is discarded"), "{err}");
    assert!(
        err.contains("rows inserted, updated or deleted since"),
        "{err}"
    );
    assert!(err.contains("--confirm staging"), "{err}");
    assert_eq!(snapshot(db.url()).await, after_write, "nothing changed");
    let (code, run, err) = p.json(&["rollback", "staging", "--confirm", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "rolled_back");
    assert_eq!(run["report"]["method"], "restore");
    assert!(
        run["report"]["discards"]["rows_written_since"]
            .as_i64()
            .unwrap()
            >= 1,
        "{run}"
    );
    assert!(
        run["report"]["safety_backup"]
            .as_str()
            .unwrap()
            .starts_with("staging-")
    );
    assert_eq!(
        snapshot(db.url()).await,
        before,
        "the pre-deploy state is back"
    );

    // Nothing left to roll back.
    let (code, run, _) = p.json(&["rollback", "staging"]);
    assert_eq!(code, 0);
    assert_eq!(run["outcome"], "nothing_to_do");
    // A run that changed nothing cannot be named for a rollback.
    let (_, log, _) = p.json(&["log", "--env", "staging"]);
    let rolled_back = log
        .as_array()
        .or(log["entries"].as_array())
        .unwrap()
        .iter()
        .find_map(|e| {
            e["run_id"]
                .as_str()
                .filter(|_| e["command"] == "rollback")
                .map(str::to_string)
        })
        .unwrap();
    let (code, _, err) = p.json(&["rollback", "staging", "--run", &rolled_back]);
    assert_eq!(code, 64, "{err}");
}

/// Exit 4 says "the database is as it was before". A deploy that applied its
/// change and then could not write its report must not say that.
#[tokio::test]
async fn a_report_that_cannot_be_written_after_the_change_is_not_exit_4() {
    let db = TestDb::new().await;
    let p = Project::new(&[("dev", "open", db.url())], "");
    migration(
        &p,
        "1_t",
        "create table t (id int);",
        Some("drop table t;"),
        None,
    );
    // The reports folder cannot be created: a file is in its place.
    write(p.dir.path(), ".shipsafe/reports", "not a folder");
    let (code, _, err) = p.json(&["deploy", "dev"]);
    let exists: bool = db
        .client()
        .await
        .query_one("select to_regclass('t') is not null", &[])
        .await
        .unwrap()
        .get(0);
    assert!(exists, "the change was applied");
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("holds its changes"), "{err}");
}

/// The audit chain's head is kept outside state.db (the environment's
/// database, each backup manifest): a state.db replaced by an older copy, or
/// deleted, fails `log verify` although its own chain is intact.
#[tokio::test]
async fn log_verify_catches_a_state_db_that_lost_entries_or_is_gone() {
    let db = TestDb::new().await;
    let p = Project::new(&[("dev", "guarded", db.url())], "");
    let state = p.dir.path().join(".shipsafe/state.db");
    let deploy = |n: u32| {
        migration(
            &p,
            &format!("{n}_t{n}"),
            &format!("create table t{n} (id int);"),
            None,
            None,
        );
        let (code, _, err) = p.json(&["deploy", "dev"]);
        assert_eq!(code, 0, "{err}");
    };
    deploy(1);
    let old_copy = std::fs::read(&state).unwrap();
    deploy(2);
    deploy(3);
    let (code, report, err) = p.json(&["log", "verify"]);
    assert_eq!(code, 0, "{err}");
    let anchors = report["anchors_checked"].as_array().unwrap();
    assert!(
        anchors
            .iter()
            .any(|a| a.as_str().unwrap().starts_with("dev's database: entry 2")),
        "{report}"
    );
    assert!(
        anchors
            .iter()
            .any(|a| a.as_str().unwrap().starts_with("backup dev-")),
        "{report}"
    );
    let in_db: i64 = db
        .client()
        .await
        .query_one("select seq from shipsafe.audit_head", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_db, 2);

    // An older copy of state.db: its own chain is intact, the anchors are not.
    std::fs::write(&state, &old_copy).unwrap();
    let (code, report, _) = p.json(&["log", "verify"]);
    assert_eq!(code, 1, "{report}");
    let text = report["problems"].to_string();
    assert!(text.contains("which the log does not have"), "{text}");

    // No state.db at all.
    std::fs::remove_file(&state).unwrap();
    let (code, report, _) = p.json(&["log", "verify"]);
    assert_eq!(code, 1, "{report}");
    assert!(
        report["problems"]
            .to_string()
            .contains("state.db is missing"),
        "{report}"
    );
}

/// A history shaped like Prisma's (tables first, then foreign keys, indexes,
/// NOT NULL columns and drops in later files), deployed to an empty database:
/// every object the lint would worry about is created by an earlier
/// migration of the same pending batch, so nothing blocks, and no
/// allow-comment is needed.
fn prisma_like_history(p: &Project) {
    let mut v = 0;
    let mut next = |p: &Project, name: &str, sql: &str| {
        v += 1;
        migration(p, &format!("{v}_{name}"), sql, None, None);
    };
    for t in 0..20 {
        next(
            p,
            &format!("create_t{t}"),
            &format!("create table t{t} (id bigint primary key, parent_id bigint, note text);"),
        );
    }
    for t in 1..20 {
        next(
            p,
            &format!("fk_t{t}"),
            &format!(
                "alter table t{t} add constraint t{t}_parent foreign key (parent_id) references t{} (id);",
                t - 1
            ),
        );
    }
    for t in 0..10 {
        next(
            p,
            &format!("index_t{t}"),
            &format!("create index t{t}_parent on t{t} (parent_id);"),
        );
    }
    for t in 0..10 {
        next(
            p,
            &format!("status_t{t}"),
            &format!("alter table t{t} add column status text not null;"),
        );
    }
    next(p, "drop_note", "alter table t0 drop column note;");
}

#[tokio::test]
async fn a_migration_history_deploys_to_an_empty_database_without_allow_comments() {
    for protection in ["open", "guarded", "protected"] {
        let db = TestDb::new().await;
        let p = Project::new(&[("fresh", protection, db.url())], "");
        prisma_like_history(&p);
        let (code, run, err) = p.json(&["deploy", "fresh", "--confirm", "fresh"]);
        assert_eq!(code, 0, "{protection}: {err}");
        assert_eq!(run["outcome"], "deployed", "{protection}");
        let n: i64 = db
            .client()
            .await
            .query_one("select count(*) from shipsafe.migrations", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 60, "{protection}");
    }
    // The same files linted one by one (not as one history) find the errors
    // the batch context removes.
    let db = TestDb::new().await;
    let p = Project::new(&[("fresh", "open", db.url())], "");
    prisma_like_history(&p);
    let out = p
        .cmd()
        .args(["--format", "json", "lint", "migrations/45_index_t5/up.sql"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = p
        .cmd()
        .args(["--format", "json", "lint", "migrations"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Seed 003's migration as shipped (a plain CREATE INDEX on
/// sales_commissions): on a small table the target's catalog turns the
/// finding into information with its evidence and the deploy goes through;
/// when the table is larger than `[lint] small_table` it is an error again.
#[tokio::test]
async fn seed_003_deploys_to_a_small_table_and_is_blocked_on_a_large_one() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(SEED_003_SCHEMA)
        .await
        .unwrap();
    let p = Project::new(&[("prod", "guarded", db.url())], "");
    migration(
        &p,
        "20260201120000_customer_code",
        SEED_003_UP,
        Some(SEED_003_DOWN),
        None,
    );
    let (code, plan, err) = p.json(&["plan", "prod"]);
    assert_eq!(code, 0, "{err}");
    let finding = plan["lint"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "require-concurrent-index-creation")
        .unwrap()
        .clone();
    assert_eq!(finding["severity"], "info", "{finding}");
    let evidence = finding["evidence"].as_str().unwrap();
    assert!(
        evidence.contains("sales_commissions: 2 rows") || evidence.contains("rows not counted"),
        "{evidence}"
    );
    let (code, run, err) = p.json(&["deploy", "prod"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "deployed");

    // The same migration against a sales_commissions above the threshold.
    let big = TestDb::new().await;
    big.client()
        .await
        .batch_execute(&format!(
            "{SEED_003_SCHEMA} insert into sales_commissions (amount) select g from generate_series(1, 5000) g; analyze sales_commissions;"
        ))
        .await
        .unwrap();
    let p = Project::new(
        &[("prod", "guarded", big.url())],
        "[lint]\nsmall_table_rows = 1000\n",
    );
    migration(
        &p,
        "20260201120000_customer_code",
        SEED_003_UP,
        Some(SEED_003_DOWN),
        None,
    );
    let (code, _, err) = p.json(&["deploy", "prod"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("error[require-concurrent-index-creation]"),
        "{err}"
    );
    assert!(err.contains("sales_commissions: 5,002 rows"), "{err}");
    // lint --env shows the same evidence; without a target the rule is an error.
    let out = p.cmd().args(["lint", "--env", "prod"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("evidence: sales_commissions: 5,002 rows")
    );
}

/// Prisma quotes its table names ("User", "Order"): the catalog lookup must
/// find them as stored, not fold them to lower case and call them new.
#[tokio::test]
async fn table_sizes_are_read_for_quoted_mixed_case_names() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            r#"create table "Order" (id int primary key, "customerId" int);
               insert into "Order" select g, g from generate_series(1, 5000) g;
               analyze "Order";"#,
        )
        .await
        .unwrap();
    let p = Project::new(
        &[("prod", "guarded", db.url())],
        "[lint]\nsmall_table_rows = 1000\n",
    );
    migration(
        &p,
        "1_idx",
        r#"create index "Order_customerId_idx" on "Order" ("customerId");"#,
        None,
        None,
    );
    let (code, _, err) = p.json(&["deploy", "prod"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("evidence: Order: 5,000 rows"), "{err}");
}

/// Every scheduled job is a run. 20,000 of them after a deploy do not hide
/// it: `rollback --run` and `rollback` find it, and `backup prune` keeps the
/// pre-deploy backup a rollback would restore.
#[tokio::test]
async fn twenty_thousand_job_runs_hide_no_deploy_from_rollback_or_retention() {
    let db = TestDb::new().await;
    let p = Project::new(
        &[("staging", "guarded", db.url())],
        "[backups]\nretention = { keep_last = 0, keep_daily = 0, keep_monthly = 0 }\n",
    );
    migration(
        &p,
        "1_t",
        "create table t (id int);",
        Some("drop table t;"),
        None,
    );
    let (code, first, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 0, "{err}");
    let first_id = first["run_id"].as_str().unwrap().to_string();
    let first_backup = first["backup_id"].as_str().unwrap().to_string();
    // A newer, verified backup: retention's own "newest verified" rule does
    // not cover the deploy's backup.
    let (code, newer, err) = p.json(&["backup", "create", "staging"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = p.json(&["backup", "verify", newer["id"].as_str().unwrap()]);
    assert_eq!(code, 0, "{err}");

    let state = rusqlite::Connection::open(p.dir.path().join(".shipsafe/state.db")).unwrap();
    state.execute_batch("begin").unwrap();
    {
        let mut insert = state
            .prepare(
                "insert into runs (run_id, command, env, outcome, started_at, duration_ms, report) \
                 values (?1, 'serve checks', 'staging', 'ok', ?2, 5, '{}')",
            )
            .unwrap();
        for i in 0..20_000 {
            insert
                .execute(rusqlite::params![
                    format!("job-{i:05}"),
                    format!("2100-01-01T00:00:{:02}.{:06}Z", i / 10_000, i % 10_000)
                ])
                .unwrap();
        }
    }
    state.execute_batch("commit").unwrap();

    let (code, pruned, err) = p.json(&["backup", "prune", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !pruned["deleted"].to_string().contains(&first_backup),
        "pruned the backup rollback needs: {pruned}"
    );
    let (code, run, err) = p.json(&[
        "rollback",
        "staging",
        "--run",
        &first_id,
        "--confirm",
        "staging",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "rolled_back", "{run}");

    let (code, second, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 0, "{err}");
    let (code, run, err) = p.json(&["rollback", "staging", "--confirm", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["report"]["rolled_back_run"], second["run_id"], "{run}");
}

/// Going back with `down` drops what the deploy created, and what the app
/// wrote into it since the rehearsal proved the round trip on an empty
/// table: rollback counts that now, names it before asking (guarded needs
/// the confirmation, like a restore), and takes a safety backup first.
#[tokio::test]
async fn a_rollback_by_down_names_the_data_it_drops_and_backs_it_up_first() {
    let db = TestDb::new().await;
    let p = Project::new(&[("staging", "guarded", db.url())], "");
    migration(
        &p,
        "1_notes",
        "create table notes (id int primary key, body text);\nalter table orders_x add column memo text;",
        Some("alter table orders_x drop column memo;\ndrop table notes;"),
        None,
    );
    db.client()
        .await
        .batch_execute(
            "create table orders_x (id int primary key); insert into orders_x values (1), (2);",
        )
        .await
        .unwrap();
    let (code, run, err) = p.json(&["deploy", "staging", "--rehearse"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        run["report"]["rehearsal"]["round_trip"]["status"], "proven",
        "{run}"
    );
    db.client()
        .await
        .batch_execute("insert into notes values (1, 'a'), (2, 'b'), (3, 'c'); update orders_x set memo = 'keep me' where id = 1;")
        .await
        .unwrap();
    // Without the confirmation nothing is dropped.
    let (code, _, err) = p.json(&["rollback", "staging"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("table public.notes (3 rows)"), "{err}");
    assert!(
        err.contains("column public.orders_x.memo (1 value)"),
        "{err}"
    );
    let notes: i64 = db
        .client()
        .await
        .query_one("select count(*) from notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(notes, 3, "nothing was changed");
    let (code, out, err) = p.json(&["rollback", "staging", "--confirm", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out["report"]["method"], "down", "{out}");
    assert_eq!(
        out["report"]["down_drops"],
        serde_json::json!([
            "column public.orders_x.memo (1 value)",
            "table public.notes (3 rows)"
        ]),
        "{out}"
    );
    let safety = out["report"]["safety_backup"]
        .as_str()
        .expect("a safety backup");
    let (code, list, err) = p.json(&["backup", "list", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert!(list.to_string().contains(safety), "{list}");
}

/// A migration that misses a lock after an earlier statement did its work
/// (which would be redone on each attempt, holding its lock) goes back to
/// waiting up to `lock_timeout` per attempt instead of many short ones.
#[tokio::test]
async fn a_lock_missed_after_earlier_work_is_waited_for_whole() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("create table a (id int); create table b (id int); insert into a select generate_series(1, 1000);")
        .await
        .unwrap();
    let p = Project::new(
        &[("dev", "open", db.url())],
        "[migrations]\nlock_timeout = \"2s\"\nlock_retries = 5\n",
    );
    migration(
        &p,
        "1_two",
        "alter table a alter column id type bigint;\nalter table b add column note text;",
        None,
        None,
    );
    let reader = db.client().await;
    reader
        .batch_execute("begin; select count(*) from b")
        .await
        .unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(4000)).await;
        reader.batch_execute("commit").await.unwrap();
    });
    let (code, run, err) = tokio::task::spawn_blocking(move || p.json(&["deploy", "dev"]))
        .await
        .unwrap();
    release.await.unwrap();
    assert_eq!(code, 0, "{err}");
    let retries = run["report"]["applied"][0]["retries"].as_u64().unwrap();
    assert!(
        (1..=2).contains(&retries),
        "{retries} attempts redid the rewrite of a: {run}"
    );
}

/// A rollback that restores the pre-deploy backup throws away what was
/// written since; its safety backup holds that, and retention keeps it for
/// a month however few backups it keeps otherwise (the next deploy's
/// retention step pruned it within minutes).
#[tokio::test]
async fn retention_keeps_what_a_rollback_threw_away() {
    let db = TestDb::new().await;
    let p = Project::new(
        &[("staging", "guarded", db.url())],
        "[backups]\nretention = { keep_last = 1, keep_daily = 0, keep_monthly = 0 }\n",
    );
    migration(&p, "1_t", "create table t (id int);", None, None);
    let (code, _, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 0, "{err}");
    db.client()
        .await
        .batch_execute("insert into t values (1), (2)")
        .await
        .unwrap();
    let (code, run, err) = p.json(&["rollback", "staging", "--confirm", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["report"]["method"], "restore", "{run}");
    let safety = run["report"]["safety_backup"].as_str().unwrap().to_string();
    for _ in 0..2 {
        let (code, _, err) = p.json(&["backup", "create", "staging"]);
        assert_eq!(code, 0, "{err}");
    }
    let (code, pruned, err) = p.json(&["backup", "prune", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !pruned["deleted"].as_array().unwrap().is_empty(),
        "{pruned}"
    );
    let kept = pruned["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == safety.as_str())
        .unwrap_or_else(|| panic!("{pruned}"));
    assert_eq!(kept["keep"], true, "{pruned}");
    assert!(kept["reasons"].to_string().contains("discarded"), "{kept}");
}
