//! A rehearsal's tool commands run in a network namespace of their own: an
//! app whose settings or `.env` name the production database (instead of
//! the URL shipsafe passes) then cannot reach it — its TCP connection fails
//! — while the scratch clone stays reachable through its Unix socket.
//!
//! A network namespace does not cover Unix sockets (they are files), so a
//! `.env` naming a server on this machine by its socket folder would still
//! reach it. The command also gets a mount namespace of its own in which
//! every other PostgreSQL socket of the machine (`.s.PGSQL.*` in the usual
//! socket folders, and in the folders the caller names) has `/dev/null`
//! bound over it: connecting there fails as well.
//!
//! Root gets the namespaces directly; anyone else (or root without
//! CAP_SYS_ADMIN) gets a user namespace with them, mapped to their own ids.
//! Where the kernel or a container forbids both, the rehearsal says so.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use crate::error::CoreError;

/// Folders where PostgreSQL servers usually put their sockets.
const SOCKET_FOLDERS: &[&str] = &["/tmp", "/var/run/postgresql", "/run/postgresql"];

/// Whether tool commands can be isolated here; `Err` says why not.
pub fn available() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let mut cmd = std::process::Command::new("sh");
            cmd.args(["-c", "exit 0"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            let setup = Setup::new(&[]).map_err(|e| e.to_string())?;
            // SAFETY: the closure only makes system calls (unshare, open,
            // write, mount, close) on data prepared before the fork.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || setup.enter());
            }
            match cmd.status() {
                Ok(s) if s.success() => Ok(()),
                Ok(s) => Err(format!(
                    "a test process in new network and mount namespaces ended with {s}"
                )),
                Err(e) => Err(format!("no network namespace for tool commands: {e}")),
            }
        })
        .clone()
}

/// The PostgreSQL sockets of this machine outside `keep` (the clone's
/// socket folders).
pub fn other_sockets(keep: &[PathBuf]) -> Vec<PathBuf> {
    let keep: Vec<PathBuf> = keep
        .iter()
        .map(|k| k.canonicalize().unwrap_or_else(|_| k.clone()))
        .collect();
    let mut out: Vec<PathBuf> = Vec::new();
    for folder in SOCKET_FOLDERS {
        let Ok(folder) = Path::new(folder).canonicalize() else {
            continue;
        };
        if keep.contains(&folder) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".s.PGSQL.") && !name.ends_with(".lock") && !out.contains(&e.path())
            {
                out.push(e.path());
            }
        }
    }
    out
}

/// Makes `cmd` start in network and mount namespaces of its own, with
/// `hide` (sockets) covered.
pub(crate) fn apply(cmd: &mut tokio::process::Command, hide: &[PathBuf]) -> Result<(), CoreError> {
    let setup = Setup::new(hide)
        .map_err(|e| CoreError::Failed(format!("cannot prepare the tool's isolation: {e}")))?;
    // SAFETY: as in `available`.
    unsafe {
        cmd.pre_exec(move || setup.enter());
    }
    Ok(())
}

/// What the child needs, prepared before the fork (no allocation after it).
struct Setup {
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    hide: Vec<CString>,
}

impl Setup {
    fn new(hide: &[PathBuf]) -> Result<Self, std::ffi::NulError> {
        let uid = nix::unistd::getuid();
        let gid = nix::unistd::getgid();
        Ok(Self {
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
            hide: hide
                .iter()
                .map(|p| CString::new(p.as_os_str().as_bytes()))
                .collect::<Result<_, _>>()?,
        })
    }

    fn enter(&self) -> std::io::Result<()> {
        let wanted = CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS;
        if nix::sched::unshare(wanted).is_err() {
            nix::sched::unshare(CloneFlags::CLONE_NEWUSER | wanted)?;
            write(c"/proc/self/setgroups", b"deny")?;
            write(c"/proc/self/uid_map", &self.uid_map)?;
            write(c"/proc/self/gid_map", &self.gid_map)?;
        }
        // Nothing done in this namespace reaches the machine's mounts.
        nix::mount::mount(
            None::<&std::ffi::CStr>,
            c"/",
            None::<&std::ffi::CStr>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&std::ffi::CStr>,
        )?;
        for socket in &self.hide {
            nix::mount::mount(
                Some(c"/dev/null"),
                socket.as_c_str(),
                None::<&std::ffi::CStr>,
                MsFlags::MS_BIND,
                None::<&std::ffi::CStr>,
            )?;
        }
        Ok(())
    }
}

fn write(path: &std::ffi::CStr, bytes: &[u8]) -> std::io::Result<()> {
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_WRONLY,
        nix::sys::stat::Mode::empty(),
    )?;
    nix::unistd::write(&fd, bytes)?;
    Ok(())
}
