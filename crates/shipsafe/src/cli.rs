//! The command line (SPEC §3). Only commands that work are listed.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "shipsafe",
    version,
    about = "Make risky production work on PostgreSQL safe: proven backups, rehearsed migrations, automatic rollback, an audit trail.",
    after_help = "Exit codes: 0 success, 1 problems found (nothing changed), 3 blocked by a gate, 4 failed and rolled back (database as before), 5 failed and NOT rolled back (a person must act), 64 usage error, 78 configuration error."
)]
pub struct Cli {
    /// Config file (default: SHIPSAFE_CONFIG, else the nearest shipsafe.toml upwards).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Output format; json prints exactly one JSON document on stdout; md and html are for `readiness`.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text, env = "SHIPSAFE_FORMAT")]
    pub format: Format,

    /// State folder (run history, audit log); overrides SHIPSAFE_STATE_DIR and project.state_dir.
    #[arg(long, global = true, value_name = "PATH")]
    pub state_dir: Option<PathBuf>,

    /// Print only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// More detail on stderr (-vv for debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Never show progress bars (they only appear when stderr is a terminal).
    #[arg(long, global = true)]
    pub no_progress: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Md,
    Html,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a starter shipsafe.toml and .gitignore entry, detecting the migration tool.
    Init {
        /// Replace an existing shipsafe.toml.
        #[arg(long)]
        force: bool,
    },
    /// Tour shipsafe on a throwaway PostgreSQL cluster (needs only the server binaries).
    Demo,
    /// Per environment: reachable, server version, size, last backup and last verified restore.
    Status {
        /// Only this environment.
        env: Option<String>,
    },
    /// Show the audit log, or verify its hash chain (`log verify`).
    Log(LogArgs),
    /// Lint migration SQL (default: every migration of the project).
    Lint {
        /// Files or folders (down.sql and verify.sql in folders are skipped).
        paths: Vec<std::path::PathBuf>,
        /// Read table sizes from this environment's catalog: lock and rewrite
        /// findings on small tables become info, with the evidence.
        #[arg(long, value_name = "ENV")]
        env: Option<String>,
    },
    /// Undo the most recent deploy (or --run ID): down migrations if its rehearsal proved the round trip, else restore its pre-deploy backup after a safety backup.
    Rollback {
        env: String,
        /// The deploy run to undo (default: the newest one not rolled back).
        #[arg(long, value_name = "ID")]
        run: Option<String>,
        /// Confirm without a terminal prompt: needed in a protected
        /// environment, and in a guarded one when the rollback restores a
        /// backup (which discards every write made since it).
        #[arg(long, value_name = "ENV")]
        confirm: Option<String>,
    },
    /// Run [[checks]] and [[smoke]] against ENV now.
    Verify { env: String },
    /// Create migrations/<UTC timestamp>_<name>/{up,down,verify}.sql.
    New { name: String },
    /// What `deploy ENV` would do: pending migrations and problems. Changes nothing.
    Plan { env: String },
    /// Backup, restore into a clone, apply and measure there, round-trip down/up, report. ENV is not touched.
    Rehearse { env: String },
    /// The whole protocol: lint, backup, rehearsal (protected), confirmation, apply, verify, roll back on failure.
    Deploy {
        env: String,
        /// Confirm a protected environment without a terminal prompt.
        #[arg(long, value_name = "ENV")]
        confirm: Option<String>,
        /// Go ahead outside the window or off the git branch; the reason is audited.
        #[arg(long, value_name = "REASON")]
        r#override: Option<String>,
        /// Rehearse on a clone first in an open or guarded environment too (always done for protected ones).
        #[arg(long)]
        rehearse: bool,
        /// Go ahead when the rehearsal's verdict is needs_ack (destructive change, rewrite, long exclusive lock).
        #[arg(long)]
        accept_risk: bool,
    },
    /// Backups: create, list, verify (by restoring), restore, prune.
    #[command(subcommand)]
    Backup(BackupAction),
    /// Reference data by natural key: export to files, diff and import into an environment.
    #[command(subcommand)]
    Data(DataAction),
    /// Delete every row except the kept ones (and what they reference), after a backup, in one transaction.
    Wipe {
        env: String,
        /// Rows to keep, e.g. 'users:id = 14' (repeatable); rows they reference are kept too.
        #[arg(long, value_name = "TABLE:PREDICATE")]
        keep: Vec<String>,
        /// Tables to keep whole (repeatable); reference-data tables are always kept.
        #[arg(long, value_name = "TABLE")]
        keep_table: Vec<String>,
        /// Restart every serial/identity sequence just above its column's largest value.
        #[arg(long)]
        reset_sequences: bool,
        /// Show the counts before and after; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Confirm a protected environment without a terminal prompt.
        #[arg(long, value_name = "ENV")]
        confirm: Option<String>,
    },
    /// Evidence-based production-readiness scorecard: every item measured, cited and scored.
    Readiness {
        env: String,
        /// Also write the scorecard as Markdown to FILE (for a launch review).
        #[arg(long, value_name = "FILE")]
        markdown: Option<PathBuf>,
        /// Show the trend of the scorecards stored this far back, e.g. 30d.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        since: Option<std::time::Duration>,
        /// Exit 1 below this level (overrides [readiness] min_level).
        #[arg(long, value_name = "LEVEL", value_enum)]
        min_level: Option<MinLevel>,
    },
    /// Run [schedule.ENV] jobs, write a heartbeat, serve the dashboard and /metrics until SIGTERM.
    Serve {
        /// Address and port (default [serve] listen, else 127.0.0.1:7373); any other
        /// address than loopback needs SHIPSAFE_SERVE_TOKEN.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<String>,
        /// Dashboard buttons that run a restore drill or the checks (POST, CSRF-protected).
        #[arg(long)]
        allow_actions: bool,
    },
    /// Write the disaster-recovery runbook of ENV from facts (default <state_dir>/runbooks/ENV.md).
    Runbook {
        env: String,
        /// Write it here instead.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Copy FROM into TO (TO backed up first), optionally masking personal data ([mask]).
    Clone {
        from: String,
        to: String,
        /// Mask ([mask]) on a private scratch copy first: the original values never reach TO.
        #[arg(long)]
        mask: bool,
        /// Confirm a protected TO without a terminal prompt.
        #[arg(long, value_name = "ENV")]
        confirm: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MinLevel {
    Bronze,
    Silver,
    Gold,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    shipsafe_config::Duration::parse(s).map(|d| d.as_std())
}

/// Which data sets, in which environment.
#[derive(Debug, Args)]
pub struct DataSets {
    /// Sets configured as [data.SET].
    pub sets: Vec<String>,
    /// Every configured set.
    #[arg(long)]
    pub all: bool,
    /// The environment.
    #[arg(long, value_name = "ENV")]
    pub env: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Mode {
    Merge,
    Mirror,
}

#[derive(Debug, Subcommand)]
pub enum DataAction {
    /// Write data/<set>.json: rows sorted by natural key, references as natural keys.
    Export {
        #[command(flatten)]
        sets: DataSets,
        /// Folder for the files (default: data/ beside shipsafe.toml).
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
    },
    /// Inserts, updates, deletes, conflicts and unresolved references an import would have. Changes nothing.
    Diff {
        #[command(flatten)]
        sets: DataSets,
        /// Folder of the files (default: data/).
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
        #[arg(long, value_enum, default_value = "merge")]
        mode: Mode,
    },
    /// Apply the files in one transaction (backup first in guarded/protected environments).
    Import {
        #[command(flatten)]
        sets: DataSets,
        /// Folder of the files (default: data/).
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
        /// merge: insert and update (delete only `deletes`); mirror: also delete rows absent from the file.
        #[arg(long, value_enum, default_value = "merge")]
        mode: Mode,
        /// Do everything in a transaction that is rolled back.
        #[arg(long)]
        dry_run: bool,
        /// Overwrite rows edited in the target since the last import (audited).
        #[arg(long)]
        force: bool,
        /// Leave out rows whose references do not exist in the target.
        #[arg(long)]
        skip_unresolved: bool,
        /// Confirm a protected environment without a terminal prompt.
        #[arg(long, value_name = "ENV")]
        confirm: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackupAction {
    /// Take a backup of ENV now (pg_dump, zstd, checksum, storage).
    Create {
        env: String,
        /// Why (recorded in the manifest).
        #[arg(long, default_value = "manual")]
        reason: String,
    },
    /// The catalog, newest first, with verified / unverified.
    List {
        /// Only backups of this environment.
        env: Option<String>,
    },
    /// Prove a backup restores: restore it into a scratch cluster and run the checks.
    Verify { id: String },
    /// Replace ENV's data with a backup (safety backup first; checks must pass to commit).
    Restore {
        id: String,
        /// The environment to restore into.
        #[arg(long, value_name = "ENV")]
        to: String,
        /// Confirm a protected environment without a terminal prompt.
        #[arg(long, value_name = "ENV")]
        confirm: Option<String>,
    },
    /// Apply retention (keep_last / keep_daily / keep_monthly); never deletes the newest verified backup.
    Prune {
        env: Option<String>,
        /// Show what would be deleted and why the rest is kept; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LogArgs {
    #[command(subcommand)]
    pub action: Option<LogAction>,

    /// Only entries for this environment.
    #[arg(long)]
    pub env: Option<String>,

    /// At most this many entries (newest first).
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum LogAction {
    /// Check that no entry was edited, reordered or deleted.
    Verify,
}
