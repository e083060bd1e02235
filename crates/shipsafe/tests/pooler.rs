//! Transaction-mode poolers (pgbouncer, started by the test, in front of the
//! test server): reads work through one, changes are refused with a message
//! asking for the direct URL; in session mode changes work.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Project, code, stderr, stdout, write};
use shipsafe_config::DbUrl;
use shipsafe_testkit::TestDb;
use shipsafe_testkit::servers::Pgbouncer;

async fn setup(mode: &str) -> (TestDb, Pgbouncer, Project) {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute("create table t (id int primary key); insert into t values (1), (2)")
        .await
        .unwrap();
    let upstream = db.url().conninfo().unwrap().port();
    let mode = mode.to_string();
    let bouncer = tokio::task::spawn_blocking(move || Pgbouncer::start(upstream, &mode))
        .await
        .unwrap();
    // The URL carries no pooler hint (plain host, random port): only the
    // behaviour probe can tell.
    let url = DbUrl::new(bouncer.url(db.name()));
    let p = Project::new(&[("production", "guarded", &url)], "");
    write(
        p.dir.path(),
        "migrations/1_note/up.sql",
        "alter table t add column note text;",
    );
    write(
        p.dir.path(),
        "migrations/1_note/down.sql",
        "alter table t drop column note;",
    );
    (db, bouncer, p)
}

async fn has_note(db: &TestDb) -> bool {
    db.client()
        .await
        .query_one(
            "select count(*) = 1 from information_schema.columns where table_name = 't' and column_name = 'note'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn transaction_pooler_reads_work_and_changes_are_refused() {
    let (db, _bouncer, p) = setup("transaction").await;
    for args in [&["status", "production"][..], &["plan", "production"][..]] {
        let o = p.cmd().args(args).output().unwrap();
        assert_eq!(code(&o), 0, "{args:?}: {}{}", stdout(&o), stderr(&o));
    }
    let o = p.cmd().args(["plan", "production"]).output().unwrap();
    assert!(stdout(&o).contains("1 pending"), "{}", stdout(&o));

    let o = p.cmd().args(["deploy", "production"]).output().unwrap();
    assert_eq!(code(&o), 78, "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("transaction-mode connection pooler"), "{err}");
    assert!(err.contains("direct database URL"), "{err}");
    assert!(!has_note(&db).await, "the change went through the pooler");
    // Nothing was backed up or changed before the refusal.
    assert!(!p.backups_dir().exists() || std::fs::read_dir(p.backups_dir()).unwrap().count() == 0);

    let o = p
        .cmd()
        .args(["wipe", "production", "--keep", "t:id = 1"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 78, "{}{}", stdout(&o), stderr(&o));
}

#[tokio::test]
async fn session_pooler_deploys() {
    let (db, _bouncer, p) = setup("session").await;
    let o = p.cmd().args(["deploy", "production"]).output().unwrap();
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(has_note(&db).await);
}

/// The team's tool deploys through a session pooler that refuses startup
/// options it does not handle (pgbouncer's default): shipsafe gives the
/// tool the dead-client check only where a connection with it is accepted.
#[tokio::test]
async fn a_tool_deploys_through_a_pooler_that_refuses_startup_options() {
    let db = TestDb::new().await;
    let upstream = db.url().conninfo().unwrap().port();
    let bouncer = tokio::task::spawn_blocking(move || {
        Pgbouncer::start_ignoring(upstream, "session", "extra_float_digits")
    })
    .await
    .unwrap();
    let url = DbUrl::new(bouncer.url(db.name()));
    let p = Project::new(
        &[("dev", "open", &url)],
        "\n[migrations]\ntool = \"command\"\nup = \"psql -X -v ON_ERROR_STOP=1 \\\"$DATABASE_URL\\\" -c 'create table t_tool (id int)'\"\npending = \"false\"\n",
    );
    let out = p.cmd().args(["deploy", "dev"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let made: bool = db
        .client()
        .await
        .query_one("select to_regclass('t_tool') is not null", &[])
        .await
        .unwrap()
        .get(0);
    assert!(made);
}
