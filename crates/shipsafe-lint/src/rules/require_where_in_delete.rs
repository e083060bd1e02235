//! require-where-in-delete: see docs/rules/require-where-in-delete.md

use pg_query::NodeEnum;

use super::helpers::{hit, table_name};
rule!(
    RequireWhereInDelete, "require-where-in-delete", Error, "DELETE without WHERE deletes every row.",
    problem: "A `DELETE` with no `WHERE` clause removes every row of the table.",
    why: "It is almost always a mistake (a forgotten or mis-pasted condition) and it takes the table's data with it.",
    safe: "Write the condition. If every row must go, say so: `DELETE FROM t WHERE true` with a `-- shipsafe:allow` and the reason.",
    |stmt, ctx| {
        let NodeEnum::DeleteStmt(d) = stmt else { return None };
        let r = d.relation.as_ref()?;
        if d.where_clause.is_some() || ctx.is_new_table(&r.relname) {
            return None;
        }
        hit(format!("DELETE FROM {} has no WHERE clause: it deletes every row", table_name(Some(r))),
            "add the WHERE clause you mean")
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn catches_the_risk_and_passes_the_safe_form() {
        assert!(fires("require-where-in-delete", "delete from tool_access;"));
        assert!(!fires(
            "require-where-in-delete",
            "delete from tool_access where user_id = 3;"
        ));
        assert!(
            !fires(
                "require-where-in-delete",
                "create table t (id int); delete from t;"
            ),
            "created in the same migration"
        );
    }
}
