//! What a rule is: its id, severity, documentation and check.

use pg_query::NodeEnum;
use serde::Serialize;

use crate::context::Context;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    /// A finding the target's catalog showed to be harmless (a small
    /// table): reported with its evidence, never blocking.
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
        }
    }
}

/// What a rule says about one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub message: String,
    pub help: String,
}

/// A rule: id, severity, documentation and the check.
pub trait Rule: Sync {
    /// Kebab-case id that says what it catches.
    fn id(&self) -> &'static str;
    fn severity(&self) -> Severity;
    /// One line for listings.
    fn summary(&self) -> &'static str;
    /// The doc page: problem, why it hurts in production, the safe way.
    fn doc(&self) -> RuleDoc;
    fn check(&self, stmt: &NodeEnum, ctx: &Context) -> Option<Hit>;
}

#[derive(Debug, Clone, Copy)]
pub struct RuleDoc {
    pub problem: &'static str,
    pub why: &'static str,
    pub safe_way: &'static str,
}
