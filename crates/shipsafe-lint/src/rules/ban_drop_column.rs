//! ban-drop-column: see docs/rules/ban-drop-column.md

use pg_query::protobuf::AlterTableType;

use super::helpers::{alter_existing, hit};
rule!(
    BanDropColumn, "ban-drop-column", Error, "DROP COLUMN deletes a column's data.",
    problem: "`ALTER TABLE ... DROP COLUMN` removes the column and every value in it.",
    why: "Application code that still selects or inserts the column fails as soon as the migration commits; an ORM that lists all columns breaks even if it never uses it. The values are gone (shipsafe's rehearsal reports how many were non-null).",
    safe: "Deploy code that no longer reads or writes the column, then drop it in a later release. If the data may be needed, copy it to an archive table first.",
    |stmt, ctx| {
        let (table, cmds) = alter_existing(stmt, ctx)?;
        let cols: Vec<&str> = cmds.iter().filter(|c| c.subtype() == AlterTableType::AtDropColumn).map(|c| c.name.as_str()).collect();
        if cols.is_empty() {
            return None;
        }
        hit(format!("dropping column {} of {table} deletes its data, and code still using it fails", cols.join(", ")),
            "stop using the column in the application first; drop it in a later release")
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn fires_on_existing_tables_only() {
        assert!(fires(
            "ban-drop-column",
            "alter table users drop column phone;"
        ));
        assert!(!fires(
            "ban-drop-column",
            "alter table users add column phone text;"
        ));
        assert!(!fires(
            "ban-drop-column",
            "create table t (a int, b int); alter table t drop column b;"
        ));
    }
}
