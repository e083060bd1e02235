//! ban-truncate: see docs/rules/ban-truncate.md

use pg_query::NodeEnum;

use super::helpers::{hit, table_name};
rule!(
    BanTruncate, "ban-truncate", Error, "TRUNCATE deletes every row.",
    problem: "`TRUNCATE` empties tables instantly.",
    why: "It takes an ACCESS EXCLUSIVE lock and removes all rows, including ones written by the application a second before; with CASCADE it empties referencing tables too.",
    safe: "Delete the rows you mean with a WHERE clause, in batches, or use `shipsafe wipe` with its dry run and pre-wipe backup.",
    |stmt, ctx| {
        let NodeEnum::TruncateStmt(t) = stmt else { return None };
        let names: Vec<String> = t.relations.iter().filter_map(|n| match &n.node {
            Some(NodeEnum::RangeVar(r)) if !ctx.is_new_table(&r.relname) => Some(table_name(Some(r))),
            _ => None,
        }).collect();
        if names.is_empty() {
            return None;
        }
        hit(format!("TRUNCATE {} deletes every row (ACCESS EXCLUSIVE lock)", names.join(", ")),
            "delete the rows you mean with a WHERE clause, or use `shipsafe wipe`")
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn catches_the_risk_and_passes_the_safe_form() {
        assert!(fires("ban-truncate", "truncate users cascade;"));
        assert!(!fires(
            "ban-truncate",
            "create table t (id int); truncate t;"
        ));
    }
}
