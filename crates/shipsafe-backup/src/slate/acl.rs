//! Privileges that live outside the schemas a restore drops, put back as a
//! new database has them, so that the archive's `GRANT`s and `REVOKE`s
//! (pg_dump writes them relative to that) give exactly the backup's state:
//! default privileges for all schemas, and privileges on the system's own
//! objects in `pg_catalog` (a `GRANT EXECUTE ON FUNCTION pg_read_file` made
//! in the target must not survive a restore that claims to give the backup's
//! database). Other changes a superuser made to `pg_catalog` (new objects,
//! comments, owners) are beyond what a dump describes and stay.

use shipsafe_pg::quote_ident;
use tokio_postgres::Client;

/// Default privileges for all schemas (schema-level ones go with their
/// schema): statements resetting them to the built-in defaults, and the
/// roles whose defaults the restoring role may not change.
pub(crate) async fn default_privileges(
    client: &Client,
) -> Result<(String, Vec<String>), tokio_postgres::Error> {
    let rows = client
        .query(
            "select pg_get_userbyid(a.defaclrole)::text, a.defaclobjtype::text, pg_has_role(a.defaclrole, 'MEMBER'), \
                    coalesce(array_agg(distinct case when x.grantee = 0 then 'public' else quote_ident(pg_get_userbyid(x.grantee)) end) \
                             filter (where x.grantee <> a.defaclrole), '{}') \
             from pg_default_acl a left join lateral aclexplode(a.defaclacl) x on true \
             where a.defaclnamespace = 0 group by 1, 2, 3 order by 1, 2",
            &[],
        )
        .await?;
    let mut sql = String::new();
    let mut forbidden = Vec::new();
    for r in &rows {
        let role: String = r.get(0);
        let kind: String = r.get(1);
        let may: bool = r.get(2);
        let grantees: Vec<String> = r.get(3);
        if !may {
            forbidden.push(role);
            continue;
        }
        let (objects, public_default) = match kind.as_str() {
            "r" => ("tables", None),
            "S" => ("sequences", None),
            "f" => ("functions", Some("execute")),
            "T" => ("types", Some("usage")),
            "n" => ("schemas", None),
            "L" => ("large objects", None),
            _ => continue,
        };
        let who = format!("alter default privileges for role {}", quote_ident(&role));
        for g in &grantees {
            sql.push_str(&format!("{who} revoke all on {objects} from {g};\n"));
        }
        sql.push_str(&format!(
            "{who} grant all on {objects} to {};\n",
            quote_ident(&role)
        ));
        if let Some(p) = public_default {
            sql.push_str(&format!("{who} grant {p} on {objects} to public;\n"));
        }
    }
    Ok((sql, forbidden))
}

/// Privileges on the system's objects (in `pg_catalog`, the schema itself
/// and procedural languages) that differ from what a new database has
/// (`pg_init_privs`, else the built-in default), as pg_dump compares them:
/// one `REVOKE`/`GRANT` each to put them back. `information_schema` is left
/// alone, as pg_dump leaves it (its initial privileges are not recorded);
/// so are objects whose owner is no longer the bootstrap superuser (the
/// archive does not say what they were).
const SYSTEM_ACL_SQL: &str = "\
with objs as ( \
  select 'pg_proc'::regclass as cls, p.oid, 0 as sub, 'f' as kind, p.proowner as owner, p.proacl as acl, \
         'routine ' || p.oid::regprocedure::text as obj, '' as col \
    from pg_proc p where p.pronamespace = 'pg_catalog'::regnamespace \
  union all \
  select 'pg_class'::regclass, c.oid, 0, case c.relkind when 'S' then 's' else 'r' end, c.relowner, c.relacl, \
         case c.relkind when 'S' then 'sequence ' else 'table ' end || c.oid::regclass::text, '' \
    from pg_class c where c.relnamespace = 'pg_catalog'::regnamespace and c.relkind in ('r', 'v', 'm', 'S', 'f', 'p') \
  union all \
  select 'pg_class'::regclass, a.attrelid, a.attnum, 'c', c.relowner, a.attacl, \
         'table ' || c.oid::regclass::text, quote_ident(a.attname) \
    from pg_attribute a join pg_class c on c.oid = a.attrelid \
   where c.relnamespace = 'pg_catalog'::regnamespace and a.attnum > 0 and not a.attisdropped \
     and (a.attacl is not null or exists (select 1 from pg_init_privs i where i.classoid = 'pg_class'::regclass \
                                          and i.objoid = a.attrelid and i.objsubid = a.attnum)) \
  union all \
  select 'pg_type'::regclass, t.oid, 0, 'T', t.typowner, t.typacl, 'type ' || format_type(t.oid, null), '' \
    from pg_type t where t.typnamespace = 'pg_catalog'::regnamespace \
  union all \
  select 'pg_namespace'::regclass, n.oid, 0, 'n', n.nspowner, n.nspacl, 'schema ' || quote_ident(n.nspname), '' \
    from pg_namespace n where n.nspname = 'pg_catalog' \
  union all \
  select 'pg_language'::regclass, l.oid, 0, 'l', l.lanowner, l.lanacl, 'language ' || quote_ident(l.lanname), '' \
    from pg_language l \
), \
items as ( \
  select o.*, coalesce(o.acl, acldefault(o.kind::\"char\", o.owner)) as now, \
         coalesce(i.initprivs, acldefault(o.kind::\"char\", o.owner)) as was \
    from objs o left join pg_init_privs i on i.classoid = o.cls and i.objoid = o.oid and i.objsubid = o.sub \
   where o.owner = 10 \
     and coalesce(o.acl, acldefault(o.kind::\"char\", o.owner)) is distinct from \
         coalesce(i.initprivs, acldefault(o.kind::\"char\", o.owner)) \
), \
diff as ( \
  select it.obj, it.col, 'revoke' as act, x.grantee, x.privilege_type, x.is_grantable from items it, \
         lateral (select grantee, privilege_type, is_grantable from aclexplode(it.now) \
                  except select grantee, privilege_type, is_grantable from aclexplode(it.was)) x \
   where x.grantee <> it.owner \
  union all \
  select it.obj, it.col, 'grant', x.grantee, x.privilege_type, x.is_grantable from items it, \
         lateral (select grantee, privilege_type, is_grantable from aclexplode(it.was) \
                  except select grantee, privilege_type, is_grantable from aclexplode(it.now)) x \
   where x.grantee <> it.owner \
) \
select obj, col, act, case when grantee = 0 then 'public' else quote_ident(pg_get_userbyid(grantee)) end, \
       privilege_type, is_grantable \
  from diff order by act desc, obj, col, 4, 5";

/// The statements putting system objects' privileges back, and what each
/// one is (for a report when the restoring role may not run them).
pub(crate) async fn system_privileges(
    client: &Client,
) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    let rows = client.query(SYSTEM_ACL_SQL, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (obj, col, act, grantee, privilege, grantable): (
                String,
                String,
                String,
                String,
                String,
                bool,
            ) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
            let what = if col.is_empty() {
                format!("{privilege} on {obj}")
            } else {
                format!("{privilege} ({col}) on {obj}")
            };
            let sql = if act == "revoke" {
                format!("revoke {what} from {grantee} cascade;\n")
            } else if grantable {
                format!("grant {what} to {grantee} with grant option;\n")
            } else {
                format!("grant {what} to {grantee};\n")
            };
            let said = if act == "revoke" {
                format!("{what} granted to {grantee}")
            } else {
                format!("{what} revoked from {grantee}")
            };
            (sql, said)
        })
        .collect())
}
