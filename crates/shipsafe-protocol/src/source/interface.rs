//! The words the migration-source interface speaks in: what is pending,
//! what linting found, where the database stood before the change, what
//! applying did and how a way back went.

use serde::Serialize;
use shipsafe_migrate::tool::ToolState;
use shipsafe_migrate::{ApplyReport, Migration};
use shipsafe_pg::CheckOutcome;

use super::tool::history::Pending as ToolPending;
use super::tool::process::ToolRun;
use crate::lint::LintReport;

/// One pending migration or revision, as plans and reports show it.
#[derive(Debug, Clone, Serialize)]
pub struct PendingMigration {
    pub version: String,
    pub name: String,
    pub transactional: bool,
    pub has_down: bool,
    pub irreversible: bool,
    pub has_verify: bool,
}

impl PendingMigration {
    pub fn of(m: &Migration) -> Self {
        Self {
            version: m.version.clone(),
            name: m.name.clone(),
            transactional: !m.no_transaction(),
            has_down: m.down.is_some(),
            irreversible: m.irreversible(),
            has_verify: m.verify.is_some(),
        }
    }
}

/// What is pending on a database, by the source's own account.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    /// Native sources: the migrations themselves, oldest first.
    pub migrations: Vec<Migration>,
    /// The team's tool: its own account (state, revisions, what it printed).
    pub tool: Option<ToolPending>,
    /// How many migrations the database has applied.
    pub applied: usize,
}

impl Pending {
    pub fn any(&self) -> bool {
        !self.migrations.is_empty() || self.tool.as_ref().is_some_and(|t| t.any)
    }

    /// The run step's detail.
    pub fn detail(&self) -> serde_json::Value {
        match &self.tool {
            Some(t) => serde_json::json!({ "pending": t.any, "revisions": t.revisions }),
            None => serde_json::json!({
                "pending": self.migrations.iter().map(Migration::label).collect::<Vec<_>>()
            }),
        }
    }
}

/// The lint step's result.
#[derive(Debug, Clone, Default)]
pub struct Linted {
    pub report: LintReport,
    /// Unsuppressed errors, rendered: they stop a deploy.
    pub blocking: Vec<String>,
    /// Size-dependent errors left to the rehearsal's measurements.
    pub deferred: usize,
    /// Why there was nothing to lint, when there was not.
    pub skipped: Option<String>,
    /// The step's detail for the run record.
    pub detail: serde_json::Value,
}

/// Where the database stood right before the change: the way back goes
/// there.
#[derive(Debug, Clone, Default)]
pub struct Before {
    /// The schema's fingerprint.
    pub fingerprint: Option<String>,
    /// The team's tool: its history.
    pub tool_state: Option<ToolState>,
    /// The team's tool: pending revisions whose `downgrade()` is empty.
    pub empty_down: Vec<String>,
}

/// What applying did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// Native: one report per applied migration.
    pub reports: Vec<ApplyReport>,
    /// Native: the migrations that changed the database, a partly applied
    /// one included.
    pub done: Vec<Migration>,
    /// A migration outside a transaction failed halfway.
    pub partial: bool,
    /// The team's tool: what it printed.
    pub tool_runs: Vec<ToolRun>,
    /// The team's tool failed and left the schema and its history as they
    /// were before: there is nothing to undo.
    pub unchanged: bool,
    /// Why applying failed.
    pub failure: Option<String>,
    /// The step's detail for the run record.
    pub detail: serde_json::Value,
}

/// How a failed change was undone (SPEC §6 step 9).
#[derive(Debug, Clone, Serialize)]
pub struct RollbackInfo {
    /// `down` (down migrations), `restore` (pre-deploy backup),
    /// `transaction` (nothing to undo) or `none`.
    pub method: String,
    pub ok: bool,
    pub detail: String,
    /// The safety backup taken before a restore.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safety_backup: Option<String>,
    pub checks_after: Vec<CheckOutcome>,
}

impl RollbackInfo {
    pub fn new(method: &str, ok: bool, detail: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            ok,
            detail: detail.into(),
            safety_backup: None,
            checks_after: Vec::new(),
        }
    }
}

/// What `plan` shows of the pending change.
#[derive(Debug, Clone, Default)]
pub struct Planned {
    pub applied: usize,
    /// The team's tool: where its history stands (alembic heads, Django's
    /// latest per app, ...).
    pub tool_state: Option<String>,
    pub pending: Vec<PendingMigration>,
    /// The team's tool: whether it says something is pending.
    pub external_pending: Option<bool>,
    /// The team's tool: its name.
    pub tool: Option<String>,
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
    pub lint: Vec<shipsafe_lint::Finding>,
    /// The team's tool: pending revisions whose `downgrade()` is empty, and
    /// how that was read (see `tool::history::Pending::empty_down`).
    pub empty_down: Vec<String>,
    pub empty_down_from: Option<Result<String, String>>,
}
