//! ban-cluster: see docs/rules/ban-cluster.md

use pg_query::NodeEnum;

use super::helpers::{hit, table_name};
rule!(
    BanCluster, "ban-cluster", Error, "CLUSTER rewrites the table under an ACCESS EXCLUSIVE lock.",
    problem: "`CLUSTER` in a migration.",
    why: "It rewrites the table in index order while blocking every read and write.",
    safe: "Leave physical ordering to maintenance tools (pg_repack) outside the deploy.",
    |stmt, ctx| {
        let NodeEnum::ClusterStmt(c) = stmt else { return None };
        hit(format!("CLUSTER {} rewrites the table under an ACCESS EXCLUSIVE lock", table_name(c.relation.as_ref())),
            "use pg_repack in a maintenance window instead")
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn catches_the_risk_and_passes_the_safe_form() {
        assert!(fires("ban-cluster", "cluster users using users_pkey;"));
        assert!(!fires("ban-cluster", "analyze users;"));
    }
}
