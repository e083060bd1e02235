//! Properties of the database itself, which a database's dump does not
//! carry: `ALTER DATABASE … SET`, per-role settings in the database
//! (`ALTER ROLE … IN DATABASE … SET`), the database's comment and its
//! privileges (`GRANT CONNECT`). `pg_dump` without `--create` leaves them
//! out, so no restore into an existing database brings them back.
//!
//! Each backup records which ones its database had, by name only: values
//! may be secrets (a JWT secret set as a database setting), manifests are
//! printed, and even a hash of a short value gives it away. A restore
//! compares the names with the target's and says what it left as it was.

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

/// One database-level property.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DatabaseProperty {
    /// `setting`, `comment`, `grant` (beyond the defaults) or `revoke` (of
    /// a default privilege).
    pub kind: String,
    /// The role a setting applies to, or a grant is for; empty for all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
    /// The setting's name, or the privilege granted.
    pub name: String,
}

impl DatabaseProperty {
    fn describe(&self) -> String {
        match self.kind.as_str() {
            "setting" if self.role.is_empty() => format!("setting {}", self.name),
            "setting" => format!("setting {} for role {}", self.name, self.role),
            "grant" => format!("{} granted to {}", self.name, self.role),
            "revoke" => format!("{} revoked from {}", self.name, self.role),
            _ => self.kind.clone(),
        }
    }

    fn key(&self) -> (&str, &str, &str) {
        (&self.kind, &self.role, &self.name)
    }
}

/// How every sentence of [`compare`] starts.
const NOT_CARRIED: &str =
    "a dump does not carry database-level properties, so they were left as they are";

/// The current database's properties, sorted.
pub const DATABASE_PROPERTIES_SQL: &str = "\
with db as (select oid, datdba, datacl from pg_database where datname = current_database()) \
select 'setting', coalesce(pg_get_userbyid(nullif(s.setrole, 0))::text, ''), split_part(c, '=', 1) \
  from pg_db_role_setting s, db, unnest(s.setconfig) c where s.setdatabase = db.oid \
union all \
select 'comment', '', 'comment' \
  from db where shobj_description(db.oid, 'pg_database') is not null \
union all \
select 'grant', case when a.grantee = 0 then 'PUBLIC' else pg_get_userbyid(a.grantee)::text end, a.privilege_type \
  from db, aclexplode(db.datacl) a where a.grantee <> db.datdba \
   and not exists (select 1 from aclexplode(acldefault('d', db.datdba)) d \
                   where d.grantee = a.grantee and d.privilege_type = a.privilege_type) \
union all \
select 'revoke', case when d.grantee = 0 then 'PUBLIC' else pg_get_userbyid(d.grantee)::text end, d.privilege_type \
  from db, aclexplode(acldefault('d', db.datdba)) d where db.datacl is not null and d.grantee <> db.datdba \
   and not exists (select 1 from aclexplode(db.datacl) a \
                   where a.grantee = d.grantee and a.privilege_type = d.privilege_type) \
order by 1, 2, 3";

/// Reads the current database's properties.
pub async fn read(client: &Client) -> Result<Vec<DatabaseProperty>, tokio_postgres::Error> {
    Ok(client
        .query(DATABASE_PROPERTIES_SQL, &[])
        .await?
        .iter()
        .map(|r| DatabaseProperty {
            kind: r.get(0),
            role: r.get(1),
            name: r.get(2),
        })
        .collect())
}

/// What differs between the backup's database and the target's, as one
/// sentence each (none when they agree or the target cannot be read).
pub(crate) async fn compare(client: &Client, backup: &[DatabaseProperty]) -> Vec<String> {
    match read(client).await {
        Ok(target) => differences(backup, &target),
        Err(e) => vec![format!(
            "the target's database-level properties could not be read: {}",
            shipsafe_pg::describe(&e)
        )],
    }
}

fn differences(backup: &[DatabaseProperty], target: &[DatabaseProperty]) -> Vec<String> {
    let names = |from: &[DatabaseProperty], without: &[DatabaseProperty], with: bool| {
        from.iter()
            .filter(|p| without.iter().any(|q| q.key() == p.key()) == with)
            .map(DatabaseProperty::describe)
            .collect::<Vec<_>>()
    };
    let tell = NOT_CARRIED;
    let mut out = Vec::new();
    for (list, said) in [
        (
            names(backup, target, false),
            "only the backup's database had",
        ),
        (names(target, backup, false), "only the target has"),
        (
            names(backup, target, true),
            "both have (a backup records no values, so the target's stay)",
        ),
    ] {
        if !list.is_empty() {
            out.push(format!("{tell}: {said}: {}", list.join(", ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kind: &str, role: &str, name: &str) -> DatabaseProperty {
        DatabaseProperty {
            kind: kind.into(),
            role: role.into(),
            name: name.into(),
        }
    }

    #[test]
    fn differences_name_each_property() {
        let backup = vec![
            p("setting", "", "search_path"),
            p("setting", "app", "statement_timeout"),
            p("comment", "", "comment"),
        ];
        let target = vec![
            p("setting", "", "search_path"),
            p("grant", "reporting", "CONNECT"),
        ];
        let d = differences(&backup, &target);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].ends_with(
            "only the backup's database had: setting statement_timeout for role app, comment"
        ));
        assert!(d[1].ends_with("only the target has: CONNECT granted to reporting"));
        assert!(d[2].contains("both have") && d[2].ends_with("setting search_path"));
        assert!(differences(&[], &[]).is_empty());
    }
}
