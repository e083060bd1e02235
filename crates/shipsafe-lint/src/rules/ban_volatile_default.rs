//! ban-volatile-default: see docs/rules/ban-volatile-default.md

use pg_query::NodeEnum;
use pg_query::protobuf::{AlterTableType, ConstrType};

use super::helpers::{alter_existing, column_constraints, column_def, hit};
rule!(
    BanVolatileDefault, "ban-volatile-default", Error, "A column added with a volatile default rewrites the table.",
    problem: "`ADD COLUMN ... DEFAULT random()` (or `clock_timestamp()`, `gen_random_uuid()`, ...) on an existing table.",
    why: "Since PostgreSQL 11 a constant default is free, but a volatile one must be computed for every row: the table is rewritten under an ACCESS EXCLUSIVE lock.",
    safe: "Add the column without a default (or with a constant one), backfill in batches, then set the default for new rows.",
    |stmt, ctx| {
        let (table, cmds) = alter_existing(stmt, ctx)?;
        for c in cmds.iter().filter(|c| c.subtype() == AlterTableType::AtAddColumn) {
            let Some(col) = column_def(c) else { continue };
            let default = col.raw_default.as_deref().or_else(|| {
                column_constraints(col).find(|k| k.contype() == ConstrType::ConstrDefault).and_then(|k| k.raw_expr.as_deref())
            });
            if let Some(Some(NodeEnum::FuncCall(f))) = default.map(|d| d.node.as_ref()) {
                let name = f.funcname.iter().rev().find_map(|n| match &n.node { Some(NodeEnum::String(s)) => Some(s.sval.to_ascii_lowercase()), _ => None }).unwrap_or_default();
                if VOLATILE.contains(&name.as_str()) {
                    return hit(format!("adding {table}.{} with the volatile default {name}() rewrites the whole table under an ACCESS EXCLUSIVE lock", col.colname),
                        "add the column without a default, backfill in batches, then set the default");
                }
            }
        }
        None
    }
);

/// Functions whose value changes per row.
const VOLATILE: &[&str] = &[
    "random",
    "clock_timestamp",
    "timeofday",
    "gen_random_uuid",
    "uuid_generate_v1",
    "uuid_generate_v4",
    "nextval",
    "txid_current",
];

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn fires_on_volatile_defaults_only() {
        assert!(fires(
            "ban-volatile-default",
            "alter table users add column token uuid default gen_random_uuid();"
        ));
        assert!(!fires(
            "ban-volatile-default",
            "alter table users add column created timestamptz default now();"
        ));
        assert!(!fires(
            "ban-volatile-default",
            "alter table users add column n int default 0;"
        ));
        assert!(!fires(
            "ban-volatile-default",
            "create table t (a int); alter table t add column r float default random();"
        ));
    }
}
