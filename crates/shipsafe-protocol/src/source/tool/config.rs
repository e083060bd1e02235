//! External mode (SPEC §4): the team's own migration tool, run as a
//! subprocess with the target's URL in `url_env`. With a preset
//! (`[migrations] tool`) shipsafe knows the tool's commands, lists its
//! pending revisions, records where the database stood before a deploy and
//! goes back exactly there.

use shipsafe_config::{Config, DbUrl, MigrationTool};
use shipsafe_migrate::tool;

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
    /// Run in a network namespace of its own (a rehearsal on a clone
    /// reached through a Unix socket): see [`super::isolation`].
    pub isolated: bool,
    /// Set as `PGAPPNAME` for the tool (an unisolated rehearsal), so that a
    /// session it opens on the target is seen and ended.
    pub app_name: Option<String>,
    /// With `isolated`: Unix sockets of other PostgreSQL servers on this
    /// machine, hidden from the tool (a network namespace does not cover
    /// them).
    pub hide_sockets: Vec<std::path::PathBuf>,
    /// Server settings for the tool's sessions (`PGOPTIONS`, added to the
    /// caller's own), e.g. ending a dead client's statement.
    pub pg_options: Option<String>,
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
        isolated: false,
        app_name: None,
        hide_sockets: Vec::new(),
        pg_options: None,
    })
}

impl External {
    /// Whether shipsafe reads this tool's history table itself.
    pub(crate) fn reads_history(&self) -> bool {
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
    pub(crate) fn url_value(&self, url: &DbUrl) -> String {
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

/// `PGAPPNAME` of the tool's sessions during a deploy: a Ctrl-C cancels
/// their statements.
pub fn deploy_app_name() -> String {
    format!("shipsafe-deploy-{}", std::process::id())
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
