//! ban-drop-schema: see docs/rules/ban-drop-schema.md

use pg_query::NodeEnum;
use pg_query::protobuf::ObjectType;

use super::helpers::hit;
rule!(
    BanDropSchema, "ban-drop-schema", Error, "DROP SCHEMA deletes every object in the schema.",
    problem: "`DROP SCHEMA` (with CASCADE) removes every table, view and function in it.",
    why: "One statement can delete most of a database; everything in the schema is gone until a restore.",
    safe: "Drop the objects one by one in migrations that can be reviewed, after the application stopped using them; drop the empty schema last.",
    |stmt, ctx| {
        let NodeEnum::DropStmt(d) = stmt else { return None };
        (d.remove_type() == ObjectType::ObjectSchema).then_some(())?;
        let names: Vec<String> = d.objects.iter().filter_map(super::ban_drop_table::object_name).collect();
        hit(format!("DROP SCHEMA {} deletes every object in it", names.join(", ")),
            "drop the objects individually after the application stopped using them")
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn catches_the_risk_and_passes_the_safe_form() {
        assert!(fires("ban-drop-schema", "drop schema reporting cascade;"));
        assert!(!fires("ban-drop-schema", "create schema reporting;"));
    }
}
