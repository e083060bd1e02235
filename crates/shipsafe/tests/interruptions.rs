//! When shipsafe is stopped or dies in the middle of a run: Ctrl-C during a
//! long step that changes nothing, a second Ctrl-C, kill -9 during a
//! migration. Each test stops a real process and then looks at the
//! database, the run history and the audit log.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Project, snapshot, write};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shipsafe_testkit::TestDb;

async fn target() -> TestDb {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "create table orders (id bigserial primary key, total int not null);
             insert into orders (total) select g from generate_series(1, 100) g;",
        )
        .await
        .unwrap();
    db
}

fn migration(p: &Project, dir: &str, up: &str, down: &str) {
    write(p.dir.path(), &format!("migrations/{dir}/up.sql"), up);
    write(p.dir.path(), &format!("migrations/{dir}/down.sql"), down);
}

fn wait_for(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &std::process::Child, s: Signal) {
    kill(Pid::from_raw(child.id() as i32), s).unwrap();
}

/// The runs of the project, newest first.
fn runs(p: &Project) -> Vec<serde_json::Value> {
    let store = shipsafe_state::StateStore::open(&p.dir.path().join(".shipsafe")).unwrap();
    store
        .runs(None, 100)
        .unwrap()
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect()
}

fn audit_outcomes(p: &Project) -> Vec<(String, String)> {
    let (code, log, err) = p.json(&["log"]);
    assert_eq!(code, 0, "{err}");
    log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["command"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A Ctrl-C cancels a rehearsal that would take minutes at once: the clone
/// command's process group is stopped, the run ends `interrupted` (exit 4)
/// with the step recorded as such, and production is untouched.
#[tokio::test]
async fn ctrl_c_cancels_a_long_rehearsal_at_once() {
    let prod = target().await;
    let clone = TestDb::new().await;
    let p = Project::new(&[("production", "protected", prod.url())], "");
    write(
        p.dir.path(),
        "make-clone.sh",
        &format!(
            "#!/bin/sh\ntouch cloning\nsleep 60\ntouch cloned\necho '{}'\n",
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
        "alter table orders drop column status;",
    );
    let before = snapshot(prod.url()).await;
    let mut child = p.spawn(&["deploy", "production", "--confirm", "production"]);
    let marker = p.dir.path().join("cloning");
    wait_for("the clone command", Duration::from_secs(60), || {
        marker.exists()
    });
    let sent = Instant::now();
    signal(&child, Signal::SIGINT);
    let status = child.wait().unwrap();
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(4), "{status:?}");
    // The clone command would have run another minute.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !p.dir.path().join("cloned").exists(),
        "the clone command ran on"
    );
    assert_eq!(snapshot(prod.url()).await, before, "production changed");
    let run = runs(&p)
        .into_iter()
        .find(|r| r["command"] == "deploy")
        .unwrap();
    assert_eq!(run["outcome"], "interrupted", "{run}");
    let rehearse = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "rehearse")
        .unwrap_or_else(|| panic!("{run}"));
    assert_eq!(rehearse["status"], "interrupted", "{run}");
    assert!(
        audit_outcomes(&p).contains(&("deploy".into(), "interrupted".into())),
        "no audit entry"
    );
}

/// A second Ctrl-C ends shipsafe at once, even in a step that cannot be
/// cancelled (the team's tool asked what is pending): the run is still
/// recorded, `interrupted`, with its audit entry.
#[tokio::test]
async fn a_second_ctrl_c_ends_at_once_and_the_run_is_recorded() {
    let prod = target().await;
    let p = Project::new(
        &[("staging", "guarded", prod.url())],
        "[migrations]\ntool = \"command\"\nup = \"true\"\npending = \"touch asking; sleep 60; exit 1\"\nurl_env = \"DATABASE_URL\"\n",
    );
    let mut child = p.spawn(&["deploy", "staging"]);
    let marker = p.dir.path().join("asking");
    wait_for("the pending command", Duration::from_secs(60), || {
        marker.exists()
    });
    signal(&child, Signal::SIGINT);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first Ctrl-C waits for the step"
    );
    signal(&child, Signal::SIGINT);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    let run = runs(&p)
        .into_iter()
        .find(|r| r["command"] == "deploy")
        .expect("the run is recorded");
    assert_eq!(run["outcome"], "interrupted", "{run}");
    assert!(
        audit_outcomes(&p).contains(&("deploy".into(), "interrupted".into())),
        "no audit entry"
    );
}

/// Waits until a session of this test's database runs the migration's
/// `pg_sleep(SECONDS)`.
async fn until_the_migration_sleeps(client: &tokio_postgres::Client, seconds: u32) {
    let pattern = format!("%pg_sleep({seconds})%");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sleeping: bool = client
            .query_one(
                "select exists (select 1 from pg_stat_activity where datname = current_database() and query like $1 and pid <> pg_backend_pid())",
                &[&pattern],
            )
            .await
            .unwrap()
            .get(0);
        if sleeping {
            return;
        }
        assert!(Instant::now() < deadline, "the migration never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether some session holds a lock on `orders`.
async fn orders_locked(db: &TestDb) -> bool {
    db.client()
        .await
        .query_one(
            "select exists (select 1 from pg_locks where database = (select oid from pg_database where datname = current_database()) and relation = 'orders'::regclass and granted and pid <> pg_backend_pid())",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// kill -9 during a migration: the server cancels the dead client's
/// statement within about a second (not when the statement ends, 60 s
/// later), the migration's transaction is rolled back, and the run left
/// `running` changed nothing: the next `rollback` says so instead of
/// restoring its pre-deploy backup over the writes made since.
#[tokio::test]
async fn a_deploy_killed_during_its_migration_frees_the_table_and_is_not_rolled_back() {
    let db = target().await;
    let p = Project::new(&[("staging", "guarded", db.url())], "");
    migration(
        &p,
        "1_note",
        "alter table orders add column note text;\nselect pg_sleep(60);",
        "alter table orders drop column note;",
    );
    let mut child = p.spawn(&["deploy", "staging"]);
    let client = db.client().await;
    until_the_migration_sleeps(&client, 60).await;
    assert!(orders_locked(&db).await);
    signal(&child, Signal::SIGKILL);
    child.wait().unwrap();
    let killed = Instant::now();
    while orders_locked(&db).await {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "orders is still locked {:?} after the kill",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let has_note: bool = client
        .query_one(
            "select exists (select 1 from information_schema.columns where table_name = 'orders' and column_name = 'note')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !has_note,
        "the killed migration's transaction was committed"
    );
    let killed_run = runs(&p)
        .into_iter()
        .find(|r| r["command"] == "deploy")
        .unwrap();
    assert_eq!(killed_run["outcome"], "running", "{killed_run}");
    // The app goes on writing; then someone runs rollback.
    client
        .execute("insert into orders (total) values (4242)", &[])
        .await
        .unwrap();
    let (code, out, err) = p.json(&["rollback", "staging", "--confirm", "staging"]);
    assert_eq!(code, 0, "{err}\n{out}");
    assert_eq!(out["outcome"], "nothing_to_do", "{out}");
    let total: i64 = client
        .query_one("select count(*) from orders where total = 4242", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 1, "the write made after the kill was discarded");
    let settled = runs(&p)
        .into_iter()
        .find(|r| r["run_id"] == killed_run["run_id"])
        .unwrap();
    assert_eq!(settled["outcome"], "interrupted", "{settled}");
    // `--run` names it for what it was.
    let id = killed_run["run_id"].as_str().unwrap();
    let (code, _, err) = p.json(&["rollback", "staging", "--run", id, "--confirm", "staging"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("interrupted"), "{err}");
    // And the next deploy applies the migration (without the sleep).
    migration(
        &p,
        "1_note",
        "alter table orders add column note text;",
        "alter table orders drop column note;",
    );
    let (code, out, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 0, "{err}\n{out}");
}

/// The backend a dead run recorded is terminated by the next start when
/// the server still runs it (servers before 14 do not cancel it): here a
/// live session stands in for it.
#[tokio::test]
async fn settling_terminates_a_dead_runs_backend_and_waits_for_it() {
    let db = target().await;
    let holder = db.client().await;
    let watcher = db.client().await;
    let (pid, started): (i32, String) = {
        let r = holder
            .query_one(
                "select pg_backend_pid(), backend_start::text from pg_stat_activity where pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    let sleeper = tokio::spawn(async move {
        let _ = holder.batch_execute("select pg_sleep(60)").await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let recorded = serde_json::json!({ "pid": pid, "started": started });
    let ended = shipsafe_protocol::steps::settle::terminate(&watcher, &recorded)
        .await
        .unwrap();
    assert_eq!(ended, Some(pid));
    let alive: bool = watcher
        .query_one(
            "select exists (select 1 from pg_stat_activity where pid = $1)",
            &[&pid],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!alive, "terminate returned before the backend ended");
    sleeper.await.unwrap();
    // A recorded backend whose start time differs (its pid reused) is left alone.
    let other = serde_json::json!({ "pid": pid, "started": "1999-01-01 00:00:00+00" });
    assert_eq!(
        shipsafe_protocol::steps::settle::terminate(&watcher, &other)
            .await
            .unwrap(),
        None
    );
}

/// `status` says whether the server cancels a dead client's statement
/// (PostgreSQL 14+) and, with the team's tool, whether this machine can
/// keep the tool off the network during a rehearsal.
#[tokio::test]
async fn status_says_what_protects_a_run_when_shipsafe_dies_or_the_tool_strays() {
    let db = TestDb::new().await;
    let p = Project::new(
        &[("staging", "guarded", db.url())],
        "[migrations]\ntool = \"alembic\"\n",
    );
    let (code, status, err) = p.json(&["status"]);
    assert_eq!(code, 0, "{err}");
    let major: u32 = db
        .client()
        .await
        .query_one(
            "select current_setting('server_version_num')::int / 10000",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i32>(0) as u32;
    assert_eq!(
        status["environments"][0]["cancels_dead_clients"],
        serde_json::json!(major >= 14),
        "{status}"
    );
    let isolation = status["tool_isolation"].as_str().unwrap();
    assert!(
        isolation == "available" || isolation.starts_with("unavailable: "),
        "{status}"
    );
    let out = p.cmd().arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rehearsals: the migration tool"), "{text}");
    // Without the team's tool there is nothing to isolate.
    let p = Project::new(&[("staging", "guarded", db.url())], "");
    let (_, status, _) = p.json(&["status"]);
    assert!(status.get("tool_isolation").is_none(), "{status}");
}

/// After a deploy died before changing anything, `rollback` says so and
/// stops: it does not quietly go on to undo the deploy before it (whose
/// column the app has filled since).
#[tokio::test]
async fn rollback_after_a_dead_deploy_that_changed_nothing_does_not_undo_an_older_one() {
    let db = target().await;
    let p = Project::new(&[("staging", "guarded", db.url())], "");
    migration(
        &p,
        "1_phone",
        "alter table orders add column phone text;",
        "alter table orders drop column phone;",
    );
    let (code, first, err) = p.json(&["deploy", "staging", "--rehearse"]);
    assert_eq!(code, 0, "{err}");
    let client = db.client().await;
    client
        .batch_execute("update orders set phone = '+49 30 1234'")
        .await
        .unwrap();
    migration(
        &p,
        "2_note",
        "alter table orders add column note text;\nselect pg_sleep(60);",
        "alter table orders drop column note;",
    );
    let mut child = p.spawn(&["deploy", "staging"]);
    until_the_migration_sleeps(&client, 60).await;
    signal(&child, Signal::SIGKILL);
    child.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, out, err) = p.json(&["rollback", "staging", "--confirm", "staging"]);
    assert_eq!(code, 0, "{err}\n{out}");
    assert_eq!(out["outcome"], "nothing_to_do", "{out}");
    let first_id = first["run_id"].as_str().unwrap();
    assert!(
        out["report"]["detail"].as_str().unwrap().contains(first_id),
        "names the deploy before it: {out}"
    );
    let phones: i64 = client
        .query_one("select count(phone) from orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(phones, 100, "the older deploy was not undone");
}

/// Ctrl-C during the change cancels the migration's statement: it rolls
/// back in its own transaction and nothing needs restoring, so what the app
/// wrote meanwhile stays (restoring the pre-deploy backup discarded it).
#[tokio::test]
async fn ctrl_c_during_a_migration_cancels_it_instead_of_restoring_the_backup() {
    let db = target().await;
    let client = db.client().await;
    client
        .batch_execute(
            "create table app_events (id serial primary key, at timestamptz default now())",
        )
        .await
        .unwrap();
    let p = Project::new(&[("staging", "guarded", db.url())], "");
    migration(
        &p,
        "1_note",
        "alter table orders add column note text;\nselect pg_sleep(30);",
        "alter table orders drop column note;",
    );
    let writer = db.client().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let writes = tokio::spawn(async move {
        let mut n = 0i64;
        while !stopping.load(std::sync::atomic::Ordering::SeqCst) {
            writer
                .execute("insert into app_events default values", &[])
                .await
                .unwrap();
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n
    });
    let mut child = p.spawn(&["deploy", "staging"]);
    until_the_migration_sleeps(&client, 30).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    signal(&child, Signal::SIGINT);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(4), "{status:?}");
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "{:?}",
        sent.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let written = writes.await.unwrap();
    let kept: i64 = client
        .query_one("select count(*) from app_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        kept, written,
        "the app's writes during the deploy were discarded"
    );
    let note: bool = client
        .query_one(
            "select exists (select 1 from information_schema.columns where table_name = 'orders' and column_name = 'note')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!note);
    let run = runs(&p)
        .into_iter()
        .find(|r| r["command"] == "deploy")
        .unwrap();
    assert_eq!(run["report"]["rollback"]["method"], "transaction", "{run}");
}

/// A standalone `rehearse` honours Ctrl-C like a deploy: cancelled at once,
/// recorded `interrupted` (exit 4), not a failed restore.
#[tokio::test]
async fn ctrl_c_cancels_a_standalone_rehearsal() {
    let prod = target().await;
    let clone = TestDb::new().await;
    let p = Project::new(&[("production", "protected", prod.url())], "");
    write(
        p.dir.path(),
        "make-clone.sh",
        &format!(
            "#!/bin/sh\ntouch cloning\nsleep 60\necho '{}'\n",
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
        "alter table orders drop column status;",
    );
    let mut child = p.spawn(&["rehearse", "production"]);
    let marker = p.dir.path().join("cloning");
    wait_for("the clone command", Duration::from_secs(60), || {
        marker.exists()
    });
    signal(&child, Signal::SIGINT);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(4), "{status:?}");
    let run = runs(&p)
        .into_iter()
        .find(|r| r["command"] == "rehearse")
        .unwrap();
    assert_eq!(run["outcome"], "interrupted", "{run}");
}

/// Ctrl-C during `backup create` (here pg_dump waits for a table another
/// session holds): the backup is cancelled at once, nothing half-written
/// is left in storage, and the audit log says it was interrupted.
#[tokio::test]
async fn ctrl_c_cancels_a_backup_and_leaves_no_unfinished_upload() {
    // SIGHUP too: a closed terminal stops the backup the same way.
    for sig in [Signal::SIGINT, Signal::SIGHUP] {
        let db = target().await;
        let p = Project::new(&[("staging", "guarded", db.url())], "");
        let holder = db.client().await;
        holder
            .batch_execute("begin; lock table orders in access exclusive mode;")
            .await
            .unwrap();
        let mut child = p.spawn(&["backup", "create", "staging"]);
        let c = db.client().await;
        common::wait_for_sessions(
            &c,
            "select count(*) from pg_stat_activity where datname = current_database() \
             and wait_event_type = 'Lock' and query ilike 'lock table%orders%'",
            "pg_dump's lock wait",
        )
        .await;
        let unfinished = || {
            std::fs::read_dir(p.backups_dir())
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        // The upload under way is in storage as a staging file.
        assert!(
            unfinished().iter().any(|n| n.contains('#')),
            "{:?}",
            unfinished()
        );
        signal(&child, sig);
        let started = Instant::now();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(4), "{status:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        holder.batch_execute("rollback").await.unwrap();
        assert_eq!(
            unfinished(),
            Vec::<String>::new(),
            "nothing left in storage"
        );
        let (code, log, err) = p.json(&["log"]);
        assert_eq!(code, 0, "{err}");
        let entry = log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["command"] == "backup create")
            .cloned()
            .unwrap_or_else(|| panic!("{log}"));
        assert_eq!(entry["outcome"], "interrupted", "{entry}");
    }
}

/// What a backup killed outright (kill -9, a power cut) leaves behind is
/// removed by prune once it has been left alone for a day, and not before
/// (a live backup may be writing it).
#[tokio::test]
async fn prune_removes_uploads_that_never_finished_once_they_are_a_day_old() {
    let db = target().await;
    let p = Project::new(&[("staging", "guarded", db.url())], "");
    let (code, _, err) = p.json(&["backup", "create", "staging"]);
    assert_eq!(code, 0, "{err}");
    let dir = p.backups_dir();
    let stale = dir.join("staging-20261101T000000Z-dead.dump.zst#1");
    let fresh = dir.join("staging-20261207T000000Z-cafe.dump.zst#1");
    let orphan = dir.join("staging-20261101T000000Z-beef.dump.zst");
    for f in [&stale, &fresh, &orphan] {
        std::fs::write(f, vec![7u8; 4096]).unwrap();
    }
    // Not a backup of this environment, or not shipsafe's at all: kept
    // however old (another environment whose name starts the same, a
    // person's own dump, a file in a subfolder, a symlinked file).
    let other_env = dir.join("staging-eu-20261101T000000Z-abcd.dump.zst");
    let theirs = dir.join("pre-upgrade.dump.zst");
    std::fs::create_dir_all(dir.join("old")).unwrap();
    let nested = dir.join("old/staging-20261101T000000Z-1234.dump.zst");
    let outside = tempfile::NamedTempFile::new().unwrap();
    let linked = dir.join("staging-20261101T000000Z-5678.dump.zst");
    std::os::unix::fs::symlink(outside.path(), &linked).unwrap();
    for f in [&other_env, &theirs, &nested] {
        std::fs::write(f, vec![7u8; 4096]).unwrap();
    }
    for f in [
        &stale,
        &orphan,
        &other_env,
        &theirs,
        &nested,
        &outside.path().to_path_buf(),
    ] {
        let status = std::process::Command::new("touch")
            .args(["-d", "2 days ago"])
            .arg(f)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let (code, dry, err) = p.json(&["backup", "prune", "staging", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(dry["unfinished"].as_array().unwrap().len(), 2, "{dry}");
    assert!(
        stale.exists() && orphan.exists(),
        "a dry run removes nothing"
    );
    let (code, r, err) = p.json(&["backup", "prune", "staging"]);
    assert_eq!(code, 0, "{err}");
    let names: Vec<&str> = r["unfinished"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "staging-20261101T000000Z-beef.dump.zst",
            "staging-20261101T000000Z-dead.dump.zst#1"
        ]
    );
    assert!(!stale.exists() && !orphan.exists());
    assert!(fresh.exists(), "an upload touched today may be live");
    assert!(other_env.exists(), "staging-eu is another environment");
    // Every environment: staging-eu's leftover goes too, nothing else.
    let (_, r, _) = p.json(&["backup", "prune"]);
    assert_eq!(r["unfinished"].as_array().unwrap().len(), 1, "{r}");
    assert!(!other_env.exists());
    for kept in [&theirs, &nested, &outside.path().to_path_buf()] {
        assert!(kept.exists(), "{} was removed", kept.display());
    }
    assert!(
        std::fs::symlink_metadata(&linked).is_ok(),
        "the link was removed"
    );
    let (_, list, _) = p.json(&["backup", "list"]);
    assert_eq!(list.as_array().map_or(0, Vec::len), 1, "{list}");
}
