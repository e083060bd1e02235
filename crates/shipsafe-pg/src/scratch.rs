//! Throwaway PostgreSQL clusters for rehearsals, restore tests, the demo and
//! the test suite.
//!
//! Design points, each there because a leaked cluster or a slow start would
//! make people skip the safety step:
//! - An initialized data directory is cached per server version (`initdb`
//!   costs over a second); each cluster starts from a copy of it.
//! - PostgreSQL refuses to run as root, so as root the cluster runs as an
//!   unprivileged user (`postgres`, or `SHIPSAFE_SCRATCH_USER`).
//! - Teardown happens on drop, on SIGINT/SIGTERM/SIGHUP (a handler stops every
//!   live cluster, then lets the signal end the process), and when the whole
//!   process dies: each postmaster gets `PR_SET_PDEATHSIG`. That signal fires
//!   when the *thread* that forked it exits, so postmasters are forked by one
//!   permanent spawner thread rather than by whichever (possibly short-lived)
//!   thread asked. Directories left by a killed process are swept by the next
//!   start.
//! - Durability is off (`fsync`, `full_page_writes`, `synchronous_commit`):
//!   a scratch cluster's data is disposable, and restores run much faster.
//! - Small clusters live in memory (`/dev/shm`): starting one means creating
//!   about a thousand files, which costs far more on many disks (and
//!   virtualized file systems) than the bytes do. Clusters that will hold a
//!   large restore say so with [`ScratchOptions::size_hint`] and go to disk.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once, OnceLock, RwLock, mpsc};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shipsafe_config::{ConnInfo, DbUrl};

use crate::binaries::PgBinaries;
use crate::error::PgError;

/// Superuser created in every scratch cluster.
pub const SUPERUSER: &str = "postgres";
const DIR_PREFIX: &str = "shipsafe-scratch-";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Names the socket file (`.s.PGSQL.5432`) in the cluster's private folder.
const SOCKET_PORT: u16 = 5432;

/// Options for [`ScratchCluster::start_with`].
#[derive(Debug, Clone, Default)]
pub struct ScratchOptions {
    /// The lowest server major version that will do (a restore's source);
    /// that version when installed, else the newest newer one. `None`
    /// picks the newest installed.
    pub major: Option<u32>,
    /// Extra `-c name=value` server settings.
    pub settings: Vec<(String, String)>,
    /// Bytes the cluster is expected to hold (e.g. a restore's size).
    pub size_hint: Option<u64>,
    pub storage: Storage,
}

/// Where a scratch cluster's files live. `SHIPSAFE_SCRATCH_DIR` overrides all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Storage {
    /// Memory when the expected size fits comfortably, else disk.
    #[default]
    Auto,
    Memory,
    Disk,
}

const SHM: &str = "/dev/shm";
/// Memory use allowed for one cluster: a quarter of free shared memory, and
/// never more than this.
const MEMORY_CAP: u64 = 4 << 30;
/// What an empty cluster needs, before any data.
const BASE_FOOTPRINT: u64 = 64 << 20;

fn shm_available() -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(SHM).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// The folder new cluster folders are created in.
fn base_dir(opts: &ScratchOptions) -> PathBuf {
    if let Some(d) = std::env::var_os("SHIPSAFE_SCRATCH_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    let need = opts.size_hint.unwrap_or(0).saturating_add(BASE_FOOTPRINT);
    let memory_ok = |need: u64| shm_available().is_some_and(|a| need <= (a / 4).min(MEMORY_CAP));
    match opts.storage {
        Storage::Disk => std::env::temp_dir(),
        Storage::Memory if shm_available().is_some() => PathBuf::from(SHM),
        Storage::Memory => std::env::temp_dir(),
        Storage::Auto if memory_ok(need) => PathBuf::from(SHM),
        Storage::Auto => std::env::temp_dir(),
    }
}

/// A folder for a short-lived file of `size` bytes: shared memory when it
/// fits comfortably (same rule as small clusters), else the temp folder.
/// Keeps a decompressed archive from competing with a restore for the disk.
pub fn temp_dir_for(size: u64) -> PathBuf {
    if let Some(d) = std::env::var_os("SHIPSAFE_SCRATCH_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    let fits = shm_available()
        .is_some_and(|a| size.saturating_add(BASE_FOOTPRINT) <= (a / 4).min(MEMORY_CAP));
    if fits {
        PathBuf::from(SHM)
    } else {
        std::env::temp_dir()
    }
}

/// Every folder that may hold clusters, for sweeping.
fn sweep_dirs() -> Vec<PathBuf> {
    let mut v = vec![std::env::temp_dir(), PathBuf::from(SHM)];
    if let Some(d) = std::env::var_os("SHIPSAFE_SCRATCH_DIR").filter(|v| !v.is_empty()) {
        v.push(PathBuf::from(d));
    }
    v
}

/// A running throwaway cluster. Dropping it stops the server and deletes its
/// directory.
#[derive(Debug)]
pub struct ScratchCluster {
    child: Child,
    dir: PathBuf,
    port: u16,
    binaries: PgBinaries,
    stopped: bool,
}

/// The OS user that runs the server processes when we are root.
#[derive(Debug, Clone)]
struct RunAs {
    uid: u32,
    gid: u32,
}

fn run_as() -> Result<Option<RunAs>, PgError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let name = std::env::var("SHIPSAFE_SCRATCH_USER")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres".to_string());
    match nix::unistd::User::from_name(&name) {
        Ok(Some(u)) if !u.uid.is_root() => Ok(Some(RunAs {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        })),
        _ => Err(PgError::NoUnprivilegedUser { user: name }),
    }
}

fn give_to(path: &Path, who: Option<&RunAs>) -> Result<(), PgError> {
    if let Some(r) = who {
        chown(path, Some(r.uid), Some(r.gid)).map_err(|e| {
            PgError::io(
                format!("cannot hand {} to uid {}", path.display(), r.uid),
                e,
            )
        })?;
    }
    Ok(())
}

fn command_as(program: PathBuf, who: Option<&RunAs>, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    // A group of its own: a Ctrl-C at the terminal is shipsafe's to handle
    // (stop after the step), not a fast shutdown of the clone under it.
    cmd.current_dir(cwd)
        .env("LC_ALL", "C.UTF-8")
        .env_remove("PGDATA")
        .process_group(0);
    if let Some(r) = who {
        cmd.uid(r.uid).gid(r.gid);
    }
    cmd
}

// ---------------------------------------------------------------------------
// Spawning postmasters tied to this process's lifetime.

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

fn spawn_tied(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnJob>> = OnceLock::new();
    let parent = std::process::id();
    // SAFETY: the closure only calls async-signal-safe libc functions
    // (prctl, getppid, _exit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        let spawned = std::thread::Builder::new()
            .name("shipsafe-pg-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the spawner thread: {e}");
        }
        tx
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.send((cmd, reply_tx))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

// ---------------------------------------------------------------------------
// Registry of live clusters, for signal-time cleanup.

#[derive(Debug)]
struct Live {
    pid: i32,
    dir: PathBuf,
}

static LIVE: Mutex<Vec<Live>> = Mutex::new(Vec::new());

/// Private temporary folders alive in this process, for signal-time cleanup.
static TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Held shared while a folder of ours is created and registered (and, for
/// a cluster, its server started), exclusively by the signal thread from
/// the moment it starts cleaning up: a signal that arrives mid-creation
/// waits until the folder is registered, so the cleanup never misses it,
/// and nothing new is created once the cleanup has begun.
static CREATING: RwLock<()> = RwLock::new(());

fn creating() -> std::sync::RwLockReadGuard<'static, ()> {
    CREATING
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Removes a folder another thread may still be writing into: a file
/// created while `remove_dir_all` runs makes its last `rmdir` fail, so it
/// is tried again (the writer fails once the folder itself is gone).
fn remove_tree(dir: &Path) {
    for _ in 0..200 {
        match fs::remove_dir_all(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn temps() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    TEMPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

const TMP_PREFIX: &str = "shipsafe-tmp-";

/// A private folder for copies of data (decompressed archives, raw dumps,
/// restore lists): created 0700 under `parent`, removed on drop, on
/// SIGINT/SIGTERM/SIGHUP, and by the next start of shipsafe when the process
/// that made it died (kill -9).
#[derive(Debug)]
pub struct PrivateTemp {
    path: PathBuf,
}

impl PrivateTemp {
    pub fn new_in(parent: &Path) -> Result<Self, PgError> {
        install_signal_cleanup();
        for d in sweep_dirs() {
            sweep_leftovers(&d);
        }
        let path = parent.join(format!("{TMP_PREFIX}{}", unique_suffix()));
        let _creating = creating();
        new_private_dir(&path)?;
        temps().push(path.clone());
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PrivateTemp {
    fn drop(&mut self) {
        temps().retain(|p| p != &self.path);
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn live() -> std::sync::MutexGuard<'static, Vec<Live>> {
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Stops every scratch cluster this process started and deletes their
/// folders and its private temporary folders. The caller holds `CREATING`
/// exclusively.
fn cleanup_all() {
    for t in std::mem::take(&mut *temps()) {
        remove_tree(&t);
    }
    let all: Vec<Live> = std::mem::take(&mut *live());
    for l in &all {
        let _ = kill(Pid::from_raw(l.pid), Signal::SIGQUIT);
    }
    for l in all {
        wait_gone(l.pid, STOP_TIMEOUT);
        remove_tree(&l.dir);
    }
}

/// Stops and deletes every scratch cluster and temporary folder of this
/// process now, for a caller about to exit without unwinding (a second
/// Ctrl-C). Blocks while a cluster is being created.
pub fn remove_all_now() {
    let _no_more = CREATING
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    cleanup_all();
}

/// Waits (reaping if it is our child) until `pid` has exited; SIGKILL after
/// `timeout`.
fn wait_gone(pid: i32, timeout: Duration) {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let p = Pid::from_raw(pid);
    let deadline = Instant::now() + timeout;
    let mut killed = false;
    loop {
        let _ = waitpid(p, Some(WaitPidFlag::WNOHANG));
        if !pid_alive(pid) {
            return;
        }
        if Instant::now() > deadline {
            if killed {
                return;
            }
            let _ = kill(p, Signal::SIGKILL);
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn pid_alive(pid: i32) -> bool {
    // A zombie still answers kill(0); treat it as gone.
    if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat"))
        && let Some(state) = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
    {
        return state != "Z" && state != "X";
    }
    !matches!(
        kill(Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Set by a long-running process (`serve`) that stops itself cleanly on
/// SIGINT/SIGTERM: the first such signal is then left to it (its jobs end
/// or are dropped, which tears their clusters down); a second one still
/// cleans up and exits at once.
static GRACEFUL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// See [`GRACEFUL`].
pub fn stop_gracefully_on_signals() {
    GRACEFUL.store(true, std::sync::atomic::Ordering::SeqCst);
}

fn install_signal_cleanup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            Ok(mut signals) => {
                let spawned = std::thread::Builder::new()
                    .name("shipsafe-pg-signals".into())
                    .spawn(move || {
                        let mut left_to_caller = false;
                        for sig in signals.forever() {
                            if sig != SIGHUP
                                && !left_to_caller
                                && GRACEFUL.load(std::sync::atomic::Ordering::SeqCst)
                            {
                                left_to_caller = true;
                                continue;
                            }
                            // Held until the process ends.
                            let _no_more = CREATING
                                .write()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            cleanup_all();
                            // Die of the signal as if no handler were installed,
                            // so the caller sees the usual exit status.
                            let _ = signal_hook::low_level::emulate_default_handler(sig);
                            std::process::exit(128 + sig);
                        }
                    });
                if let Err(e) = spawned {
                    tracing::warn!("cannot start the signal thread: {e}");
                }
            }
            Err(e) => tracing::warn!("cannot install signal cleanup: {e}"),
        }
    });
}

/// Removes directories (and stops servers) left by scratch clusters of
/// processes that no longer exist.
fn sweep_leftovers(tmp: &Path) {
    let Ok(rd) = fs::read_dir(tmp) else { return };
    for entry in rd.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix(DIR_PREFIX)
            .or_else(|| name.strip_prefix(TMP_PREFIX))
        else {
            continue;
        };
        let Some(owner) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid_alive(owner) {
            continue;
        }
        let dir = entry.path();
        // Only our own leftovers (or the server user's): a folder another
        // user planted under this name is none of our business.
        if !owned_by_us(&dir) {
            continue;
        }
        if let Ok(pidfile) = fs::read_to_string(dir.join("data/postmaster.pid"))
            && let Some(pm) = pidfile
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<i32>().ok())
            && pid_alive(pm)
            && fs::read(format!("/proc/{pm}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*dir.to_string_lossy()))
        {
            let _ = kill(Pid::from_raw(pm), Signal::SIGQUIT);
            wait_gone(pm, Duration::from_secs(2));
        }
        tracing::debug!("removing leftover scratch cluster {}", dir.display());
        let _ = fs::remove_dir_all(&dir);
    }
}

fn owned_by_us(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return false;
    };
    let me = nix::unistd::geteuid().as_raw();
    let server = run_as().ok().flatten().map(|r| r.uid);
    meta.is_dir() && (meta.uid() == me || Some(meta.uid()) == server)
}

// ---------------------------------------------------------------------------
// The cached template data directory.

const INITDB_ARGS: &[&str] = &[
    "--auth=trust",
    "--encoding=UTF8",
    "--no-sync",
    "--no-instructions",
];

/// The template cache: `SHIPSAFE_CACHE_DIR`, else the user's cache folder.
/// Never a predictable shared path: another local user who could plant a
/// template there would run code as the server on a copy of production.
fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("SHIPSAFE_CACHE_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    let home_cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    match home_cache {
        Some(c) => c.join("shipsafe"),
        None => std::env::temp_dir().join(format!("shipsafe-cache-{}", nix::unistd::geteuid())),
    }
}

/// Creates `dir` (0700) if needed and checks that it is ours and that no one
/// else can write into it.
pub(crate) fn private_dir(dir: &Path) -> Result<(), PgError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) => return Err(PgError::io(format!("cannot create {}", dir.display()), e)),
    }
    let meta = fs::symlink_metadata(dir)
        .map_err(|e| PgError::io(format!("cannot inspect {}", dir.display()), e))?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Err(PgError::UnsafeDirectory {
            dir: dir.to_path_buf(),
            reason: if !meta.is_dir() {
                "it is not a plain folder (a symbolic link?)".into()
            } else if meta.uid() != me {
                format!("it belongs to uid {}, not to uid {me}", meta.uid())
            } else {
                format!("others can write into it (mode {:o})", meta.mode() & 0o7777)
            },
        });
    }
    Ok(())
}

fn unique_suffix() -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{:08x}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// Creates a new folder that only its owner can enter; fails if the name
/// exists (never reuses a folder someone else prepared).
fn new_private_dir(dir: &Path) -> Result<(), PgError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| PgError::io(format!("cannot create {}", dir.display()), e))?;
    // The umask may have narrowed the mode further, never widened it.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| PgError::io(format!("cannot protect {}", dir.display()), e))
}

/// Returns the cached template for these binaries, creating it with `initdb`
/// the first time. Concurrent creators race harmlessly: each builds in its
/// own folder and the first rename wins.
fn template(bins: &PgBinaries, who: Option<&RunAs>) -> Result<PathBuf, PgError> {
    let root = cache_root();
    private_dir(&root)?;
    let key = blake3::hash(
        format!(
            "{}|{}|{:?}|{:?}",
            bins.dir().display(),
            bins.version(),
            INITDB_ARGS,
            who.map(|r| r.uid)
        )
        .as_bytes(),
    )
    .to_hex();
    let tpl = root.join(format!("pg{}-{}", bins.major(), &key[..16]));
    if tpl.join("global/pg_control").is_file() {
        return Ok(tpl);
    }
    // initdb runs as the server user, who cannot reach a private cache
    // folder: it builds in a fresh 0700 folder of its own (swept like a
    // cluster's if we die), and the result is copied into the cache.
    let staging = temp_dir_for(0).join(format!("{DIR_PREFIX}{}", unique_suffix()));
    {
        let _creating = creating();
        new_private_dir(&staging)?;
        temps().push(staging.clone());
    }
    let building = root.join(format!(".build-{}", unique_suffix()));
    let result = (|| {
        give_to(&staging, who)?;
        let data = staging.join("data");
        let mut last_err = None;
        // Collation C sorts by bytes (fast index builds, deterministic);
        // ctype C.UTF-8 keeps upper()/lower() right for non-ASCII text.
        // Fall back to plain C where C.UTF-8 is missing.
        for ctype in ["C.UTF-8", "C"] {
            let out = command_as(bins.path("initdb"), who, &staging)
                .arg("-D")
                .arg(&data)
                .arg(format!("--username={SUPERUSER}"))
                .arg("--locale=C")
                .arg(format!("--lc-ctype={ctype}"))
                .args(INITDB_ARGS)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| {
                    PgError::io(format!("cannot run {}", bins.path("initdb").display()), e)
                })?;
            if out.status.success() {
                last_err = None;
                break;
            }
            let _ = fs::remove_dir_all(&data);
            last_err = Some(PgError::CommandFailed {
                command: format!("initdb -D {}", data.display()),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
                .trim()
                .to_string(),
            });
        }
        if let Some(e) = last_err {
            return Err(e);
        }
        {
            let _creating = creating();
            temps().push(building.clone());
        }
        copy_tree(&data, &building, None)?;
        match fs::rename(&building, &tpl) {
            Ok(()) => Ok(()),
            Err(_) if tpl.join("global/pg_control").is_file() => {
                let _ = fs::remove_dir_all(&building);
                Ok(())
            }
            Err(e) => Err(PgError::io(
                format!("cannot publish template {}", tpl.display()),
                e,
            )),
        }
    })();
    let _ = fs::remove_dir_all(&staging);
    temps().retain(|p| p != &staging && p != &building);
    result.map(|()| tpl)
}

/// Copies a data directory, keeping modes and handing every entry to `who`.
fn copy_tree(src: &Path, dst: &Path, who: Option<&RunAs>) -> Result<(), PgError> {
    let io_err = |p: &Path, e| PgError::io(format!("cannot copy template to {}", p.display()), e);
    fs::create_dir(dst).map_err(|e| io_err(dst, e))?;
    let mode = fs::metadata(src)
        .map_err(|e| io_err(src, e))?
        .permissions()
        .mode();
    fs::set_permissions(dst, fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|e| io_err(dst, e))?;
    give_to(dst, who)?;
    for entry in fs::read_dir(src).map_err(|e| io_err(src, e))? {
        let entry = entry.map_err(|e| io_err(src, e))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ft = entry.file_type().map_err(|e| io_err(&from, e))?;
        if ft.is_dir() {
            copy_tree(&from, &to, who)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(|e| io_err(&from, e))?;
            std::os::unix::fs::symlink(target, &to).map_err(|e| io_err(&to, e))?;
        } else {
            fs::copy(&from, &to).map_err(|e| io_err(&to, e))?;
            give_to(&to, who)?;
        }
    }
    Ok(())
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Settings for a disposable, restore-friendly server.
const BASE_SETTINGS: &[(&str, &str)] = &[
    ("fsync", "off"),
    ("full_page_writes", "off"),
    ("synchronous_commit", "off"),
    ("wal_level", "minimal"),
    ("max_wal_senders", "0"),
    ("max_wal_size", "4GB"),
    ("checkpoint_timeout", "30min"),
    ("autovacuum", "off"),
    ("maintenance_work_mem", "256MB"),
    ("max_connections", "40"),
    ("logging_collector", "off"),
    ("log_min_messages", "warning"),
];

impl ScratchCluster {
    /// Starts a cluster of the newest installed major version.
    pub fn start() -> Result<Self, PgError> {
        Self::start_with(&ScratchOptions::default())
    }

    /// Starts a cluster. Blocks for well under a second once the template is
    /// cached; call from `spawn_blocking` in async code.
    pub fn start_with(opts: &ScratchOptions) -> Result<Self, PgError> {
        // The source's major version, or a newer one: a dump restores into
        // a newer server, never into an older one.
        let binaries = match opts.major {
            Some(m) => PgBinaries::for_server(m, &["postgres", "initdb"])?,
            None => PgBinaries::find(None, &["postgres", "initdb"])?,
        };
        let who = run_as()?;
        install_signal_cleanup();
        // Cheap (a directory listing each), and catches leftovers of
        // processes that died while this one was running.
        for d in sweep_dirs() {
            sweep_leftovers(&d);
        }
        let base = base_dir(opts);

        let tpl = template(&binaries, who.as_ref())?;
        let dir = base.join(format!("{DIR_PREFIX}{}", unique_suffix()));
        // From the folder's creation until its server is registered, a
        // signal's cleanup waits (see `CREATING`).
        let creating = creating();
        new_private_dir(&dir)?;
        let mut started = Self::start_in(&dir, &tpl, &binaries, who.as_ref(), opts, creating);
        if started.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        if let Ok(c) = &mut started {
            c.binaries = binaries;
        }
        started
    }

    fn start_in(
        dir: &Path,
        tpl: &Path,
        binaries: &PgBinaries,
        who: Option<&RunAs>,
        opts: &ScratchOptions,
        creating: std::sync::RwLockReadGuard<'static, ()>,
    ) -> Result<Self, PgError> {
        give_to(dir, who)?;
        let data = dir.join("data");
        copy_tree(tpl, &data, who)?;
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700))
            .map_err(|e| PgError::io(format!("cannot protect {}", data.display()), e))?;

        let log_path = dir.join("postgres.log");
        let log = File::create(&log_path)
            .map_err(|e| PgError::io(format!("cannot create {}", log_path.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| PgError::io(format!("cannot open {}", log_path.display()), e))?;
        // No TCP at all: the only way in is the socket inside this 0700
        // folder, so trust authentication admits this process's user and
        // the server's, and no other local user.
        let mut cmd = command_as(binaries.path("postgres"), who, dir);
        cmd.arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(SOCKET_PORT.to_string())
            .arg("-c")
            .arg("listen_addresses=")
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            .arg("-c")
            .arg("unix_socket_permissions=0700");
        for (k, v) in BASE_SETTINGS {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        for (k, v) in &opts.settings {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        let child = spawn_tied(cmd).map_err(|e| {
            PgError::io(
                format!("cannot run {}", binaries.path("postgres").display()),
                e,
            )
        })?;
        let pid = child.id() as i32;
        live().push(Live {
            pid,
            dir: dir.to_path_buf(),
        });
        drop(creating);
        let mut cluster = Self {
            child,
            dir: dir.to_path_buf(),
            port: SOCKET_PORT,
            binaries: binaries.clone(),
            stopped: false,
        };
        match cluster.wait_ready(&data) {
            Ok(()) => Ok(cluster),
            Err(reason) => {
                cluster.stop_server();
                cluster.stopped = true;
                Err(PgError::StartFailed {
                    dir: dir.to_path_buf(),
                    reason,
                    log_tail: log_tail(&log_path, 20),
                })
            }
        }
    }

    /// Waits until `postmaster.pid` says the server accepts connections.
    fn wait_ready(&mut self, data: &Path) -> Result<(), String> {
        let pidfile = data.join("postmaster.pid");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the server exited during start-up ({status})"));
            }
            if let Ok(text) = fs::read_to_string(&pidfile)
                && text.lines().nth(7).map(str::trim) == Some("ready")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after {}s", READY_TIMEOUT.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Connection URL for `database` as the superuser: the private socket
    /// folder as host (no password: only its owner can reach it).
    pub fn url(&self, database: &str) -> DbUrl {
        let info = ConnInfo {
            hosts: vec![self.dir.display().to_string()],
            ports: vec![self.port],
            user: Some(SUPERUSER.to_string()),
            dbname: Some(database.to_string()),
            ..ConnInfo::default()
        };
        // `postgres://`, the scheme the clone URL always had: tools' own URL
        // rewriting (Heroku-style `postgres://` → driver URL) keeps working.
        DbUrl::new(info.to_url().replacen("postgresql://", "postgres://", 1))
    }

    /// The socket's port number (part of its file name; nothing listens on TCP).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's folder (data directory, socket and log inside).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// PID of the postmaster.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn binaries(&self) -> &PgBinaries {
        &self.binaries
    }

    /// Stops the server and deletes its folder.
    pub fn stop(mut self) -> Result<(), PgError> {
        self.teardown()
    }

    fn stop_server(&mut self) {
        let pid = self.child.id() as i32;
        live().retain(|l| l.pid != pid);
        if matches!(self.child.try_wait(), Ok(None)) {
            // Immediate shutdown: the data is about to be deleted anyway.
            let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    fn teardown(&mut self) -> Result<(), PgError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        self.stop_server();
        fs::remove_dir_all(&self.dir)
            .or_else(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| PgError::io(format!("cannot remove {}", self.dir.display()), e))
    }
}

impl Drop for ScratchCluster {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!("scratch cluster teardown: {e}");
        }
    }
}
