//! Catalog and statistics queries behind the readiness scorecard's database
//! items. Each query is a constant so the scorecard can cite it as evidence,
//! runs as an unnamed statement (works through any pooler) and reads only:
//! no query here takes a lock stronger than ACCESS SHARE on a catalog.
//!
//! User objects are those outside the system schemas, shipsafe's own schema,
//! the schemas passed as `$1` (a provider's) and not owned by an extension.

use serde::Serialize;
use tokio_postgres::Client;
use tokio_postgres::types::{ToSql, Type};

use crate::describe;

/// Why a query gave no answer; `denied` when the role lacks a privilege
/// (the item is then unknown, never passed).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProbeError {
    pub message: String,
    pub denied: bool,
}

impl From<tokio_postgres::Error> for ProbeError {
    fn from(e: tokio_postgres::Error) -> Self {
        let denied = e
            .code()
            .is_some_and(|c| *c == tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE);
        Self {
            message: describe(&e),
            denied,
        }
    }
}

type Rows = Vec<tokio_postgres::Row>;

async fn rows(client: &Client, sql: &str, excluded: &[String]) -> Result<Rows, ProbeError> {
    if sql.contains("$1") {
        let p: [(&(dyn ToSql + Sync), Type); 1] = [(&excluded, Type::TEXT_ARRAY)];
        Ok(client.query_typed(sql, &p).await?)
    } else {
        Ok(client.query_typed(sql, &[]).await?)
    }
}

/// `n` is a user schema (SQL fragment on `pg_namespace n`).
macro_rules! user_schema {
    () => {
        "n.nspname not in ('pg_catalog', 'information_schema', 'shipsafe') \
         and n.nspname !~ '^pg_(toast|temp)' and not (n.nspname = any($1::text[]))"
    };
}

/// `c` is not part of an extension (SQL fragment on `pg_class c`).
macro_rules! not_extension {
    () => {
        "not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass \
         and d.objid = c.oid and d.deptype = 'e')"
    };
}

/// A relation in a schema.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Named {
    pub schema: String,
    pub name: String,
}

impl Named {
    /// `name`, or `schema.name` outside `public`.
    pub fn display(&self) -> String {
        if self.schema == "public" {
            self.name.clone()
        } else {
            format!("{}.{}", self.schema, self.name)
        }
    }
}

// ---------------------------------------------------------------- indexes

pub const INVALID_INDEXES_SQL: &str = concat!(
    "select n.nspname::text, c.relname::text, t.relname::text, pg_relation_size(c.oid) \
     from pg_index i join pg_class c on c.oid = i.indexrelid \
     join pg_class t on t.oid = i.indrelid join pg_namespace n on n.oid = c.relnamespace \
     where not i.indisvalid and ",
    user_schema!(),
    " order by 1, 2"
);

#[derive(Debug, Clone, Serialize)]
pub struct IndexOnTable {
    pub index: Named,
    pub table: String,
    pub bytes: i64,
}

pub async fn invalid_indexes(
    client: &Client,
    excluded: &[String],
) -> Result<Vec<IndexOnTable>, ProbeError> {
    Ok(rows(client, INVALID_INDEXES_SQL, excluded)
        .await?
        .iter()
        .map(|r| IndexOnTable {
            index: Named {
                schema: r.get(0),
                name: r.get(1),
            },
            table: r.get(2),
            bytes: r.get(3),
        })
        .collect())
}

/// Index `a` is redundant with `b`: same table, method, expressions and
/// predicate, and `a`'s columns (with operator classes) are `b`'s or a
/// leading part of them in a b-tree, unless `a` enforces a uniqueness `b`
/// does not.
pub const DUPLICATE_INDEXES_SQL: &str = concat!(
    "with idx as (\
       select i.indexrelid, i.indrelid, i.indisunique, i.indisprimary, \
              i.indkey::text as k, i.indclass::text as cls, am.amname, \
              coalesce(pg_get_expr(i.indexprs, i.indrelid), '') as exprs, \
              coalesce(pg_get_expr(i.indpred, i.indrelid), '') as pred, \
              n.nspname::text as nsp, c.relname::text as iname, t.relname::text as tname \
       from pg_index i join pg_class c on c.oid = i.indexrelid \
       join pg_class t on t.oid = i.indrelid join pg_am am on am.oid = c.relam \
       join pg_namespace n on n.oid = c.relnamespace \
       where i.indisvalid and ",
    user_schema!(),
    ") \
     select distinct on (a.indexrelid) a.nsp, a.iname, b.iname, a.tname, pg_relation_size(a.indexrelid) \
     from idx a join idx b on a.indrelid = b.indrelid and a.indexrelid <> b.indexrelid \
       and a.amname = b.amname and a.exprs = b.exprs and a.pred = b.pred \
     where not a.indisprimary \
       and ((a.k = b.k and a.cls = b.cls) \
            or (a.amname = 'btree' and b.k like a.k || ' %' and b.cls like a.cls || ' %')) \
       and (not a.indisunique or (b.indisunique and a.k = b.k)) \
       and (a.k <> b.k or a.indisunique <> b.indisunique or b.indisprimary or a.indexrelid > b.indexrelid) \
     order by a.indexrelid, b.indexrelid"
);

#[derive(Debug, Clone, Serialize)]
pub struct DuplicateIndex {
    pub index: Named,
    /// The index that makes it redundant.
    pub covered_by: String,
    pub table: String,
    pub bytes: i64,
}

pub async fn duplicate_indexes(
    client: &Client,
    excluded: &[String],
) -> Result<Vec<DuplicateIndex>, ProbeError> {
    Ok(rows(client, DUPLICATE_INDEXES_SQL, excluded)
        .await?
        .iter()
        .map(|r| DuplicateIndex {
            index: Named {
                schema: r.get(0),
                name: r.get(1),
            },
            covered_by: r.get(2),
            table: r.get(3),
            bytes: r.get(4),
        })
        .collect())
}

/// Never-scanned indexes that enforce nothing, largest first, with when the
/// statistics were last reset (usage counts only since then). `not in`, not
/// `not exists`: the planner underestimates the view's rows and would scan
/// pg_constraint once per index (15 s for 10,000 tables); a hashed subplan
/// reads it once (`conindid` is never null).
pub const UNUSED_INDEXES_SQL: &str = concat!(
    "select n.nspname::text, c.relname::text, t.relname::text, pg_relation_size(c.oid), \
            (select to_char(stats_reset at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
             from pg_stat_database where datname = current_database()) \
     from pg_stat_user_indexes s join pg_index i on i.indexrelid = s.indexrelid \
     join pg_class c on c.oid = s.indexrelid join pg_class t on t.oid = s.relid \
     join pg_namespace n on n.oid = c.relnamespace \
     where s.idx_scan = 0 and not i.indisunique and not i.indisprimary \
       and i.indexrelid not in (select k.conindid from pg_constraint k) and ",
    user_schema!(),
    " order by 4 desc"
);

#[derive(Debug, Clone, Serialize)]
pub struct UnusedIndex {
    pub index: Named,
    pub table: String,
    pub bytes: i64,
    pub stats_since: Option<String>,
}

pub async fn unused_indexes(
    client: &Client,
    excluded: &[String],
) -> Result<Vec<UnusedIndex>, ProbeError> {
    Ok(rows(client, UNUSED_INDEXES_SQL, excluded)
        .await?
        .iter()
        .map(|r| UnusedIndex {
            index: Named {
                schema: r.get(0),
                name: r.get(1),
            },
            table: r.get(2),
            bytes: r.get(3),
            stats_since: r.get(4),
        })
        .collect())
}

/// Foreign keys whose columns do not lead any valid, non-partial index of
/// their table: deletes and key updates on the referenced table scan it.
pub const FK_WITHOUT_INDEX_SQL: &str = concat!(
    "select n.nspname::text, c.relname::text, k.conname::text, \
            array(select a.attname::text from unnest(k.conkey) with ordinality u(num, ord) \
                  join pg_attribute a on a.attrelid = k.conrelid and a.attnum = u.num order by u.ord), \
            k.confrelid::regclass::text \
     from pg_constraint k join pg_class c on c.oid = k.conrelid \
     join pg_namespace n on n.oid = c.relnamespace \
     where k.contype = 'f' and ",
    user_schema!(),
    " and not exists (\
         select 1 from pg_index i where i.indrelid = k.conrelid and i.indisvalid and i.indpred is null \
         and (string_to_array(i.indkey::text, ' ')::int2[])[1:cardinality(k.conkey)] @> k.conkey \
         and (string_to_array(i.indkey::text, ' ')::int2[])[1:cardinality(k.conkey)] <@ k.conkey) \
     order by 1, 2, 3"
);

#[derive(Debug, Clone, Serialize)]
pub struct UnindexedFk {
    pub table: Named,
    pub constraint: String,
    pub columns: Vec<String>,
    pub references: String,
}

pub async fn fk_without_index(
    client: &Client,
    excluded: &[String],
) -> Result<Vec<UnindexedFk>, ProbeError> {
    Ok(rows(client, FK_WITHOUT_INDEX_SQL, excluded)
        .await?
        .iter()
        .map(|r| UnindexedFk {
            table: Named {
                schema: r.get(0),
                name: r.get(1),
            },
            constraint: r.get(2),
            columns: r.get(3),
            references: r.get(4),
        })
        .collect())
}

// ---------------------------------------------------------------- tables

/// Every user table (ordinary or partitioned, not a partition) with the
/// facts several items judge: tenant column, row security, indexes leading
/// with the tenant column, primary key, size, owner.
pub const TABLES_SQL: &str = concat!(
    "select n.nspname::text, c.relname::text, c.relkind::text, c.relrowsecurity, c.relforcerowsecurity, \
            (select count(*) from pg_policy p where p.polrelid = c.oid)::int8, \
            ta.attnum is not null, \
            exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisvalid and i.indpred is null \
                    and i.indkey[0] = ta.attnum), \
            exists (select 1 from pg_constraint k where k.conrelid = c.oid and k.contype = 'p'), \
            greatest(c.reltuples, 0)::int8, pg_get_userbyid(c.relowner)::text \
     from pg_class c join pg_namespace n on n.oid = c.relnamespace \
     left join pg_attribute ta on ta.attrelid = c.oid and ta.attname = $2 and not ta.attisdropped and ta.attnum > 0 \
     where c.relkind in ('r', 'p') and not c.relispartition and ",
    user_schema!(),
    " and ",
    not_extension!(),
    " order by 1, 2"
);

#[derive(Debug, Clone, Serialize)]
pub struct TableFacts {
    pub table: Named,
    pub partitioned: bool,
    pub rls_enabled: bool,
    pub rls_forced: bool,
    pub policies: i64,
    pub has_tenant_column: bool,
    pub tenant_index: bool,
    pub primary_key: bool,
    /// The planner's estimate (`reltuples`); 0 when never analyzed.
    pub rows_estimate: i64,
    pub owner: String,
}

pub async fn tables(
    client: &Client,
    excluded: &[String],
    tenant_column: &str,
) -> Result<Vec<TableFacts>, ProbeError> {
    let p: [(&(dyn ToSql + Sync), Type); 2] =
        [(&excluded, Type::TEXT_ARRAY), (&tenant_column, Type::TEXT)];
    Ok(client
        .query_typed(TABLES_SQL, &p)
        .await?
        .iter()
        .map(|r| {
            let kind: String = r.get(2);
            TableFacts {
                table: Named {
                    schema: r.get(0),
                    name: r.get(1),
                },
                partitioned: kind == "p",
                rls_enabled: r.get(3),
                rls_forced: r.get(4),
                policies: r.get(5),
                has_tenant_column: r.get(6),
                tenant_index: r.get(7),
                primary_key: r.get(8),
                rows_estimate: r.get(9),
                owner: r.get(10),
            }
        })
        .collect())
}

/// Maintenance statistics per user table (seconds since the last vacuum
/// and analyze of either kind, null when never).
pub const MAINTENANCE_SQL: &str = concat!(
    "select n.nspname::text, s.relname::text, s.n_live_tup, s.n_dead_tup, s.n_mod_since_analyze, \
            extract(epoch from now() - greatest(s.last_vacuum, s.last_autovacuum))::float8, \
            extract(epoch from now() - greatest(s.last_analyze, s.last_autoanalyze))::float8 \
     from pg_stat_user_tables s join pg_class c on c.oid = s.relid \
     join pg_namespace n on n.oid = c.relnamespace \
     where c.relkind = 'r' and ",
    user_schema!(),
    " order by 1, 2"
);

#[derive(Debug, Clone, Serialize)]
pub struct Maintenance {
    pub table: Named,
    pub live_rows: i64,
    pub dead_rows: i64,
    pub modified_since_analyze: i64,
    pub vacuumed_secs_ago: Option<f64>,
    pub analyzed_secs_ago: Option<f64>,
}

pub async fn maintenance(
    client: &Client,
    excluded: &[String],
) -> Result<Vec<Maintenance>, ProbeError> {
    Ok(rows(client, MAINTENANCE_SQL, excluded)
        .await?
        .iter()
        .map(|r| Maintenance {
            table: Named {
                schema: r.get(0),
                name: r.get(1),
            },
            live_rows: r.get(2),
            dead_rows: r.get(3),
            modified_since_analyze: r.get(4),
            vacuumed_secs_ago: r.get(5),
            analyzed_secs_ago: r.get(6),
        })
        .collect())
}

/// Every ascending sequence with its last value (null when never used, or
/// when this role may not read it: `readable` tells which) and the
/// largest value it can reach: its own maximum or, when it feeds a column,
/// that column type's.
pub const SEQUENCES_SQL: &str = concat!(
    "select n.nspname::text, c.relname::text, \
            has_sequence_privilege(c.oid, 'SELECT,USAGE'), \
            case when has_sequence_privilege(c.oid, 'SELECT,USAGE') then pg_sequence_last_value(c.oid) end, \
            least(s.seqmax, case a.atttypid when 'int2'::regtype then 32767 \
                                             when 'int4'::regtype then 2147483647 \
                                             else 9223372036854775807 end), \
            t.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod) \
     from pg_sequence s join pg_class c on c.oid = s.seqrelid \
     join pg_namespace n on n.oid = c.relnamespace \
     left join pg_depend d on d.classid = 'pg_class'::regclass and d.objid = c.oid \
          and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i') \
     left join pg_class t on t.oid = d.refobjid \
     left join pg_attribute a on a.attrelid = d.refobjid and a.attnum = d.refobjsubid \
     where s.seqincrement > 0 and ",
    user_schema!(),
    " and ",
    not_extension!(),
    " order by 1, 2"
);

#[derive(Debug, Clone, Serialize)]
pub struct SequenceUse {
    pub sequence: Named,
    pub readable: bool,
    pub last_value: Option<i64>,
    pub limit: i64,
    /// `table.column (type)` it feeds, if any.
    pub feeds: Option<String>,
}

impl SequenceUse {
    pub fn used_share(&self) -> Option<f64> {
        self.last_value
            .map(|v| v.max(0) as f64 / self.limit.max(1) as f64)
    }
}

pub async fn sequences(
    client: &Client,
    excluded: &[String],
) -> Result<Vec<SequenceUse>, ProbeError> {
    Ok(rows(client, SEQUENCES_SQL, excluded)
        .await?
        .iter()
        .map(|r| {
            let table: Option<String> = r.get(5);
            let column: Option<String> = r.get(6);
            let ty: Option<String> = r.get(7);
            SequenceUse {
                sequence: Named {
                    schema: r.get(0),
                    name: r.get(1),
                },
                readable: r.get(2),
                last_value: r.get(3),
                limit: r.get(4),
                feeds: match (table, column, ty) {
                    (Some(t), Some(c), Some(ty)) => Some(format!("{t}.{c} ({ty})")),
                    _ => None,
                },
            }
        })
        .collect())
}

// ---------------------------------------------------------------- server

/// The oldest unfrozen transaction and multixact of any database, as a
/// share of the 2^31 wraparound horizon.
pub const WRAPAROUND_SQL: &str = "select datname::text, age(datfrozenxid)::int8, mxid_age(datminmxid)::int8 \
     from pg_database order by greatest(age(datfrozenxid), mxid_age(datminmxid)) desc limit 1";

#[derive(Debug, Clone, Serialize)]
pub struct Wraparound {
    pub database: String,
    pub xid_age: i64,
    pub mxid_age: i64,
}

impl Wraparound {
    pub fn share(&self) -> f64 {
        self.xid_age.max(self.mxid_age) as f64 / 2_147_483_648.0
    }
}

pub async fn wraparound(client: &Client) -> Result<Wraparound, ProbeError> {
    let r = one(client, WRAPAROUND_SQL).await?;
    Ok(Wraparound {
        database: r.get(0),
        xid_age: r.get(1),
        mxid_age: r.get(2),
    })
}

/// Client sessions other than this one. Without `pg_read_all_stats` the
/// type, state and times of other roles' sessions read as null (`visible`
/// false). Query texts are never read: they may hold secrets.
pub const SESSIONS_SQL: &str = "select pid, usename::text, state, \
            extract(epoch from now() - query_start)::float8, \
            extract(epoch from now() - xact_start)::float8, \
            extract(epoch from now() - state_change)::float8, \
            state is not null \
     from pg_stat_activity where pid <> pg_backend_pid() \
       and (backend_type = 'client backend' or (backend_type is null and usesysid is not null))";

#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub pid: i32,
    pub user: Option<String>,
    pub state: Option<String>,
    pub query_secs: Option<f64>,
    pub transaction_secs: Option<f64>,
    pub state_secs: Option<f64>,
    pub visible: bool,
}

pub async fn sessions(client: &Client) -> Result<Vec<Session>, ProbeError> {
    Ok(rows(client, SESSIONS_SQL, &[])
        .await?
        .iter()
        .map(|r| Session {
            pid: r.get(0),
            user: r.get(1),
            state: r.get(2),
            query_secs: r.get(3),
            transaction_secs: r.get(4),
            state_secs: r.get(5),
            visible: r.get(6),
        })
        .collect())
}

/// Connections in use (every backend counts against the limit) and how
/// many ordinary roles may open.
pub const CONNECTIONS_SQL: &str = "select (select count(*) from pg_stat_activity \
             where backend_type = 'client backend' or (backend_type is null and usesysid is not null))::int8, \
            current_setting('max_connections')::int8, \
            current_setting('superuser_reserved_connections')::int8";

#[derive(Debug, Clone, Serialize)]
pub struct Connections {
    pub used: i64,
    pub max_connections: i64,
    pub reserved: i64,
}

impl Connections {
    pub fn share(&self) -> f64 {
        self.used as f64 / (self.max_connections - self.reserved).max(1) as f64
    }
}

pub async fn connections(client: &Client) -> Result<Connections, ProbeError> {
    let r = one(client, CONNECTIONS_SQL).await?;
    Ok(Connections {
        used: r.get(0),
        max_connections: r.get(1),
        reserved: r.get(2),
    })
}

/// Table and index block reads served from shared buffers since the
/// statistics were reset.
pub const CACHE_SQL: &str = "select coalesce(sum(heap_blks_hit), 0)::int8 + coalesce(sum(idx_blks_hit), 0)::int8, \
            coalesce(sum(heap_blks_read), 0)::int8 + coalesce(sum(idx_blks_read), 0)::int8 \
     from pg_statio_user_tables";

#[derive(Debug, Clone, Serialize)]
pub struct CacheUse {
    pub hits: i64,
    pub reads: i64,
}

pub async fn cache(client: &Client) -> Result<CacheUse, ProbeError> {
    let r = one(client, CACHE_SQL).await?;
    Ok(CacheUse {
        hits: r.get(0),
        reads: r.get(1),
    })
}

/// Server settings as this session sees them, with where they come from
/// (`source` is null for settings this role may not read).
pub const SETTINGS_SQL: &str = "select name::text, setting, source::text from pg_settings \
     where name in ('statement_timeout', 'idle_in_transaction_session_timeout', 'log_min_duration_statement', \
                    'archive_mode', 'archive_command', 'archive_library', 'wal_level', 'shared_preload_libraries')";

pub async fn settings(
    client: &Client,
) -> Result<Vec<(String, Option<String>, Option<String>)>, ProbeError> {
    Ok(rows(client, SETTINGS_SQL, &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// WAL archiving progress (`pg_stat_archiver`).
pub const ARCHIVER_SQL: &str = "select archived_count, failed_count, \
            to_char(last_archived_time at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
            to_char(last_failed_time at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
            coalesce(last_failed_time > last_archived_time or (last_archived_time is null and last_failed_time is not null), false) \
     from pg_stat_archiver";

#[derive(Debug, Clone, Serialize)]
pub struct Archiver {
    pub archived: i64,
    pub failed: i64,
    pub last_archived: Option<String>,
    pub last_failed: Option<String>,
    /// The newest attempt failed.
    pub failing: bool,
}

pub async fn archiver(client: &Client) -> Result<Archiver, ProbeError> {
    let r = one(client, ARCHIVER_SQL).await?;
    Ok(Archiver {
        archived: r.get(0),
        failed: r.get(1),
        last_archived: r.get(2),
        last_failed: r.get(3),
        failing: r.get(4),
    })
}

/// `statement_timeout` and `idle_in_transaction_session_timeout` set with
/// ALTER ROLE / ALTER DATABASE for role `$1` in this database, most
/// specific first (role in database, role, database).
pub const ROLE_SETTINGS_SQL: &str = "select case when s.setrole <> 0 and s.setdatabase <> 0 then 0 \
                 when s.setrole <> 0 then 1 else 2 end, cfg \
     from pg_db_role_setting s, unnest(s.setconfig) cfg \
     where (s.setrole = (select oid from pg_roles where rolname = $1) or s.setrole = 0) \
       and (s.setdatabase = (select oid from pg_database where datname = current_database()) or s.setdatabase = 0) \
       and (cfg like 'statement_timeout=%' or cfg like 'idle_in_transaction_session_timeout=%') \
     order by 1";

/// Per setting, its value from the most specific ALTER ROLE/DATABASE.
pub async fn role_settings(
    client: &Client,
    role: &str,
) -> Result<Vec<(String, String)>, ProbeError> {
    let p: [(&(dyn ToSql + Sync), Type); 1] = [(&role, Type::TEXT)];
    let mut out: Vec<(String, String)> = Vec::new();
    for r in client.query_typed(ROLE_SETTINGS_SQL, &p).await? {
        let cfg: String = r.get(1);
        if let Some((k, v)) = cfg.split_once('=')
            && !out.iter().any(|(name, _)| name == k)
        {
            out.push((k.to_string(), v.to_string()));
        }
    }
    Ok(out)
}

/// A role's attributes and what it owns and may do.
pub const ROLE_SQL: &str = "select r.rolsuper, r.rolbypassrls, r.rolcanlogin, \
            (select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where c.relowner = r.oid and c.relkind in ('r', 'p') \
               and n.nspname not in ('pg_catalog', 'information_schema', 'shipsafe'))::int8, \
            array(select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace \
                  where c.relowner = r.oid and c.relkind in ('r', 'p') \
                    and n.nspname not in ('pg_catalog', 'information_schema', 'shipsafe') order by 1 limit 5) \
     from pg_roles r where r.rolname = $1";

#[derive(Debug, Clone, Serialize)]
pub struct RoleFacts {
    pub superuser: bool,
    pub bypass_rls: bool,
    pub can_login: bool,
    pub owned_tables: i64,
    /// Up to five of them, by name.
    pub owned_examples: Vec<String>,
}

/// `None` when the role does not exist.
pub async fn role(client: &Client, role: &str) -> Result<Option<RoleFacts>, ProbeError> {
    let p: [(&(dyn ToSql + Sync), Type); 1] = [(&role, Type::TEXT)];
    Ok(client
        .query_typed(ROLE_SQL, &p)
        .await?
        .first()
        .map(|r| RoleFacts {
            superuser: r.get(0),
            bypass_rls: r.get(1),
            can_login: r.get(2),
            owned_tables: r.get(3),
            owned_examples: r.get(4),
        }))
}

/// Whether role `$1` may change or empty table `$2`, or owns it.
pub const TABLE_WRITES_SQL: &str = "select has_table_privilege($1, c.oid, 'UPDATE'), \
            has_table_privilege($1, c.oid, 'DELETE'), has_table_privilege($1, c.oid, 'TRUNCATE'), \
            pg_get_userbyid(c.relowner) = $1 \
     from pg_class c where c.oid = to_regclass($2)";

#[derive(Debug, Clone, Serialize)]
pub struct TableWrites {
    pub update: bool,
    pub delete: bool,
    pub truncate: bool,
    pub owner: bool,
}

/// `None` when the table does not exist.
pub async fn table_writes(
    client: &Client,
    role: &str,
    table: &str,
) -> Result<Option<TableWrites>, ProbeError> {
    let p: [(&(dyn ToSql + Sync), Type); 2] = [(&role, Type::TEXT), (&table, Type::TEXT)];
    Ok(client
        .query_typed(TABLE_WRITES_SQL, &p)
        .await?
        .first()
        .map(|r| TableWrites {
            update: r.get(0),
            delete: r.get(1),
            truncate: r.get(2),
            owner: r.get(3),
        }))
}

/// Where pg_stat_statements is installed in this database, if it is.
pub const STAT_STATEMENTS_SQL: &str = "select n.nspname::text from pg_extension e \
     join pg_namespace n on n.oid = e.extnamespace where e.extname = 'pg_stat_statements'";

/// Installed and collecting: the view answers only when the library is
/// preloaded.
pub async fn stat_statements(client: &Client) -> Result<Result<String, String>, ProbeError> {
    let Some(schema) = rows(client, STAT_STATEMENTS_SQL, &[])
        .await?
        .first()
        .map(|r| r.get::<_, String>(0))
    else {
        return Ok(Err(
            "the pg_stat_statements extension is not installed in this database".into(),
        ));
    };
    let probe = format!(
        "select count(*) from {}.pg_stat_statements",
        crate::quote_ident(&schema)
    );
    match client.query_typed(&probe, &[]).await {
        Ok(_) => Ok(Ok(schema)),
        Err(e) => {
            let e = ProbeError::from(e);
            if e.denied { Err(e) } else { Ok(Err(e.message)) }
        }
    }
}

/// Prisma's own history, when the database has it: per migration, whether
/// it started and never finished (and was not marked rolled back).
pub const PRISMA_HISTORY_SQL: &str = "select migration_name, finished_at is null and rolled_back_at is null, \
            rolled_back_at is not null from _prisma_migrations order by started_at";

#[derive(Debug, Clone, Serialize)]
pub struct PrismaRow {
    pub migration: String,
    pub unfinished: bool,
    pub rolled_back: bool,
}

/// `None` when there is no `_prisma_migrations` table.
pub async fn prisma_history(client: &Client) -> Result<Option<Vec<PrismaRow>>, ProbeError> {
    let exists = one(
        client,
        "select to_regclass('_prisma_migrations') is not null",
    )
    .await?
    .get::<_, bool>(0);
    if !exists {
        return Ok(None);
    }
    Ok(Some(
        rows(client, PRISMA_HISTORY_SQL, &[])
            .await?
            .iter()
            .map(|r| PrismaRow {
                migration: r.get(0),
                unfinished: r.get(1),
                rolled_back: r.get(2),
            })
            .collect(),
    ))
}

async fn one(client: &Client, sql: &str) -> Result<tokio_postgres::Row, ProbeError> {
    rows(client, sql, &[])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ProbeError {
            message: "the query returned no row".into(),
            denied: false,
        })
}
