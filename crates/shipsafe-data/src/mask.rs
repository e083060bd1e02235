//! `[mask]`: deterministic replacement of personal data.
//!
//! Every kind derives its value from `md5(key || original)`, the same
//! function for every column: the same input gives the same output, so a
//! masked email still joins to the same masked email in another table, and
//! distinct inputs stay distinct (64 bits of the hash for emails, names and
//! text; 15 decimal digits for phone numbers), so unique columns stay
//! unique. NULL stays NULL. The key comes from `SHIPSAFE_MASK_KEY` when set,
//! so masked values cannot be recomputed from guessed originals without it.

use indexmap::IndexMap;
use shipsafe_config::MaskKind;
use shipsafe_pg::{quote_ident, quote_literal};

use crate::error::DataError;

fn expr(kind: MaskKind, column: &str, key: &str) -> Option<String> {
    let v = quote_ident(column);
    let h = format!("md5({} || {v}::text)", quote_literal(key));
    let masked = match kind {
        MaskKind::Keep => return None,
        MaskKind::Null => return Some("null".into()),
        MaskKind::Email => format!("'user-' || left({h}, 16) || '@example.invalid'"),
        MaskKind::Phone => format!(
            "'+' || lpad(((('x' || left({h}, 15))::bit(60)::bigint) % 1000000000000000)::text, 15, '0')"
        ),
        MaskKind::Name => format!("'Person ' || upper(left({h}, 16))"),
        MaskKind::Text => format!("'masked ' || left({h}, 16)"),
    };
    Some(format!("case when {v} is null then null else {masked} end"))
}

/// One `UPDATE` per table for the `[mask]` entries (`"table.column"`).
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
    Ok(by_table
        .into_iter()
        .map(|(table, sets)| {
            let quoted: Vec<String> = table.split('.').map(quote_ident).collect();
            format!("update {} set {}", quoted.join("."), sets.join(", "))
        })
        .collect())
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
        assert_eq!(s.len(), 2);
        assert!(s[0].starts_with("update \"users\" set \"email\" = case when \"email\" is null"));
        assert!(s[0].contains("\"phone\" = case"));
        assert!(!s[0].contains("username"));
        assert_eq!(
            s[1],
            "update \"hr\".\"employees\" set \"bank_account\" = null"
        );
        assert!(
            statements(
                &IndexMap::from([("nodot".to_string(), MaskKind::Text)]),
                "k"
            )
            .is_err()
        );
    }
}
