//! ban-vacuum-full: see docs/rules/ban-vacuum-full.md

use pg_query::NodeEnum;

use super::helpers::hit;
rule!(
    BanVacuumFull, "ban-vacuum-full", Error, "VACUUM FULL rewrites the table under an ACCESS EXCLUSIVE lock.",
    problem: "`VACUUM FULL` in a migration.",
    why: "It rewrites the table and its indexes while blocking every read and write, for as long as the copy takes.",
    safe: "Plain `VACUUM` (no lock on reads and writes), or pg_repack outside the deploy, in a maintenance window.",
    |stmt, ctx| {
        let NodeEnum::VacuumStmt(v) = stmt else { return None };
        let full = v.options.iter().any(|o| matches!(&o.node, Some(NodeEnum::DefElem(d)) if d.defname == "full"));
        if !full {
            return None;
        }
        hit("VACUUM FULL rewrites tables under an ACCESS EXCLUSIVE lock".to_string(), "use plain VACUUM, or pg_repack in a maintenance window")
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn catches_the_risk_and_passes_the_safe_form() {
        assert!(fires("ban-vacuum-full", "vacuum full users;"));
        assert!(!fires("ban-vacuum-full", "vacuum analyze users;"));
    }
}
