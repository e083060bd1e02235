//! `[[checks]]`: SQL invariants evaluated against a database.
//!
//! The first column of the first row is compared with the expectation;
//! `empty`/`nonempty` look at the row count. An error, no row or NULL where
//! a value is needed is a failure, never a pass.

use serde::Serialize;
use shipsafe_config::{CheckConfig, Expectation};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::error::describe;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CheckOutcome {
    pub name: String,
    pub sql: String,
    pub expect: String,
    /// What the query returned (first value, or the row count).
    pub actual: Option<String>,
    pub ok: bool,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// Runs every check. Inside a transaction each runs under a savepoint, so
/// one failing query does not abort the others (or the transaction).
pub async fn run_checks(
    client: &Client,
    checks: &[CheckConfig],
    in_transaction: bool,
) -> Vec<CheckOutcome> {
    let mut out = Vec::with_capacity(checks.len());
    for c in checks {
        let started = std::time::Instant::now();
        if in_transaction {
            let _ = client.batch_execute("savepoint shipsafe_check").await;
        }
        let result = client.simple_query(&c.sql).await;
        if in_transaction {
            let undo = if result.is_ok() {
                "release savepoint shipsafe_check"
            } else {
                "rollback to savepoint shipsafe_check; release savepoint shipsafe_check"
            };
            let _ = client.batch_execute(undo).await;
        }
        let mut outcome = CheckOutcome {
            name: c.name.clone(),
            sql: c.sql.clone(),
            expect: c.expect.to_string(),
            actual: None,
            ok: false,
            error: None,
            duration_ms: 0,
        };
        match result {
            Err(e) => outcome.error = Some(describe(&e)),
            Ok(messages) => {
                let rows: Vec<Option<String>> = messages
                    .iter()
                    .filter_map(|m| match m {
                        SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
                        _ => None,
                    })
                    .collect();
                let (ok, actual, error) = evaluate(c.expect, &rows);
                outcome.ok = ok;
                outcome.actual = actual;
                outcome.error = error;
            }
        }
        outcome.duration_ms = started.elapsed().as_millis() as u64;
        out.push(outcome);
    }
    out
}

/// Judges the first column of each returned row against an expectation.
fn evaluate(
    expect: Expectation,
    rows: &[Option<String>],
) -> (bool, Option<String>, Option<String>) {
    match expect {
        Expectation::Empty => (rows.is_empty(), Some(format!("{} rows", rows.len())), None),
        Expectation::NonEmpty => (!rows.is_empty(), Some(format!("{} rows", rows.len())), None),
        Expectation::True => match rows.first() {
            None => (false, None, Some("the query returned no rows".into())),
            Some(None) => (false, Some("NULL".into()), None),
            Some(Some(v)) => (v == "t" || v == "true", Some(v.clone()), None),
        },
        cmp => match rows.first() {
            None => (false, None, Some("the query returned no rows".into())),
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
    }
}
