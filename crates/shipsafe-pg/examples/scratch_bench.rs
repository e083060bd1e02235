//! Scratch cluster readiness, side by side with the manual way
//! (`initdb` + `pg_ctl start -w`). Run by `scripts/bench/scratch-start`.
//!
//! "Ready" means a query has been answered. Later starts run where a small
//! cluster goes by default (memory) and, separately, on disk. The first shipsafe start uses an
//! empty cache and so includes building the template.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shipsafe_pg::{PgBinaries, ScratchCluster, ScratchOptions, Storage, connect};

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn ready(c: &ScratchCluster) {
    let client = connect(&c.url("postgres")).await.unwrap();
    client.query_one("select 1", &[]).await.unwrap();
}

/// Start-to-answer times of `n` clusters started one after another.
async fn time_starts(opts: ScratchOptions, n: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let o = opts.clone();
        let c = tokio::task::spawn_blocking(move || ScratchCluster::start_with(&o))
            .await
            .unwrap()
            .unwrap();
        ready(&c).await;
        times.push(t.elapsed());
        tokio::task::spawn_blocking(move || c.stop().unwrap())
            .await
            .unwrap();
    }
    times
}

/// The manual way, as the unprivileged user when root.
fn manual_start(bins: &PgBinaries, port: u16) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let uid = if nix::unistd::geteuid().is_root() {
        let u = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(u.uid.as_raw()), Some(u.gid.as_raw())).unwrap();
        Some((u.uid.as_raw(), u.gid.as_raw()))
    } else {
        None
    };
    let data = dir.path().join("data");
    let run = |prog: &str, args: &[&str]| {
        let mut c = Command::new(bins.path(prog));
        c.args(args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((u, g)) = uid {
            c.uid(u).gid(g);
        }
        assert!(c.status().unwrap().success(), "{prog} failed");
    };
    let d = data.to_str().unwrap();
    let opts = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
        dir.path().display()
    );
    let t = Instant::now();
    run("initdb", &["-D", d, "-U", "postgres", "-A", "trust", "-N"]);
    run(
        "pg_ctl",
        &[
            "-D",
            d,
            "-w",
            "-o",
            &opts,
            "-l",
            &format!("{d}/../log"),
            "start",
        ],
    );
    let took = t.elapsed();
    run("pg_ctl", &["-D", d, "-m", "immediate", "stop"]);
    took
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let cache = tempfile::tempdir().unwrap();
    // SAFETY: single-threaded at this point; nothing else reads the environment yet.
    unsafe { std::env::set_var("SHIPSAFE_CACHE_DIR", cache.path()) };

    let t = Instant::now();
    let c = tokio::task::spawn_blocking(ScratchCluster::start)
        .await
        .unwrap()
        .unwrap();
    ready(&c).await;
    let first = t.elapsed();
    let bins = c.binaries().clone();
    drop(c);

    let mut warm = time_starts(ScratchOptions::default(), n).await;
    let on_disk = ScratchOptions {
        storage: Storage::Disk,
        ..Default::default()
    };
    let mut disk = time_starts(on_disk, n.min(10)).await;
    let mut manual: Vec<Duration> = (0..n.min(10))
        .map(|i| manual_start(&bins, 55432 + i as u16))
        .collect();

    let warm_min = *warm.iter().min().unwrap();
    let warm_max = *warm.iter().max().unwrap();
    let warm_med = median(&mut warm);
    let manual_med = median(&mut manual);
    println!("PostgreSQL {} ({})", bins.version(), bins.dir().display());
    println!(
        "shipsafe first start (empty cache, includes initdb): {:.0} ms",
        ms(first)
    );
    println!(
        "shipsafe later starts, n={n}: median {:.0} ms (min {:.0}, max {:.0})",
        ms(warm_med),
        ms(warm_min),
        ms(warm_max)
    );
    println!(
        "shipsafe later starts on disk (size hint over the memory cap), n={}: median {:.0} ms",
        disk.len(),
        ms(median(&mut disk))
    );
    println!(
        "initdb + pg_ctl start -w, n={}: median {:.0} ms",
        manual.len(),
        ms(manual_med)
    );
    println!(
        "ratio shipsafe/manual (median): {:.2}",
        warm_med.as_secs_f64() / manual_med.as_secs_f64()
    );
}
