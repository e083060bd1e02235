//! A rehearsal's tool commands run in a network namespace of their own: an
//! app whose settings or `.env` name the production database (instead of
//! the URL shipsafe passes) then cannot reach it — its TCP connection fails
//! — while the scratch clone stays reachable through its Unix socket.
//!
//! Root gets a new network namespace directly; anyone else (or root without
//! CAP_SYS_ADMIN) gets a user namespace with it, mapped to their own ids.
//! Where the kernel or a container forbids both, the rehearsal says so.

use std::sync::OnceLock;

use nix::sched::CloneFlags;

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
            let setup = Setup::new();
            // SAFETY: the closure only makes system calls (unshare, open,
            // write, close) on data prepared before the fork.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || setup.enter());
            }
            match cmd.status() {
                Ok(s) if s.success() => Ok(()),
                Ok(s) => Err(format!(
                    "a test process in a new network namespace ended with {s}"
                )),
                Err(e) => Err(format!("no network namespace for tool commands: {e}")),
            }
        })
        .clone()
}

/// Makes `cmd` start in a network namespace of its own.
pub(crate) fn apply(cmd: &mut tokio::process::Command) {
    let setup = Setup::new();
    // SAFETY: as in `available`.
    unsafe {
        cmd.pre_exec(move || setup.enter());
    }
}

/// What the child needs, prepared before the fork (no allocation after it).
struct Setup {
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
}

impl Setup {
    fn new() -> Self {
        let uid = nix::unistd::getuid();
        let gid = nix::unistd::getgid();
        Self {
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
        }
    }

    fn enter(&self) -> std::io::Result<()> {
        if nix::sched::unshare(CloneFlags::CLONE_NEWNET).is_ok() {
            return Ok(());
        }
        nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET)?;
        write(c"/proc/self/setgroups", b"deny")?;
        write(c"/proc/self/uid_map", &self.uid_map)?;
        write(c"/proc/self/gid_map", &self.gid_map)?;
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
