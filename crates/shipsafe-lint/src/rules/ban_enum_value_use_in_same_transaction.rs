//! ban-enum-value-use-in-same-transaction: see docs/rules/ban-enum-value-use-in-same-transaction.md

use pg_query::NodeEnum;

use super::helpers::hit;
rule!(
    BanEnumValueUseInSameTransaction, "ban-enum-value-use-in-same-transaction", Error, "A new enum value cannot be used in the transaction that adds it.",
    problem: "`ALTER TYPE ... ADD VALUE 'x'` followed, in the same migration, by a statement that uses `'x'`.",
    why: "PostgreSQL refuses to use an enum value before the transaction that added it commits (`unsafe use of new value`), so the migration fails.",
    safe: "Add the value in one migration and use it in the next one.",
    |stmt, ctx| {
        if matches!(stmt, NodeEnum::AlterEnumStmt(_)) {
            return None;
        }
        let text = ctx.current;
        let (ty, value) = ctx.added_enum_values.iter().find(|(_, v)| text.contains(&format!("'{v}'")))?;
        hit(format!("the enum value '{value}' of {ty} is used in the migration that adds it; PostgreSQL refuses that until the ADD VALUE commits"),
            "use the new value in a later migration")
    }
);

#[cfg(test)]
mod tests {
    use crate::testing::fires;

    #[test]
    fn catches_the_risk_and_passes_the_safe_form() {
        assert!(fires(
            "ban-enum-value-use-in-same-transaction",
            "alter type clinic_role add value 'beautician'; insert into staff (role) values ('beautician');"
        ));
        assert!(!fires(
            "ban-enum-value-use-in-same-transaction",
            "alter type clinic_role add value 'beautician';"
        ));
    }
}
