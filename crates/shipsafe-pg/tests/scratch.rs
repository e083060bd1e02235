//! Scratch clusters: start, stop, several at once, unprivileged when root,
//! and no leftover process or folder after a drop, a panic, SIGINT or SIGKILL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shipsafe_pg::{ScratchCluster, connect};

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn select_one(c: &ScratchCluster) -> i32 {
    let client = connect(&c.url("postgres")).await.unwrap();
    client.query_one("select 41 + 1", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn starts_answers_and_stops_without_leftovers() {
    let c = tokio::task::spawn_blocking(ScratchCluster::start)
        .await
        .unwrap()
        .unwrap();
    let (pid, dir) = (c.pid(), c.dir().to_path_buf());
    assert!(alive(pid));
    assert!(dir.join("data/PG_VERSION").is_file());
    assert_eq!(select_one(&c).await, 42);
    c.stop().unwrap();
    assert!(!alive(pid), "postmaster {pid} still running");
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[tokio::test]
async fn drop_tears_down() {
    let c = tokio::task::spawn_blocking(ScratchCluster::start)
        .await
        .unwrap()
        .unwrap();
    let (pid, dir) = (c.pid(), c.dir().to_path_buf());
    drop(c);
    assert!(!alive(pid));
    assert!(!dir.exists());
}

#[tokio::test]
async fn several_clusters_run_at_once() {
    let handles: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(ScratchCluster::start))
        .collect();
    let clusters: Vec<ScratchCluster> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    for c in &clusters {
        assert_eq!(select_one(c).await, 42);
        // Each URL reaches its own server (its own private socket folder).
        let client = connect(&c.url("postgres")).await.unwrap();
        let data: String = client
            .query_one("select current_setting('data_directory')", &[])
            .await
            .unwrap()
            .get(0);
        assert!(Path::new(&data).starts_with(c.dir()), "{data}");
    }
    let left: Vec<(u32, PathBuf)> = clusters
        .iter()
        .map(|c| (c.pid(), c.dir().to_path_buf()))
        .collect();
    drop(clusters);
    for (pid, dir) in left {
        assert!(!alive(pid));
        assert!(!dir.exists());
    }
}

/// psql as `user` (None: this process) against the cluster's socket.
fn psql_as(user: Option<&str>, c: &ScratchCluster) -> std::process::Output {
    let mut cmd = match user {
        Some(u) => {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", u, "--", "psql"]);
            cmd
        }
        None => Command::new("psql"),
    };
    cmd.arg(format!(
        "host={} port={} user=postgres dbname=postgres connect_timeout=3",
        c.dir().display(),
        c.port()
    ))
    .args(["-Atc", "select 42"])
    .env_clear()
    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
    .output()
    .unwrap()
}

/// Another local user must not reach a scratch cluster: it holds a full copy
/// of production and trusts whoever connects. No TCP, and the socket lives in
/// a folder only the owner can enter.
#[tokio::test]
async fn another_os_user_cannot_connect() {
    let c = tokio::task::spawn_blocking(ScratchCluster::start)
        .await
        .unwrap()
        .unwrap();
    let client = connect(&c.url("postgres")).await.unwrap();
    let listen: String = client
        .query_one("select current_setting('listen_addresses')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(listen, "", "a scratch cluster must not listen on TCP");
    // The same command works for this process, so a refusal below is the
    // folder's doing, not a broken command.
    let mine = psql_as(None, &c);
    assert_eq!(
        String::from_utf8_lossy(&mine.stdout).trim(),
        "42",
        "{mine:?}"
    );
    if nix::unistd::geteuid().is_root() {
        let theirs = psql_as(Some("nobody"), &c);
        assert!(!theirs.status.success(), "nobody connected: {theirs:?}");
        assert!(
            String::from_utf8_lossy(&theirs.stderr).contains("ermission denied"),
            "{theirs:?}"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(c.dir()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "scratch folder mode {mode:o}");
}

#[test]
fn server_runs_unprivileged() {
    use std::os::unix::fs::MetadataExt;
    let c = ScratchCluster::start().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid())).unwrap();
    let uid: u32 = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap()
        .parse()
        .unwrap();
    let owner = std::fs::metadata(c.dir().join("data")).unwrap().uid();
    let me = nix::unistd::geteuid().as_raw();
    if me == 0 {
        assert_ne!(
            uid, 0,
            "as root, the server must run as an unprivileged user"
        );
        assert_ne!(
            owner, 0,
            "as root, the data dir must belong to the server user"
        );
    } else {
        assert_eq!(uid, me);
    }
    assert_eq!(uid, owner);
}

#[test]
fn second_start_is_fast_and_uses_the_cached_template() {
    // The first start in this process may build the template.
    drop(ScratchCluster::start().unwrap());
    let t = Instant::now();
    let c = ScratchCluster::start().unwrap();
    let took = t.elapsed();
    drop(c);
    // Not a benchmark (see BENCHMARKS.md): only catches a template that is
    // rebuilt on every start (initdb alone takes over a second here).
    assert!(took < Duration::from_secs(5), "second start took {took:?}");
}

// ---------------------------------------------------------------------------
// Killing the owner: the test binary re-runs itself as the process to kill.

/// Run only as a child of the tests below (selected with `--ignored --exact`).
#[test]
#[ignore = "helper: run in a child process by the teardown tests"]
fn probe_hold_cluster() {
    let Ok(mode) = std::env::var("SHIPSAFE_PROBE") else {
        return;
    };
    let c = ScratchCluster::start().unwrap();
    // Written to the handle, not with println!, which the harness may capture.
    let mut out = std::io::stdout();
    writeln!(out, "PROBE {} {}", c.pid(), c.dir().display()).unwrap();
    out.flush().unwrap();
    if mode == "panic" {
        panic!("probe panics on purpose while holding a cluster");
    }
    std::thread::sleep(Duration::from_secs(120));
}

// The caller waits on the returned child; the lint also counts panic paths.
#[allow(clippy::zombie_processes)]
fn run_probe(mode: &str) -> (Child, u32, PathBuf) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "probe_hold_cluster",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SHIPSAFE_PROBE", mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).unwrap();
        if n == 0 {
            let _ = child.wait();
            let mut err = String::new();
            std::io::Read::read_to_string(&mut stderr, &mut err).unwrap();
            panic!("probe exited before starting its cluster:\n{err}");
        }
        // libtest may print "test NAME ... " before it on the same line.
        if let Some(at) = line.find("PROBE ") {
            let rest = line[at + "PROBE ".len()..].trim();
            let (pid, dir) = rest.split_once(' ').unwrap();
            let (pid, dir) = (pid.to_string(), dir.to_string());
            // Keep draining stdout so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in reader.lines() {});
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            return (child, pid.parse().unwrap(), PathBuf::from(dir));
        }
    }
}

fn assert_gone(pid: u32, dir: &Path) {
    wait_until("postmaster to exit", Duration::from_secs(15), || {
        !alive(pid)
    });
    wait_until("cluster dir removal", Duration::from_secs(15), || {
        !dir.exists()
    });
}

#[test]
fn panic_in_owner_tears_down() {
    let (mut child, pid, dir) = run_probe("panic");
    let status = child.wait().unwrap();
    assert!(!status.success(), "the probe was meant to panic");
    assert_gone(pid, &dir);
}

#[test]
fn sigint_to_owner_tears_down() {
    let (mut child, pid, dir) = run_probe("sleep");
    assert!(alive(pid));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
    assert_gone(pid, &dir);
}

#[test]
fn sigkill_to_owner_stops_server_and_next_start_sweeps_dir() {
    let (mut child, pid, dir) = run_probe("sleep");
    child.kill().unwrap();
    child.wait().unwrap();
    // The kernel delivers the parent-death signal to the postmaster.
    wait_until("postmaster to exit", Duration::from_secs(15), || {
        !alive(pid)
    });
    // SIGKILL runs no cleanup code: the folder stays until a later start
    // sweeps it (possibly another test process's start, running in parallel).
    drop(ScratchCluster::start().unwrap());
    assert!(!dir.exists(), "the next start must sweep {}", dir.display());
}

#[test]
fn small_clusters_live_in_memory_and_large_ones_on_disk() {
    use shipsafe_pg::{ScratchOptions, Storage};
    if std::env::var_os("SHIPSAFE_SCRATCH_DIR").is_some() {
        return; // an explicit location overrides the choice under test
    }
    let small = ScratchCluster::start().unwrap();
    if Path::new("/dev/shm").is_dir() {
        assert!(
            small.dir().starts_with("/dev/shm"),
            "{}",
            small.dir().display()
        );
    }
    let large = ScratchCluster::start_with(&ScratchOptions {
        size_hint: Some(1 << 50),
        ..Default::default()
    })
    .unwrap();
    assert!(
        large.dir().starts_with(std::env::temp_dir()),
        "{}",
        large.dir().display()
    );
    let forced = ScratchCluster::start_with(&ScratchOptions {
        storage: Storage::Disk,
        ..Default::default()
    })
    .unwrap();
    assert!(forced.dir().starts_with(std::env::temp_dir()));
}
