//! require-concurrent-index-creation: see docs/rules/require-concurrent-index-creation.md

use pg_query::NodeEnum;

use super::helpers::{hit, table_name};
rule!(
    RequireConcurrentIndexCreation, "require-concurrent-index-creation", Error, "CREATE INDEX without CONCURRENTLY blocks writes.",
    problem: "`CREATE INDEX` on an existing table without `CONCURRENTLY`.",
    why: "It takes a SHARE lock for the whole build: every INSERT, UPDATE and DELETE on the table waits until the index is built.",
    safe: "`CREATE INDEX CONCURRENTLY` (shipsafe runs such migrations outside a transaction and cleans up an INVALID index if the build fails).",
    |stmt, ctx| {
        let NodeEnum::IndexStmt(i) = stmt else { return None };
        let r = i.relation.as_ref()?;
        if i.concurrent || ctx.is_new_table(&r.relname) {
            return None;
        }
        hit(format!("creating index {} on {} without CONCURRENTLY blocks writes (SHARE lock) for the whole build",
                if i.idxname.is_empty() { "(unnamed)" } else { &i.idxname }, table_name(Some(r))),
            "use CREATE INDEX CONCURRENTLY")
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn fires_on_existing_tables_only() {
        assert!(fires(
            "require-concurrent-index-creation",
            "create index i on users (email);"
        ));
        assert!(!fires(
            "require-concurrent-index-creation",
            "create index concurrently i on users (email);"
        ));
        assert!(!fires(
            "require-concurrent-index-creation",
            "create table t (x int); create index on t (x);"
        ));
    }
}
