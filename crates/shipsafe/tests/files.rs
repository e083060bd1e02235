//! What shipsafe leaves on disk: private files (0600 in 0700 folders), and no
//! copy of the data after Ctrl-C, SIGTERM or kill -9.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Project, write};
use shipsafe_testkit::TestDb;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        out.push(e.path());
        if e.file_type().unwrap().is_dir() {
            walk(&e.path(), out);
        }
    }
}

#[tokio::test]
async fn backups_state_and_reports_are_private() {
    let db = TestDb::new().await;
    let p = Project::new(&[("staging", "guarded", db.url())], "");
    write(
        p.dir.path(),
        "migrations/1_t/up.sql",
        "create table t (id int);",
    );
    let (code, _, err) = p.json(&["deploy", "staging"]);
    assert_eq!(code, 0, "{err}");
    let state = p.dir.path().join(".shipsafe");
    let mut all = vec![state.clone()];
    walk(&state, &mut all);
    assert!(all.iter().any(|p| p.ends_with("state.db")));
    assert!(
        all.iter()
            .any(|p| p.to_string_lossy().ends_with(".dump.zst"))
    );
    assert!(all.iter().any(|p| p.to_string_lossy().ends_with(".md")));
    for p in all {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&p), want, "{} is {:o}", p.display(), mode(&p));
    }
}

/// A database large enough that verifying its backup takes a while.
async fn big_backup() -> (TestDb, Project, String) {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "create table big (id int primary key, body text);
             insert into big select g, repeat(md5(g::text), 8) from generate_series(1, 300000) g;",
        )
        .await
        .unwrap();
    let p = Project::new(&[("prod", "guarded", db.url())], "");
    let (code, m, err) = p.json(&["backup", "create", "prod"]);
    assert_eq!(code, 0, "{err}");
    let id = m["id"].as_str().unwrap().to_string();
    (db, p, id)
}

fn ours(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("shipsafe-"))
        .collect()
}

/// Starts `backup verify` and stops it with `signal` once its private copy
/// of the archive exists.
fn interrupted_verify(
    p: &Project,
    id: &str,
    scratch: &Path,
    signal: nix::sys::signal::Signal,
) -> std::process::ExitStatus {
    interrupted_verify_when(p, id, scratch, signal, |scratch| {
        ours(scratch).into_iter().any(|n| {
            n.starts_with("shipsafe-tmp-")
                && std::fs::read_dir(scratch.join(&n))
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false)
        })
    })
}

/// Starts `backup verify` and sends `signal` as soon as `now` holds.
fn interrupted_verify_when(
    p: &Project,
    id: &str,
    scratch: &Path,
    signal: nix::sys::signal::Signal,
    now: impl Fn(&Path) -> bool,
) -> std::process::ExitStatus {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("shipsafe"));
    cmd.current_dir(p.dir.path())
        .args(["backup", "verify", id])
        .env("SHIPSAFE_SCRATCH_DIR", scratch)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in &p.vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if now(scratch) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "verify ended before the moment to interrupt it"
        );
        assert!(Instant::now() < deadline, "the moment never came");
        std::thread::sleep(Duration::from_micros(200));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
    child.wait().unwrap()
}

#[tokio::test]
async fn ctrl_c_and_sigterm_leave_no_copy_of_the_data() {
    let (_db, p, id) = big_backup().await;
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        let scratch = tempfile::tempdir().unwrap();
        let status = interrupted_verify(&p, &id, scratch.path(), signal);
        assert!(!status.success(), "{signal}: {status:?}");
        assert_eq!(
            ours(scratch.path()),
            Vec::<String>::new(),
            "{signal} left data behind"
        );
    }
}

/// The signal lands while the throwaway server's folder is being filled
/// (before its server exists): that folder goes too.
#[tokio::test]
async fn a_signal_while_the_restore_server_is_created_leaves_nothing() {
    let (_db, p, id) = big_backup().await;
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
    ] {
        let scratch = tempfile::tempdir().unwrap();
        let status = interrupted_verify_when(&p, &id, scratch.path(), signal, |scratch| {
            ours(scratch)
                .iter()
                .any(|n| n.starts_with("shipsafe-scratch-"))
        });
        assert!(!status.success(), "{signal}: {status:?}");
        assert_eq!(
            ours(scratch.path()),
            Vec::<String>::new(),
            "{signal} left data behind"
        );
    }
}

#[tokio::test]
async fn leftovers_of_a_killed_run_are_swept_by_the_next_start() {
    let (_db, p, id) = big_backup().await;
    let scratch = tempfile::tempdir().unwrap();
    interrupted_verify(&p, &id, scratch.path(), nix::sys::signal::Signal::SIGKILL);
    assert!(
        ours(scratch.path())
            .iter()
            .any(|n| n.starts_with("shipsafe-tmp-")),
        "kill -9 leaves its copy (nothing can run), until the next start"
    );
    let out = p
        .cmd()
        .args(["backup", "verify", &id])
        .env("SHIPSAFE_SCRATCH_DIR", scratch.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ours(scratch.path()), Vec::<String>::new());
}
