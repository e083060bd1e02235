//! What every readiness item may read, gathered once, and the small helpers
//! the items share.

use shipsafe_backup::Manifest;
use shipsafe_config::{Config, DbUrl, Protection, VarSource};
use shipsafe_pg::health::ProbeError;
use tokio_postgres::Client;

use crate::model::{Def, Item};

/// What every item may read: gathered once.
pub(crate) struct Facts<'a> {
    pub config: &'a Config,
    pub vars: &'a dyn VarSource,
    pub env: &'a str,
    pub protection: Protection,
    pub url: &'a DbUrl,
    pub db: Result<Db, String>,
    /// This environment's backups, newest first.
    pub backups: Result<Vec<Manifest>, String>,
    pub now: jiff::Timestamp,
}

pub(crate) struct Db {
    pub client: Client,
    /// The role shipsafe is connected as.
    pub user: String,
    /// The role the application logs in as.
    pub app_role: String,
    /// TLS version of this connection, `None` in clear.
    pub tls: Option<String>,
    /// Provider schemas left out of every catalog query.
    pub excluded: Vec<String>,
    /// Every user table's facts, read once for the items that share them.
    pub(crate) tables: tokio::sync::OnceCell<
        Result<Vec<shipsafe_pg::health::TableFacts>, shipsafe_pg::health::ProbeError>,
    >,
}

impl Db {
    /// [`shipsafe_pg::health::tables`], read on first use.
    pub async fn tables(
        &self,
        tenant_column: &str,
    ) -> Result<Vec<shipsafe_pg::health::TableFacts>, shipsafe_pg::health::ProbeError> {
        self.tables
            .get_or_init(|| {
                shipsafe_pg::health::tables(&self.client, &self.excluded, tenant_column)
            })
            .await
            .clone()
    }
}

impl Facts<'_> {
    /// The database, or the item saying it could not be reached.
    pub fn db(&self, def: &Def) -> Result<&Db, Box<Item>> {
        self.db
            .as_ref()
            .map_err(|why| Box::new(self.unreachable(def, why)))
    }

    /// `def` as unknown because the database could not be reached.
    pub fn unreachable(&self, def: &Def, why: &str) -> Item {
        def.unknown(
            "database",
            format!("{} could not be reached: {why}", self.env),
            Some(format!("`shipsafe status {}` shows why", self.env)),
        )
    }

    pub fn readiness(&self) -> &shipsafe_config::ReadinessConfig {
        &self.config.file().readiness
    }

    pub fn tenant_column(&self) -> &str {
        self.readiness()
            .tenant_column
            .as_deref()
            .unwrap_or("tenant_id")
    }
}

/// The item for a query that gave no answer: never a pass.
pub(crate) fn probe_unknown(def: &Def, db: &Db, sql: &str, e: ProbeError) -> Item {
    let why = if e.denied {
        format!(
            "role {} may not read what this needs ({}); grant it pg_monitor or run readiness as the owner",
            db.user, e.message
        )
    } else {
        format!("the query failed: {}", e.message)
    };
    let mut item = def.unknown("database", why, None);
    item.evidence.query = Some(sql.split_whitespace().collect::<Vec<_>>().join(" "));
    item
}

/// Age of an RFC 3339 time at `now`, in seconds; `None` if unreadable.
pub(crate) fn age_secs(at: &str, now: jiff::Timestamp) -> Option<f64> {
    let t: jiff::Timestamp = at.parse().ok()?;
    Some(now.duration_since(t).as_secs_f64())
}

/// `3.2 h`, `2.5 d`, `40 min`.
pub fn human_age(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.0} s")
    } else if secs < 3600.0 {
        format!("{:.0} min", secs / 60.0)
    } else if secs < 2.0 * 86_400.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.1} d", secs / 86_400.0)
    }
}

/// Up to `n` names, then "and K more".
pub(crate) fn some_of(names: &[String], n: usize) -> String {
    if names.len() <= n {
        names.join(", ")
    } else {
        format!("{} and {} more", names[..n].join(", "), names.len() - n)
    }
}
