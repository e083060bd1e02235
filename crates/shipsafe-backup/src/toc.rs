//! What an archive needs from the cluster it is restored into, read from its
//! table of contents (`pg_restore --list`) rather than from SQL text.
//!
//! Dumps of managed databases (Supabase, Heroku, RDS) reference roles the
//! provider creates (`anon`, `authenticated`, `rds_superuser`, ...), need
//! extensions, and carry event triggers, publications and subscriptions that
//! only make sense on the provider's server. A scratch cluster gets the
//! roles, is checked for the extensions before anything is restored, and the
//! provider-only entries are left out.

use std::collections::BTreeSet;
use std::path::Path;

use shipsafe_pg::{PgBinaries, quote_ident, quote_literal};
use tokio_postgres::Client;

use crate::dump::{describe_status, tail};
use crate::error::BackupError;

/// Entry types left out of a restore into a scratch cluster: they act on
/// the server around the database (replication, DDL hooks of the provider).
const LEFT_OUT: &[&str] = &[
    "EVENT TRIGGER",
    "PUBLICATION",
    "PUBLICATION TABLE",
    "PUBLICATION TABLES IN SCHEMA",
    "SUBSCRIPTION",
    "SUBSCRIPTION TABLE",
];

/// An archive's table of contents.
#[derive(Debug, Clone, Default)]
pub struct Toc {
    lines: Vec<String>,
}

impl Toc {
    /// Reads the archive's table of contents.
    pub async fn read(binaries: &PgBinaries, archive: &Path) -> Result<Self, BackupError> {
        let out = tokio::process::Command::new(binaries.path("pg_restore"))
            .arg("--list")
            .arg(archive)
            .output()
            .await
            .map_err(|e| {
                BackupError::io(
                    "cannot run pg_restore --list",
                    binaries.path("pg_restore"),
                    e,
                )
            })?;
        if !out.status.success() {
            return Err(BackupError::Restore {
                status: describe_status(out.status),
                stderr: tail(&String::from_utf8_lossy(&out.stderr)),
            });
        }
        Ok(Self::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    pub fn parse(text: &str) -> Self {
        Self {
            lines: text
                .lines()
                .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
                .map(str::to_string)
                .collect(),
        }
    }

    /// The entry's description: what follows "ID; catalog-oid oid ".
    fn body(line: &str) -> &str {
        line.splitn(4, ' ').nth(3).unwrap_or_default()
    }

    fn left_out(line: &str) -> bool {
        let body = Self::body(line);
        LEFT_OUT.iter().any(|t| {
            body.strip_prefix(t)
                .is_some_and(|rest| rest.starts_with(' '))
                // and comments/security labels on them
                || body.starts_with("COMMENT - ") && body["COMMENT - ".len()..].starts_with(t)
        })
    }

    /// Extensions the archive creates.
    pub fn extensions(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter_map(|l| {
                Self::body(l)
                    .strip_prefix("EXTENSION - ")
                    .map(|n| n.trim().to_string())
            })
            .collect()
    }

    /// Roles named as owners (the last field of an entry).
    pub fn owners(&self) -> BTreeSet<String> {
        self.lines
            .iter()
            .filter(|l| {
                let b = Self::body(l);
                !b.starts_with("EXTENSION ") && !b.starts_with("COMMENT - EXTENSION ")
            })
            .filter_map(|l| l.rsplit(' ').next())
            .filter(|o| !o.is_empty() && *o != "-" && !o.starts_with("pg_"))
            .map(str::to_string)
            .collect()
    }

    /// What the listing tells of the archive when its bytes could not be
    /// read: owners, extensions and objects outside schemas; no rows.
    pub fn contents(&self) -> crate::archive::ArchiveContents {
        let mut database_objects = Vec::new();
        for l in &self.lines {
            let body = Self::body(l);
            for kind in ["EVENT TRIGGER", "PUBLICATION", "SUBSCRIPTION"] {
                if let Some(rest) = body.strip_prefix(kind).and_then(|r| r.strip_prefix(" - ")) {
                    let name = rest.rsplit_once(' ').map_or(rest, |(n, _)| n);
                    database_objects.push(crate::archive::DatabaseObject {
                        kind: kind.to_string(),
                        name: name.to_string(),
                    });
                }
            }
        }
        crate::archive::ArchiveContents {
            format: "unknown".into(),
            owners: self.owners(),
            extensions: self.extensions(),
            database_objects,
            ..Default::default()
        }
    }

    /// The list for `pg_restore -L` without the provider-only entries, and
    /// how many were left out.
    pub fn restore_list(&self) -> (String, usize) {
        let mut out = String::new();
        let mut left_out = 0;
        for l in &self.lines {
            if Self::left_out(l) {
                left_out += 1;
                out.push(';');
            }
            out.push_str(l);
            out.push('\n');
        }
        (out, left_out)
    }
}

/// Prepares a scratch cluster for the archive: creates the roles it names
/// (owners from the table of contents plus `roles`, e.g. those the backup's
/// manifest recorded from grants and policies), and checks that every
/// extension it creates can be installed. Fails before anything is restored.
pub async fn prepare_cluster(
    admin: &Client,
    toc: &Toc,
    roles: &[String],
    major: u32,
) -> Result<(), BackupError> {
    let sql_err = |what: &str, e: tokio_postgres::Error| BackupError::Restore {
        status: what.to_string(),
        stderr: shipsafe_pg::describe(&e),
    };
    let available: BTreeSet<String> = admin
        .query("select name::text from pg_available_extensions", &[])
        .await
        .map_err(|e| sql_err("listing available extensions", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<String> = toc
        .extensions()
        .into_iter()
        .filter(|e| !available.contains(e))
        .collect();
    if !missing.is_empty() {
        return Err(BackupError::MissingExtensions { missing, major });
    }
    let mut wanted: BTreeSet<String> = toc.owners();
    wanted.extend(roles.iter().filter(|r| !r.starts_with("pg_")).cloned());
    for role in wanted {
        admin
            .batch_execute(&format!(
                "do $$ begin if not exists (select 1 from pg_roles where rolname = {lit}) then create role {id}; end if; end $$",
                lit = quote_literal(&role),
                id = quote_ident(&role)
            ))
            .await
            .map_err(|e| sql_err(&format!("creating role {role}"), e))?;
    }
    Ok(())
}

/// Roles the current database's objects depend on (owners, grantees,
/// policy roles), as PostgreSQL records them in `pg_shdepend`, plus the
/// database owner. Recorded in each backup's manifest.
pub const REFERENCED_ROLES_SQL: &str = "\
select distinct r.rolname::text from pg_shdepend d join pg_roles r on r.oid = d.refobjid \
where d.dbid = (select oid from pg_database where datname = current_database()) \
  and d.refclassid = 'pg_authid'::regclass \
union select pg_get_userbyid(datdba)::text from pg_database where datname = current_database() \
order by 1";

/// Extensions of the current database, `name version`.
pub const EXTENSIONS_SQL: &str =
    "select extname::text || ' ' || extversion::text from pg_extension order by 1";

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "\
;
; Archive created at 2026-12-03
3; 3079 16385 EXTENSION - pgcrypto
4343; 0 0 COMMENT - EXTENSION pgcrypto
215; 1259 16386 TABLE public profiles supabase_admin
216; 1259 16390 TABLE public my table authenticator
3305; 3466 16400 EVENT TRIGGER - issue_pg_graphql_access supabase_admin
3306; 6104 16401 PUBLICATION - supabase_realtime postgres
3307; 6106 16402 PUBLICATION TABLE public supabase_realtime profiles postgres
4000; 0 0 COMMENT - EVENT TRIGGER issue_pg_graphql_access supabase_admin
3300; 0 16386 TABLE DATA public profiles supabase_admin
3301; 0 0 ACL - SCHEMA public pg_database_owner
";

    #[test]
    fn reads_extensions_owners_and_leaves_out_provider_entries() {
        let toc = Toc::parse(LIST);
        assert_eq!(toc.extensions(), vec!["pgcrypto"]);
        let owners: Vec<_> = toc.owners().into_iter().collect();
        assert_eq!(owners, vec!["authenticator", "postgres", "supabase_admin"]);
        let (list, left_out) = toc.restore_list();
        assert_eq!(left_out, 4);
        assert!(list.contains("\n215; 1259 16386 TABLE public profiles"));
        assert!(list.contains(";3305; 3466 16400 EVENT TRIGGER"));
        assert!(list.contains(";3307; 6106 16402 PUBLICATION TABLE"));
        assert!(list.contains(";4000; 0 0 COMMENT - EVENT TRIGGER"));
        assert!(!list.contains(";3300"));
    }
}
