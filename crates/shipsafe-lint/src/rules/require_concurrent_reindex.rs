//! require-concurrent-reindex: see docs/rules/require-concurrent-reindex.md

use pg_query::NodeEnum;

use super::helpers::{hit, table_name};
rule!(
    RequireConcurrentReindex, "require-concurrent-reindex", Error, "REINDEX without CONCURRENTLY blocks the table.",
    problem: "`REINDEX` without `(CONCURRENTLY)`.",
    why: "It locks out writes to the table (and reads that use the index) until the rebuild ends.",
    safe: "`REINDEX (CONCURRENTLY) INDEX ...` or `REINDEX TABLE CONCURRENTLY ...` (PostgreSQL 12+).",
    |stmt, ctx| {
        let NodeEnum::ReindexStmt(r) = stmt else { return None };
        let concurrent = r.params.iter().any(|p| matches!(&p.node, Some(NodeEnum::DefElem(d)) if d.defname == "concurrently"));
        if concurrent {
            return None;
        }
        hit(format!("REINDEX {} without CONCURRENTLY blocks writes while it rebuilds", if r.name.is_empty() { table_name(r.relation.as_ref()) } else { r.name.clone() }),
            "use REINDEX ... CONCURRENTLY")
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn catches_the_risk_and_passes_the_safe_form() {
        assert!(fires(
            "require-concurrent-reindex",
            "reindex index users_email_idx;"
        ));
        assert!(!fires(
            "require-concurrent-reindex",
            "reindex index concurrently users_email_idx;"
        ));
    }
}
