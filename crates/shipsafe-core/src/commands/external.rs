//! External mode (SPEC §4): the team's own migration tool, run as a
//! subprocess with the target's URL in `url_env`. With a preset
//! (`[migrations] tool`) shipsafe knows the tool's commands, lists its
//! pending revisions, records where the database stood before a deploy and
//! goes back exactly there.

use serde::Serialize;
use shipsafe_config::{Config, DbUrl, MigrationTool};
use shipsafe_migrate::tool::{self, PendingRevision, ToolState};

use crate::error::CoreError;

/// The team's tool, as configured.
#[derive(Debug, Clone)]
pub struct External {
    pub tool: MigrationTool,
    pub up: String,
    /// Written in the config; overrides the preset's way back.
    pub down: Option<String>,
    /// Written in the config: exit 0 means nothing is pending.
    pub pending: Option<String>,
    pub current: Option<String>,
    pub url_env: String,
}

/// The team's tool, or `None` when shipsafe applies the migrations itself.
pub fn external(config: &Config) -> Option<External> {
    let m = &config.file().migrations;
    if !m.is_external() {
        return None;
    }
    let tool = m.tool.unwrap_or(MigrationTool::Command);
    Some(External {
        tool,
        up: m
            .up
            .clone()
            .or_else(|| tool::up_command(tool).map(String::from))?,
        down: m.down.clone(),
        pending: m.pending.clone(),
        current: m.current.clone(),
        url_env: m.url_env.clone(),
    })
}

impl External {
    /// Whether shipsafe reads this tool's history table itself.
    fn reads_history(&self) -> bool {
        self.tool != MigrationTool::Command
    }

    /// Whether a failed deploy can be undone without the backup.
    pub fn has_down(&self) -> bool {
        self.down.is_some()
            || matches!(
                self.tool,
                MigrationTool::Alembic
                    | MigrationTool::FlaskMigrate
                    | MigrationTool::Django
                    | MigrationTool::Rails
            )
    }

    /// How the tool goes back, for messages.
    pub fn down_label(&self) -> Option<String> {
        if let Some(d) = &self.down {
            return Some(d.clone());
        }
        let text = match self.tool {
            MigrationTool::Alembic => "alembic downgrade <revision recorded before the deploy>",
            MigrationTool::FlaskMigrate => {
                "flask db downgrade <revision recorded before the deploy>"
            }
            MigrationTool::Django => {
                "python manage.py migrate <app> <migration recorded before the deploy>, per app"
            }
            MigrationTool::Rails => {
                "bin/rails db:migrate VERSION=<version recorded before the deploy>"
            }
            MigrationTool::Prisma | MigrationTool::Command => return None,
        };
        Some(text.into())
    }

    /// The URL as the tool gets it: presets get `postgresql://`, which
    /// every one of them takes (SQLAlchemy 2 refuses `postgres://`).
    fn url_value(&self, url: &DbUrl) -> String {
        let raw = url.expose();
        if self.tool == MigrationTool::Command {
            return raw.to_string();
        }
        let rest = raw
            .strip_prefix("postgres://")
            .or_else(|| raw.strip_prefix("postgresql://"));
        match rest {
            Some(rest) => portable_url(rest),
            None => raw.to_string(),
        }
    }
}

/// `postgresql://` + `rest`, with a socket URL's user and password moved
/// into the query: libpq reads `user@/db?host=/socket/dir`, but Ruby's URI
/// (Rails) refuses a user without a host name.
fn portable_url(rest: &str) -> String {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Some((userinfo, "")) = authority.rsplit_once('@') else {
        return format!("postgresql://{rest}");
    };
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (userinfo, None),
    };
    let mut extra = format!("user={user}");
    if let Some(p) = password {
        extra.push_str(&format!("&password={p}"));
    }
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("postgresql:///{path}{sep}{extra}")
}

#[cfg(test)]
mod tests {
    use super::portable_url;

    #[test]
    fn socket_urls_carry_the_user_in_the_query() {
        assert_eq!(
            portable_url("postgres@/app?host=/tmp/s&port=5433"),
            "postgresql:///app?host=/tmp/s&port=5433&user=postgres"
        );
        assert_eq!(
            portable_url("app:s%40cret@/app?host=/tmp/s"),
            "postgresql:///app?host=/tmp/s&user=app&password=s%40cret"
        );
        assert_eq!(
            portable_url("app@db.example.com:5432/app?sslmode=require"),
            "postgresql://app@db.example.com:5432/app?sslmode=require"
        );
        assert_eq!(
            portable_url("/app?host=/tmp/s"),
            "postgresql:///app?host=/tmp/s"
        );
    }
}

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

    fn failure(&self) -> String {
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
async fn run_capture(
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

/// What is pending, by the tool's own account.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pending {
    pub any: bool,
    /// The revisions, oldest first, when the preset can list them.
    pub revisions: Option<Vec<PendingRevision>>,
    /// Where the database stood when asked.
    pub state: ToolState,
    #[serde(skip)]
    pub runs: Vec<ToolRun>,
}

/// Asks the tool what is pending on `url`: the `pending` command when one
/// is written (exit 0: nothing), else the preset's listing against the
/// history table.
pub async fn pending(config: &Config, ext: &External, url: &DbUrl) -> Result<Pending, CoreError> {
    let mut out = Pending {
        state: state(config, ext, url).await?,
        ..Pending::default()
    };
    if let Some(list) = tool::list_command(ext.tool) {
        let (run, stdout) = run_capture(config, list, url, ext).await?;
        let ok = run.ok();
        let failure = run.failure();
        out.runs.push(run);
        if ok {
            out.revisions = Some(
                tool::parse_pending(ext.tool, &stdout, &out.state).map_err(CoreError::Failed)?,
            );
        } else if ext.tool == MigrationTool::Rails && out.state.revisions.is_empty() {
            // No schema_migrations yet: Rails says so and exits 1.
            out.revisions = Some(tool::rails_migration_files(
                &config.root().join(&config.file().migrations.dir),
            ));
        } else if ext.pending.is_none() {
            return Err(CoreError::Failed(format!(
                "cannot list pending migrations: {failure}"
            )));
        }
    }
    match &ext.pending {
        Some(cmd) => {
            let run = run_tool(config, cmd, url, ext).await?;
            out.any = !run.ok();
            out.runs.push(run);
        }
        None => out.any = out.revisions.as_ref().is_some_and(|r| !r.is_empty()),
    }
    Ok(out)
}

/// Where the database at `url` stands: the tool's history table, or the
/// `current` command's output.
pub async fn state(config: &Config, ext: &External, url: &DbUrl) -> Result<ToolState, CoreError> {
    if ext.reads_history() {
        let client = shipsafe_pg::connect(url).await.map_err(|e| {
            CoreError::Failed(format!("cannot read the migration tool's history: {e}"))
        })?;
        return tool::read_state(&client, ext.tool).await.map_err(|e| {
            CoreError::Failed(format!(
                "cannot read the migration tool's history: {}",
                shipsafe_pg::describe(&e)
            ))
        });
    }
    let Some(current) = &ext.current else {
        return Ok(ToolState::default());
    };
    let (run, stdout) = run_capture(config, current, url, ext).await?;
    if !run.ok() {
        return Err(CoreError::Failed(format!(
            "cannot record where the database stands: {}",
            run.failure()
        )));
    }
    let line = stdout.trim();
    Ok(ToolState {
        revisions: if line.is_empty() {
            Vec::new()
        } else {
            vec![line.to_string()]
        },
    })
}

/// The commands that take the database from `now` back to `before`.
pub fn down_plan(
    ext: &External,
    before: &ToolState,
    now: &ToolState,
) -> Result<Vec<String>, String> {
    if let Some(down) = &ext.down {
        if !down.contains("{revision}") {
            // No placeholder: the command decides how far it goes, once.
            return Ok(vec![down.clone()]);
        }
        if before == now {
            return Ok(Vec::new());
        }
        let revision = if before.revisions.is_empty() {
            tool::sh_quote(&before.render(ext.tool))
        } else {
            before
                .revisions
                .iter()
                .map(|r| tool::sh_quote(r))
                .collect::<Vec<_>>()
                .join(" ")
        };
        return Ok(vec![down.replace("{revision}", &revision)]);
    }
    tool::down_commands(ext.tool, before, now)
}

/// Takes the database at `url` back to `before` with the tool's own
/// commands. Returns what ran and, on failure, why.
pub async fn go_back(
    config: &Config,
    ext: &External,
    url: &DbUrl,
    before: &ToolState,
) -> (Vec<ToolRun>, Result<Vec<String>, String>) {
    let now = match state(config, ext, url).await {
        Ok(s) => s,
        Err(e) => return (Vec::new(), Err(e.to_string())),
    };
    let commands = match down_plan(ext, before, &now) {
        Ok(c) => c,
        Err(e) => return (Vec::new(), Err(e)),
    };
    let mut runs = Vec::new();
    for c in &commands {
        match run_tool(config, c, url, ext).await {
            Ok(r) => {
                let ok = r.ok();
                let failure = r.failure();
                runs.push(r);
                if !ok {
                    return (runs, Err(failure));
                }
            }
            Err(e) => return (runs, Err(e.to_string())),
        }
    }
    (runs, Ok(commands))
}

/// The SQL the tool would run for `pending`, as `(label, sql)` files for
/// the linter; `Err` says why there is none.
pub async fn pending_sql(
    config: &Config,
    ext: &External,
    url: &DbUrl,
    pending: &Pending,
) -> Result<Vec<(String, String)>, String> {
    let revisions = pending.revisions.as_deref().unwrap_or_default();
    let commands = tool::sql_commands(ext.tool, &pending.state, revisions)?;
    let mut files = Vec::new();
    for c in commands {
        let (run, stdout) = run_capture(config, &c, url, ext)
            .await
            .map_err(|e| e.to_string())?;
        if !run.ok() {
            return Err(format!("cannot print the SQL: {}", run.failure()));
        }
        files.push((format!("`{c}`"), tool::tidy_sql(ext.tool, &stdout)));
    }
    Ok(files)
}

/// Recorded in a deploy's report: where the tool stood before and after,
/// and what it had pending. `shipsafe rollback` goes back to `before`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExternalReport {
    pub tool: String,
    pub before: ToolState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<ToolState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<Vec<PendingRevision>>,
    /// Why the tool's SQL was not linted, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lint_skipped: Option<String>,
}
