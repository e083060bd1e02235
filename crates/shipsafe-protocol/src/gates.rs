//! Gates a change must pass in guarded and protected environments: the
//! maintenance `window` and the `git_branch` (a clean tree on that branch).
//! `--override "reason"` lets a change through; the reason goes to the
//! audit log and the run report.

use std::path::Path;

use serde::Serialize;
use shipsafe_config::Config;

use crate::error::CoreError;

#[derive(Debug, Clone, Serialize)]
pub struct GateResult {
    pub gate: String,
    pub passed: bool,
    pub detail: String,
}

fn git(root: &Path, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(root)
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Evaluates the configured gates of `env` at `now`.
pub fn check(
    config: &Config,
    env: &str,
    now: jiff::Timestamp,
) -> Result<Vec<GateResult>, CoreError> {
    let e = config.environment(env)?;
    let mut out = Vec::new();
    if let Some(w) = &e.config.window {
        let passed = w.contains(now);
        out.push(GateResult {
            gate: "window".into(),
            passed,
            detail: if passed {
                format!("inside the maintenance window {w}")
            } else {
                format!(
                    "outside the maintenance window {w} (now {})",
                    now.to_zoned(
                        jiff::tz::TimeZone::get(w.time_zone_name())
                            .unwrap_or(jiff::tz::TimeZone::UTC)
                    )
                    .strftime("%a %H:%M %Z")
                )
            },
        });
    }
    if let Some(branch) = &e.config.git_branch {
        let root = config.root();
        let (passed, detail) = match (
            git(root, &["rev-parse", "--abbrev-ref", "HEAD"]),
            git(root, &["status", "--porcelain"]),
        ) {
            (Ok(b), Ok(status)) if b == *branch && status.is_empty() => {
                (true, format!("clean tree on {branch}"))
            }
            (Ok(b), Ok(status)) if b == *branch => (
                false,
                format!(
                    "uncommitted changes on {branch}: {}",
                    status.lines().count()
                ),
            ),
            (Ok(b), Ok(_)) => (false, format!("on branch {b}, not {branch}")),
            (Err(e), _) | (_, Err(e)) => (false, format!("not a git checkout ({e})")),
        };
        out.push(GateResult {
            gate: "git".into(),
            passed,
            detail,
        });
    }
    Ok(out)
}

/// Fails with exit 3 when a gate is closed and there is no override.
pub fn enforce(
    results: &[GateResult],
    env: &str,
    override_reason: Option<&str>,
) -> Result<(), CoreError> {
    let closed: Vec<&GateResult> = results.iter().filter(|g| !g.passed).collect();
    if closed.is_empty() || override_reason.is_some_and(|r| !r.trim().is_empty()) {
        return Ok(());
    }
    Err(CoreError::Blocked(format!(
        "{env}: {}; nothing was changed. To go ahead anyway, pass --override \"reason\" (the reason is recorded in the audit log)",
        closed
            .iter()
            .map(|g| g.detail.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    )))
}
