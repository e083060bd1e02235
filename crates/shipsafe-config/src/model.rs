//! The `shipsafe.toml` model (SPEC §2). Every table denies unknown keys so a
//! typo is an error with its line, never a silently ignored safety setting.

use std::path::PathBuf;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::duration::Duration;
use crate::expect::Expectation;
use crate::template::Template;
use crate::window::Window;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub project: ProjectConfig,
    #[serde(default)]
    pub environments: IndexMap<String, Spanned<EnvironmentConfig>>,
    #[serde(default)]
    pub migrations: MigrationsConfig,
    #[serde(default)]
    pub backups: BackupsConfig,
    #[serde(default)]
    pub rehearsal: RehearsalConfig,
    #[serde(default)]
    pub lint: LintConfig,
    #[serde(default)]
    pub checks: Vec<CheckConfig>,
    #[serde(default)]
    pub smoke: Vec<SmokeConfig>,
    #[serde(default)]
    pub data: IndexMap<String, DataSetConfig>,
    #[serde(default)]
    pub mask: IndexMap<String, Spanned<MaskKind>>,
    #[serde(default)]
    pub readiness: ReadinessConfig,
    #[serde(default)]
    pub serve: crate::serve::ServeConfig,
    #[serde(default)]
    pub schedule: IndexMap<String, crate::serve::ScheduleConfig>,
    #[serde(default)]
    pub notify: Vec<crate::serve::NotifyConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub name: Option<String>,
    /// Run history, audit log, reports. Relative to the config file's folder.
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protection {
    /// Local development: changes need no backup.
    Open,
    /// Backups before every change are mandatory.
    Guarded,
    /// Backup, rehearsal on a clone and confirmation are mandatory.
    Protected,
}

impl Protection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Guarded => "guarded",
            Self::Protected => "protected",
        }
    }
}

/// The default when an environment does not say: a missing line must not
/// make production changes backup-free.
/// A list where "every one" is spelled by leaving the key out: `[]` would
/// otherwise quietly mean the opposite of what it says.
pub(crate) fn non_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let v = Vec::<T>::deserialize(d)?;
    if v.is_empty() {
        return Err(serde::de::Error::custom(
            "an empty list names nothing: leave the key out to mean every one, or name at least one",
        ));
    }
    Ok(v)
}

fn default_protection() -> Protection {
    Protection::Guarded
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    pub database_url: Spanned<Template>,
    pub app_url: Option<Spanned<Template>>,
    #[serde(default = "default_protection")]
    pub protection: Protection,
    pub window: Option<Window>,
    pub git_branch: Option<String>,
    /// Lets a protected environment on another host be reached without TLS.
    #[serde(default)]
    pub allow_plaintext: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationFormat {
    #[default]
    Auto,
    Native,
    Prisma,
    Flyway,
}

/// The team's migration tool, whose commands shipsafe knows (a preset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationTool {
    Alembic,
    FlaskMigrate,
    Prisma,
    Django,
    Rails,
    /// The commands written in `up`, `down`, `pending` and `current`.
    Command,
}

impl MigrationTool {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alembic => "alembic",
            Self::FlaskMigrate => "flask-migrate",
            Self::Prisma => "prisma",
            Self::Django => "django",
            Self::Rails => "rails",
            Self::Command => "command",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationsConfig {
    #[serde(default = "default_migrations_dir")]
    pub dir: PathBuf,
    #[serde(default)]
    pub format: MigrationFormat,
    /// A preset: shipsafe runs this tool's own commands (external mode),
    /// except Prisma, whose migration files shipsafe reads and applies.
    pub tool: Option<MigrationTool>,
    /// External mode: the team's own tool. With a preset these override
    /// its commands.
    pub up: Option<String>,
    /// May contain `{revision}`: the revision recorded before the deploy.
    pub down: Option<String>,
    pub pending: Option<String>,
    /// Prints where the database stands; recorded before a deploy and
    /// given to `down` as `{revision}`.
    pub current: Option<String>,
    #[serde(default = "default_url_env")]
    pub url_env: String,
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: Duration,
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout: Duration,
    #[serde(default = "default_lock_retries")]
    pub lock_retries: u32,
}

fn default_migrations_dir() -> PathBuf {
    PathBuf::from("migrations")
}
fn default_url_env() -> String {
    "DATABASE_URL".into()
}
fn default_lock_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_statement_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_lock_retries() -> u32 {
    5
}

impl Default for MigrationsConfig {
    fn default() -> Self {
        Self {
            dir: default_migrations_dir(),
            format: MigrationFormat::Auto,
            tool: None,
            up: None,
            down: None,
            pending: None,
            current: None,
            url_env: default_url_env(),
            lock_timeout: default_lock_timeout(),
            statement_timeout: default_statement_timeout(),
            lock_retries: default_lock_retries(),
        }
    }
}

impl MigrationsConfig {
    /// External mode: shipsafe drives the team's own migration tool. A
    /// Prisma project is external only when `up` names a command (such as
    /// `npx prisma migrate deploy`); otherwise shipsafe applies its files.
    pub fn is_external(&self) -> bool {
        match self.tool {
            Some(MigrationTool::Prisma | MigrationTool::Command) | None => self.up.is_some(),
            Some(_) => true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupsConfig {
    /// `file://PATH` or `s3://bucket/prefix`. Default: `<state_dir>/backups`.
    pub storage: Option<Spanned<Template>>,
    pub s3_endpoint: Option<Template>,
    pub s3_region: Option<String>,
    #[serde(default)]
    pub s3_allow_http: bool,
    #[serde(default = "default_compression_level")]
    pub compression_level: i32,
    #[serde(default)]
    pub retention: Retention,
    /// Schemas left out of every backup (`pg_dump --exclude-schema`), e.g.
    /// a provider's own schemas.
    #[serde(default)]
    pub exclude_schemas: Vec<String>,
}

/// Level 1: on realistic data (BENCHMARKS.md) multithreaded zstd at level 1
/// is both faster and no larger than level 3.
fn default_compression_level() -> i32 {
    1
}

impl Default for BackupsConfig {
    fn default() -> Self {
        Self {
            storage: None,
            s3_endpoint: None,
            s3_region: None,
            s3_allow_http: false,
            exclude_schemas: Vec::new(),
            compression_level: default_compression_level(),
            retention: Retention::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default = "default_keep_last")]
    pub keep_last: u32,
    #[serde(default = "default_keep_daily")]
    pub keep_daily: u32,
    #[serde(default = "default_keep_monthly")]
    pub keep_monthly: u32,
}

fn default_keep_last() -> u32 {
    10
}
fn default_keep_daily() -> u32 {
    30
}
fn default_keep_monthly() -> u32 {
    12
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep_last: default_keep_last(),
            keep_daily: default_keep_daily(),
            keep_monthly: default_keep_monthly(),
        }
    }
}

/// Where rehearsals get their copy of the target database.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CloneSource {
    /// A throwaway local cluster restored from the pre-change backup.
    #[default]
    Scratch,
    /// Another configured environment (its data is replaced).
    Env(String),
    /// A command that prints a connection URL (Neon branch, snapshot, ...).
    Command(String),
}

impl CloneSource {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t == "scratch" {
            return Ok(Self::Scratch);
        }
        if let Some(env) = t.strip_prefix("env:") {
            let env = env.trim();
            if env.is_empty() {
                return Err(
                    "rehearsal clone `env:` needs an environment name, e.g. \"env:staging\"".into(),
                );
            }
            return Ok(Self::Env(env.to_string()));
        }
        if let Some(cmd) = t.strip_prefix("command:") {
            let cmd = cmd.trim();
            let cmd = cmd
                .strip_prefix('"')
                .and_then(|c| c.strip_suffix('"'))
                .unwrap_or(cmd);
            if cmd.trim().is_empty() {
                return Err("rehearsal clone `command:` needs a command that prints a URL".into());
            }
            return Ok(Self::Command(cmd.to_string()));
        }
        Err(format!(
            "rehearsal clone {s:?} is not understood: use \"scratch\", \"env:NAME\" or \"command:SCRIPT\""
        ))
    }
}

impl<'de> Deserialize<'de> for CloneSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CloneSource::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RehearsalConfig {
    /// Absent means `scratch`.
    pub clone: Option<Spanned<CloneSource>>,
    /// An ACCESS EXCLUSIVE lock on an existing table larger than this makes
    /// the verdict `needs_ack`. Default 50MB.
    #[serde(default)]
    pub exclusive_lock_limit: Option<ByteSize>,
}

/// `[lint]`: when the target's catalog shows a table is small, lock and
/// rewrite findings on it are information, not errors.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LintConfig {
    /// Largest table (total size with indexes and TOAST) counted as small.
    /// Default 10MB.
    pub small_table: Option<ByteSize>,
    /// Most rows (estimated, `pg_class.reltuples`) counted as small.
    /// Default 100000.
    pub small_table_rows: Option<u64>,
}

impl LintConfig {
    pub fn small_table_bytes(&self) -> u64 {
        self.small_table.map_or(10 << 20, |b| b.0)
    }

    pub fn small_table_rows(&self) -> u64 {
        self.small_table_rows.unwrap_or(100_000)
    }
}

/// A size such as `"50MB"`, `"1.5GB"`, `"800kB"` or `"1024"` (bytes).
/// Units are powers of 1024, as in PostgreSQL's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size: write e.g. \"50MB\" or \"2GB\""))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" | "k" | "kib" => 1 << 10,
            "mb" | "m" | "mib" => 1 << 20,
            "gb" | "g" | "gib" => 1 << 30,
            "tb" | "t" | "tib" => 1 << 40,
            other => {
                return Err(format!(
                    "{s:?}: unknown size unit {other:?}; use B, kB, MB, GB or TB"
                ));
            }
        };
        Ok(Self((n * mult as f64).round() as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ByteSize::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl RehearsalConfig {
    pub fn exclusive_lock_limit(&self) -> u64 {
        self.exclusive_lock_limit.map_or(50 << 20, |b| b.0)
    }

    pub fn clone_source(&self) -> CloneSource {
        self.clone
            .as_ref()
            .map(|c| c.get_ref().clone())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    pub name: String,
    pub sql: String,
    pub expect: Expectation,
    /// The environments the check holds in; left out: every environment.
    #[serde(default, deserialize_with = "non_empty")]
    pub envs: Vec<String>,
    /// How long the query may run (`statement_timeout`); default
    /// [`CheckConfig::DEFAULT_TIMEOUT`].
    #[serde(default)]
    pub timeout: Option<Duration>,
}

impl CheckConfig {
    /// A check's statement timeout when it sets none: long enough for any
    /// sensible invariant query, short enough that a check stuck behind a
    /// migration's lock ends (and says so) instead of hanging a job.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// Whether the check holds in environment `env`.
    pub fn applies_to(&self, env: &str) -> bool {
        self.envs.is_empty() || self.envs.iter().any(|e| e == env)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Self::DEFAULT_TIMEOUT)
    }

    /// The same check: same name, query and expectation (its scope and
    /// timeout aside).
    pub fn same_as(&self, other: &CheckConfig) -> bool {
        self.name == other.name && self.sql == other.sql && self.expect == other.expect
    }
}

fn default_method() -> String {
    "GET".into()
}
fn default_status() -> u16 {
    200
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeConfig {
    pub name: String,
    #[serde(default = "default_method")]
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub headers: IndexMap<String, Template>,
    /// JSON request body; strings may hold `${VAR}` references.
    pub json: Option<toml::Value>,
    #[serde(default = "default_status")]
    pub expect_status: u16,
    /// A subset the response JSON must contain.
    pub expect_json: Option<toml::Value>,
    /// Variables taken from the response (`name = "json.field.path"`).
    #[serde(default)]
    pub capture: IndexMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSetConfig {
    pub table: String,
    pub key: Vec<String>,
    pub columns: Option<Vec<String>>,
    #[serde(default)]
    pub renames: IndexMap<String, String>,
    #[serde(default)]
    pub deletes: Vec<String>,
    #[serde(default)]
    pub references: IndexMap<String, ReferenceConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceConfig {
    /// The referenced table.
    pub table: String,
    /// Its natural key, written into data files instead of the surrogate id.
    pub key: Vec<String>,
    /// The foreign-key column in this set's table.
    pub column: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskKind {
    Email,
    Phone,
    Name,
    Text,
    Null,
    Keep,
}

/// `[readiness]`: what the scorecard looks for and its thresholds. Every
/// threshold has the default of the check it belongs to (docs/readiness.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadinessConfig {
    /// Tables with this column hold one tenant's rows each. Default `tenant_id`.
    pub tenant_column: Option<String>,
    #[serde(default)]
    pub credentials: Vec<CredentialConfig>,
    /// The role the application logs in as. Default: the user of the
    /// environment's database URL.
    pub app_role: Option<String>,
    /// A table the application must only append to (no UPDATE, DELETE or
    /// TRUNCATE for the app role).
    pub audit_table: Option<String>,
    /// `readiness` exits 1 below this level (for CI).
    pub min_level: Option<ReadinessLevel>,
    /// Newest complete backup older than this fails. Default 26h.
    pub backup_max_age: Option<Duration>,
    /// Newest passed restore drill older than this fails. Default 8d.
    pub drill_max_age: Option<Duration>,
    /// A changed table not vacuumed/analyzed for this long is reported. Default 7d.
    pub vacuum_max_age: Option<Duration>,
    /// Queries running, or transactions idle, longer than this fail. Default 5min.
    pub long_running: Option<Duration>,
    /// Dead rows above this share of a table's rows are reported. Default 0.2.
    pub dead_tuple_ratio: Option<f64>,
    /// Connections above this share of max_connections fail. Default 0.75.
    pub connections_max: Option<f64>,
    /// Cache hit ratio below this is reported. Default 0.99.
    pub cache_hit_min: Option<f64>,
    /// A sequence or integer key past this share of its range fails. Default 0.75.
    pub sequence_max: Option<f64>,
    /// Transaction-ID age past this share of the 2^31 limit fails. Default 0.5.
    pub wraparound_max: Option<f64>,
    /// Unused indexes larger than this are reported. Default 10MB.
    pub unused_index_size: Option<ByteSize>,
    /// Unpartitioned tables with more rows than this are reported. Default 10,000,000.
    pub big_table_rows: Option<u64>,
    /// Items accepted as they are, for a reason, until a date.
    #[serde(default)]
    pub waive: Vec<WaiverConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadinessLevel {
    Bronze,
    Silver,
    Gold,
}

/// `[[readiness.waive]]`: an item shown as `waived` instead of failing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaiverConfig {
    pub id: String,
    pub reason: String,
    /// Last day (UTC) the waiver holds, `YYYY-MM-DD`. Required: a waiver
    /// that never expires is a check switched off.
    #[serde(deserialize_with = "date")]
    pub until: jiff::civil::Date,
}

/// A date written as a TOML date (`2027-01-31`) or a string (`"2027-01-31"`).
fn date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<jiff::civil::Date, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Toml(toml::value::Datetime),
        Text(String),
    }
    let text = match Raw::deserialize(d)? {
        Raw::Toml(t) => t.to_string(),
        Raw::Text(s) => s,
    };
    text.trim().parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not a date: write YYYY-MM-DD, e.g. 2027-01-31"
        ))
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    pub table: String,
    pub user: String,
    pub hash: String,
    #[serde(rename = "where")]
    pub filter: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("50MB").unwrap().0, 50 << 20);
        assert_eq!(ByteSize::parse("1.5GB").unwrap().0, 3 << 29);
        assert_eq!(ByteSize::parse("800 kB").unwrap().0, 800 << 10);
        assert_eq!(ByteSize::parse("1024").unwrap().0, 1024);
        assert!(ByteSize::parse("ten MB").is_err());
        assert!(
            ByteSize::parse("5 parsecs")
                .unwrap_err()
                .contains("unknown size unit")
        );
    }
}
