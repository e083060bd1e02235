//! foreign-key-missing-not-valid: see docs/rules/foreign-key-missing-not-valid.md

use pg_query::protobuf::{AlterTableType, ConstrType};

use super::helpers::{alter_existing, constraint, hit, table_name};
rule!(
    ForeignKeyMissingNotValid, "foreign-key-missing-not-valid", Error, "Adding a foreign key scans the table while blocking writes on both tables.",
    problem: "`ADD CONSTRAINT ... FOREIGN KEY` without `NOT VALID` on an existing table.",
    why: "Every existing row is checked against the referenced table while SHARE ROW EXCLUSIVE locks block writes to both tables.",
    safe: "Add it `NOT VALID`, then `VALIDATE CONSTRAINT` in a separate migration (it only blocks schema changes).",
    |stmt, ctx| {
        let (table, cmds) = alter_existing(stmt, ctx)?;
        let c = cmds.iter().filter(|c| c.subtype() == AlterTableType::AtAddConstraint).filter_map(|c| constraint(c))
            .find(|c| c.contype() == ConstrType::ConstrForeign && !c.skip_validation)?;
        hit(format!("adding foreign key {} on {table} to {} checks every row while blocking writes to both tables",
                if c.conname.is_empty() { "(unnamed)" } else { &c.conname }, table_name(c.pktable.as_ref())),
            "add it NOT VALID, then VALIDATE CONSTRAINT in a separate migration")
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn fires_on_existing_tables_only() {
        let sql = "alter table tool_access add constraint fk_user foreign key (user_id) references users (id);";
        assert!(fires("foreign-key-missing-not-valid", sql));
        assert!(!fires(
            "foreign-key-missing-not-valid",
            &sql.replace(");", ") not valid;")
        ));
        assert!(!fires(
            "foreign-key-missing-not-valid",
            &format!("create table tool_access (user_id int); {sql}")
        ));
    }
}
