//! ban-set-not-null: see docs/rules/ban-set-not-null.md

use pg_query::protobuf::AlterTableType;

use super::helpers::{alter_existing, hit};
rule!(
    BanSetNotNull, "ban-set-not-null", Error, "SET NOT NULL scans the table under an ACCESS EXCLUSIVE lock.",
    problem: "`ALTER COLUMN ... SET NOT NULL` on an existing table.",
    why: "PostgreSQL scans every row to prove there is no NULL while holding an ACCESS EXCLUSIVE lock; reads and writes wait.",
    safe: "Add `CHECK (col IS NOT NULL) NOT VALID`, `VALIDATE CONSTRAINT` it in a later migration; on PostgreSQL 12+ `SET NOT NULL` then uses the validated constraint and skips the scan; drop the CHECK afterwards.",
    |stmt, ctx| {
        let (table, cmds) = alter_existing(stmt, ctx)?;
        let c = cmds.iter().find(|c| c.subtype() == AlterTableType::AtSetNotNull)?;
        hit(format!("SET NOT NULL on {table}.{} scans every row under an ACCESS EXCLUSIVE lock", c.name),
            "add CHECK (col IS NOT NULL) NOT VALID, validate it, then SET NOT NULL")
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn fires_on_existing_tables_only() {
        assert!(fires(
            "ban-set-not-null",
            "alter table users alter column phone set not null;"
        ));
        assert!(!fires(
            "ban-set-not-null",
            "create table t (a int); alter table t alter column a set not null;"
        ));
    }
}
