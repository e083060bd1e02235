//! ban-drop-database: see docs/rules/ban-drop-database.md

use pg_query::NodeEnum;

use super::helpers::hit;
rule!(
    BanDropDatabase, "ban-drop-database", Error, "DROP DATABASE in a migration.",
    problem: "`DROP DATABASE` deletes a whole database.",
    why: "It cannot run in a transaction, cannot be rolled back, and a migration is never the place to remove a database.",
    safe: "Remove databases by hand, deliberately, after a verified backup (`shipsafe backup create` then `backup verify`).",
    |stmt, ctx| {
        let NodeEnum::DropdbStmt(d) = stmt else { return None };
        hit(format!("DROP DATABASE {} deletes the whole database", d.dbname), "never drop a database from a migration")
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn catches_the_risk_and_passes_the_safe_form() {
        assert!(fires("ban-drop-database", "drop database app;"));
        assert!(!fires("ban-drop-database", "drop table app;"));
    }
}
