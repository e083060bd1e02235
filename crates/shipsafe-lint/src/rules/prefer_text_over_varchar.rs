//! prefer-text-over-varchar: see docs/rules/prefer-text-over-varchar.md

use super::helpers::{added_columns, hit, type_name};
rule!(
    PreferTextOverVarchar, "prefer-text-over-varchar", Warning, "varchar(n) limits need a table lock to change.",
    problem: "A `varchar(n)` column.",
    why: "In PostgreSQL `text` and `varchar` perform the same; the length limit only adds a future migration, and shrinking it rewrites the table.",
    safe: "Use `text`, with a `CHECK (length(col) <= n)` constraint if a limit matters (added NOT VALID and validated later).",
    |stmt, ctx| {
        for col in added_columns(stmt) {
            let ty = type_name(col.type_name.as_ref());
            let limited = col.type_name.as_ref().is_some_and(|t| !t.typmods.is_empty());
            if ty == "varchar" && limited {
                return hit(format!("column {} is varchar(n): changing the limit later needs a table lock", col.colname), "use text, with a CHECK on length() if needed");
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
            "prefer-text-over-varchar",
            "create table t (name varchar(100));"
        ));
        assert!(!fires(
            "prefer-text-over-varchar",
            "create table t (name text);"
        ));
    }
}
