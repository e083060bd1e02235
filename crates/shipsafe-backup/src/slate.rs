//! Emptying a database for a restore, inside the restore's transaction.
//!
//! A restore replaces everything the backup covers, so the target must first
//! hold nothing the archive will create. Dropping every schema removes most
//! of it; what lives outside schemas survives that and would make the
//! archive's `CREATE` fail ("publication already exists") or leave the old
//! state mixed with the new: event triggers, publications, subscriptions,
//! foreign servers and wrappers, default privileges for all schemas, large
//! objects. Each is dropped (or reset) here, and anything the restoring role
//! may not drop, or the archive needs but the server lacks (roles,
//! extensions, a superuser for event triggers), is refused before the first
//! change, with the reason.
//!
//! Schemas left out of the backup (`[backups] exclude_schemas`) are kept:
//! the archive does not hold them, so dropping them would lose them.
//! `public` is recreated as a new database has it (owner, privileges,
//! comment); the archive then adjusts it, as it would in a new database.

use shipsafe_pg::{quote_ident, quote_literal};
use tokio_postgres::Client;

use crate::archive::ArchiveContents;

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

/// A `pg_dump --exclude-schema` pattern as the regular expression pg_dump
/// matches it with: `*` and `?` are wildcards, double quotes quote, `$` is
/// literal, other regular-expression syntax works, unquoted letters fold
/// to lower case; a dot separates a database name, which is ignored.
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
            _ => cur.extend(c.to_lowercase()),
        }
    }
    format!("^({})$", parts.last().map(String::as_str).unwrap_or(""))
}

struct Role {
    name: String,
    superuser: bool,
    major: u32,
}

/// Checks the target and returns the SQL that empties it, to run inside the
/// restore's transaction.
pub(crate) async fn prepare(
    client: &Client,
    contents: &ArchiveContents,
    excluded_schemas: &[String],
) -> Result<String, Refusal> {
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
    let mut sql = String::new();

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

    // Objects outside schemas, each with whether the restoring role may
    // drop it. Extension members are the extension's business.
    let not_ext = |class: &str, col: &str| {
        format!(
            "not exists (select 1 from pg_depend d where d.classid = '{class}'::regclass \
             and d.objid = {col} and d.deptype = 'e')"
        )
    };
    let outside = client
        .query(
            &format!(
                "select 'event trigger', evtname::text, pg_has_role(evtowner, 'MEMBER'), '' \
                   from pg_event_trigger e where {et} \
                 union all \
                 select 'publication', pubname::text, pg_has_role(pubowner, 'MEMBER'), '' \
                   from pg_publication \
                 union all \
                 select 'subscription', subname::text, pg_has_role(subowner, 'MEMBER'), coalesce(subslotname::text, '') \
                   from pg_subscription where subdbid = (select oid from pg_database where datname = current_database()) \
                 union all \
                 select 'server', srvname::text, pg_has_role(srvowner, 'MEMBER'), '' \
                   from pg_foreign_server s where {srv} \
                 union all \
                 select 'foreign data wrapper', fdwname::text, pg_has_role(fdwowner, 'MEMBER'), '' \
                   from pg_foreign_data_wrapper w where {fdw} \
                 order by 1, 2",
                et = not_ext("pg_event_trigger", "e.oid"),
                srv = not_ext("pg_foreign_server", "s.oid"),
                fdw = not_ext("pg_foreign_data_wrapper", "w.oid"),
            ),
            &[],
        )
        .await?;
    let mut drops = Vec::new();
    for r in &outside {
        let kind: String = r.get(0);
        let name: String = r.get(1);
        let may: bool = r.get(2);
        let slot: String = r.get(3);
        if !may {
            refused.push(format!(
                "{kind} {name} must be replaced by the restore, and {} may not drop it (not its owner)",
                me.name
            ));
        } else if kind == "subscription" && !slot.is_empty() {
            refused.push(format!(
                "subscription {name} has the replication slot {slot} on its publisher, and dropping it cannot be undone inside the restore's transaction: drop it first (`DROP SUBSCRIPTION {};`)",
                quote_ident(&name)
            ));
        } else {
            let cascade = matches!(kind.as_str(), "server" | "foreign data wrapper");
            drops.push(format!(
                "drop {kind} if exists {}{};\n",
                quote_ident(&name),
                if cascade { " cascade" } else { "" }
            ));
        }
    }
    // Event triggers first: they would fire on every drop that follows.
    sql.extend(drops);

    // Default privileges for all schemas (schema-level ones go with their
    // schema): reset to the built-in defaults.
    let acls = client
        .query(
            "select pg_get_userbyid(a.defaclrole)::text, a.defaclobjtype::text, pg_has_role(a.defaclrole, 'MEMBER'), \
                    coalesce(array_agg(distinct case when x.grantee = 0 then 'public' else quote_ident(pg_get_userbyid(x.grantee)) end) \
                             filter (where x.grantee <> a.defaclrole), '{}') \
             from pg_default_acl a left join lateral aclexplode(a.defaclacl) x on true \
             where a.defaclnamespace = 0 group by 1, 2, 3 order by 1, 2",
            &[],
        )
        .await?;
    for r in &acls {
        let role: String = r.get(0);
        let kind: String = r.get(1);
        let may: bool = r.get(2);
        let grantees: Vec<String> = r.get(3);
        if !may {
            refused.push(format!(
                "the default privileges of role {role} must be replaced by the restore, and {} may not change them",
                me.name
            ));
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
    // left out.
    let excluded: Vec<String> = excluded_schemas.iter().map(|p| pattern_regex(p)).collect();
    let schemas = client
        .query(
            "select n.nspname::text, pg_has_role(n.nspowner, 'MEMBER'), pg_get_userbyid(n.nspowner)::text \
             from pg_namespace n \
             where n.nspname not in ('pg_catalog', 'information_schema') \
               and n.nspname not like 'pg\\_toast%' and n.nspname not like 'pg\\_temp%' \
               and not exists (select 1 from pg_depend d where d.classid = 'pg_namespace'::regclass \
                               and d.objid = n.oid and d.deptype = 'e') \
               and not exists (select 1 from unnest($1::text[]) p where n.nspname ~ p) \
             order by 1",
            &[&excluded],
        )
        .await?;
    for r in &schemas {
        let name: String = r.get(0);
        let may: bool = r.get(1);
        let owner: String = r.get(2);
        if !may {
            refused.push(format!(
                "schema {name} belongs to {owner}, and {} may not drop it",
                me.name
            ));
        }
        sql.push_str(&format!("drop schema {} cascade;\n", quote_ident(&name)));
    }

    if !contents.creates_public {
        sql.push_str(&public_schema_sql(client, &me).await?);
    }
    if !refused.is_empty() {
        return Err(Refusal::Refused(refused));
    }
    Ok(sql)
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
    }
}
