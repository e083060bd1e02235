//! ban-rename-table: see docs/rules/ban-rename-table.md

use pg_query::NodeEnum;
use pg_query::protobuf::ObjectType;

use super::helpers::{hit, table_name};
rule!(
    BanRenameTable, "ban-rename-table", Error, "Renaming a table breaks code that uses the old name.",
    problem: "`ALTER TABLE ... RENAME TO` changes the name every query uses.",
    why: "Application servers still running the previous release fail on every query of the table from the moment the migration commits until they are replaced.",
    safe: "Create a view with the old name over the renamed table for one release (or rename in the code first through a view), and drop it once nothing uses the old name.",
    |stmt, ctx| {
        let NodeEnum::RenameStmt(r) = stmt else { return None };
        if r.rename_type() != ObjectType::ObjectTable || r.relation.as_ref().is_some_and(|t| ctx.is_new_table(&t.relname)) {
            return None;
        }
        hit(format!("renaming table {} to {} breaks code that still uses the old name", table_name(r.relation.as_ref()), r.newname),
            "keep a view with the old name for one release")
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn catches_the_risk_and_passes_the_safe_form() {
        assert!(fires(
            "ban-rename-table",
            "alter table users rename to accounts;"
        ));
        assert!(!fires(
            "ban-rename-table",
            "alter table users rename column a to b;"
        ));
        assert!(
            !fires(
                "ban-rename-table",
                "create table t (id int); alter table t rename to u;"
            ),
            "created in the same migration"
        );
    }
}
