//! What earlier statements of the same migration tell later rules.

use std::collections::HashSet;

use pg_query::NodeEnum;
use pg_query::protobuf::TransactionStmtKind;

#[derive(Debug, Clone)]
pub struct Context<'a> {
    text: &'a str,
    /// Tables created in this migration, or by an earlier migration of the
    /// same batch: empty and unseen by the app.
    created: HashSet<String>,
    /// An explicit BEGIN is open.
    pub in_transaction: bool,
    /// Enum values added so far: (type, value).
    pub added_enum_values: Vec<(String, String)>,
    /// Text of the statements seen so far.
    pub previous: Vec<&'a str>,
    /// Text of the statement being checked.
    pub current: &'a str,
}

impl<'a> Context<'a> {
    pub fn new(text: &'a str) -> Self {
        Self::with_created(text, HashSet::new())
    }

    /// A context that already knows the tables earlier files of the batch
    /// created.
    pub fn with_created(text: &'a str, created: HashSet<String>) -> Self {
        Self {
            text,
            created,
            in_transaction: false,
            added_enum_values: Vec::new(),
            previous: Vec::new(),
            current: "",
        }
    }

    /// The tables known to be new so far, for the next file of the batch.
    pub fn into_created(self) -> HashSet<String> {
        self.created
    }

    /// True when `table` was created earlier in this migration or batch.
    pub fn is_new_table(&self, table: &str) -> bool {
        self.created.contains(&table.to_ascii_lowercase())
    }

    pub(crate) fn set_current(&mut self, start: usize, len: usize) {
        let end = if len == 0 {
            self.text.len()
        } else {
            (start + len).min(self.text.len())
        };
        self.current = self.text.get(start..end).unwrap_or("");
    }

    pub(crate) fn observe(&mut self, node: &NodeEnum, start: usize, len: usize) {
        match node {
            NodeEnum::CreateStmt(c) => {
                if let Some(r) = &c.relation {
                    self.created.insert(r.relname.to_ascii_lowercase());
                }
            }
            NodeEnum::CreateTableAsStmt(c) => {
                if let Some(r) = c.into.as_ref().and_then(|i| i.rel.as_ref()) {
                    self.created.insert(r.relname.to_ascii_lowercase());
                }
            }
            NodeEnum::TransactionStmt(t) => match t.kind() {
                TransactionStmtKind::TransStmtBegin | TransactionStmtKind::TransStmtStart => {
                    self.in_transaction = true
                }
                TransactionStmtKind::TransStmtCommit | TransactionStmtKind::TransStmtRollback => {
                    self.in_transaction = false;
                }
                _ => {}
            },
            NodeEnum::AlterEnumStmt(e) => {
                let ty = e
                    .type_name
                    .iter()
                    .filter_map(|n| match &n.node {
                        Some(NodeEnum::String(s)) => Some(s.sval.clone()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join(".");
                if !e.new_val.is_empty() && e.old_val.is_empty() {
                    self.added_enum_values.push((ty, e.new_val.clone()));
                }
            }
            _ => {}
        }
        let end = if len == 0 {
            self.text.len()
        } else {
            (start + len).min(self.text.len())
        };
        if let Some(t) = self.text.get(start..end) {
            self.previous.push(t);
        }
    }
}
