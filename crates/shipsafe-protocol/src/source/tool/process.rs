//! Running the team's tool: `sh -c` in the project folder, the target's
//! URL in `url_env`, within the statement timeout, output masked.
//!
//! The tool runs in a process group of its own. `sh` forks the command, so
//! stopping `sh` alone would leave the tool working on the database after
//! shipsafe has decided the outcome: on a timeout, on cancellation, and
//! when `sh` exits with members of its group still running, the whole group
//! is stopped (SIGTERM, then SIGKILL after a grace period) and shipsafe
//! waits until no member is left before it goes on.

use std::time::Duration;

use serde::Serialize;
use shipsafe_config::{Config, DbUrl};
use tokio::io::AsyncReadExt;

use super::config::External;
use super::isolation;
use crate::error::CoreError;

/// The environment variable that carries the command to the wrapper.
const COMMAND_VAR: &str = "SHIPSAFE_TOOL_COMMAND";

/// Runs the command in a child shell and waits for it; on SIGTERM (the
/// parent-death signal, or a stop) signals the whole group. The command
/// comes as data in [`COMMAND_VAR`], never spliced into this text.
const DIES_WITH_SHIPSAFE: &str =
    "trap 'trap - TERM; kill -TERM 0' TERM; sh -c \"$SHIPSAFE_TOOL_COMMAND\" & wait $!";

/// How much of a tool's standard output and of its error output is kept.
const OUTPUT_CAP: usize = 4 << 20;
/// Ends an output that was cut at [`OUTPUT_CAP`]: what reads the output
/// whole must not take the part for all of it.
pub(crate) const CUT_MARK: &str = "\n[output cut at 4 MiB]\n";
/// How long a stopped group gets to exit after SIGTERM, and after SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// One run of the team's tool.
#[derive(Debug, Clone, Serialize)]
pub struct ToolRun {
    pub command: String,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// The last lines of its output, secrets masked.
    pub output: String,
}

impl ToolRun {
    pub fn ok(&self) -> bool {
        self.exit_code == Some(0)
    }

    pub fn failure(&self) -> String {
        match self.exit_code {
            Some(c) => format!("`{}` exited with {c}: {}", self.command, self.output),
            None => format!("`{}`: {}", self.command, self.output),
        }
    }
}

/// Runs `command` with `sh -c` in the project folder, the target URL in
/// `url_env`, within the statement timeout.
pub async fn run_tool(
    config: &Config,
    command: &str,
    url: &DbUrl,
    ext: &External,
) -> Result<ToolRun, CoreError> {
    Ok(run_capture(config, command, url, ext).await?.0)
}

/// [`run_tool`], also returning the whole standard output (masked).
pub(crate) async fn run_capture(
    config: &Config,
    command: &str,
    url: &DbUrl,
    ext: &External,
) -> Result<(ToolRun, String), CoreError> {
    run_with(config, command, url, ext, &[]).await
}

/// [`run_capture`] with extra environment variables (a revision passed as
/// data, never as shell text).
pub(crate) async fn run_with(
    config: &Config,
    command: &str,
    url: &DbUrl,
    ext: &External,
    vars: &[(String, String)],
) -> Result<(ToolRun, String), CoreError> {
    let started = std::time::Instant::now();
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(crate::files::with_user_umask(DIES_WITH_SHIPSAFE))
        .env(COMMAND_VAR, command)
        .current_dir(config.root())
        .env(&ext.url_env, ext.url_value(url))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // Where the tool's driver reads less than the URL says, libpq falls
    // back to these: the same server, database and TLS settings.
    for (k, v) in shipsafe_pg::child::tool_env(url) {
        cmd.env(k, v);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    if let Some(name) = &ext.app_name {
        cmd.env("PGAPPNAME", name);
    }
    if let Some(options) = ext.pg_options.as_deref().and_then(|o| {
        shipsafe_pg::child::pgoptions_with(&std::env::var("PGOPTIONS").unwrap_or_default(), o)
    }) {
        cmd.env("PGOPTIONS", options);
    }
    // If shipsafe dies (kill -9), `sh` gets SIGTERM and ends its group: a
    // tool outliving shipsafe would go on changing the database unseen.
    let parent = nix::unistd::getpid();
    // SAFETY: only system calls (prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other(
                    "shipsafe ended before the tool started",
                ));
            }
            Ok(())
        });
    }
    if ext.isolated {
        isolation::apply(&mut cmd, &ext.hide_sockets)?;
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| CoreError::io(format!("cannot run `{command}`"), e))?;
    let group = Group(child.id().map(|id| nix::unistd::Pid::from_raw(id as i32)));
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let work = async {
        let (out, err, status) = tokio::join!(
            read_capped(stdout.as_mut()),
            read_capped(stderr.as_mut()),
            async {
                let status = child.wait().await;
                // `sh` is done: whatever it left running in its group is
                // stopped too, which also closes the pipes read above.
                group.stop().await;
                status
            }
        );
        (out, err, status)
    };
    let limit = config.file().migrations.statement_timeout.as_std();
    let (out, err, status) = match tokio::time::timeout(limit, work).await {
        Ok(done) => done,
        Err(_) => {
            let left = group.stop().await;
            let mut output = format!(
                "stopped after {} (migrations.statement_timeout)",
                config.file().migrations.statement_timeout
            );
            if !left.is_empty() {
                return Err(survivors(command, &left));
            }
            output.push_str("; its processes are gone");
            let run = ToolRun {
                command: command.to_string(),
                exit_code: None,
                duration_ms: started.elapsed().as_millis() as u64,
                output,
            };
            return Ok((run, String::new()));
        }
    };
    let status = status.map_err(|e| CoreError::io(format!("cannot run `{command}`"), e))?;
    let left = group.members();
    if !left.is_empty() {
        return Err(survivors(command, &left));
    }
    let stdout = String::from_utf8_lossy(&out).into_owned();
    let text = format!("{stdout}{}", String::from_utf8_lossy(&err));
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    let run = ToolRun {
        command: command.to_string(),
        exit_code: status.code(),
        duration_ms: started.elapsed().as_millis() as u64,
        output: shipsafe_config::mask_secrets(&tail),
    };
    Ok((run, shipsafe_config::mask_secrets(&stdout)))
}

fn survivors(command: &str, pids: &[i32]) -> CoreError {
    CoreError::Failed(format!(
        "`{command}` was stopped, but {} of its processes ({}) still run after SIGKILL; the database may still be changing — check them before anything else",
        pids.len(),
        pids.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Reads all of `r`, keeping the first [`OUTPUT_CAP`] bytes.
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(r: Option<&mut R>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(r) = r else { return kept };
    let mut buf = [0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    if kept.len() >= OUTPUT_CAP {
        kept.extend_from_slice(CUT_MARK.as_bytes());
    }
    kept
}

/// The tool's process group. Dropped before it was stopped (the run was
/// cancelled), it is killed at once.
struct Group(Option<nix::unistd::Pid>);

impl Group {
    /// SIGTERM to every member, SIGKILL to those left after [`GRACE`];
    /// returns the members still alive after that.
    async fn stop(&self) -> Vec<i32> {
        let Some(pgid) = self.0 else {
            return Vec::new();
        };
        for signal in [
            nix::sys::signal::Signal::SIGTERM,
            nix::sys::signal::Signal::SIGKILL,
        ] {
            if self.members().is_empty() {
                return Vec::new();
            }
            let _ = nix::sys::signal::killpg(pgid, signal);
            let until = std::time::Instant::now() + GRACE;
            while std::time::Instant::now() < until {
                if self.members().is_empty() {
                    return Vec::new();
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        self.members()
    }

    /// The live (not zombie) processes of the group.
    fn members(&self) -> Vec<i32> {
        match self.0 {
            Some(pgid) => group_members(pgid.as_raw()),
            None => Vec::new(),
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pgid) = self.0
            && !self.members().is_empty()
        {
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Live processes whose process group is `pgid`, from `/proc`. A zombie
/// (exited, not yet reaped) cannot act and does not count.
pub(crate) fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp …": comm may hold spaces and parens.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|s| s.parse::<i32>().ok());
        if pgrp == Some(pgid) && state != Some("Z") && state != Some("X") {
            out.push(pid);
        }
    }
    out
}
