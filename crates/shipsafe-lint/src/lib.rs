//! Static lint of migration SQL (SPEC §5), parsed with PostgreSQL's own
//! grammar (`pg_query`).
//!
//! One file per rule in `rules/`, each with its tests and a doc page in
//! `docs/rules/<id>.md`. Rules are context-aware: a table created earlier in
//! the same migration is empty and unseen by the application, so locking and
//! rewrite rules do not fire on it. `-- shipsafe:allow RULE reason` on the
//! line(s) before a statement suppresses that rule there; the finding stays
//! in the report, marked suppressed, with the reason.

pub mod context;
pub mod rule;
pub mod rules;

use serde::Serialize;

pub use context::Context;
pub use pg_query::NodeEnum;
pub use rule::{Hit, Rule, RuleDoc, Severity};

/// Rules whose harm grows with the table: a lock held while the table is
/// scanned, rebuilt or indexed. On a table the catalog shows to be small
/// they are information, not errors, and a rehearsal can measure them.
pub const SIZE_DEPENDENT: &[&str] = &[
    "ban-add-serial-column",
    "ban-cluster",
    "ban-column-type-change",
    "ban-set-not-null",
    "ban-vacuum-full",
    "ban-volatile-default",
    "constraint-missing-not-valid",
    "foreign-key-missing-not-valid",
    "require-concurrent-index-creation",
    "require-concurrent-reindex",
    "unique-constraint-without-index",
];

/// The table a statement locks, as written (`schema.table` or `table`).
fn locked_table(node: &NodeEnum) -> Option<String> {
    let r = match node {
        NodeEnum::AlterTableStmt(a) => a.relation.as_ref(),
        NodeEnum::IndexStmt(i) => i.relation.as_ref(),
        NodeEnum::ReindexStmt(r) => r.relation.as_ref(),
        NodeEnum::ClusterStmt(c) => c.relation.as_ref(),
        _ => None,
    }?;
    Some(if r.schemaname.is_empty() {
        r.relname.clone()
    } else {
        format!("{}.{}", r.schemaname, r.relname)
    })
}

/// One finding, in the shape of SPEC §5's JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: String,
    pub severity: Severity,
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub help: String,
    pub suppressed: bool,
    pub reason: Option<String>,
    /// For size-dependent rules: the table whose size decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// What the severity rests on beyond the SQL text (the table's size from
    /// the target's catalog).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

impl Finding {
    /// Whether the target's catalog can change this finding's severity.
    pub fn size_dependent(&self) -> bool {
        SIZE_DEPENDENT.contains(&self.rule.as_str())
    }

    /// `file:line:col: severity[rule]: message` and an indented help line.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{}:{}:{}: {}[{}]: {}\n  help: {}\n",
            self.file,
            self.line,
            self.column,
            self.severity.as_str(),
            self.rule,
            self.message,
            self.help
        );
        if let Some(e) = &self.evidence {
            s.push_str(&format!("  evidence: {e}\n"));
        }
        if self.suppressed {
            s.push_str(&format!(
                "  allowed: {}\n",
                self.reason.as_deref().unwrap_or("(no reason given)")
            ));
        }
        s
    }
}

/// A file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// 1-based line and column (characters) of a byte offset.
pub fn line_col(text: &str, byte: usize) -> (usize, usize) {
    let byte = byte.min(text.len());
    let before = &text[..byte];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[start..byte].chars().count() + 1)
}

/// The first byte at or after `from` that is not whitespace or a comment.
fn first_token(text: &str, mut i: usize) -> usize {
    let b = text.as_bytes();
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
        } else if b[i..].starts_with(b"--") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            match text[i + 2..].find("*/") {
                Some(e) => i += e + 4,
                None => return b.len(),
            }
        } else {
            break;
        }
    }
    i
}

/// `-- shipsafe:allow RULE reason` lines directly above `line` (1-based).
fn allowances(text: &str, line: usize) -> Vec<(String, Option<String>)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut l = line.saturating_sub(1);
    while l > 0 {
        let t = lines.get(l - 1).map_or("", |s| s.trim());
        let Some(c) = t.strip_prefix("--") else { break };
        if let Some(rest) = c.trim().strip_prefix("shipsafe:allow") {
            let mut words = rest.split_whitespace();
            if let Some(rule) = words.next() {
                let reason = words.collect::<Vec<_>>().join(" ");
                out.push((rule.to_string(), (!reason.is_empty()).then_some(reason)));
            }
        }
        l -= 1;
    }
    out
}

/// Lints one migration file.
pub fn lint(file: &str, text: &str) -> Result<Vec<Finding>, ParseError> {
    lint_with(file, text, &mut std::collections::HashSet::new())
}

/// Lints the files of one ordered history (the pending batch of a deploy, or
/// a folder of migrations): a table created by an earlier file is as new as
/// one created earlier in the same file, so lock, rewrite and validation
/// rules do not fire on it.
pub fn lint_batch<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<Finding>, ParseError> {
    let mut created = std::collections::HashSet::new();
    let mut all = Vec::new();
    for (file, text) in files {
        all.extend(lint_with(file, text, &mut created)?);
    }
    Ok(all)
}

fn lint_with(
    file: &str,
    text: &str,
    created: &mut std::collections::HashSet<String>,
) -> Result<Vec<Finding>, ParseError> {
    let parsed = pg_query::parse(text).map_err(|e| {
        let message = e.to_string();
        ParseError {
            file: file.to_string(),
            line: 1,
            column: 1,
            message: format!("does not parse as PostgreSQL: {message}"),
        }
    })?;
    let mut ctx = Context::with_created(text, std::mem::take(created));
    let rules = rules::all();
    let mut findings = Vec::new();
    for raw in &parsed.protobuf.stmts {
        let Some(node) = raw.stmt.as_ref().and_then(|n| n.node.as_ref()) else {
            continue;
        };
        let start = first_token(text, raw.stmt_location.max(0) as usize);
        let (line, column) = line_col(text, start);
        let allowed = allowances(text, line);
        ctx.set_current(
            raw.stmt_location.max(0) as usize,
            raw.stmt_len.max(0) as usize,
        );
        for rule in &rules {
            if let Some(hit) = rule.check(node, &ctx) {
                let allow = allowed.iter().find(|(r, _)| r == rule.id());
                findings.push(Finding {
                    rule: rule.id().to_string(),
                    severity: rule.severity(),
                    file: file.to_string(),
                    line,
                    column,
                    message: hit.message,
                    help: hit.help,
                    suppressed: allow.is_some(),
                    reason: allow.and_then(|(_, r)| r.clone()),
                    table: SIZE_DEPENDENT
                        .contains(&rule.id())
                        .then(|| locked_table(node))
                        .flatten(),
                    evidence: None,
                });
            }
        }
        ctx.observe(
            node,
            raw.stmt_location.max(0) as usize,
            raw.stmt_len.max(0) as usize,
        );
    }
    *created = ctx.into_created();
    Ok(findings)
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Rule ids that fire (unsuppressed) on `sql`.
    pub fn fired(sql: &str) -> Vec<String> {
        lint("t.sql", sql)
            .unwrap()
            .into_iter()
            .filter(|f| !f.suppressed)
            .map(|f| f.rule)
            .collect()
    }

    pub fn fires(rule: &str, sql: &str) -> bool {
        fired(sql).iter().any(|r| r == rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_point_at_the_statement_not_the_comment_above() {
        let sql = "create table t (id int);\n-- remove it\n\n  drop table users;\n";
        let f = lint("m/up.sql", sql).unwrap();
        let drop = f.iter().find(|f| f.rule == "ban-drop-table").unwrap();
        assert_eq!((drop.line, drop.column), (4, 3));
        assert!(
            drop.render()
                .starts_with("m/up.sql:4:3: error[ban-drop-table]: ")
        );
    }

    #[test]
    fn allow_comments_suppress_and_keep_the_reason() {
        let sql = "-- shipsafe:allow ban-drop-table replaced by archive_users in v42\ndrop table users;\n";
        let f = lint("up.sql", sql).unwrap();
        assert_eq!(f.len(), 1);
        assert!(f[0].suppressed);
        assert_eq!(
            f[0].reason.as_deref(),
            Some("replaced by archive_users in v42")
        );
        // Another rule's allow does not suppress this one.
        let f = lint(
            "up.sql",
            "-- shipsafe:allow ban-truncate\ndrop table users;",
        )
        .unwrap();
        assert!(!f[0].suppressed);
    }

    #[test]
    fn a_batch_shares_what_earlier_files_created() {
        let files = [
            ("1/up.sql", "create table orders (id bigint primary key);"),
            (
                "2/up.sql",
                "create table lines (id bigint primary key, order_id bigint);
                 alter table lines add constraint fk foreign key (order_id) references orders (id);",
            ),
            (
                "3/up.sql",
                "create index lines_order on lines (order_id);
                 alter table orders add column status text not null;",
            ),
        ];
        let alone: Vec<String> = files
            .iter()
            .flat_map(|(f, t)| lint(f, t).unwrap())
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.rule)
            .collect();
        assert!(
            alone.contains(&"require-concurrent-index-creation".to_string()),
            "{alone:?}"
        );
        assert!(
            alone.contains(&"require-default-for-not-null-column".to_string()),
            "{alone:?}"
        );
        let batch = lint_batch(files).unwrap();
        let errors: Vec<&Finding> = batch
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        // A table the batch did not create is still an existing table.
        let later = lint_batch([
            ("1/up.sql", "create table a (id int);"),
            ("2/up.sql", "create index b_x on b (x);"),
        ])
        .unwrap();
        assert!(
            later
                .iter()
                .any(|f| f.rule == "require-concurrent-index-creation")
        );
    }

    #[test]
    fn parse_errors_are_reported() {
        let e = lint("bad.sql", "create tabel x (id int);").unwrap_err();
        assert!(e.to_string().contains("bad.sql"), "{e}");
    }

    #[test]
    fn every_rule_has_a_doc_page() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/rules");
        let mut ids = std::collections::HashSet::new();
        for r in rules::all() {
            assert!(ids.insert(r.id()), "duplicate id {}", r.id());
            assert!(
                r.id().chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{} is not kebab-case",
                r.id()
            );
            let page = std::fs::read_to_string(dir.join(format!("{}.md", r.id())))
                .unwrap_or_else(|_| panic!("docs/rules/{}.md is missing", r.id()));
            assert_eq!(
                page,
                rules::doc_page(r),
                "docs/rules/{}.md is out of date (scripts/gen-rule-docs)",
                r.id()
            );
        }
    }
}
