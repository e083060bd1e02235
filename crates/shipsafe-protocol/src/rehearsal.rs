//! What a rehearsal found (SPEC §6 step 4), and its judgement: the
//! measurements of the change on a clone, the round trip, the verdict and
//! the reasons for it. The steps that produce it are `steps::clone` and
//! `steps::rehearse`; each migration source fills in its own part.

use serde::Serialize;
use shipsafe_migrate::{MeasuredMigration, VerifyReport};
use shipsafe_pg::{CheckOutcome, SchemaDiff};

use crate::error::CoreError;
use crate::rehearsal_text::mib;

/// The rehearsal's judgement of the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Safe,
    /// Destructive, rewrites a table, or holds ACCESS EXCLUSIVE on a large
    /// table: deploy needs `--accept-risk`.
    NeedsAck,
    /// It failed on the clone.
    Blocked,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Safe => "safe",
            Self::NeedsAck => "needs_ack",
            Self::Blocked => "blocked",
        }
    }
}

/// Did down.sql give back the schema up.sql started from?
#[derive(Debug, Clone, Serialize)]
pub struct RoundTrip {
    /// `proven`, `failed`, `irreversible` (a migration has no down.sql),
    /// `unproven` (the team's tool changed nothing shipsafe can see on the
    /// clone, so going back proved nothing) or `not_run` (the rehearsal
    /// stopped earlier).
    pub status: &'static str,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub differences: Option<SchemaDiff>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RehearsalTimings {
    /// Restoring the backup into the clone (or asking the clone command).
    pub clone_ms: u64,
    pub apply_ms: u64,
    pub verify_ms: u64,
    pub round_trip_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RehearsalReport {
    /// `scratch`, `env:NAME` or `command`.
    pub clone: String,
    pub backup_id: Option<String>,
    /// The clone was restored from the backup and the checks passed there.
    pub backup_verified: bool,
    pub verdict: Verdict,
    /// Why the verdict is not `safe`.
    pub reasons: Vec<String>,
    pub timings: RehearsalTimings,
    pub migrations: Vec<MeasuredMigration>,
    pub verified: Vec<VerifyReport>,
    pub checks: Vec<CheckOutcome>,
    pub round_trip: RoundTrip,
    /// The change destroys data (dropped columns or tables with values,
    /// deleted rows): down.sql cannot bring it back, so a rollback
    /// restores the backup instead.
    pub loses_data: bool,
    /// External mode: what the team's tool printed on the clone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_output: Vec<crate::source::tool::process::ToolRun>,
    /// External mode: how the tool was kept from reaching anything but the
    /// clone (`network namespace`), or why it was not (then only the
    /// target's fingerprint is watched).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_isolation: Option<String>,
    /// External mode: objects the tool added (`extra`) and removed
    /// (`missing`) on the clone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_changes: Option<SchemaDiff>,
    /// Tables and columns the change created on the clone, as schema lines
    /// (`relation …` / `column …`): what going back with `down` drops, with
    /// whatever was written into them since.
    #[serde(default)]
    pub created: Vec<String>,
    /// The target's own schema changed while the change ran on the clone:
    /// the migration tool did not use the clone's URL.
    #[serde(default)]
    pub target_changed: bool,
    /// The clone is another environment (`env:NAME`) and `[mask]` names
    /// personal data: that environment received it unmasked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privacy: Option<String>,
    pub error: Option<String>,
}

impl RehearsalReport {
    pub fn new(clone: String, backup_id: Option<String>) -> Self {
        Self {
            clone,
            backup_id,
            backup_verified: false,
            verdict: Verdict::Blocked,
            reasons: Vec::new(),
            timings: RehearsalTimings::default(),
            migrations: Vec::new(),
            verified: Vec::new(),
            checks: Vec::new(),
            round_trip: RoundTrip {
                status: "not_run",
                detail: "the rehearsal stopped before it".into(),
                differences: None,
            },
            loses_data: false,
            tool_output: Vec::new(),
            tool_isolation: None,
            schema_changes: None,
            created: Vec::new(),
            target_changed: false,
            privacy: None,
            error: None,
        }
    }

    /// The rehearsal proved that the down migrations undo the change, and
    /// the change loses no data, so down is a faithful rollback.
    pub fn down_is_faithful(&self) -> bool {
        self.round_trip.status == "proven" && !self.loses_data
    }
}

pub fn loses_data(report: &RehearsalReport) -> bool {
    let statements = report.migrations.iter().flat_map(|m| &m.statements);
    let measured = statements.clone().any(|s| {
        s.dropped_columns
            .iter()
            .any(|c| c.non_null_values != Some(0))
            || s.dropped_tables.iter().any(|t| t.rows != Some(0))
            || s.rows.iter().any(|r| r.lost() > 0)
    });
    let external = report.schema_changes.as_ref().is_some_and(|d| {
        d.missing
            .iter()
            .any(|l| l.starts_with("column ") || l.starts_with("relation "))
    });
    measured || external
}

/// The tables (`relation … kind=r|p`) and the columns of tables that
/// existed before, among the schema lines a change added.
pub fn created(before: &[String], after: &[String]) -> Vec<String> {
    let added = shipsafe_pg::schema_diff(before, after).extra;
    let tables: Vec<&str> = added
        .iter()
        .filter(|l| l.ends_with(" kind=r") || l.ends_with(" kind=p"))
        .filter_map(|l| l.strip_prefix("relation "))
        .filter_map(|l| l.rsplit_once(' ').map(|(name, _)| name))
        .collect();
    added
        .iter()
        .filter(|l| {
            if let Some(t) = l.strip_prefix("relation ") {
                return t.ends_with(" kind=r") || t.ends_with(" kind=p");
            }
            let Some(c) = l.strip_prefix("column ") else {
                return false;
            };
            // A column of a new table goes with its table.
            !tables
                .iter()
                .any(|t| c.strip_prefix(t).is_some_and(|rest| rest.starts_with('.')))
        })
        .cloned()
        .collect()
}

/// The verdict and its reasons, from the measurements.
pub fn judge(report: &RehearsalReport, exclusive_lock_limit: u64) -> (Verdict, Vec<String>) {
    if let Some(e) = &report.error {
        return (Verdict::Blocked, vec![e.clone()]);
    }
    let mut reasons = Vec::new();
    for m in &report.migrations {
        for s in &m.statements {
            let at = format!("{}_{} line {}", m.version, m.name, s.line);
            for c in &s.dropped_columns {
                match c.non_null_values {
                    Some(0) => {}
                    Some(n) => reasons.push(format!(
                        "{at}: drops column {}.{} with {n} non-null value(s)",
                        c.table, c.column
                    )),
                    None => reasons.push(format!(
                        "{at}: drops column {}.{} (values not countable outside a transaction)",
                        c.table, c.column
                    )),
                }
            }
            for t in &s.dropped_tables {
                match t.rows {
                    Some(0) => {}
                    Some(n) => {
                        reasons.push(format!("{at}: drops table {} with {n} row(s)", t.table))
                    }
                    None => reasons.push(format!("{at}: drops table {}", t.table)),
                }
            }
            for r in &s.rows {
                if r.lost() > 0 {
                    reasons.push(format!(
                        "{at}: removes {} row(s) from {} ({} → {})",
                        r.lost(),
                        r.table,
                        r.before.unwrap_or(0),
                        r.after
                    ));
                }
            }
            for w in &s.rewrites {
                if w.kind != "index" && w.bytes_before > 0 {
                    reasons.push(format!(
                        "{at}: rewrites {} {} ({})",
                        w.kind,
                        w.relation,
                        mib(w.bytes_before)
                    ));
                }
            }
            for l in &s.locks {
                if l.is_access_exclusive()
                    && l.existing
                    && l.kind == "table"
                    && l.relation_bytes as u64 > exclusive_lock_limit
                {
                    reasons.push(format!(
                        "{at}: holds ACCESS EXCLUSIVE on {} ({}) for {} ms, blocking every read and write",
                        l.relation,
                        mib(l.relation_bytes),
                        l.held_ms
                    ));
                } else if l.blocks_writes_only()
                    && l.existing
                    && l.kind == "table"
                    && l.relation_bytes as u64 > exclusive_lock_limit
                {
                    reasons.push(format!(
                        "{at}: holds {} on {} ({}) for {} ms, blocking every write",
                        l.mode,
                        l.relation,
                        mib(l.relation_bytes),
                        l.held_ms
                    ));
                }
            }
        }
    }
    if let Some(d) = &report.schema_changes {
        for gone in &d.missing {
            if gone.starts_with("column ") || gone.starts_with("relation ") {
                // The schema line of something the tool removed.
                reasons.push(format!(
                    "the migration tool removes {}",
                    gone.split(" kind=").next().unwrap_or(gone)
                ));
            }
        }
    }
    if reasons.is_empty() {
        (Verdict::Safe, reasons)
    } else {
        (Verdict::NeedsAck, reasons)
    }
}

/// Puts each lint finding next to what the rehearsal measured for its
/// statement (same migration folder, same line): "measured: rewrite of
/// public.orders (0.2 MB), AccessExclusiveLock on public.orders held 14 ms,
/// statement 12 ms". Findings the rehearsal did not reach are left alone.
pub fn confront(findings: &mut [shipsafe_lint::Finding], report: &RehearsalReport) {
    for f in findings.iter_mut().filter(|f| !f.suppressed) {
        let statement = report.migrations.iter().find_map(|m| {
            let folder = format!("{}_{}", m.version, m.name);
            f.file
                .contains(&folder)
                .then(|| m.statements.iter().find(|s| s.line == f.line))
                .flatten()
        });
        let Some(s) = statement else { continue };
        let mut parts: Vec<String> = s
            .rewrites
            .iter()
            .filter(|w| w.kind != "index")
            .map(|w| format!("rewrite of {} ({})", w.relation, mib(w.bytes_before)))
            .collect();
        parts.extend(
            s.locks
                .iter()
                .filter(|l| l.kind == "table" && l.existing)
                .map(|l| format!("{} on {} held {} ms", l.mode, l.relation, l.held_ms)),
        );
        parts.push(format!("statement {} ms", s.duration_ms));
        // The guess is confirmed when the verdict's reasons name this
        // statement (a rewrite or a long lock on a large table).
        let at = report
            .migrations
            .iter()
            .find(|m| f.file.contains(&format!("{}_{}", m.version, m.name)))
            .map(|m| format!("{}_{} line {}:", m.version, m.name, s.line));
        let confirmed = at.is_some_and(|a| report.reasons.iter().any(|r| r.starts_with(&a)));
        let measured = format!(
            "measured on the clone: {} ({})",
            parts.join(", "),
            if confirmed {
                "confirmed: the verdict asks for --accept-risk"
            } else {
                "refuted: nothing there needs acknowledging"
            }
        );
        f.evidence = Some(match f.evidence.take() {
            Some(e) => format!("{e}; {measured}"),
            None => measured,
        });
    }
}

/// The rehearsal changed the target itself: nothing of shipsafe's protocol
/// covered that change, so a person must look (exit 5).
pub fn target_changed_error(env: &str, backup_id: &str, reasons: &str) -> CoreError {
    CoreError::RollbackFailed(format!(
        "the rehearsal changed {env} itself instead of the clone ({reasons}); shipsafe stopped and changed nothing more. Backup {backup_id} holds {env} as it was before: check the schema, and restore it with `shipsafe backup restore {backup_id} --to {env}` if needed"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipsafe_migrate::measure::{
        DroppedColumn, LockTaken, MeasuredStatement, Rewrite, RowCount,
    };

    fn statement() -> MeasuredStatement {
        MeasuredStatement {
            line: 1,
            sql: "alter table t ...".into(),
            duration_ms: 5,
            locks_sampled: false,
            locks: vec![],
            rewrites: vec![],
            dropped_tables: vec![],
            dropped_columns: vec![],
            rows: vec![],
        }
    }

    fn report(s: MeasuredStatement) -> RehearsalReport {
        let mut r = RehearsalReport::new("scratch".into(), None);
        r.migrations.push(MeasuredMigration {
            version: "1".into(),
            name: "t".into(),
            transactional: true,
            duration_ms: 5,
            statements: vec![s],
        });
        r
    }

    fn lock(bytes: i64, mode: &str, existing: bool) -> LockTaken {
        LockTaken {
            relation: "public.t".into(),
            kind: "table",
            mode: mode.into(),
            held_ms: 40,
            relation_bytes: bytes,
            existing,
        }
    }

    #[test]
    fn exclusive_locks_count_only_on_large_existing_tables() {
        let limit = 10 << 20;
        let mut s = statement();
        s.locks = vec![lock(20 << 20, "AccessExclusiveLock", true)];
        let (v, reasons) = judge(&report(s.clone()), limit);
        assert_eq!(v, Verdict::NeedsAck);
        assert!(reasons[0].contains("ACCESS EXCLUSIVE on public.t (20.0 MB) for 40 ms"));
        s.locks = vec![lock(1 << 20, "AccessExclusiveLock", true)];
        assert_eq!(judge(&report(s.clone()), limit).0, Verdict::Safe);
        s.locks = vec![lock(20 << 20, "ShareUpdateExclusiveLock", true)];
        assert_eq!(judge(&report(s.clone()), limit).0, Verdict::Safe);
        s.locks = vec![lock(0, "AccessExclusiveLock", false)];
        assert_eq!(judge(&report(s), limit).0, Verdict::Safe);
    }

    #[test]
    fn data_loss_and_table_rewrites_need_acknowledging() {
        let mut s = statement();
        s.dropped_columns = vec![DroppedColumn {
            table: "public.t".into(),
            column: "c".into(),
            non_null_values: Some(0),
        }];
        let r = report(s.clone());
        assert_eq!(judge(&r, u64::MAX).0, Verdict::Safe, "an empty column");
        assert!(!loses_data(&r));
        s.dropped_columns[0].non_null_values = None;
        assert_eq!(judge(&report(s.clone()), u64::MAX).0, Verdict::NeedsAck);
        let mut s = statement();
        s.rows = vec![RowCount {
            table: "public.t".into(),
            before: Some(10),
            after: 4,
        }];
        let r = report(s);
        assert!(judge(&r, u64::MAX).1[0].contains("removes 6 row(s) from public.t"));
        assert!(loses_data(&r));
        let mut s = statement();
        let rewrite = |kind| Rewrite {
            relation: "public.t".into(),
            kind,
            bytes_before: 8192,
            bytes_after: 8192,
        };
        s.rewrites = vec![rewrite("index")];
        assert_eq!(judge(&report(s.clone()), u64::MAX).0, Verdict::Safe);
        s.rewrites = vec![rewrite("table")];
        assert_eq!(judge(&report(s), u64::MAX).0, Verdict::NeedsAck);
    }

    #[test]
    fn a_failure_on_the_clone_blocks() {
        let mut r = report(statement());
        r.error = Some("on the clone: boom".into());
        let (v, reasons) = judge(&r, 0);
        assert_eq!(v, Verdict::Blocked);
        assert_eq!(reasons, ["on the clone: boom"]);
    }
}
