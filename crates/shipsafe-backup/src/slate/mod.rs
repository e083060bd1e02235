//! Emptying a database for a restore, inside the restore's transaction.
//!
//! A restore replaces everything the backup covers, so the target must first
//! hold nothing the archive will create, and be as a new database is where
//! the archive only states differences from one. Dropping every schema
//! removes most of it; what lives outside schemas survives that and would
//! make the archive's `CREATE` fail ("publication already exists") or leave
//! the old state mixed with the new: event triggers, publications,
//! subscriptions, foreign servers and wrappers, casts, access methods,
//! procedural languages, extensions installed in `pg_catalog`, large
//! objects; default privileges for all schemas and privileges on the
//! system's objects are put back as a new database has them (`acl`). Each is
//! dropped or reset here, and anything the restoring role may not do, or the
//! archive needs but the server lacks (roles, extensions, a superuser for
//! event triggers, owners a non-superuser cannot assign), is refused before
//! the first change, with the reason.
//!
//! Schemas left out of the backup (`[backups] exclude_schemas`) are kept
//! (`kept`), and refused when something in them depends on what a restore
//! drops. `public` is recreated as a new database has it (owner, privileges,
//! comment); the archive then adjusts it, as it would in a new database.

use shipsafe_pg::{quote_ident, quote_literal};
use tokio_postgres::Client;

use crate::archive::ArchiveContents;

mod acl;
mod kept;

/// Why the target cannot take the restore, found before anything changed.
#[derive(Debug)]
pub(crate) enum Refusal {
    Sql(tokio_postgres::Error),
    /// Each reason a full sentence.
    Refused(Vec<String>),
    MissingExtensions(Vec<String>),
}

impl From<tokio_postgres::Error> for Refusal {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Sql(e)
    }
}

struct Role {
    name: String,
    superuser: bool,
    major: u32,
}

/// How to empty the target.
#[derive(Debug)]
pub(crate) struct Slate {
    /// To run inside the restore's transaction.
    pub sql: String,
    /// What goes that the backup does not bring back, and what the
    /// restoring role may not put back as a new database has it.
    pub removed: Vec<String>,
}

/// Objects outside schemas, each with whether the restoring role may drop
/// it. Extension members are the extension's business; built-in objects
/// (oid below 16384) are the system's. Extensions installed in `pg_catalog`
/// go too: the archive creates those it has again, in its schema and at
/// this server's version, as a new database would get them.
const OUTSIDE_SQL: &str = "\
select * from ( \
select 'event trigger', quote_ident(evtname), pg_has_role(evtowner, 'MEMBER'), '', 'pg_event_trigger', oid \
  from pg_event_trigger e where not exists (select 1 from pg_depend d where d.classid = 'pg_event_trigger'::regclass and d.objid = e.oid and d.deptype = 'e') \
union all \
select 'publication', quote_ident(pubname), pg_has_role(pubowner, 'MEMBER'), '', 'pg_publication', oid from pg_publication \
union all \
select 'subscription', quote_ident(subname), pg_has_role(subowner, 'MEMBER'), coalesce(subslotname::text, ''), 'pg_subscription', oid \
  from pg_subscription where subdbid = (select oid from pg_database where datname = current_database()) \
union all \
select 'server', quote_ident(srvname), pg_has_role(srvowner, 'MEMBER'), '', 'pg_foreign_server', oid \
  from pg_foreign_server s where not exists (select 1 from pg_depend d where d.classid = 'pg_foreign_server'::regclass and d.objid = s.oid and d.deptype = 'e') \
union all \
select 'foreign data wrapper', quote_ident(fdwname), pg_has_role(fdwowner, 'MEMBER'), '', 'pg_foreign_data_wrapper', oid \
  from pg_foreign_data_wrapper w where not exists (select 1 from pg_depend d where d.classid = 'pg_foreign_data_wrapper'::regclass and d.objid = w.oid and d.deptype = 'e') \
union all \
select 'cast', format('(%s as %s)', format_type(castsource, null), format_type(casttarget, null)), \
       (select bool_or(pg_has_role(t.typowner, 'MEMBER')) from pg_type t where t.oid in (c.castsource, c.casttarget)), '', 'pg_cast', oid \
  from pg_cast c where c.oid >= 16384 and not exists (select 1 from pg_depend d where d.classid = 'pg_cast'::regclass and d.objid = c.oid and d.deptype = 'e') \
union all \
select 'access method', quote_ident(amname), (select rolsuper from pg_roles where rolname = current_user), '', 'pg_am', oid \
  from pg_am a where a.oid >= 16384 and not exists (select 1 from pg_depend d where d.classid = 'pg_am'::regclass and d.objid = a.oid and d.deptype = 'e') \
union all \
select 'language', quote_ident(lanname), pg_has_role(lanowner, 'MEMBER'), '', 'pg_language', oid \
  from pg_language l where l.oid >= 16384 and not exists (select 1 from pg_depend d where d.classid = 'pg_language'::regclass and d.objid = l.oid and d.deptype = 'e') \
union all \
select 'transform', format('for %s language %I', format_type(t.trftype, null), l.lanname), \
       (select rolsuper from pg_roles where rolname = current_user), '', 'pg_transform', t.oid \
  from pg_transform t join pg_language l on l.oid = t.trflang \
 where t.oid >= 16384 and not exists (select 1 from pg_depend d where d.classid = 'pg_transform'::regclass and d.objid = t.oid and d.deptype = 'e') \
union all \
select 'extension', quote_ident(extname), pg_has_role(extowner, 'MEMBER'), '', 'pg_extension', oid \
  from pg_extension where extname <> 'plpgsql' and extnamespace in ('pg_catalog'::regnamespace, 'information_schema'::regnamespace) \
) x(kind, name, may, extra, cls, oid) \
order by kind <> 'event trigger', kind, name";

/// Checks the target and returns how to empty it.
pub(crate) async fn prepare(
    client: &Client,
    contents: &ArchiveContents,
    excluded_schemas: &[String],
) -> Result<Slate, Refusal> {
    let me = client
        .query_one(
            "select current_user::text, r.rolsuper, current_setting('server_version_num')::int / 10000 \
             from pg_roles r where r.rolname = current_user",
            &[],
        )
        .await?;
    let me = Role {
        name: me.get(0),
        superuser: me.get(1),
        major: me.get::<_, i32>(2) as u32,
    };
    let mut refused = Vec::new();
    let mut removed = Vec::new();
    let mut sql = String::new();
    if contents.was_read() && !contents.encoding.eq_ignore_ascii_case("UTF8") {
        return Err(Refusal::Refused(vec![format!(
            "the backup's text is in {} (backups of earlier versions kept the database's encoding), and a restore sends text as UTF-8; restore it with pg_restore instead (see the runbook)",
            if contents.encoding.is_empty() {
                "an unknown encoding"
            } else {
                &contents.encoding
            }
        )]));
    }

    // What the archive needs from the server.
    let available: Vec<String> = client
        .query("select name::text from pg_available_extensions", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<String> = contents
        .extensions
        .iter()
        .filter(|e| !available.contains(e))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(Refusal::MissingExtensions(missing));
    }
    // Owners are certain to be needed (a grantee that is missing fails its
    // GRANT in the replay, which rolls back with the server's message).
    let wanted: Vec<String> = contents
        .owners
        .iter()
        .filter(|r| !r.starts_with("pg_"))
        .cloned()
        .collect();
    let absent: Vec<String> = client
        .query(
            "select distinct w from unnest($1::text[]) w \
             where not exists (select 1 from pg_roles r where r.rolname = w) order by 1",
            &[&wanted],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !absent.is_empty() {
        refused.push(format!(
            "the backup's objects belong to roles this server does not have: {}. Roles belong to the server, not the database: create them first (e.g. `CREATE ROLE {} NOLOGIN;`)",
            absent.join(", "),
            quote_ident(&absent[0])
        ));
    }
    if !me.superuser && absent.is_empty() {
        refused.extend(ownership(client, contents, &me).await?);
    }
    let needs_superuser: Vec<String> = contents
        .database_objects
        .iter()
        .filter(|o| o.kind == "EVENT TRIGGER" || (o.kind == "SUBSCRIPTION" && me.major < 16))
        .map(|o| format!("{} {}", o.kind.to_lowercase(), o.name))
        .collect();
    if !me.superuser && !needs_superuser.is_empty() {
        refused.push(format!(
            "the backup holds {}, which only a superuser can create, and {} is not one",
            needs_superuser.join(", "),
            me.name
        ));
    }
    if !me.superuser && contents.session_authorization {
        refused.push(format!(
            "some of the backup's privileges were granted by roles other than the objects' owners, and restoring them means acting as those roles (`SET SESSION AUTHORIZATION`), which only a superuser may; {} is not one",
            me.name
        ));
    }

    // Objects outside schemas. Event triggers first: they would fire on
    // every drop that follows.
    let mut outside = kept::DroppedOutside::default();
    for r in &client.query(OUTSIDE_SQL, &[]).await? {
        let kind: String = r.get(0);
        let name: String = r.get(1);
        let may: bool = r.get::<_, Option<bool>>(2).unwrap_or(false);
        let extra: String = r.get(3);
        if !may {
            refused.push(format!(
                "{kind} {name} must be replaced by the restore, and {} may not drop it (not its owner)",
                me.name
            ));
            continue;
        }
        if kind == "subscription" && !extra.is_empty() {
            refused.push(format!(
                "subscription {name} names the replication slot {extra} on its publisher, and dropping it would drop that slot, which no transaction can undo: detach it first (`ALTER SUBSCRIPTION {name} DISABLE; ALTER SUBSCRIPTION {name} SET (slot_name = NONE);`, then drop the slot on the publisher) or drop the subscription"
            ));
            continue;
        }
        let cascade = !matches!(
            kind.as_str(),
            "event trigger" | "publication" | "subscription"
        );
        sql.push_str(&format!(
            "drop {kind} if exists {name}{};\n",
            if cascade { " cascade" } else { "" }
        ));
        outside.objects.push((r.get(4), r.get(5)));
    }

    let (defaults, forbidden) = acl::default_privileges(client).await?;
    sql.push_str(&defaults);
    for role in forbidden {
        refused.push(format!(
            "the default privileges of role {role} must be replaced by the restore, and {} may not change them",
            me.name
        ));
    }

    // Large objects.
    let foreign_los: i64 = client
        .query_one(
            "select count(*) from pg_largeobject_metadata where not pg_has_role(lomowner, 'MEMBER')",
            &[],
        )
        .await?
        .get(0);
    if foreign_los > 0 && !me.superuser {
        refused.push(format!(
            "{foreign_los} large object(s) belong to roles {} is not a member of, and the restore must remove them",
            me.name
        ));
    }
    sql.push_str("select pg_catalog.lo_unlink(oid) from pg_catalog.pg_largeobject_metadata;\n");

    // Schemas, except the system's, extensions' own and those the backup
    // left out, which are kept.
    let patterns: Vec<String> = excluded_schemas
        .iter()
        .map(|p| kept::pattern_regex(p))
        .collect();
    let schemas = client
        .query(
            "select n.nspname::text, pg_has_role(n.nspowner, 'MEMBER'), pg_get_userbyid(n.nspowner)::text, \
                    (select count(*) from pg_class c where c.relnamespace = n.oid and c.relkind in ('r', 'p')), \
                    exists (select 1 from unnest($1::text[]) p where n.nspname::text collate pg_catalog.\"default\" ~ p) \
             from pg_namespace n \
             where n.nspname not in ('pg_catalog', 'information_schema') \
               and n.nspname not like 'pg\\_toast%' and n.nspname not like 'pg\\_temp%' \
               and not exists (select 1 from pg_depend d where d.classid = 'pg_namespace'::regclass \
                               and d.objid = n.oid and d.deptype = 'e') \
             order by 1",
            &[&patterns],
        )
        .await?;
    let (mut dropped, mut kept_schemas) = (Vec::new(), Vec::new());
    for r in &schemas {
        let name: String = r.get(0);
        let may: bool = r.get(1);
        let owner: String = r.get(2);
        let tables: i64 = r.get(3);
        if r.get::<_, bool>(4) {
            kept_schemas.push(name);
            continue;
        }
        // `public` is made anew whether or not the archive mentions it;
        // shipsafe's own bookkeeping is not the application's data.
        if name != "public"
            && name != "shipsafe"
            && contents.was_read()
            && !contents.schemas.contains_key(&name)
        {
            removed.push(format!(
                "schema {name} ({tables} table(s)) was in the target but is not in the backup, so the restore removed it"
            ));
        }
        if !may {
            refused.push(format!(
                "schema {name} belongs to {owner}, and {} may not drop it",
                me.name
            ));
        }
        sql.push_str(&format!("drop schema {} cascade;\n", quote_ident(&name)));
        dropped.push(name);
    }
    let reaching = kept::dependents(client, &kept_schemas, &dropped, &outside, 10).await?;
    if !reaching.is_empty() {
        refused.push(format!(
            "schemas left out of backups ({}) are kept by a restore, but objects in them depend on what the restore must drop and would go with it: {}. Move or drop them first, or stop excluding their schema",
            kept_schemas.join(", "),
            reaching.join("; ")
        ));
    }

    // Extensions the archive creates that only a superuser may, unless they
    // stay installed in a kept schema (`IF NOT EXISTS` then finds them).
    if !me.superuser {
        let untrusted: Vec<String> = client
            .query(
                "select a.name::text from pg_available_extensions a \
                 join pg_available_extension_versions v on v.name = a.name and v.version = a.default_version \
                 where a.name = any($1) and v.superuser and not v.trusted \
                   and not exists (select 1 from pg_extension e join pg_namespace n on n.oid = e.extnamespace \
                                   where e.extname = a.name and n.nspname = any($2)) \
                 order by 1",
                &[&contents.extensions, &kept_schemas],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !untrusted.is_empty() {
            refused.push(format!(
                "the backup creates the extension(s) {}, which only a superuser can create, and {} is not one",
                untrusted.join(", "),
                me.name
            ));
        }
    }

    // Privileges on the system's own objects, as a new database has them.
    let system = acl::system_privileges(client).await?;
    if me.superuser {
        for (stmt, _) in &system {
            sql.push_str(stmt);
        }
    } else if !system.is_empty() {
        let said: Vec<&str> = system.iter().take(10).map(|(_, s)| s.as_str()).collect();
        removed.push(format!(
            "privileges on system objects differ from a new database's and only a superuser may change them, so they were left as they are: {}{}",
            said.join(", "),
            if system.len() > 10 { ", …" } else { "" }
        ));
    }

    let public_kept = kept_schemas.iter().any(|s| s == "public");
    let public_there = schemas.iter().any(|r| r.get::<_, String>(0) == "public");
    if !contents.creates_public
        && !public_kept
        && (dropped.iter().any(|s| s == "public") || !public_there)
    {
        sql.push_str(&public_schema_sql(client, &me).await?);
    }
    if !refused.is_empty() {
        return Err(Refusal::Refused(refused));
    }
    Ok(Slate { sql, removed })
}

/// What a restoring role that is not a superuser cannot do: give objects to
/// roles it is not a member of, or to roles that may not create in the
/// object's schema when ownership is assigned (the archive grants schema
/// privileges only at its end, as pg_restore does).
async fn ownership(
    client: &Client,
    contents: &ArchiveContents,
    me: &Role,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut out = Vec::new();
    let owners: Vec<String> = contents
        .owners
        .iter()
        .filter(|r| !r.starts_with("pg_"))
        .cloned()
        .collect();
    let foreign: Vec<String> = client
        .query(
            "select o from unnest($1::text[]) o where not pg_has_role(current_user, o, 'MEMBER') order by 1",
            &[&owners],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !foreign.is_empty() {
        out.push(format!(
            "the backup's objects belong to {}, and {} may only give objects to roles it is a member of: restore as a superuser, or grant those roles to {} (`GRANT {} TO {};`)",
            foreign.join(", "),
            me.name,
            me.name,
            quote_ident(&foreign[0]),
            quote_ident(&me.name)
        ));
        return Ok(out);
    }
    // Who owns each schema when its objects are given away: the archive's
    // owner, or for `public` (owned by pg_database_owner) this database's.
    let mut pairs: Vec<(String, String, String)> = Vec::new();
    for (schema, owner) in &contents.owned_in {
        // pg_dump names `public` only when it differs from a new database's.
        let schema_owner = match contents.schemas.get(schema) {
            Some(o) => o.clone(),
            None if schema == "public" => "pg_database_owner".to_string(),
            None => continue,
        };
        pairs.push((schema.clone(), owner.clone(), schema_owner));
    }
    let (schemas, rest): (Vec<String>, Vec<(String, String)>) =
        pairs.into_iter().map(|(s, o, so)| (s, (o, so))).unzip();
    let (owners, schema_owners): (Vec<String>, Vec<String>) = rest.into_iter().unzip();
    let rows = client
        .query(
            "with p as (select * from unnest($1::text[], $2::text[], $3::text[]) as p(s, o, so)), \
                  q as (select s, o, case when so = 'pg_database_owner' \
                          then (select pg_get_userbyid(datdba)::text from pg_database where datname = current_database()) \
                          else so end as so from p) \
             select s, o, so from q \
             where o <> so and not pg_has_role(o, so, 'USAGE') \
               and not exists (select 1 from pg_roles r where r.rolname = o and r.rolsuper) \
             order by 1, 2",
            &[&schemas, &owners, &schema_owners],
        )
        .await?;
    for r in rows {
        let (schema, owner, schema_owner): (String, String, String) =
            (r.get(0), r.get(1), r.get(2));
        out.push(format!(
            "role {owner} owns objects in schema {schema}, which belongs to {schema_owner} here: giving them to {owner} needs it to create in {schema} at that moment, which only a superuser's restore does not need (restore as a superuser, or make {owner} a member of {schema_owner})"
        ));
    }
    Ok(out)
}

/// `public` as a new database has it: owned by `pg_database_owner`
/// (PostgreSQL 15+) or the bootstrap superuser, with its initial privileges
/// and comment.
async fn public_schema_sql(client: &Client, me: &Role) -> Result<String, tokio_postgres::Error> {
    let owner = if me.major >= 15 {
        "pg_database_owner".to_string()
    } else {
        client
            .query_one("select pg_get_userbyid(10)::text", &[])
            .await?
            .get(0)
    };
    let initial: Vec<String> = client
        .query(
            "select case when x.grantee = 0 then 'public' else quote_ident(pg_get_userbyid(x.grantee)) end \
                    || ' ' || x.privilege_type \
             from pg_init_privs i, aclexplode(i.initprivs) x \
             where i.classoid = 'pg_namespace'::regclass and i.objoid = 'public'::regnamespace \
               and x.grantee <> x.grantor",
            &[],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default();
    let grants = if initial.is_empty() {
        // No record of the initial privileges (public was recreated once):
        // PostgreSQL's defaults.
        if me.major >= 15 {
            vec!["public USAGE".to_string()]
        } else {
            vec!["public USAGE".to_string(), "public CREATE".to_string()]
        }
    } else {
        initial
    };
    let mut sql = format!(
        "create schema public authorization {};\ncomment on schema public is {};\n",
        quote_ident(&owner),
        quote_literal("standard public schema")
    );
    for g in grants {
        if let Some((grantee, privilege)) = g.split_once(' ') {
            sql.push_str(&format!(
                "grant {privilege} on schema public to {grantee};\n"
            ));
        }
    }
    Ok(sql)
}
