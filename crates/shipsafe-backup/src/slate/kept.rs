//! Schemas a restore keeps: those the backup left out (`[backups]
//! exclude_schemas`). The archive does not hold them, so dropping them would
//! lose them; and nothing in them may depend on what the restore drops, or
//! `DROP … CASCADE` would reach into them (a column of a type in `public`,
//! a view on a restored table, a foreign table on a server).

use tokio_postgres::Client;

/// A `pg_dump --exclude-schema` pattern as the regular expression pg_dump
/// matches it with: `*` and `?` are wildcards, double quotes quote, `$` is
/// literal, other regular-expression syntax works, unquoted ASCII letters
/// fold to lower case (pg_dump folds no other letter); a dot separates a
/// database name, which is ignored.
pub(crate) fn pattern_regex(pattern: &str) -> String {
    let mut parts: Vec<String> = vec![String::new()];
    let mut quoted = false;
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        let cur = parts.last_mut().expect("one part at least");
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => quoted = !quoted,
            _ if quoted => {
                if c.is_alphanumeric() || c == '_' || c as u32 >= 0x80 {
                    cur.push(c);
                } else {
                    cur.push('\\');
                    cur.push(c);
                }
            }
            '*' => cur.push_str(".*"),
            '?' => cur.push('.'),
            '$' => cur.push_str("\\$"),
            '.' => parts.push(String::new()),
            _ => cur.push(c.to_ascii_lowercase()),
        }
    }
    format!("^({})$", parts.last().map(String::as_str).unwrap_or(""))
}

/// What the restore drops outside schemas, by catalog: kept objects must
/// not depend on these either.
#[derive(Debug, Default)]
pub(crate) struct DroppedOutside {
    /// (catalog, object oid)
    pub objects: Vec<(String, u32)>,
}

/// Objects in `kept` schemas (rules, triggers, defaults and policies by
/// their table's, operator family members by their family's) that depend on
/// an object the restore drops, or on a member of an extension it drops
/// (`DEPENDS ON EXTENSION` included): one line each, at most `limit`.
pub(crate) async fn dependents(
    client: &Client,
    kept: &[String],
    dropped_schemas: &[String],
    outside: &DroppedOutside,
    limit: i64,
) -> Result<Vec<String>, tokio_postgres::Error> {
    if kept.is_empty() {
        return Ok(Vec::new());
    }
    let (classes, oids): (Vec<String>, Vec<u32>) = outside.objects.iter().cloned().unzip();
    let rows = client
        .query(
            "with roots as (select x.c::regclass::oid as cls, x.o as oid \
                            from unnest($3::text[], $4::oid[]) as x(c, o)), \
                  gone as (select cls, oid from roots \
                           union select e.classid, e.objid from pg_catalog.pg_depend e join roots r \
                             on e.refclassid = r.cls and e.refobjid = r.oid \
                            where r.cls = 'pg_catalog.pg_extension'::regclass and e.deptype = 'e') \
             select distinct pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid), \
                    pg_catalog.pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid) \
             from pg_catalog.pg_depend d, \
                  lateral pg_catalog.pg_identify_object(d.classid, d.objid, d.objsubid) o, \
                  lateral pg_catalog.pg_identify_object(d.refclassid, d.refobjid, d.refobjsubid) r \
             where d.deptype in ('n', 'a', 'x') \
               and coalesce(o.schema, \
                     (select n.nspname from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
                       where c.oid = case d.classid \
                         when 'pg_catalog.pg_rewrite'::regclass then (select ev_class from pg_catalog.pg_rewrite where oid = d.objid) \
                         when 'pg_catalog.pg_trigger'::regclass then (select tgrelid from pg_catalog.pg_trigger where oid = d.objid) \
                         when 'pg_catalog.pg_attrdef'::regclass then (select adrelid from pg_catalog.pg_attrdef where oid = d.objid) \
                         when 'pg_catalog.pg_policy'::regclass then (select polrelid from pg_catalog.pg_policy where oid = d.objid) \
                       end), \
                     (select n.nspname from pg_catalog.pg_opfamily f join pg_catalog.pg_namespace n on n.oid = f.opfnamespace \
                       where f.oid = case d.classid \
                         when 'pg_catalog.pg_amproc'::regclass then (select amprocfamily from pg_catalog.pg_amproc where oid = d.objid) \
                         when 'pg_catalog.pg_amop'::regclass then (select amopfamily from pg_catalog.pg_amop where oid = d.objid) \
                       end)) = any($1) \
               and (r.schema = any($2) or (d.refclassid, d.refobjid) in (select cls, oid from gone)) \
             order by 1, 2 limit $5",
            &[&kept, &dropped_schemas, &classes, &oids, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| format!("{} needs {}", r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_patterns_read_as_pg_dump_reads_them() {
        assert_eq!(pattern_regex("realtime"), "^(realtime)$");
        assert_eq!(pattern_regex("Graph*"), "^(graph.*)$");
        assert_eq!(pattern_regex("pg?sodium"), "^(pg.sodium)$");
        assert_eq!(pattern_regex("\"My.Schema\""), "^(My\\.Schema)$");
        assert_eq!(pattern_regex("db.aux"), "^(aux)$");
        assert_eq!(pattern_regex("a$"), "^(a\\$)$");
        // pg_dump folds ASCII letters only.
        assert_eq!(pattern_regex("Ärger"), "^(Ärger)$");
    }
}
