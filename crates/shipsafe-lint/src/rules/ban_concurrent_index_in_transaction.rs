//! ban-concurrent-index-in-transaction: see docs/rules/ban-concurrent-index-in-transaction.md

use pg_query::NodeEnum;

use super::helpers::hit;
rule!(
    BanConcurrentIndexInTransaction, "ban-concurrent-index-in-transaction", Error, "CONCURRENTLY cannot run inside a transaction block.",
    problem: "`CREATE INDEX CONCURRENTLY` after an explicit `BEGIN`.",
    why: "PostgreSQL refuses it (`cannot run inside a transaction block`), so the deploy fails at that statement.",
    safe: "Remove the BEGIN/COMMIT: shipsafe runs migrations that contain CONCURRENTLY outside a transaction, statement by statement.",
    |stmt, ctx| {
        let concurrent = match stmt {
            NodeEnum::IndexStmt(i) => i.concurrent,
            NodeEnum::DropStmt(d) => d.concurrent,
            _ => false,
        };
        if !(concurrent && ctx.in_transaction) {
            return None;
        }
        hit("CONCURRENTLY inside BEGIN ... COMMIT fails: it cannot run in a transaction block".to_string(),
            "remove the explicit transaction; shipsafe runs this migration outside one")
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn catches_the_risk_and_passes_the_safe_form() {
        assert!(fires(
            "ban-concurrent-index-in-transaction",
            "begin; create index concurrently i on t (x); commit;"
        ));
        assert!(!fires(
            "ban-concurrent-index-in-transaction",
            "create index concurrently i on t (x);"
        ));
    }
}
