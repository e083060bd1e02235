//! require-default-for-not-null-column: see docs/rules/require-default-for-not-null-column.md

use pg_query::protobuf::{AlterTableType, ConstrType};

use super::helpers::{alter_existing, column_constraints, column_def, hit};
rule!(
    RequireDefaultForNotNullColumn, "require-default-for-not-null-column", Error, "A NOT NULL column without a default cannot be added to a table with rows.",
    problem: "`ADD COLUMN ... NOT NULL` without a `DEFAULT` on an existing table.",
    why: "It fails on any table that has rows (the existing rows would be NULL), so the deploy fails in production even though it passed on an empty development database.",
    safe: "Add it with a constant default (free since PostgreSQL 11), or add it nullable, backfill, and add the NOT NULL constraint the safe way.",
    |stmt, ctx| {
        let (table, cmds) = alter_existing(stmt, ctx)?;
        for c in cmds.iter().filter(|c| c.subtype() == AlterTableType::AtAddColumn) {
            let Some(col) = column_def(c) else { continue };
            let cons: Vec<_> = column_constraints(col).collect();
            let not_null = col.is_not_null || cons.iter().any(|k| k.contype() == ConstrType::ConstrNotnull);
            let has_default = col.raw_default.is_some() || cons.iter().any(|k| matches!(k.contype(), ConstrType::ConstrDefault | ConstrType::ConstrIdentity | ConstrType::ConstrGenerated));
            if not_null && !has_default {
                return hit(format!("adding NOT NULL column {table}.{} without a default fails on a table with rows", col.colname),
                    "give it a constant DEFAULT, or add it nullable and backfill first");
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
            "require-default-for-not-null-column",
            "alter table users add column code text not null;"
        ));
        assert!(!fires(
            "require-default-for-not-null-column",
            "alter table users add column code text not null default '';"
        ));
        assert!(!fires(
            "require-default-for-not-null-column",
            "alter table users add column code text;"
        ));
        assert!(
            !fires(
                "require-default-for-not-null-column",
                "create table t (id int); alter table t add column code text not null;"
            ),
            "created in the same migration"
        );
    }
}
