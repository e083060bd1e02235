//! Everything a restore must bring back, read from a database so two can be
//! compared: the schema as `pg_dump --schema-only` prints it (owners and
//! privileges included), every table's rows (count and checksum), every
//! sequence, every large object (owner, privileges, comment, bytes), the
//! flags a schema dump is easy to misread for (row-level security, trigger
//! and event-trigger states, populated materialized views, publications,
//! default privileges), and what each given role may effectively do.

use shipsafe_config::DbUrl;

#[derive(Debug, PartialEq, Eq)]
pub struct Fidelity {
    pub schema: Vec<String>,
    pub tables: Vec<String>,
    pub sequences: Vec<String>,
    pub large_objects: Vec<String>,
    pub flags: Vec<String>,
    pub privileges: Vec<String>,
}

const USER: &str = "n.nspname not in ('pg_catalog', 'information_schema') \
     and n.nspname not like 'pg\\_toast%' and n.nspname not like 'pg\\_temp%'";

/// Reads it all; schemas named in `skip` are left out (shipsafe's own).
pub async fn fidelity(url: &DbUrl, roles: &[String], skip: &[&str]) -> Fidelity {
    let args: Vec<String> = skip
        .iter()
        .map(|s| format!("--exclude-schema={s}"))
        .collect();
    let text = super::schema_dump(url, &args);
    let schema = text
        .lines()
        .filter(|l| {
            !l.starts_with("--")
                && !l.starts_with("\\restrict")
                && !l.starts_with("\\unrestrict")
                && !l.is_empty()
        })
        .map(str::to_string)
        .collect();
    // Its own queries must not run a database owner's look-alikes either.
    let c = shipsafe_pg::connect_pinned(url).await.unwrap();
    let skip: Vec<String> = skip.iter().map(|s| s.to_string()).collect();
    let strings = |sql: String| {
        let c = &c;
        let skip = skip.clone();
        async move {
            c.query(&sql, &[&skip])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<String>>()
        }
    };
    let tables = each_relation(
        &c,
        &skip,
        'r',
        "count(*)::text || ' ' || coalesce(md5(string_agg(x::text, E'\\n' order by x::text)), '-')",
        "only ",
    )
    .await;
    let sequences = each_relation(
        &c,
        &skip,
        'S',
        "last_value::text || ' ' || is_called::text",
        "",
    )
    .await;
    let large_objects = strings(
        "select oid::text || ' ' || pg_get_userbyid(lomowner) || ' ' || coalesce(lomacl::text, '-') || ' ' \
                || coalesce(obj_description(oid, 'pg_largeobject'), '-') || ' ' || md5(lo_get(oid)) \
         from pg_largeobject_metadata where $1::text[] is not null order by oid"
            .into(),
    )
    .await;
    let flags = strings(format!(
        "select x from ( \
           select format('rls %I.%I %s %s %s', n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity, c.relpersistence) x \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
            where {USER} and c.relkind in ('r', 'p') and n.nspname <> all($1) \
           union all select format('matview %I.%I populated=%s', n.nspname, c.relname, c.relispopulated) \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relkind = 'm' and n.nspname <> all($1) \
           union all select format('trigger %s %s %s', t.tgrelid::regclass, t.tgname, t.tgenabled) \
             from pg_trigger t where not t.tgisinternal \
           union all select format('event trigger %s %s %s', evtname, evtevent, evtenabled) from pg_event_trigger \
           union all select format('publication %s %s', pubname, pubowner::regrole) from pg_publication \
           union all select format('publication table %s %s.%s', pubname, schemaname, tablename) from pg_publication_tables \
           union all select format('default acl %s %s %s %s', defaclrole::regrole, coalesce(defaclnamespace::regnamespace::text, '-'), defaclobjtype, defaclacl) \
             from pg_default_acl \
           union all select format('server %s %s', srvname, srvowner::regrole) from pg_foreign_server \
           union all select format('policy %s %s %s', polrelid::regclass, polname, polroles::regrole[]) from pg_policy \
         ) s order by 1"
    ))
    .await;
    let mut privileges = Vec::new();
    for role in roles {
        privileges.extend(
            c.query(
                &format!(
                    "select format('%s %I.%I %s', $2::text, n.nspname, c.relname, \
                            string_agg(p || '=' || has_table_privilege($2::text, c.oid, p), ',' order by p)) \
                     from pg_class c join pg_namespace n on n.oid = c.relnamespace, \
                          unnest(array['SELECT','INSERT','UPDATE','DELETE','TRUNCATE','REFERENCES','TRIGGER']) p \
                     where {USER} and c.relkind in ('r','p','v','m','f') and n.nspname <> all($1) \
                     group by n.nspname, c.relname \
                     union all \
                     select format('%s schema %I usage=%s create=%s', $2::text, n.nspname, \
                            has_schema_privilege($2::text, n.oid, 'USAGE'), has_schema_privilege($2::text, n.oid, 'CREATE')) \
                     from pg_namespace n where {USER} and n.nspname <> all($1) \
                     union all \
                     select format('%s information_schema usage=%s tables=%s', $2::text, \
                            has_schema_privilege($2::text, 'information_schema', 'USAGE'), \
                            has_table_privilege($2::text, 'information_schema.tables', 'SELECT')) \
                     union all \
                     select format('%s function %s execute=%s', $2::text, p.oid::regprocedure, has_function_privilege($2::text, p.oid, 'EXECUTE')) \
                     from pg_proc p join pg_namespace n on n.oid = p.pronamespace \
                     where {USER} and n.nspname <> all($1) \
                       and not exists (select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e') \
                     order by 1"
                ),
                &[&skip, role],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0)),
        );
    }
    Fidelity {
        schema,
        tables,
        sequences,
        large_objects,
        flags,
        privileges,
    }
}

/// For each relation of `kind` (outside `skip`), its name and `what`
/// computed over its rows (`select WHAT from FROM_PREFIX name x`).
async fn each_relation(
    c: &tokio_postgres::Client,
    skip: &[String],
    kind: char,
    what: &str,
    from_prefix: &str,
) -> Vec<String> {
    let names = c
        .query(
            &format!(
                "select format('%I.%I', n.nspname, c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace \
                 where {USER} and c.relkind = $2 and n.nspname <> all($1) order by 1"
            ),
            &[&skip, &(kind as i8)],
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    for r in names {
        let name: String = r.get(0);
        let row = c
            .query_one(&format!("select {what} from {from_prefix}{name} x"), &[])
            .await
            .unwrap();
        out.push(format!("{name} {}", row.get::<_, String>(0)));
    }
    out
}

/// Fails with the first differing lines of each part that differs.
pub fn assert_same(got: &Fidelity, want: &Fidelity, what: &str) {
    let mut problems = Vec::new();
    for (name, a, b) in [
        ("schema", &got.schema, &want.schema),
        ("tables", &got.tables, &want.tables),
        ("sequences", &got.sequences, &want.sequences),
        ("large objects", &got.large_objects, &want.large_objects),
        ("flags", &got.flags, &want.flags),
        ("privileges", &got.privileges, &want.privileges),
    ] {
        if a != b {
            let missing: Vec<&String> = b.iter().filter(|l| !a.contains(l)).take(8).collect();
            let extra: Vec<&String> = a.iter().filter(|l| !b.contains(l)).take(8).collect();
            problems.push(format!(
                "{name}: {} vs {} lines; missing {missing:#?}; extra {extra:#?}",
                a.len(),
                b.len()
            ));
        }
    }
    assert!(problems.is_empty(), "{what}:\n{}", problems.join("\n"));
}
