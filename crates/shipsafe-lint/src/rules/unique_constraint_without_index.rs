//! unique-constraint-without-index: see docs/rules/unique-constraint-without-index.md

use pg_query::protobuf::{AlterTableType, ConstrType};

use super::helpers::{alter_existing, constraint, hit};
rule!(
    UniqueConstraintWithoutIndex, "unique-constraint-without-index", Error, "A UNIQUE or PRIMARY KEY constraint builds its index under a lock.",
    problem: "`ADD CONSTRAINT ... UNIQUE` (or `PRIMARY KEY`) on an existing table without `USING INDEX`.",
    why: "The index is built while an ACCESS EXCLUSIVE lock blocks every read and write of the table.",
    safe: "`CREATE UNIQUE INDEX CONCURRENTLY` first, then `ADD CONSTRAINT ... UNIQUE USING INDEX` (instant).",
    |stmt, ctx| {
        let (table, cmds) = alter_existing(stmt, ctx)?;
        let c = cmds.iter().filter(|c| c.subtype() == AlterTableType::AtAddConstraint).filter_map(|c| constraint(c))
            .find(|c| matches!(c.contype(), ConstrType::ConstrUnique | ConstrType::ConstrPrimary) && c.indexname.is_empty())?;
        hit(format!("adding {} constraint {} on {table} builds its index under an ACCESS EXCLUSIVE lock",
                if c.contype() == ConstrType::ConstrPrimary { "PRIMARY KEY" } else { "UNIQUE" }, if c.conname.is_empty() { "(unnamed)" } else { &c.conname }),
            "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... USING INDEX")
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn catches_the_risk_and_passes_the_safe_form() {
        assert!(fires(
            "unique-constraint-without-index",
            "alter table users add constraint u unique (email);"
        ));
        assert!(!fires(
            "unique-constraint-without-index",
            "alter table users add constraint u unique using index users_email_idx;"
        ));
        assert!(
            !fires(
                "unique-constraint-without-index",
                "create table t (e text); alter table t add constraint u unique (e);"
            ),
            "created in the same migration"
        );
    }
}
