//! require-concurrent-index-deletion: see docs/rules/require-concurrent-index-deletion.md

use pg_query::NodeEnum;
use pg_query::protobuf::ObjectType;

use super::helpers::hit;
rule!(
    RequireConcurrentIndexDeletion, "require-concurrent-index-deletion", Warning, "DROP INDEX without CONCURRENTLY blocks the table.",
    problem: "`DROP INDEX` without `CONCURRENTLY`.",
    why: "It takes an ACCESS EXCLUSIVE lock on the table; behind a long-running query that lock request queues every other query.",
    safe: "`DROP INDEX CONCURRENTLY` (it runs outside a transaction; shipsafe handles that).",
    |stmt, ctx| {
        let NodeEnum::DropStmt(d) = stmt else { return None };
        if d.remove_type() != ObjectType::ObjectIndex || d.concurrent {
            return None;
        }
        let names: Vec<String> = d.objects.iter().filter_map(super::ban_drop_table::object_name).collect();
        hit(format!("dropping index {} without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on its table", names.join(", ")),
            "use DROP INDEX CONCURRENTLY")
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn catches_the_risk_and_passes_the_safe_form() {
        assert!(fires(
            "require-concurrent-index-deletion",
            "drop index users_email_idx;"
        ));
        assert!(!fires(
            "require-concurrent-index-deletion",
            "drop index concurrently users_email_idx;"
        ));
    }
}
