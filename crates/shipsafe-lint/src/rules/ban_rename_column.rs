//! ban-rename-column: see docs/rules/ban-rename-column.md

use pg_query::NodeEnum;
use pg_query::protobuf::ObjectType;

use super::helpers::{hit, table_name};
rule!(
    BanRenameColumn, "ban-rename-column", Error, "Renaming a column breaks code that uses the old name.",
    problem: "`ALTER TABLE ... RENAME COLUMN` changes a name queries use.",
    why: "The running release keeps sending the old name and fails until it is replaced; a rollback of the code fails the same way.",
    safe: "Add the new column, write both, backfill, switch reads, then drop the old one in a later release.",
    |stmt, ctx| {
        let NodeEnum::RenameStmt(r) = stmt else { return None };
        if r.rename_type() != ObjectType::ObjectColumn || r.relation.as_ref().is_some_and(|t| ctx.is_new_table(&t.relname)) {
            return None;
        }
        hit(format!("renaming column {}.{} to {} breaks code that still uses the old name", table_name(r.relation.as_ref()), r.subname, r.newname),
            "add the new column and migrate to it over two releases")
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn catches_the_risk_and_passes_the_safe_form() {
        assert!(fires(
            "ban-rename-column",
            "alter table users rename column email to mail;"
        ));
        assert!(!fires(
            "ban-rename-column",
            "create table t (a int); alter table t rename column a to b;"
        ));
    }
}
