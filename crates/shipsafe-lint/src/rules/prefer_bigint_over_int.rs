//! prefer-bigint-over-int: see docs/rules/prefer-bigint-over-int.md

use pg_query::protobuf::ConstrType;

use super::helpers::{added_columns, column_constraints, hit, type_name};
rule!(
    PreferBigintOverInt, "prefer-bigint-over-int", Warning, "32-bit integer keys run out.",
    problem: "An `int`/`serial` primary key or identity column.",
    why: "A 32-bit key stops at 2,147,483,647; the day it does, inserts fail, and widening it later is a table rewrite under an ACCESS EXCLUSIVE lock.",
    safe: "Use `bigint` (`bigserial`, `bigint generated always as identity`) for keys from the start.",
    |stmt, ctx| {
        for col in added_columns(stmt) {
            let ty = type_name(col.type_name.as_ref());
            let small = matches!(ty.as_str(), "int4" | "int" | "integer" | "serial" | "serial4" | "int2" | "smallint" | "smallserial");
            let key = matches!(ty.as_str(), "serial" | "serial4" | "smallserial")
                || column_constraints(col).any(|k| matches!(k.contype(), ConstrType::ConstrPrimary | ConstrType::ConstrIdentity));
            if small && key {
                return hit(format!("key column {} is {ty}: 32-bit keys run out at 2,147,483,647", col.colname), "use bigint / bigserial");
            }
        }
        None
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn fires_on_keys() {
        assert!(fires(
            "prefer-bigint-over-int",
            "create table t (id serial primary key);"
        ));
        assert!(fires(
            "prefer-bigint-over-int",
            "create table t (id int primary key);"
        ));
        assert!(!fires(
            "prefer-bigint-over-int",
            "create table t (id bigserial primary key, n int);"
        ));
    }
}
