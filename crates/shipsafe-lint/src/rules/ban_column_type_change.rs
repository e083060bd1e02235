//! ban-column-type-change: see docs/rules/ban-column-type-change.md

use pg_query::protobuf::AlterTableType;

use super::helpers::{alter_existing, hit};
rule!(
    BanColumnTypeChange, "ban-column-type-change", Error, "Changing a column's type rewrites the table.",
    problem: "`ALTER COLUMN ... TYPE` usually rewrites the whole table and its indexes.",
    why: "The rewrite holds an ACCESS EXCLUSIVE lock for as long as it takes: every read and write of the table waits, for minutes on a big table.",
    safe: "Add a new column, backfill it in batches, switch the application to it, then drop the old one. shipsafe's rehearsal measures whether a given change rewrites and how long it locks.",
    |stmt, ctx| {
        let (table, cmds) = alter_existing(stmt, ctx)?;
        let cols: Vec<&str> = cmds.iter().filter(|c| c.subtype() == AlterTableType::AtAlterColumnType).map(|c| c.name.as_str()).collect();
        if cols.is_empty() {
            return None;
        }
        hit(format!("changing the type of {table}.{} rewrites the table under an ACCESS EXCLUSIVE lock", cols.join(", ")),
            "add a new column, backfill it in batches, switch the code, drop the old column later")
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn fires_on_existing_tables_only() {
        assert!(fires(
            "ban-column-type-change",
            "alter table users alter column id type bigint;"
        ));
        assert!(!fires(
            "ban-column-type-change",
            "create table t (id int); alter table t alter column id type bigint;"
        ));
    }
}
