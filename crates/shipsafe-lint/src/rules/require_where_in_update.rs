//! require-where-in-update: see docs/rules/require-where-in-update.md

use pg_query::NodeEnum;

use super::helpers::{hit, table_name};
rule!(
    RequireWhereInUpdate, "require-where-in-update", Error, "UPDATE without WHERE changes every row.",
    problem: "An `UPDATE` with no `WHERE` clause changes every row of the table.",
    why: "A forgotten condition overwrites data everywhere, and on a large table it locks every row and bloats it.",
    safe: "Write the condition; for intended backfills, batch by key ranges.",
    |stmt, ctx| {
        let NodeEnum::UpdateStmt(u) = stmt else { return None };
        let r = u.relation.as_ref()?;
        if u.where_clause.is_some() || ctx.is_new_table(&r.relname) {
            return None;
        }
        hit(format!("UPDATE {} has no WHERE clause: it changes every row", table_name(Some(r))),
            "add the WHERE clause you mean; batch large backfills by key range")
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn catches_the_risk_and_passes_the_safe_form() {
        assert!(fires(
            "require-where-in-update",
            "update users set is_active = false;"
        ));
        assert!(!fires(
            "require-where-in-update",
            "update users set is_active = false where id = 3;"
        ));
        assert!(
            !fires(
                "require-where-in-update",
                "create table t (id int); update t set id = 1;"
            ),
            "created in the same migration"
        );
    }
}
