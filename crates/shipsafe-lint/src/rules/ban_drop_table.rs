//! ban-drop-table: see docs/rules/ban-drop-table.md

use pg_query::NodeEnum;
use pg_query::protobuf::ObjectType;

use super::helpers::hit;
rule!(
    BanDropTable, "ban-drop-table", Error, "DROP TABLE deletes a table and every row in it.",
    problem: "`DROP TABLE` removes the table and its data. Application code still deployed (or a rollback of it) that reads the table fails at once.",
    why: "It takes an ACCESS EXCLUSIVE lock and the data is gone; only a restore brings it back, losing everything written since the backup.",
    safe: "Stop using the table in the application first and deploy that. Rename it (or move it to an `archive` schema) in one release, drop it in a later one once nothing has touched it. shipsafe backs up first, but a restore is the last resort, not the plan.",
    |stmt, ctx| {
        let NodeEnum::DropStmt(d) = stmt else { return None };
        if d.remove_type() != ObjectType::ObjectTable {
            return None;
        }
        let names: Vec<String> = d.objects.iter().filter_map(object_name).filter(|n| !ctx.is_new_table(n.rsplit('.').next().unwrap_or(n))).collect();
        if names.is_empty() {
            return None;
        }
        hit(format!("DROP TABLE {} deletes the table and all its rows (ACCESS EXCLUSIVE lock)", names.join(", ")),
            "stop using the table first, rename or archive it, and drop it in a later release")
    }
);

/// `schema.name` of a DROP object list entry.
pub(crate) fn object_name(n: &pg_query::protobuf::Node) -> Option<String> {
    match &n.node {
        Some(NodeEnum::List(l)) => Some(
            l.items
                .iter()
                .filter_map(|i| match &i.node {
                    Some(NodeEnum::String(s)) => Some(s.sval.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("."),
        ),
        Some(NodeEnum::String(s)) => Some(s.sval.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn fires_on_existing_tables_only() {
        assert!(fires("ban-drop-table", "drop table users;"));
        assert!(fires(
            "ban-drop-table",
            "drop table if exists public.users cascade;"
        ));
        assert!(!fires("ban-drop-table", "drop view users;"));
        assert!(
            !fires(
                "ban-drop-table",
                "create table tmp (id int); drop table tmp;"
            ),
            "created in the same migration"
        );
    }
}
