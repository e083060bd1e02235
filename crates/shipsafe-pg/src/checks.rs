//! `[[checks]]`: SQL invariants evaluated against a database.
//!
//! The first column of the first row is compared with the expectation;
//! `empty`/`nonempty` look at the row count (at most two rows are read).
//! No row or NULL where a value is needed is a failure, never a pass. A
//! query that cannot run (bad SQL, a missing column, its timeout) is an
//! error, with the server's message: it says nothing about the data.

use serde::{Deserialize, Serialize};
use shipsafe_config::{CheckConfig, Expectation};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::error::describe;

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// The query ran and the expectation held.
    Passed,
    /// The query ran and the expectation did not hold.
    Failed,
    /// The query itself failed: `error` holds the server's message.
    Error,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckOutcome {
    pub name: String,
    pub sql: String,
    pub expect: String,
    /// What the query returned (first value, or the row count).
    pub actual: Option<String>,
    pub ok: bool,
    pub status: CheckStatus,
    /// The server's message when the query could not run (`status` error).
    pub error: Option<String>,
    /// Why the expectation did not hold when `actual` alone does not say
    /// (no row, a value that is not a number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub duration_ms: u64,
}

impl CheckOutcome {
    pub fn is_error(&self) -> bool {
        self.status == CheckStatus::Error
    }

    /// One line: what was expected and what came, or why the query could
    /// not run.
    pub fn line(&self) -> String {
        match self.status {
            CheckStatus::Error => format!(
                "check {:?} could not run: {}",
                self.name,
                self.error.as_deref().unwrap_or("unknown error")
            ),
            CheckStatus::Passed | CheckStatus::Failed => format!(
                "check {:?} {} {} got {}{}",
                self.name,
                if self.ok { "expects" } else { "expected" },
                self.expect,
                self.actual.as_deref().unwrap_or("nothing"),
                self.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// Runs every check, each with its statement timeout. Inside a transaction
/// each runs under a savepoint that is rolled back afterwards (with the
/// timeout it set), so one failing query does not abort the others or the
/// transaction, and a check changes nothing the transaction commits. Outside
/// one, each runs in a transaction of its own whose `SET LOCAL` ends with
/// it: the connection's own settings (a deploy's, shared) are as they were.
pub async fn run_checks(
    client: &Client,
    checks: &[CheckConfig],
    in_transaction: bool,
) -> Vec<CheckOutcome> {
    let mut out = Vec::with_capacity(checks.len());
    for c in checks {
        let started = std::time::Instant::now();
        let timeout_ms = c.timeout().as_millis();
        let result = match c.expect {
            // Two rows say all a row count needs; a wrapper that does not
            // parse (several statements, SHOW, ...) falls back to the query.
            Expectation::Empty | Expectation::NonEmpty => {
                match attempt(
                    client,
                    &at_most_two_rows(&c.sql),
                    timeout_ms,
                    in_transaction,
                )
                .await
                {
                    Err(e)
                        if e.code() == Some(&SqlState::SYNTAX_ERROR)
                            || e.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED) =>
                    {
                        attempt(client, &c.sql, timeout_ms, in_transaction).await
                    }
                    other => other,
                }
            }
            _ => attempt(client, &c.sql, timeout_ms, in_transaction).await,
        };
        let mut outcome = CheckOutcome {
            name: c.name.clone(),
            sql: c.sql.clone(),
            expect: c.expect.to_string(),
            actual: None,
            ok: false,
            status: CheckStatus::Error,
            error: None,
            reason: None,
            duration_ms: 0,
        };
        match result {
            Err(e) => outcome.error = Some(query_error(&e, c)),
            Ok(messages) => {
                let rows: Vec<Option<String>> = messages
                    .iter()
                    .filter_map(|m| match m {
                        SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
                        _ => None,
                    })
                    .collect();
                let (ok, actual, reason) = evaluate(c.expect, &rows);
                outcome.ok = ok;
                outcome.status = if ok {
                    CheckStatus::Passed
                } else {
                    CheckStatus::Failed
                };
                outcome.actual = actual;
                outcome.reason = reason;
            }
        }
        outcome.duration_ms = started.elapsed().as_millis() as u64;
        out.push(outcome);
    }
    out
}

/// `sql` read for its first two rows only.
fn at_most_two_rows(sql: &str) -> String {
    let mut body = sql.trim();
    while let Some(rest) = body.strip_suffix(';') {
        body = rest.trim_end();
    }
    // Line breaks: a trailing `-- comment` must not swallow the wrapper.
    format!("select 1 from (\n{body}\n) as shipsafe_check limit 2")
}

/// Runs one query with `statement_timeout`, under a savepoint (inside a
/// transaction) or in a transaction of its own, leaving the session as it
/// was either way.
async fn attempt(
    client: &Client,
    sql: &str,
    timeout_ms: u128,
    in_transaction: bool,
) -> Result<Vec<SimpleQueryMessage>, tokio_postgres::Error> {
    let (open, done, undo) = if in_transaction {
        (
            "savepoint shipsafe_check",
            "rollback to savepoint shipsafe_check; release savepoint shipsafe_check",
            "rollback to savepoint shipsafe_check; release savepoint shipsafe_check",
        )
    } else {
        ("begin", "commit", "rollback")
    };
    if let Err(e) = client
        .batch_execute(&format!(
            "{open}; set local statement_timeout = '{timeout_ms}ms'"
        ))
        .await
    {
        let _ = client.batch_execute(undo).await;
        return Err(e);
    }
    let result = client.simple_query(sql).await;
    let end = client
        .batch_execute(if result.is_ok() { done } else { undo })
        .await;
    let messages = result?;
    end?;
    Ok(messages)
}

/// The server's message; a timeout says which and how long it was.
fn query_error(e: &tokio_postgres::Error, c: &CheckConfig) -> String {
    let message = describe(e);
    if e.code() == Some(&SqlState::QUERY_CANCELED) && message.contains("statement timeout") {
        format!(
            "{message}: the query did not finish within the check's timeout of {} (something may hold a lock on what it reads; `timeout` in [[checks]] sets the limit)",
            c.timeout()
        )
    } else if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
        format!("{message}: something holds a lock on what the check reads")
    } else {
        message
    }
}

fn rows_label(n: usize) -> String {
    match n {
        0 => "0 rows".into(),
        1 => "1 row".into(),
        _ => "2 or more rows".into(),
    }
}

/// Judges the first column of each returned row against an expectation:
/// (ok, what came, why it did not hold when that is not plain).
fn evaluate(
    expect: Expectation,
    rows: &[Option<String>],
) -> (bool, Option<String>, Option<String>) {
    let no_row = || {
        (
            false,
            Some("no rows".to_string()),
            Some("the query returned no rows".to_string()),
        )
    };
    match expect {
        Expectation::Empty => (rows.is_empty(), Some(rows_label(rows.len())), None),
        Expectation::NonEmpty => (!rows.is_empty(), Some(rows_label(rows.len())), None),
        Expectation::True => match rows.first() {
            None => no_row(),
            Some(None) => (false, Some("NULL".into()), None),
            Some(Some(v)) => (v == "t" || v == "true", Some(v.clone()), None),
        },
        cmp => match rows.first() {
            None => no_row(),
            Some(None) => (false, Some("NULL".into()), None),
            Some(Some(v)) => match parse_number(v) {
                Some(n) => (
                    cmp.holds_for_number(n).unwrap_or(false),
                    Some(v.clone()),
                    None,
                ),
                None => (
                    false,
                    Some(v.clone()),
                    Some(format!("{v:?} is not a whole number")),
                ),
            },
        },
    }
}

fn parse_number(v: &str) -> Option<i64> {
    if let Ok(n) = v.parse::<i64>() {
        return Some(n);
    }
    // numeric results such as "3.000" still compare as whole numbers.
    let f: f64 = v.parse().ok()?;
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(v: &[Option<&str>]) -> Vec<Option<String>> {
        v.iter().map(|x| x.map(str::to_string)).collect()
    }

    #[test]
    fn comparisons_need_a_value() {
        assert!(evaluate(Expectation::Ge(1), &rows(&[Some("3")])).0);
        assert!(!evaluate(Expectation::Ge(1), &rows(&[Some("0")])).0);
        assert!(evaluate(Expectation::Eq(3), &rows(&[Some("3.000")])).0);
        assert!(
            !evaluate(Expectation::Ge(0), &rows(&[])).0,
            "no row is not a pass"
        );
        assert!(
            !evaluate(Expectation::Ge(0), &rows(&[None])).0,
            "NULL is not a pass"
        );
        assert!(!evaluate(Expectation::Eq(1), &rows(&[Some("one")])).0);
    }

    #[test]
    fn true_means_true() {
        assert!(evaluate(Expectation::True, &rows(&[Some("t")])).0);
        assert!(
            !evaluate(Expectation::True, &rows(&[Some("f")])).0,
            "false must fail"
        );
        assert!(!evaluate(Expectation::True, &rows(&[None])).0);
        assert!(!evaluate(Expectation::True, &rows(&[])).0);
    }

    #[test]
    fn row_counts() {
        assert!(evaluate(Expectation::Empty, &rows(&[])).0);
        assert!(!evaluate(Expectation::Empty, &rows(&[Some("x")])).0);
        assert!(evaluate(Expectation::NonEmpty, &rows(&[None])).0);
        assert_eq!(
            evaluate(Expectation::Empty, &rows(&[])).1.as_deref(),
            Some("0 rows")
        );
        assert_eq!(
            evaluate(Expectation::NonEmpty, &rows(&[None])).1.as_deref(),
            Some("1 row")
        );
        assert_eq!(
            evaluate(Expectation::Empty, &rows(&[None, None, None]))
                .1
                .as_deref(),
            Some("2 or more rows")
        );
    }

    #[test]
    fn row_count_wrapper_drops_trailing_semicolons_and_survives_comments() {
        assert_eq!(
            at_most_two_rows("select * from t ;  ;\n"),
            "select 1 from (\nselect * from t\n) as shipsafe_check limit 2"
        );
        assert!(at_most_two_rows("select 1 -- why").contains("-- why\n)"));
    }
}
