//! Step 9, rollback by restore: a safety backup of the state the failed
//! change left, then the pre-change backup restored in one transaction;
//! and what restoring a backup discards, said before it is done.

use std::sync::Arc;

use serde::Serialize;
use shipsafe_config::{Config, DbUrl, VarSource};
use shipsafe_pg::{connect, run_checks};
use tokio_postgres::Client;

use super::backup::{WRITES_SQL, take_backup};
use crate::error::CoreError;
use crate::progress::Progress;
use crate::source::RollbackInfo;

/// Restores backup `id` over `env` after a safety backup of what is there
/// now (SPEC §6 step 9).
pub async fn by_restore(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    id: &str,
    progress: &Arc<dyn Progress>,
) -> RollbackInfo {
    progress.stage("safety backup of the failed state");
    let safety = match take_backup(config, vars, env, "pre-rollback", progress).await {
        Ok(m) => m.id,
        Err(e) => {
            return RollbackInfo::new(
                "restore",
                false,
                format!(
                    "the safety backup before restoring failed ({e}), so the pre-deploy backup {id} was not restored"
                ),
            );
        }
    };
    let mut info = match super::restore::pre_deploy(config, vars, env, id, progress).await {
        Ok(()) => RollbackInfo::new(
            "restore",
            true,
            format!("restored the pre-deploy backup {id}; the failed state is in backup {safety}"),
        ),
        Err(e) => RollbackInfo::new(
            "restore",
            false,
            format!(
                "restoring the pre-deploy backup {id} failed: {e}; the failed state is in backup {safety}"
            ),
        ),
    };
    info.safety_backup = Some(safety);
    info
}

/// The checks of `env` after a successful rollback, on a fresh connection.
pub async fn checks_after(
    config: &Config,
    env: &str,
    url: &DbUrl,
) -> Vec<shipsafe_pg::CheckOutcome> {
    match connect(url).await {
        Ok(c) => run_checks(&c, &config.checks_for(env), false).await,
        Err(_) => Vec::new(),
    }
}

/// Writes made after a backup, which restoring it discards.
#[derive(Debug, Clone, Serialize)]
pub struct Discards {
    pub backup_id: String,
    pub backup_created_at: String,
    pub minutes_since_backup: i64,
    /// Rows inserted, updated or deleted since the backup by every session
    /// (the deploy's own changes included), from `pg_stat_user_tables`;
    /// `None` when not measurable (statistics reset, or an older backup).
    pub rows_written_since: Option<i64>,
}

impl Discards {
    pub fn sentence(&self, env: &str) -> String {
        format!(
            "this restores backup {} taken {} ({}): every write to {env} since then is discarded{}",
            self.backup_id,
            self.backup_created_at,
            ago(self.minutes_since_backup),
            match self.rows_written_since {
                Some(n) => format!(
                    " (about {n} rows inserted, updated or deleted since, the deploy's own included, per pg_stat_user_tables)"
                ),
                None => String::new(),
            }
        )
    }
}

/// What going back with `down` drops that holds data now: the tables and
/// columns the deploy created (`created`, from its rehearsal), each with
/// what is in it, counted up to a million. Empty when nothing is lost or
/// the rehearsal recorded nothing created.
pub async fn down_drops(client: &Client, created: &[String]) -> Vec<String> {
    const CAP: i64 = 1_000_000;
    let mut out = Vec::new();
    for line in created {
        let (what, sql) = if let Some(rest) = line.strip_prefix("relation ") {
            let Some((idents, _)) = sql_idents(rest) else {
                continue;
            };
            let table = idents.join(".");
            (
                format!("table {table}"),
                format!(
                    "select count(*) from (select 1 from {table} limit {}) s",
                    CAP + 1
                ),
            )
        } else if let Some(rest) = line.strip_prefix("column ") {
            let Some((mut idents, _)) = sql_idents(rest) else {
                continue;
            };
            let Some(column) = idents.pop().filter(|_| !idents.is_empty()) else {
                continue;
            };
            let table = idents.join(".");
            (
                format!("column {table}.{column}"),
                format!(
                    "select count(*) from (select 1 from {table} where {column} is not null limit {}) s",
                    CAP + 1
                ),
            )
        } else {
            continue;
        };
        // A table or column already gone has nothing to lose.
        let Ok(row) = client.query_one(sql.as_str(), &[]).await else {
            continue;
        };
        let n: i64 = row.get(0);
        if n > 0 {
            let count = if n > CAP {
                format!("more than {CAP}")
            } else {
                n.to_string()
            };
            let unit = if line.starts_with("relation ") {
                "row"
            } else {
                "value"
            };
            out.push(format!(
                "{what} ({count} {unit}{})",
                if n == 1 { "" } else { "s" }
            ));
        }
    }
    out
}

/// The dot-separated identifiers at the start of a schema line, as SQL
/// (quoted where `format('%I')` quoted them), and the rest of the line.
fn sql_idents(s: &str) -> Option<(Vec<String>, &str)> {
    let mut idents = Vec::new();
    let mut rest = s;
    loop {
        let end = if rest.starts_with('"') {
            let mut i = 1;
            let b = rest.as_bytes();
            loop {
                match b.get(i)? {
                    b'"' if b.get(i + 1) == Some(&b'"') => i += 2,
                    b'"' => break i + 1,
                    _ => i += 1,
                }
            }
        } else {
            rest.find(['.', ' ']).unwrap_or(rest.len())
        };
        if end == 0 {
            return None;
        }
        idents.push(rest[..end].to_string());
        rest = &rest[end..];
        match rest.strip_prefix('.') {
            Some(r) => rest = r,
            None => return Some((idents, rest.trim_start())),
        }
    }
}

/// "1 minute ago", "5 minutes ago", "3 hours ago", "2 days ago".
pub(crate) fn ago(minutes: i64) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" });
    match minutes {
        m if m <= 0 => "less than a minute ago".into(),
        m if m < 120 => plural(m, "minute"),
        m if m < 48 * 60 => plural(m / 60, "hour"),
        m => plural(m / (24 * 60), "day"),
    }
}

/// How long ago a backup was taken, in words.
pub(crate) fn backup_age(m: &shipsafe_backup::Manifest) -> String {
    m.created()
        .map(|t| ago((jiff::Timestamp::now().as_second() - t.as_second()) / 60))
        .unwrap_or_else(|| "at an unknown time".into())
}

/// What restoring `backup_id` over the database on `client` would discard.
pub async fn discards(
    config: &Config,
    vars: &dyn VarSource,
    client: &Client,
    backup_id: &str,
) -> Result<Discards, CoreError> {
    let store = crate::store::open_store(config, vars)?;
    let m = store.manifest(backup_id).await?;
    let minutes = m
        .created()
        .map(|t| (jiff::Timestamp::now().as_second() - t.as_second()) / 60)
        .unwrap_or(0);
    let now: Option<i64> = client
        .query_typed(WRITES_SQL, &[])
        .await
        .ok()
        .and_then(|rows| rows.first().map(|r| r.get(0)));
    Ok(Discards {
        backup_id: backup_id.to_string(),
        backup_created_at: m.created_at.clone(),
        minutes_since_backup: minutes,
        rows_written_since: match (now, m.writes_at_backup) {
            (Some(n), Some(then)) if n >= then => Some(n - then),
            _ => None,
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn schema_line_identifiers_are_read_as_sql() {
        let (ids, rest) =
            super::sql_idents("public.\"user\".nickname character varying(64)").unwrap();
        assert_eq!(ids, ["public", "\"user\"", "nickname"]);
        assert_eq!(rest, "character varying(64)");
        let (ids, _) = super::sql_idents("s.\"a \"\"b\"\".c\" kind=r").unwrap();
        assert_eq!(ids, ["s", "\"a \"\"b\"\".c\""]);
    }

    #[test]
    fn minutes_ago_read_as_english() {
        assert_eq!(super::ago(0), "less than a minute ago");
        assert_eq!(super::ago(1), "1 minute ago");
        assert_eq!(super::ago(12), "12 minutes ago");
        assert_eq!(super::ago(119), "119 minutes ago");
        assert_eq!(super::ago(180), "3 hours ago");
        assert_eq!(super::ago(3 * 24 * 60 + 5), "3 days ago");
    }
}
