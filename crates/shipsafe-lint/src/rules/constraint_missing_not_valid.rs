//! constraint-missing-not-valid: see docs/rules/constraint-missing-not-valid.md

use pg_query::protobuf::{AlterTableType, ConstrType};

use super::helpers::{alter_existing, constraint, hit};
rule!(
    ConstraintMissingNotValid, "constraint-missing-not-valid", Error, "Adding a CHECK constraint scans the table under a lock.",
    problem: "`ADD CONSTRAINT ... CHECK` without `NOT VALID` on an existing table.",
    why: "PostgreSQL checks every existing row while holding an ACCESS EXCLUSIVE lock, blocking all reads and writes for the whole scan.",
    safe: "Add it `NOT VALID` (instant; new rows are checked), then `ALTER TABLE ... VALIDATE CONSTRAINT` in a separate migration, which only takes a SHARE UPDATE EXCLUSIVE lock.",
    |stmt, ctx| {
        let (table, cmds) = alter_existing(stmt, ctx)?;
        let c = cmds.iter().filter(|c| c.subtype() == AlterTableType::AtAddConstraint).filter_map(|c| constraint(c))
            .find(|c| c.contype() == ConstrType::ConstrCheck && !c.skip_validation)?;
        hit(format!("adding CHECK constraint {} on {table} scans every row under an ACCESS EXCLUSIVE lock", if c.conname.is_empty() { "(unnamed)" } else { &c.conname }),
            "add it NOT VALID, then VALIDATE CONSTRAINT in a separate migration")
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn fires_on_existing_tables_only() {
        assert!(fires(
            "constraint-missing-not-valid",
            "alter table users add constraint positive check (id > 0);"
        ));
        assert!(!fires(
            "constraint-missing-not-valid",
            "alter table users add constraint positive check (id > 0) not valid;"
        ));
        assert!(!fires(
            "constraint-missing-not-valid",
            "create table t (id int); alter table t add check (id > 0);"
        ));
    }
}
