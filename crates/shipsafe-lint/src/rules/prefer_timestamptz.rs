//! prefer-timestamptz: see docs/rules/prefer-timestamptz.md

use super::helpers::{added_columns, hit, type_name};
rule!(
    PreferTimestamptz, "prefer-timestamptz", Warning, "timestamp without time zone loses the moment.",
    problem: "A `timestamp` (without time zone) column.",
    why: "It stores wall-clock time with no zone: values written by servers or users in different zones (or across a DST change) cannot be compared, and converting later rewrites the table.",
    safe: "Use `timestamptz`: it stores an exact moment and displays it in the session's zone.",
    |stmt, ctx| {
        for col in added_columns(stmt) {
            if type_name(col.type_name.as_ref()) == "timestamp" {
                return hit(format!("column {} is timestamp without time zone", col.colname), "use timestamptz");
            }
        }
        None
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn catches_the_risk_and_passes_the_safe_form() {
        assert!(fires(
            "prefer-timestamptz",
            "create table t (at timestamp);"
        ));
        assert!(!fires(
            "prefer-timestamptz",
            "create table t (at timestamptz);"
        ));
    }
}
