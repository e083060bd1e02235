//! A comparable description of a database schema, for round-trip checks
//! (does down.sql give back the schema up.sql started from?) and drift.
//!
//! One line per object, sorted, so two descriptions diff line by line.
//! Columns are listed by name, not position: a column that down.sql drops
//! and re-adds comes back at the end of the table, which changes nothing a
//! query by column name can see. shipsafe's own schema is left out.

use serde::Serialize;
use tokio_postgres::Client;

const USER_SCHEMAS: &str = "n.nspname not in ('pg_catalog', 'information_schema', 'shipsafe') \
     and n.nspname not like 'pg\\_toast%' and n.nspname not like 'pg\\_temp%'";

/// Every table, view, sequence, column (type, nullability, default), index,
/// constraint, trigger, function, type and extension, one line each, sorted.
pub async fn schema_description(client: &Client) -> Result<Vec<String>, tokio_postgres::Error> {
    let sql = format!(
        "select x from ( \
           select format('schema %I', n.nspname) as x from pg_namespace n where {USER_SCHEMAS} and n.nspname <> 'public' \
           union all \
           select format('relation %I.%I kind=%s', n.nspname, c.relname, c.relkind) \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
            where {USER_SCHEMAS} and c.relkind in ('r','p','v','m','S','f') \
           union all \
           select format('column %I.%I.%I %s%s%s', n.nspname, c.relname, a.attname, \
                         format_type(a.atttypid, a.atttypmod), \
                         case when a.attnotnull then ' not null' else '' end, \
                         coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')) \
             from pg_attribute a join pg_class c on c.oid = a.attrelid \
             join pg_namespace n on n.oid = c.relnamespace \
             left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum \
            where {USER_SCHEMAS} and c.relkind in ('r','p','v','m','f') and a.attnum > 0 and not a.attisdropped \
           union all \
           select format('index %I.%I %s%s', n.nspname, c.relname, pg_get_indexdef(i.indexrelid), \
                         case when i.indisvalid then '' else ' INVALID' end) \
             from pg_index i join pg_class c on c.oid = i.indexrelid \
             join pg_namespace n on n.oid = c.relnamespace where {USER_SCHEMAS} \
           union all \
           select format('constraint %I.%I on %s %s', n.nspname, co.conname, \
                         coalesce(co.conrelid::regclass::text, co.contypid::regtype::text), pg_get_constraintdef(co.oid)) \
             from pg_constraint co join pg_namespace n on n.oid = co.connamespace where {USER_SCHEMAS} \
           union all \
           select format('trigger %s', pg_get_triggerdef(t.oid)) \
             from pg_trigger t join pg_class c on c.oid = t.tgrelid \
             join pg_namespace n on n.oid = c.relnamespace where {USER_SCHEMAS} and not t.tgisinternal \
           union all \
           select format('view %I.%I %s', n.nspname, c.relname, md5(pg_get_viewdef(c.oid))) \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
            where {USER_SCHEMAS} and c.relkind in ('v','m') \
           union all \
           select format('function %I.%I(%s) returns %s body=%s', n.nspname, p.proname, \
                         pg_get_function_identity_arguments(p.oid), \
                         coalesce(pg_get_function_result(p.oid), ''), md5(coalesce(p.prosrc, ''))) \
             from pg_proc p join pg_namespace n on n.oid = p.pronamespace \
            where {USER_SCHEMAS} and not exists (select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e') \
           union all \
           select format('type %I.%I enum (%s)', n.nspname, t.typname, \
                         (select string_agg(quote_literal(e.enumlabel), ', ' order by e.enumsortorder) from pg_enum e where e.enumtypid = t.oid)) \
             from pg_type t join pg_namespace n on n.oid = t.typnamespace where {USER_SCHEMAS} and t.typtype = 'e' \
           union all \
           select format('extension %I', e.extname) from pg_extension e where e.extname <> 'plpgsql' \
         ) s order by x"
    );
    let rows = client.query(&sql, &[]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A short hash of [`schema_description`]: equal fingerprints mean no
/// table, column, index, constraint, trigger, function or type changed.
pub async fn schema_fingerprint(client: &Client) -> Result<String, tokio_postgres::Error> {
    let lines = schema_description(client).await?;
    Ok(fingerprint_of(&lines))
}

pub fn fingerprint_of(lines: &[String]) -> String {
    let mut h = blake3::Hasher::new();
    for l in lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex()[..16].to_string()
}

/// What differs between two schema descriptions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SchemaDiff {
    /// In the first description only.
    pub missing: Vec<String>,
    /// In the second description only.
    pub extra: Vec<String>,
}

impl SchemaDiff {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty()
    }

    /// One line per difference, at most `limit` of them.
    pub fn summary(&self, limit: usize) -> String {
        let mut parts: Vec<String> = self
            .missing
            .iter()
            .map(|l| format!("missing: {l}"))
            .chain(self.extra.iter().map(|l| format!("extra: {l}")))
            .collect();
        let total = parts.len();
        if total > limit {
            parts.truncate(limit);
            parts.push(format!("… and {} more", total - limit));
        }
        parts.join("; ")
    }
}

/// Lines of `before` that `after` lacks, and the other way round. Both
/// inputs are sorted (as [`schema_description`] returns them).
pub fn schema_diff(before: &[String], after: &[String]) -> SchemaDiff {
    let a: std::collections::BTreeSet<&String> = before.iter().collect();
    let b: std::collections::BTreeSet<&String> = after.iter().collect();
    SchemaDiff {
        missing: a.difference(&b).map(|s| s.to_string()).collect(),
        extra: b.difference(&a).map(|s| s.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_both_sides() {
        let before = vec![
            "column public.t.a integer".to_string(),
            "relation public.t kind=r".into(),
        ];
        let after = vec![
            "column public.t.a bigint".to_string(),
            "relation public.t kind=r".into(),
        ];
        let d = schema_diff(&before, &after);
        assert_eq!(d.missing, vec!["column public.t.a integer"]);
        assert_eq!(d.extra, vec!["column public.t.a bigint"]);
        assert!(d.summary(5).contains("missing: column public.t.a integer"));
        assert!(schema_diff(&before, &before).is_empty());
        assert_ne!(fingerprint_of(&before), fingerprint_of(&after));
    }
}
