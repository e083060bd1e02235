//! Where migrations come from, behind one interface. Every source answers
//! the same questions (what is pending, what its SQL looks like, apply it,
//! prove it on a clone, go back to where the database stood, undo a
//! recorded deploy, show a plan); the protocol's steps ask [`Source`] and
//! never branch on the kind themselves.
//!
//! - [`native`]: migration folders shipsafe applies itself (its own,
//!   Prisma's and Flyway's layouts), statement by statement;
//! - [`tool`]: the team's own tool (a preset or written commands).
//!
//! A new migration tool preset is added in `shipsafe-migrate`'s `tool.rs`
//! (its commands, history table and output parsers); a new kind of source is
//! a module here with the functions [`Source`] dispatches to.

pub mod interface;
pub mod native;
pub mod native_rehearsal;
pub mod tool;

use std::sync::Arc;

use shipsafe_config::{Config, DbUrl, Protection};
use shipsafe_migrate::{ApplyOptions, VerifyReport};
use tokio_postgres::Client;

pub use interface::{Applied, Before, Linted, Pending, PendingMigration, Planned, RollbackInfo};
pub use tool::config::External;
pub use tool::history::ExternalReport;
pub use tool::process::ToolRun;

use crate::error::CoreError;
use crate::progress::Progress;
use crate::rehearsal::RehearsalReport;

/// The project's migration source, from `[migrations]`.
#[derive(Debug, Clone)]
pub enum Source {
    Native,
    Tool(External),
}

impl Source {
    pub fn of(config: &Config) -> Self {
        match tool::config::external(config) {
            Some(x) => Self::Tool(x),
            None => Self::Native,
        }
    }

    /// The team's tool, when it is one.
    pub fn tool(&self) -> Option<&External> {
        match self {
            Self::Tool(x) => Some(x),
            Self::Native => None,
        }
    }

    /// What a deploy's audit entry records as its mode, if anything.
    pub fn audit_mode(&self) -> Option<&'static str> {
        self.tool().map(|_| "external")
    }

    /// What is pending on the database at `url` (`client` connected to it).
    pub async fn pending(
        &self,
        config: &Config,
        url: &DbUrl,
        client: &Client,
    ) -> Result<Pending, CoreError> {
        match self {
            Self::Native => native::pending(config, client).await,
            Self::Tool(x) => tool::pending(config, x, url).await,
        }
    }

    /// How many migrations are pending, when the source can count them
    /// (`status`); `Ok(None)` when it cannot.
    pub async fn pending_count(
        &self,
        config: &Config,
        url: &DbUrl,
        client: &Client,
    ) -> Result<Option<usize>, String> {
        match self {
            Self::Native => {
                // No readable migrations folder: nothing to count, no error.
                let Ok(all) = native::discover(config) else {
                    return Ok(None);
                };
                shipsafe_migrate::history::applied(client)
                    .await
                    .and_then(|a| shipsafe_migrate::history::plan(&all, a).map(|p| p.pending.len()))
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
            Self::Tool(x) if shipsafe_migrate::tool::list_command(x.tool).is_none() => Ok(None),
            Self::Tool(x) => tool::history::pending(config, x, url)
                .await
                .map(|p| p.revisions.as_ref().map(Vec::len))
                .map_err(|e| e.to_string()),
        }
    }

    /// Lints the pending change (`rehearsing`: size-dependent errors are
    /// left to the rehearsal).
    pub async fn lint(
        &self,
        config: &Config,
        url: &DbUrl,
        client: &Client,
        pending: &Pending,
        rehearsing: bool,
    ) -> Result<Linted, CoreError> {
        match self {
            Self::Native => native::lint(config, client, pending, rehearsing).await,
            Self::Tool(x) => tool::lint(config, x, url, client, pending).await,
        }
    }

    /// The summary a person confirms before a protected deploy.
    pub fn confirm_text(
        &self,
        env: &str,
        pending: &Pending,
        rehearsal: Option<&RehearsalReport>,
    ) -> String {
        match self {
            Self::Native => {
                let mut t = format!("Deploy to {env} (protected):\n");
                t.push_str(&native::confirm_lines(pending));
                if let Some(r) = rehearsal {
                    t.push_str(&format!(
                        "Rehearsal on {}: {} (round trip: {})\n",
                        r.clone,
                        r.verdict.as_str(),
                        r.round_trip.status
                    ));
                    for reason in &r.reasons {
                        t.push_str(&format!("  - {reason}\n"));
                    }
                }
                t
            }
            Self::Tool(x) => {
                let mut t = format!("Deploy to {env} (protected) with `{}`\n", x.up);
                let tool = pending.tool.as_ref();
                for r in tool
                    .and_then(|t| t.revisions.as_ref())
                    .into_iter()
                    .flatten()
                {
                    t.push_str(&format!("  - {} {}\n", r.id, r.name));
                }
                match rehearsal {
                    Some(r) => {
                        t.push_str(&format!(
                            "Rehearsal on {}: {} (round trip: {})\n",
                            r.clone,
                            r.verdict.as_str(),
                            r.round_trip.status
                        ));
                        for reason in &r.reasons {
                            t.push_str(&format!("  - {reason}\n"));
                        }
                    }
                    None => t.push_str("Rehearsal: none\n"),
                }
                t
            }
        }
    }

    /// Where the database stands right before the change.
    pub async fn before(
        &self,
        config: &Config,
        url: &DbUrl,
        client: &Client,
    ) -> Result<Before, CoreError> {
        match self {
            Self::Native => Ok(Before {
                fingerprint: Some(shipsafe_pg::schema_fingerprint(client).await.map_err(|e| {
                    CoreError::Failed(format!(
                        "cannot read the schema: {}",
                        shipsafe_pg::describe(&e)
                    ))
                })?),
                tool_state: None,
                empty_down: Vec::new(),
            }),
            Self::Tool(x) => tool::before(config, x, url, client).await,
        }
    }

    /// Whether the database on `client` is where the run `run` (left
    /// `running` by a dead process) found it: the schema fingerprint its
    /// checkpoint recorded, and no migration recorded by that run (native
    /// migrations are recorded in their own transaction, or marked dirty
    /// before a non-transactional one). `false` when it cannot be told: the
    /// team's tool (its data changes outside a transaction are invisible),
    /// nothing recorded, a read failing.
    pub async fn changed_nothing_since(
        &self,
        client: &Client,
        run: &shipsafe_state::RunRecord,
    ) -> bool {
        let Some(recorded) = run.report["before_fingerprint"].as_str() else {
            return false;
        };
        if shipsafe_pg::schema_fingerprint(client)
            .await
            .ok()
            .as_deref()
            != Some(recorded)
        {
            return false;
        }
        match self {
            Self::Native => shipsafe_migrate::history::applied(client)
                .await
                .is_ok_and(|rows| {
                    !rows
                        .iter()
                        .any(|r| r.run_id.as_deref() == Some(run.run_id.as_str()))
                }),
            // A tool's data changes made outside its own transaction (an
            // autocommit block) leave schema and history as they were: a
            // dead tool run is never taken for one that changed nothing.
            Self::Tool(_) => false,
        }
    }

    /// Applies the pending change to the database at `url` (where it stood
    /// `before`).
    #[allow(clippy::too_many_arguments)]
    pub async fn apply(
        &self,
        config: &Config,
        env: &str,
        url: &DbUrl,
        client: &Client,
        pending: &Pending,
        before: &Before,
        opts: &ApplyOptions,
        progress: &Arc<dyn Progress>,
    ) -> Applied {
        match self {
            Self::Native => native::apply(client, pending, opts, progress).await,
            Self::Tool(x) => {
                progress.stage(&format!("running `{}`", x.up));
                tool::apply(config, x, env, url, client, pending, before).await
            }
        }
    }

    /// The change's own verification (verify.sql), where it has one.
    pub async fn verify_sql(
        &self,
        client: &Client,
        applied: &Applied,
    ) -> Result<Vec<VerifyReport>, String> {
        match self {
            Self::Native => native::verify_sql(client, applied).await,
            Self::Tool(_) => Ok(Vec::new()),
        }
    }

    /// The tool's history after a successful change.
    pub async fn after(
        &self,
        config: &Config,
        url: &DbUrl,
    ) -> Option<shipsafe_migrate::tool::ToolState> {
        match self {
            Self::Native => None,
            Self::Tool(x) => tool::history::state(config, x, url).await.ok(),
        }
    }

    /// The failed change applied nothing at all: native, each migration
    /// runs in its own transaction and the first one failed; the team's
    /// tool, the schema and the tool's history are as they were before.
    pub fn applied_nothing(&self, applied: &Applied) -> bool {
        match self {
            Self::Native => applied.done.is_empty(),
            Self::Tool(_) => applied.unchanged,
        }
    }

    /// With a backup to restore, whether the source's own way back is the
    /// better rollback: only when the rehearsal proved it faithful (`proven`)
    /// and every applied migration has one. The team's tool's way back is
    /// never preferred over a backup: its statements were not measured.
    pub fn prefers_going_back(&self, applied: &Applied, proven: bool) -> bool {
        match self {
            Self::Native => proven && native::can_down(applied),
            Self::Tool(_) => false,
        }
    }

    /// Takes the database back to `before` without a backup. Returns how,
    /// and what the tool printed.
    #[allow(clippy::too_many_arguments)]
    pub async fn go_back(
        &self,
        config: &Config,
        url: &DbUrl,
        client: &Client,
        applied: &Applied,
        before: &Before,
        opts: &ApplyOptions,
        proven: bool,
    ) -> (RollbackInfo, Vec<ToolRun>) {
        match self {
            Self::Native => (
                native::go_back(client, applied, opts, proven).await,
                Vec::new(),
            ),
            Self::Tool(x) => tool::go_back(config, x, url, client, before).await,
        }
    }

    /// Applies the pending change on a clone, measures it and proves the way
    /// back there, filling in `report`.
    pub async fn rehearse(
        &self,
        config: &Config,
        target: &DbUrl,
        clone: &DbUrl,
        pending: &Pending,
        report: &mut RehearsalReport,
        progress: &Arc<dyn Progress>,
    ) -> Result<(), String> {
        match self {
            Self::Native => {
                native_rehearsal::rehearse(config, clone, &pending.migrations, report, progress)
                    .await
            }
            Self::Tool(x) => {
                tool::rehearsal::rehearse(config, x, target, clone, pending, report, progress).await
            }
        }
    }

    /// Why the target's schema may have changed during a rehearsal.
    pub fn target_changed_reason(&self, config: &Config) -> String {
        match self {
            Self::Native => "the target's schema changed during the rehearsal: a migration reached it from the clone's server (dblink, postgres_fdw, COPY ... PROGRAM) or another session changed it at the same time (the app's own DDL); shipsafe cannot tell which: check what changed before anything else".to_string(),
            Self::Tool(_) => format!(
                "the target's schema changed during the rehearsal: the migration tool did not use the clone's URL in {} (does it read .env or a config file?), or another session changed it at the same time (the app's own DDL); shipsafe cannot tell which: check what changed before anything else",
                config.file().migrations.url_env
            ),
        }
    }

    /// Why this source cannot undo a deploy run whose report is `recorded`
    /// (the migration source changed since, or the run applied revisions
    /// whose `downgrade()` is empty), if it cannot.
    pub fn cannot_undo(&self, run_id: &str, recorded: &serde_json::Value) -> Option<String> {
        let made_by_tool = recorded.get("external").is_some();
        match self {
            Self::Native if made_by_tool => Some(format!(
                "run {run_id} was made by the team's migration tool, which [migrations] no longer configures"
            )),
            Self::Tool(_) if !made_by_tool => Some(format!(
                "run {run_id} applied native migrations, but [migrations] now runs the team's tool"
            )),
            Self::Tool(_) => {
                let empty: Vec<&str> = recorded["external"]["empty_down"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_str())
                    .collect();
                (!empty.is_empty()).then(|| {
                    format!(
                        "run {run_id} applied revision(s) {} that the tool may not undo: a downgrade() is empty, or the offline downgrade SQL could not be printed to tell",
                        empty.join(", ")
                    )
                })
            }
            _ => None,
        }
    }

    /// `rollback`: undoes the deploy run `run_id` (its report `recorded`)
    /// with the source's way back. Returns what it says and the step's
    /// detail.
    pub async fn undo_run(
        &self,
        config: &Config,
        url: &DbUrl,
        client: &Client,
        run_id: &str,
        recorded: &serde_json::Value,
        opts: &ApplyOptions,
    ) -> Result<(String, serde_json::Value), (CoreError, serde_json::Value)> {
        if let Some(why) = self.cannot_undo(run_id, recorded) {
            return Err((CoreError::Blocked(why), serde_json::json!({})));
        }
        match self {
            Self::Tool(x) => tool::undo_run(config, x, url, run_id, &recorded["external"]).await,
            Self::Native => {
                let reverted = native::undo_run(config, client, run_id, opts)
                    .await
                    .map_err(|e| (e, serde_json::json!({})))?;
                Ok((
                    format!("reverted {} migration(s) of run {run_id}", reverted.len()),
                    serde_json::json!({ "reverted": reverted }),
                ))
            }
        }
    }

    /// `plan`: what a deploy would apply, and what would stop it.
    pub async fn plan(
        &self,
        config: &Config,
        url: &DbUrl,
        client: &Client,
        protection: Protection,
    ) -> Result<Planned, CoreError> {
        match self {
            Self::Native => native::plan(config, client, protection).await,
            Self::Tool(x) => tool::plan(config, x, url, client, protection).await,
        }
    }
}
