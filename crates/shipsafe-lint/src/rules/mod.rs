//! The rule set: one file per rule, registered in [`all`].

use crate::rule::Rule;

/// Declares a rule type with its id, severity, documentation and check.
macro_rules! rule {
    (
        $ty:ident, $id:literal, $sev:ident, $summary:literal,
        problem: $p:literal, why: $w:literal, safe: $s:literal,
        |$stmt:ident, $ctx:ident| $body:block
    ) => {
        #[derive(Debug, Clone, Copy)]
        pub struct $ty;
        impl crate::rule::Rule for $ty {
            fn id(&self) -> &'static str {
                $id
            }
            fn severity(&self) -> crate::rule::Severity {
                crate::rule::Severity::$sev
            }
            fn summary(&self) -> &'static str {
                $summary
            }
            fn doc(&self) -> crate::rule::RuleDoc {
                crate::rule::RuleDoc { problem: $p, why: $w, safe_way: $s }
            }
            #[allow(unused_variables)]
            fn check(&self, $stmt: &pg_query::NodeEnum, $ctx: &crate::context::Context) -> Option<crate::rule::Hit> $body
        }
    };
}

mod ban_add_serial_column;
mod ban_cluster;
mod ban_column_type_change;
mod ban_concurrent_index_in_transaction;
mod ban_disabling_timeouts;
mod ban_drop_column;
mod ban_drop_database;
mod ban_drop_schema;
mod ban_drop_table;
mod ban_enum_value_use_in_same_transaction;
mod ban_rename_column;
mod ban_rename_table;
mod ban_set_not_null;
mod ban_truncate;
mod ban_vacuum_full;
mod ban_volatile_default;
mod constraint_missing_not_valid;
mod foreign_key_missing_not_valid;
pub(crate) mod helpers;
mod prefer_bigint_over_int;
mod prefer_text_over_varchar;
mod prefer_timestamptz;
mod require_concurrent_index_creation;
mod require_concurrent_index_deletion;
mod require_concurrent_reindex;
mod require_default_for_not_null_column;
mod require_where_in_delete;
mod require_where_in_update;
mod unique_constraint_without_index;

/// Every rule, in id order.
pub fn all() -> Vec<&'static dyn Rule> {
    let mut v: Vec<&'static dyn Rule> = vec![
        &ban_add_serial_column::BanAddSerialColumn,
        &ban_cluster::BanCluster,
        &ban_column_type_change::BanColumnTypeChange,
        &ban_concurrent_index_in_transaction::BanConcurrentIndexInTransaction,
        &ban_disabling_timeouts::BanDisablingTimeouts,
        &ban_drop_column::BanDropColumn,
        &ban_drop_database::BanDropDatabase,
        &ban_drop_schema::BanDropSchema,
        &ban_drop_table::BanDropTable,
        &ban_enum_value_use_in_same_transaction::BanEnumValueUseInSameTransaction,
        &ban_rename_column::BanRenameColumn,
        &ban_rename_table::BanRenameTable,
        &ban_set_not_null::BanSetNotNull,
        &ban_truncate::BanTruncate,
        &ban_vacuum_full::BanVacuumFull,
        &ban_volatile_default::BanVolatileDefault,
        &constraint_missing_not_valid::ConstraintMissingNotValid,
        &foreign_key_missing_not_valid::ForeignKeyMissingNotValid,
        &prefer_bigint_over_int::PreferBigintOverInt,
        &prefer_text_over_varchar::PreferTextOverVarchar,
        &prefer_timestamptz::PreferTimestamptz,
        &require_concurrent_index_creation::RequireConcurrentIndexCreation,
        &require_concurrent_index_deletion::RequireConcurrentIndexDeletion,
        &require_concurrent_reindex::RequireConcurrentReindex,
        &require_default_for_not_null_column::RequireDefaultForNotNullColumn,
        &require_where_in_delete::RequireWhereInDelete,
        &require_where_in_update::RequireWhereInUpdate,
        &unique_constraint_without_index::UniqueConstraintWithoutIndex,
    ];
    v.sort_by_key(|r| r.id());
    v
}

/// The Markdown doc page of a rule (docs/rules/<id>.md is exactly this).
pub fn doc_page(r: &dyn Rule) -> String {
    let d = r.doc();
    format!(
        "# {}\n\nSeverity: {}. {}\n\n## Problem\n\n{}\n\n## Why it hurts in production\n\n{}\n\n## The safe way\n\n{}\n\nSuppress where it is intended, with the reason, on the line before the statement:\n\n```sql\n-- shipsafe:allow {} <reason>\n```\n",
        r.id(),
        r.severity().as_str(),
        r.summary(),
        d.problem,
        d.why,
        d.safe_way,
        r.id()
    )
}
