//! Finding, reading and validating `shipsafe.toml`.
//!
//! Precedence for every setting that can come from several places:
//! command-line flag > environment variable > file > built-in default.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::dburl::DbUrl;
use crate::error::ConfigError;
use crate::mask::literal_password;
use crate::model::{
    CloneSource, ConfigFile, EnvironmentConfig, MigrationFormat, MigrationTool, Protection,
};
use crate::template::{Template, VarSource};

pub const FILE_NAME: &str = "shipsafe.toml";
pub const CONFIG_ENV: &str = "SHIPSAFE_CONFIG";
pub const STATE_DIR_ENV: &str = "SHIPSAFE_STATE_DIR";
pub const DEFAULT_STATE_DIR: &str = ".shipsafe";

/// Where the config comes from and what overrides it.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--config PATH`.
    pub config_flag: Option<PathBuf>,
    /// `--state-dir PATH`.
    pub state_dir_flag: Option<PathBuf>,
    /// Directory to search upwards from and to resolve relative flags against.
    pub cwd: PathBuf,
}

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    path: PathBuf,
    root: PathBuf,
    source: String,
    file: ConfigFile,
    state_dir: PathBuf,
}

/// A configured environment, borrowed from its [`Config`].
#[derive(Debug, Clone, Copy)]
pub struct Environment<'a> {
    pub name: &'a str,
    pub config: &'a EnvironmentConfig,
}

impl Environment<'_> {
    pub fn protection(&self) -> Protection {
        self.config.protection
    }
}

/// Finds the config file: flag, then `SHIPSAFE_CONFIG`, then the first
/// `shipsafe.toml` in `cwd` or a parent.
pub fn locate(opts: &LoadOptions, vars: &dyn VarSource) -> Result<PathBuf, ConfigError> {
    let explicit = opts.config_flag.clone().or_else(|| {
        vars.var(CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(p) = explicit {
        let p = if p.is_absolute() { p } else { opts.cwd.join(p) };
        if !p.is_file() {
            return Err(ConfigError::Read {
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                path: p,
            });
        }
        return Ok(p);
    }
    let mut dir = Some(opts.cwd.as_path());
    while let Some(d) = dir {
        let candidate = d.join(FILE_NAME);
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    Err(ConfigError::NotFound {
        start: opts.cwd.clone(),
    })
}

/// Locates, reads and validates the configuration.
pub fn load(opts: &LoadOptions, vars: &dyn VarSource) -> Result<Config, ConfigError> {
    let path = locate(opts, vars)?;
    let source = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let mut config = Config::parse(&path, &source)?;
    let state_override = opts.state_dir_flag.clone().or_else(|| {
        vars.var(STATE_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(dir) = state_override {
        config.state_dir = if dir.is_absolute() {
            dir
        } else {
            opts.cwd.join(dir)
        };
    }
    Ok(config)
}

impl Config {
    /// Parses and validates config text; `path` is used for messages and to
    /// resolve relative paths.
    pub fn parse(path: &Path, source: &str) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(source).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| line_col(source, s.start));
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                message: tidy_toml_message(e.message()),
            }
        })?;
        let root = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let state_dir = root.join(
            file.project
                .state_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        );
        let mut config = Self {
            path: path.to_path_buf(),
            root,
            source: source.to_string(),
            file,
            state_dir,
        };
        config.apply_preset();
        config.validate()?;
        Ok(config)
    }

    /// Presets read their tool's own folder unless told otherwise.
    fn apply_preset(&mut self) {
        let dir = match self.file.migrations.tool {
            Some(MigrationTool::Prisma) => {
                if self.file.migrations.format == MigrationFormat::Auto {
                    self.file.migrations.format = MigrationFormat::Prisma;
                }
                "prisma/migrations"
            }
            Some(MigrationTool::Rails) => "db/migrate",
            _ => return,
        };
        if self.key_span("migrations", "dir").is_none() {
            self.file.migrations.dir = PathBuf::from(dir);
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (name, env) in &self.file.environments {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(self.invalid(
                    env.span(),
                    format!(
                        "environment name {name:?} must use only letters, digits, `-` and `_` (it is typed on the command line)"
                    ),
                ));
            }
            let env_ref = env.get_ref();
            if env_ref.protection != Protection::Open {
                let url = &env_ref.database_url;
                if has_literal_password(url.get_ref()) {
                    return Err(self.invalid(
                        url.span(),
                        format!(
                            "environments.{name}.database_url has a password written in the file, which is not allowed for a {} environment: reference it instead, e.g. database_url = \"${{DATABASE_URL}}\" or \"postgres://app:${{DB_PASSWORD}}@host/db\"",
                            env_ref.protection.as_str()
                        ),
                    ));
                }
            }
        }
        if let Some(clone) = &self.file.rehearsal.clone
            && let CloneSource::Env(target) = clone.get_ref()
            && !self.file.environments.contains_key(target)
        {
            return Err(self.invalid(
                clone.span(),
                format!(
                    "rehearsal.clone names environment {target:?}, which is not configured: add [environments.{target}] or use \"scratch\""
                ),
            ));
        }
        for (key, kind) in &self.file.mask {
            let ok = key
                .split_once('.')
                .is_some_and(|(t, c)| !t.is_empty() && !c.is_empty() && !c.contains('.'));
            if !ok {
                return Err(self.invalid(
                    kind.span(),
                    format!("mask key {key:?} must be \"table.column\""),
                ));
            }
        }
        let m = &self.file.migrations;
        // Without a preset (or with "command") shipsafe knows nothing of the
        // tool: `up` and `pending` are both needed. Prisma's pending
        // migrations are read from its files.
        let bare = matches!(m.tool, None | Some(MigrationTool::Command));
        let prisma = m.tool == Some(MigrationTool::Prisma);
        if (bare || prisma)
            && m.up.is_none()
            && (m.down.is_some() || m.pending.is_some() || m.current.is_some())
        {
            return Err(self.invalid(
                self.key_span("migrations", "down")
                    .or_else(|| self.key_span("migrations", "pending"))
                    .or_else(|| self.key_span("migrations", "current"))
                    .unwrap_or(0..0),
                "migrations.down, migrations.pending and migrations.current drive an external tool and need migrations.up as well (or a preset: migrations.tool = \"alembic\", \"flask-migrate\", \"django\" or \"rails\")".into(),
            ));
        }
        if prisma && m.up.is_some() && m.pending.is_none() {
            return Err(self.invalid(
                self.key_span("migrations", "up").unwrap_or(0..0),
                "migrations.up runs the Prisma CLI instead of shipsafe; also set migrations.pending, e.g. \"npx prisma migrate status\" (it exits non-zero while a migration is pending), or remove migrations.up and let shipsafe apply prisma/migrations itself".into(),
            ));
        }
        if bare && m.up.is_some() && m.pending.is_none() {
            return Err(self.invalid(
                self.key_span("migrations", "up").unwrap_or(0..0),
                "migrations.up runs an external tool; also set migrations.pending, a command that exits 0 when nothing is pending, or use a preset (migrations.tool = \"alembic\", \"flask-migrate\", \"django\", \"rails\") whose pending revisions shipsafe reads itself".into(),
            ));
        }
        if let Some(down) = &m.down
            && (down.contains("'{revision}'") || down.contains("\"{revision}\""))
        {
            return Err(self.invalid(
                self.key_span("migrations", "down").unwrap_or(0..0),
                "migrations.down quotes {revision}; write it without quotes: shipsafe passes the recorded revision as one quoted word (\"$SHIPSAFE_REVISION\"), never as shell text".into(),
            ));
        }
        if m.tool == Some(MigrationTool::Command) && m.up.is_none() {
            return Err(self.invalid(
                self.key_span("migrations", "tool").unwrap_or(0..0),
                "migrations.tool = \"command\" runs the commands you write: set migrations.up and migrations.pending".into(),
            ));
        }
        self.validate_serve()?;
        let level = self.file.backups.compression_level;
        if !(1..=22).contains(&level) {
            return Err(self.invalid(
                self.key_span("backups", "compression_level").unwrap_or(0..0),
                format!("backups.compression_level is {level}; zstd levels run from 1 to 22 (1, the default, is fastest)"),
            ));
        }
        self.validate_checks()?;
        for smoke in &self.file.smoke {
            let method = smoke.method.to_ascii_uppercase();
            if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
                .contains(&method.as_str())
            {
                return Err(self.invalid(
                    self.value_span(&smoke.method).unwrap_or(0..0),
                    format!(
                        "smoke test {:?}: method {:?} is not an HTTP method",
                        smoke.name, smoke.method
                    ),
                ));
            }
            if !smoke.path.starts_with('/') {
                return Err(self.invalid(
                    self.value_span(&smoke.path).unwrap_or(0..0),
                    format!("smoke test {:?}: path {:?} must start with `/` (it is appended to app_url)", smoke.name, smoke.path),
                ));
            }
        }
        let r = &self.file.readiness;
        for (key, value) in [
            ("dead_tuple_ratio", r.dead_tuple_ratio),
            ("connections_max", r.connections_max),
            ("cache_hit_min", r.cache_hit_min),
            ("sequence_max", r.sequence_max),
            ("wraparound_max", r.wraparound_max),
        ] {
            if let Some(v) = value
                && !(0.0..=1.0).contains(&v)
            {
                return Err(self.invalid(
                    self.key_span("readiness", key).unwrap_or(0..0),
                    format!("readiness.{key} is {v}; it is a share between 0 and 1 (e.g. 0.75)"),
                ));
            }
        }
        for (name, set) in &self.file.data {
            if set.key.is_empty() {
                return Err(self.invalid(
                    self.key_span(&format!("data.{name}"), "key")
                        .unwrap_or(0..0),
                    format!("data.{name}.key must name at least one column (the natural key)"),
                ));
            }
        }
        Ok(())
    }

    /// `[[checks]]`: `envs` names configured environments, `timeout` is
    /// more than nothing.
    fn validate_checks(&self) -> Result<(), ConfigError> {
        for c in &self.file.checks {
            let span = || self.value_span(&c.name).unwrap_or(0..0);
            if let Some(unknown) = c
                .envs
                .iter()
                .find(|e| !self.file.environments.contains_key(*e))
            {
                let known: Vec<&str> = self.file.environments.keys().map(String::as_str).collect();
                return Err(self.invalid(
                    span(),
                    format!(
                        "check {:?}: envs names environment {unknown:?}, which is not configured (configured: {})",
                        c.name,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
            if c.timeout.is_some_and(|t| t.as_millis() == 0) {
                return Err(self.invalid(
                    span(),
                    format!(
                        "check {:?}: timeout must be more than 0 (e.g. \"30s\"); a check without a limit can wait forever behind a lock",
                        c.name
                    ),
                ));
            }
        }
        Ok(())
    }

    fn invalid(&self, span: Range<usize>, message: String) -> ConfigError {
        let (line, column) = line_col(&self.source, span.start);
        ConfigError::Invalid {
            path: self.path.clone(),
            line,
            column,
            message,
        }
    }

    /// Best-effort span of `key = ...` inside `[table]`, for messages about
    /// values that are not kept with their own span.
    /// `[serve]`, `[schedule.ENV]` and `[[notify]]`.
    fn validate_serve(&self) -> Result<(), ConfigError> {
        let serve = &self.file.serve;
        if let Some(l) = &serve.listen
            && l.get_ref().parse::<std::net::SocketAddr>().is_err()
        {
            return Err(self.invalid(
                l.span(),
                format!(
                    "serve.listen {:?} is not an address and port, e.g. \"127.0.0.1:7373\"",
                    l.get_ref()
                ),
            ));
        }
        if let Some(tz) = &serve.timezone
            && tz.get_ref().parse::<chrono_tz::Tz>().is_err()
        {
            return Err(self.invalid(
                tz.span(),
                format!("serve.timezone {:?} is not an IANA time zone name, e.g. \"UTC\" or \"Europe/Berlin\"", tz.get_ref()),
            ));
        }
        for (env, schedule) in &self.file.schedule {
            if !self.file.environments.contains_key(env) {
                return Err(self.invalid(
                    self.table_span(&format!("schedule.{env}")).unwrap_or(0..0),
                    format!("schedule.{env} names environment {env:?}, which is not configured"),
                ));
            }
            for (job, line) in schedule.jobs() {
                if let Err(e) = crate::serve::parse_cron(line.get_ref()) {
                    return Err(self.invalid(
                        line.span(),
                        format!(
                            "schedule.{env}.{} {:?} is not a crontab line ({e}): 5 fields (minute hour day month weekday), or 6 with seconds first, e.g. \"0 3 * * *\"",
                            job.as_str(),
                            line.get_ref()
                        ),
                    ));
                }
            }
        }
        for n in &self.file.notify {
            if let Some(e) = n
                .envs
                .iter()
                .find(|e| !self.file.environments.contains_key(*e))
            {
                return Err(self.invalid(
                    n.url.span(),
                    format!("notify envs names environment {e:?}, which is not configured"),
                ));
            }
            if let Some(j) = n
                .jobs
                .iter()
                .find(|j| !crate::serve::NOTIFY_JOBS.contains(&j.as_str()))
            {
                return Err(self.invalid(
                    n.url.span(),
                    format!(
                        "notify jobs names {j:?}; known: {}",
                        crate::serve::NOTIFY_JOBS.join(", ")
                    ),
                ));
            }
            if has_literal_password(n.url.get_ref()) || !n.url.get_ref().has_variables() {
                return Err(self.invalid(
                    n.url.span(),
                    "notify.url is a secret (whoever has it can post to the channel): reference it, e.g. url = \"${SLACK_WEBHOOK_URL}\"".into(),
                ));
            }
        }
        Ok(())
    }

    fn table_span(&self, table: &str) -> Option<Range<usize>> {
        let header = format!("[{table}]");
        let i = self.source.find(&header)?;
        Some(i..i + header.len())
    }

    fn key_span(&self, table: &str, key: &str) -> Option<Range<usize>> {
        let header = format!("[{table}]");
        let mut in_table = table.is_empty();
        let mut offset = 0;
        for line in self.source.split_inclusive('\n') {
            let t = line.trim();
            if t.starts_with('[') {
                in_table = t == header;
            } else if in_table && t.split('=').next().map(str::trim) == Some(key) {
                let col = line.len() - line.trim_start().len();
                return Some(offset + col..offset + line.len());
            }
            offset += line.len();
        }
        None
    }

    fn value_span(&self, value: &str) -> Option<Range<usize>> {
        let quoted = format!("\"{value}\"");
        self.source.find(&quoted).map(|i| i..i + quoted.len())
    }

    /// Path of the config file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder holding the config file; relative paths start here.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The config file's text as it was read.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn file(&self) -> &ConfigFile {
        &self.file
    }

    /// Where run history, the audit log and reports live.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub fn project_name(&self) -> String {
        self.file.project.name.clone().unwrap_or_else(|| {
            self.root
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "shipsafe".into())
        })
    }

    pub fn environments(&self) -> impl Iterator<Item = Environment<'_>> {
        self.file
            .environments
            .iter()
            .map(|(name, env)| Environment {
                name,
                config: env.get_ref(),
            })
    }

    pub fn environment(&self, name: &str) -> Result<Environment<'_>, ConfigError> {
        self.file
            .environments
            .get_key_value(name)
            .map(|(name, env)| Environment {
                name,
                config: env.get_ref(),
            })
            .ok_or_else(|| ConfigError::UnknownEnvironment {
                path: self.path.clone(),
                name: name.to_string(),
                known: if self.file.environments.is_empty() {
                    "none (add an [environments.NAME] table)".into()
                } else {
                    self.file
                        .environments
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })
    }

    /// The `[[checks]]` that hold in environment `env`: those without
    /// `envs`, and those whose `envs` names it.
    pub fn checks_for(&self, env: &str) -> Vec<crate::model::CheckConfig> {
        self.file
            .checks
            .iter()
            .filter(|c| c.applies_to(env))
            .cloned()
            .collect()
    }

    /// This configuration with only the `[[checks]]` of environment `env`
    /// (for code that reads `file().checks` while working on `env`).
    pub fn with_checks_of(&self, env: &str) -> Config {
        let mut scoped = self.clone();
        scoped.file.checks = self.checks_for(env);
        scoped
    }

    /// Resolves an environment's database URL now, naming the missing
    /// variable and where it is referenced if it cannot be.
    pub fn database_url(&self, env: &str, vars: &dyn VarSource) -> Result<DbUrl, ConfigError> {
        let e = self.environment(env)?;
        let url = &e.config.database_url;
        self.resolve(url, &format!("environments.{env}.database_url"), vars)
            .map(DbUrl::new)
    }

    /// Resolves an environment's `app_url`, if it has one.
    pub fn app_url(&self, env: &str, vars: &dyn VarSource) -> Result<Option<String>, ConfigError> {
        let e = self.environment(env)?;
        e.config
            .app_url
            .as_ref()
            .map(|t| self.resolve(t, &format!("environments.{env}.app_url"), vars))
            .transpose()
    }

    /// Resolves any spanned template, reporting `key` and its position.
    pub fn resolve(
        &self,
        t: &Spanned<Template>,
        key: &str,
        vars: &dyn VarSource,
    ) -> Result<String, ConfigError> {
        t.get_ref().resolve(vars).map_err(|m| {
            let (line, column) = line_col(&self.source, t.span().start);
            ConfigError::MissingVariable {
                path: self.path.clone(),
                line,
                column,
                key: key.to_string(),
                var: m.name,
            }
        })
    }
}

/// True when a URL template carries a password that is not (wholly) a
/// `${VAR}` reference.
/// The URL template carries a password written out, not referenced.
pub fn has_literal_password(t: &Template) -> bool {
    let Some(pw) = literal_password(t.raw()) else {
        return false;
    };
    match Template::new(pw) {
        Ok(pw_t) => pw_t
            .parts()
            .iter()
            .any(|p| matches!(p, crate::template::Part::Literal(s) if !s.is_empty())),
        Err(_) => true,
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = source[line_start..offset].chars().count() + 1;
    (line, column)
}

fn tidy_toml_message(msg: &str) -> String {
    let m = msg.trim().trim_end_matches('\n');
    if let Some(rest) = m.strip_prefix("unknown field ") {
        format!("unknown key {rest} (check the spelling; see docs/configuration.md)")
    } else {
        m.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let s = "a = 1\nbé = 2\n";
        assert_eq!(line_col(s, 0), (1, 1));
        assert_eq!(line_col(s, 6), (2, 1));
        assert_eq!(line_col(s, s.find('=').unwrap()), (1, 3));
        assert_eq!(line_col(s, s.rfind('=').unwrap()), (2, 4));
    }

    #[test]
    fn literal_password_detection() {
        let lit = |s: &str| has_literal_password(&Template::new(s).unwrap());
        assert!(lit("postgres://app:secret@h/db"));
        assert!(lit("postgres://app:pre${X}@h/db"));
        assert!(lit("postgres://h/db?password=secret"));
        assert!(!lit("postgres://app:${PW}@h/db"));
        assert!(!lit("${DATABASE_URL}"));
        assert!(!lit("postgres://app@h/db"));
        assert!(!lit("postgres://h/db?password=${PW}"));
    }
}
