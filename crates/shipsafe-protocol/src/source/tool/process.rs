//! Running the team's tool: `sh -c` in the project folder, the target's
//! URL in `url_env`, within the statement timeout, output masked.

use serde::Serialize;
use shipsafe_config::{Config, DbUrl};

use super::config::External;
use crate::error::CoreError;

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
    let started = std::time::Instant::now();
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(crate::files::with_user_umask(command))
        .current_dir(config.root())
        .env(&ext.url_env, ext.url_value(url))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    // Where the tool's driver reads less than the URL says, libpq falls
    // back to these: the same server, database and TLS settings.
    for (k, v) in shipsafe_pg::child::tool_env(url) {
        cmd.env(k, v);
    }
    let child = cmd.output();
    let limit = config.file().migrations.statement_timeout.as_std();
    let out = match tokio::time::timeout(limit, child).await {
        Ok(r) => r.map_err(|e| CoreError::io(format!("cannot run `{command}`"), e))?,
        Err(_) => {
            let run = ToolRun {
                command: command.to_string(),
                exit_code: None,
                duration_ms: started.elapsed().as_millis() as u64,
                output: format!(
                    "stopped after {} (migrations.statement_timeout)",
                    config.file().migrations.statement_timeout
                ),
            };
            return Ok((run, String::new()));
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    let run = ToolRun {
        command: command.to_string(),
        exit_code: out.status.code(),
        duration_ms: started.elapsed().as_millis() as u64,
        output: shipsafe_config::mask_secrets(&tail),
    };
    Ok((run, shipsafe_config::mask_secrets(&stdout)))
}
