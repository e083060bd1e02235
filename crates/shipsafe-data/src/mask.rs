//! `[mask]`: deterministic replacement of personal data.
//!
//! Every kind derives its value from `md5(key || original)`, the same
//! function for every column: the same input gives the same output, so a
//! masked email still joins to the same masked email in another table, and
//! distinct inputs stay distinct (64 bits of the hash for emails, names and
//! text; 15 decimal digits for phone numbers), so unique columns stay
//! unique. NULL stays NULL. The key comes from `SHIPSAFE_MASK_KEY` (required:
//! without a secret, masked values could be recomputed from guessed
//! originals).
//!
//! The updates run with the tables' user triggers disabled, so an audit or
//! history trigger cannot copy the original values into another table
//! while they are masked; materialized views, restored with the original
//! data, are refreshed afterwards.

use indexmap::IndexMap;
use shipsafe_config::MaskKind;
use shipsafe_pg::{quote_ident, quote_literal};

use crate::error::DataError;

/// Functions are named with their schema: masking runs as the restoring
/// role, and a database's `search_path` may put a look-alike first.
fn expr(kind: MaskKind, column: &str, key: &str) -> Option<String> {
    let v = quote_ident(column);
    let h = format!("pg_catalog.md5({} || {v}::text)", quote_literal(key));
    let left = |n: u32| format!("pg_catalog.left({h}, {n})");
    let masked = match kind {
        MaskKind::Keep => return None,
        MaskKind::Null => return Some("null".into()),
        MaskKind::Email => format!("'user-' || {} || '@example.invalid'", left(16)),
        MaskKind::Phone => format!(
            "'+' || pg_catalog.lpad(((('x' || {})::bit(60)::bigint) % 1000000000000000)::text, 15, '0')",
            left(15)
        ),
        MaskKind::Name => format!("'Person ' || pg_catalog.upper({})", left(16)),
        MaskKind::Text => format!("'masked ' || {}", left(16)),
    };
    Some(format!("case when {v} is null then null else {masked} end"))
}

/// Refreshes every populated materialized view, oldest first (a view built
/// on another is created after it).
const REFRESH_MATVIEWS: &str = "do $$ declare r record; begin \
    for r in select format('%I.%I', n.nspname, c.relname) as name from pg_class c \
             join pg_namespace n on n.oid = c.relnamespace \
             where c.relkind = 'm' and c.relispopulated order by c.oid loop \
      execute 'refresh materialized view ' || r.name; \
    end loop; end $$";

/// The masking SQL for the `[mask]` entries (`"table.column"`): per table,
/// user triggers off, one `UPDATE`, triggers on; then materialized views
/// refreshed.
pub fn statements(mask: &IndexMap<String, MaskKind>, key: &str) -> Result<Vec<String>, DataError> {
    let mut by_table: IndexMap<String, Vec<String>> = IndexMap::new();
    for (target, kind) in mask {
        let Some((table, column)) = target.rsplit_once('.') else {
            return Err(DataError::Invalid(format!(
                "mask key {target:?} must be \"table.column\""
            )));
        };
        if let Some(e) = expr(*kind, column, key) {
            by_table
                .entry(table.to_string())
                .or_default()
                .push(format!("{} = {e}", quote_ident(column)));
        }
    }
    let mut out = Vec::new();
    for (table, sets) in by_table {
        let quoted = table
            .split('.')
            .map(quote_ident)
            .collect::<Vec<_>>()
            .join(".");
        out.push(format!("alter table {quoted} disable trigger user"));
        out.push(format!("update {quoted} set {}", sets.join(", ")));
        out.push(format!("alter table {quoted} enable trigger user"));
    }
    out.push(REFRESH_MATVIEWS.to_string());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_update_per_table_and_keep_is_left_out() {
        let mut m = IndexMap::new();
        m.insert("users.email".to_string(), MaskKind::Email);
        m.insert("users.phone".to_string(), MaskKind::Phone);
        m.insert("users.username".to_string(), MaskKind::Keep);
        m.insert("hr.employees.bank_account".to_string(), MaskKind::Null);
        let s = statements(&m, "k").unwrap_or_default();
        assert_eq!(s.len(), 7);
        assert_eq!(s[0], "alter table \"users\" disable trigger user");
        assert!(s[1].starts_with("update \"users\" set \"email\" = case when \"email\" is null"));
        assert!(s[1].contains("\"phone\" = case"));
        assert!(!s[1].contains("username"));
        assert_eq!(s[2], "alter table \"users\" enable trigger user");
        assert_eq!(
            s[4],
            "update \"hr\".\"employees\" set \"bank_account\" = null"
        );
        assert!(s[6].contains("refresh materialized view"));
        assert!(
            statements(
                &IndexMap::from([("nodot".to_string(), MaskKind::Text)]),
                "k"
            )
            .is_err()
        );
    }
}
