//! ban-add-serial-column: see docs/rules/ban-add-serial-column.md

use pg_query::protobuf::{AlterTableType, ConstrType};

use super::helpers::{alter_existing, column_constraints, column_def, hit, type_name};
rule!(
    BanAddSerialColumn, "ban-add-serial-column", Error, "Adding a serial, identity or stored generated column rewrites the table.",
    problem: "`ADD COLUMN` of type serial/bigserial, or with `GENERATED ... AS IDENTITY` or `GENERATED ALWAYS AS (...) STORED`, on an existing table.",
    why: "Every existing row needs its own value, so the table is rewritten under an ACCESS EXCLUSIVE lock.",
    safe: "Add a plain nullable column, backfill it in batches from a sequence or expression, then attach the default or identity.",
    |stmt, ctx| {
        let (table, cmds) = alter_existing(stmt, ctx)?;
        for c in cmds.iter().filter(|c| c.subtype() == AlterTableType::AtAddColumn) {
            let Some(col) = column_def(c) else { continue };
            let ty = type_name(col.type_name.as_ref());
            let serial = matches!(ty.as_str(), "serial" | "bigserial" | "smallserial" | "serial4" | "serial8" | "serial2");
            let generated = column_constraints(col).any(|k| matches!(k.contype(), ConstrType::ConstrIdentity | ConstrType::ConstrGenerated));
            if serial || generated {
                return hit(format!("adding {table}.{} ({}) computes a value for every row: the table is rewritten under an ACCESS EXCLUSIVE lock",
                        col.colname, if serial { ty.as_str() } else { "generated" }),
                    "add a plain column, backfill in batches, then attach the default or identity");
            }
        }
        None
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn catches_the_risk_and_passes_the_safe_form() {
        assert!(fires(
            "ban-add-serial-column",
            "alter table users add column n bigserial;"
        ));
        assert!(fires(
            "ban-add-serial-column",
            "alter table users add column n int generated always as identity;"
        ));
        assert!(!fires(
            "ban-add-serial-column",
            "alter table users add column n bigint;"
        ));
        assert!(
            !fires(
                "ban-add-serial-column",
                "create table t (a int); alter table t add column n bigserial;"
            ),
            "created in the same migration"
        );
    }
}
