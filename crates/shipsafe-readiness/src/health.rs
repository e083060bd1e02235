//! Database health: what PgHero, check_postgres and pgMonitor watch, each
//! measured from the catalog or the statistics views and cited with its
//! query.

use shipsafe_config::ByteSize;
use shipsafe_pg::health::{self, ProbeError};

use super::model::{Category, Def, Evidence, Item, Level};
use crate::facts::{Db, Facts, human_age, probe_unknown, some_of};

const fn def(id: &'static str, level: Level, title: &'static str) -> Def {
    Def {
        id,
        category: Category::DatabaseHealth,
        level,
        title,
    }
}

const INVALID: Def = def("invalid-indexes", Level::Bronze, "No invalid index");
const DUPLICATE: Def = def(
    "duplicate-indexes",
    Level::Silver,
    "No duplicate or redundant index",
);
const UNUSED: Def = def("unused-indexes", Level::Gold, "No large index left unused");
const FK_INDEX: Def = def(
    "fk-indexes",
    Level::Silver,
    "Every foreign key has an index",
);
const TENANT_INDEX: Def = def(
    "tenant-indexes",
    Level::Silver,
    "Tenant-scoped tables have an index leading with the tenant column",
);
const PRIMARY_KEYS: Def = def(
    "primary-keys",
    Level::Silver,
    "Every table has a primary key",
);
const SEQUENCES: Def = def(
    "sequence-headroom",
    Level::Bronze,
    "Sequences and integer keys have headroom",
);
const WRAPAROUND: Def = def(
    "xid-wraparound",
    Level::Bronze,
    "Transaction IDs are far from wraparound",
);
const VACUUM: Def = def(
    "vacuum-analyze",
    Level::Silver,
    "Changed tables are vacuumed and analyzed",
);
const DEAD_TUPLES: Def = def("dead-tuples", Level::Silver, "Dead rows are cleaned up");
const LONG_QUERIES: Def = def(
    "long-running-queries",
    Level::Silver,
    "No long-running query",
);
const IDLE_TX: Def = def(
    "idle-in-transaction",
    Level::Silver,
    "No session idle in a transaction",
);
const CONNECTIONS: Def = def(
    "connection-headroom",
    Level::Bronze,
    "Connections have headroom",
);
const CACHE: Def = def(
    "cache-hit-ratio",
    Level::Gold,
    "Reads are served from memory",
);
const BIG_TABLES: Def = def(
    "large-tables-partitioned",
    Level::Gold,
    "Very large tables are partitioned",
);
const TIMEOUTS: Def = def(
    "app-role-timeouts",
    Level::Silver,
    "The application's role has statement and idle-transaction timeouts",
);
const SLOW_LOG: Def = def("slow-query-logging", Level::Gold, "Slow queries are logged");
const STATEMENTS: Def = def(
    "pg-stat-statements",
    Level::Gold,
    "pg_stat_statements collects query statistics",
);

pub(super) const DEFS: &[Def] = &[
    INVALID,
    DUPLICATE,
    UNUSED,
    FK_INDEX,
    TENANT_INDEX,
    PRIMARY_KEYS,
    SEQUENCES,
    WRAPAROUND,
    VACUUM,
    DEAD_TUPLES,
    LONG_QUERIES,
    IDLE_TX,
    CONNECTIONS,
    CACHE,
    BIG_TABLES,
    TIMEOUTS,
    SLOW_LOG,
    STATEMENTS,
];

pub(super) async fn items(f: &Facts<'_>) -> Vec<Item> {
    let db = match &f.db {
        Ok(db) => db,
        Err(why) => return DEFS.iter().map(|d| f.unreachable(d, why)).collect(),
    };
    let mut out = Vec::new();
    out.push(invalid(db).await);
    out.push(duplicate(db).await);
    out.push(unused(f, db).await);
    out.push(fk(db).await);
    let [tenant, pks, big] = tables(f, db).await;
    out.extend([tenant, pks]);
    out.push(sequences(f, db).await);
    out.push(wraparound(f, db).await);
    out.extend(maintenance(f, db).await);
    out.extend(sessions(f, db).await);
    out.push(connections(f, db).await);
    out.push(cache(f, db).await);
    out.push(big);
    out.extend(settings(db).await);
    out.push(statements(db).await);
    out
}

fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}

async fn invalid(db: &Db) -> Item {
    match health::invalid_indexes(&db.client, &db.excluded).await {
        Ok(found) => {
            let names: Vec<String> = found
                .iter()
                .map(|i| format!("{} on {}", i.index.display(), i.table))
                .collect();
            INVALID.judge(
                found.is_empty(),
                Evidence::sql(
                    health::INVALID_INDEXES_SQL,
                    if found.is_empty() {
                        "no index is marked invalid".to_string()
                    } else {
                        format!("invalid (a failed CREATE INDEX CONCURRENTLY; still written, never read): {}", some_of(&names, 5))
                    },
                )
                .value(&found),
                match found.first() {
                    Some(i) => format!("DROP INDEX CONCURRENTLY {0}; then create it again (or REINDEX INDEX CONCURRENTLY {0})", i.index.display()),
                    None => String::new(),
                },
            )
        }
        Err(e) => probe_unknown(&INVALID, db, health::INVALID_INDEXES_SQL, e),
    }
}

async fn duplicate(db: &Db) -> Item {
    match health::duplicate_indexes(&db.client, &db.excluded).await {
        Ok(found) => {
            let names: Vec<String> = found
                .iter()
                .map(|d| {
                    format!(
                        "{} on {} (covered by {})",
                        d.index.display(),
                        d.table,
                        d.covered_by
                    )
                })
                .collect();
            DUPLICATE.judge(
                found.is_empty(),
                Evidence::sql(
                    health::DUPLICATE_INDEXES_SQL,
                    if found.is_empty() {
                        "no index repeats, or is a leading part of, another".to_string()
                    } else {
                        format!("redundant: {}", some_of(&names, 5))
                    },
                )
                .value(&found),
                match found.first() {
                    Some(d) => format!(
                        "DROP INDEX CONCURRENTLY {} (after checking nothing depends on its name)",
                        d.index.display()
                    ),
                    None => String::new(),
                },
            )
        }
        Err(e) => probe_unknown(&DUPLICATE, db, health::DUPLICATE_INDEXES_SQL, e),
    }
}

async fn unused(f: &Facts<'_>, db: &Db) -> Item {
    let limit = f
        .readiness()
        .unused_index_size
        .unwrap_or(ByteSize(10 << 20))
        .0 as i64;
    match health::unused_indexes(&db.client, &db.excluded).await {
        Ok(all) => {
            let since = all.first().and_then(|u| u.stats_since.clone());
            let big: Vec<&health::UnusedIndex> = all.iter().filter(|u| u.bytes > limit).collect();
            let names: Vec<String> = big
                .iter()
                .map(|u| format!("{} on {} ({})", u.index.display(), u.table, mib(u.bytes)))
                .collect();
            let evidence = Evidence::sql(
                health::UNUSED_INDEXES_SQL,
                if big.is_empty() {
                    format!("no never-scanned index is larger than {}", mib(limit))
                } else {
                    format!(
                        "never scanned since statistics were reset ({}): {}",
                        since.as_deref().unwrap_or("never reset"),
                        some_of(&names, 5)
                    )
                },
            )
            .value(
                serde_json::json!({ "unused": names, "stats_since": since, "limit_bytes": limit }),
            );
            if big.is_empty() {
                UNUSED.pass(evidence)
            } else {
                // Usage counts are per server: a replica's reads are not here.
                UNUSED.warn(
                    evidence,
                    format!(
                        "if replicas do not use it either: DROP INDEX CONCURRENTLY {}",
                        big[0].index.display()
                    ),
                )
            }
        }
        Err(e) => probe_unknown(&UNUSED, db, health::UNUSED_INDEXES_SQL, e),
    }
}

async fn fk(db: &Db) -> Item {
    match health::fk_without_index(&db.client, &db.excluded).await {
        Ok(found) => {
            let names: Vec<String> = found
                .iter()
                .map(|k| {
                    format!(
                        "{}({}) -> {}",
                        k.table.display(),
                        k.columns.join(", "),
                        k.references
                    )
                })
                .collect();
            FK_INDEX.judge(
                found.is_empty(),
                Evidence::sql(
                    health::FK_WITHOUT_INDEX_SQL,
                    if found.is_empty() {
                        "every foreign key's columns lead an index".to_string()
                    } else {
                        format!("no index for: {}", some_of(&names, 5))
                    },
                )
                .value(&found),
                match found.first() {
                    Some(k) => format!(
                        "CREATE INDEX CONCURRENTLY ON {} ({}) (a delete on {} scans the whole table without it)",
                        k.table.display(),
                        k.columns.join(", "),
                        k.references
                    ),
                    None => String::new(),
                },
            )
        }
        Err(e) => probe_unknown(&FK_INDEX, db, health::FK_WITHOUT_INDEX_SQL, e),
    }
}

/// Tenant indexes, primary keys and large tables, from one catalog read.
async fn tables(f: &Facts<'_>, db: &Db) -> [Item; 3] {
    let tenant = f.tenant_column();
    let all = match db.tables(tenant).await {
        Ok(t) => t,
        Err(e) => {
            return [TENANT_INDEX, PRIMARY_KEYS, BIG_TABLES]
                .map(|d| probe_unknown(&d, db, health::TABLES_SQL, e.clone()));
        }
    };
    let no_tenant_index: Vec<String> = all
        .iter()
        .filter(|t| t.has_tenant_column && !t.tenant_index)
        .map(|t| t.table.display())
        .collect();
    let scoped = all.iter().filter(|t| t.has_tenant_column).count();
    let tenant_item = TENANT_INDEX.judge(
        no_tenant_index.is_empty(),
        Evidence::sql(
            health::TABLES_SQL,
            if scoped == 0 {
                format!("no table has a {tenant} column")
            } else if no_tenant_index.is_empty() {
                format!("all {scoped} tables with {tenant} have an index leading with it")
            } else {
                format!(
                    "no index leading with {tenant}: {}",
                    some_of(&no_tenant_index, 5)
                )
            },
        )
        .value(serde_json::json!({ "tenant_column": tenant, "missing": no_tenant_index })),
        match no_tenant_index.first() {
            Some(t) => format!("CREATE INDEX CONCURRENTLY ON {t} ({tenant})"),
            None => String::new(),
        },
    );
    let no_pk: Vec<String> = all
        .iter()
        .filter(|t| !t.primary_key)
        .map(|t| t.table.display())
        .collect();
    let pk_item = PRIMARY_KEYS.judge(
        no_pk.is_empty(),
        Evidence::sql(
            health::TABLES_SQL,
            if no_pk.is_empty() {
                format!("all {} tables have a primary key", all.len())
            } else {
                format!("no primary key: {}", some_of(&no_pk, 5))
            },
        )
        .value(serde_json::json!({ "missing": no_pk })),
        match no_pk.first() {
            Some(t) => format!("ALTER TABLE {t} ADD PRIMARY KEY (...) (rows cannot be told apart, replicated or deduplicated without one)"),
            None => String::new(),
        },
    );
    let limit = f.readiness().big_table_rows.unwrap_or(10_000_000) as i64;
    let big: Vec<String> = all
        .iter()
        .filter(|t| !t.partitioned && t.rows_estimate > limit)
        .map(|t| format!("{} (~{} rows)", t.table.display(), t.rows_estimate))
        .collect();
    let big_evidence = Evidence::sql(
        health::TABLES_SQL,
        if big.is_empty() {
            format!("no unpartitioned table has more than {limit} rows (planner estimates)")
        } else {
            format!(
                "unpartitioned with more than {limit} rows: {}",
                some_of(&big, 5)
            )
        },
    )
    .value(serde_json::json!({ "tables": big, "limit_rows": limit }));
    let big_item = if big.is_empty() {
        BIG_TABLES.pass(big_evidence)
    } else {
        BIG_TABLES.warn(
            big_evidence,
            "consider range partitioning by time or tenant: retention becomes DROP PARTITION and vacuum stays small",
        )
    };
    [tenant_item, pk_item, big_item]
}

async fn sequences(f: &Facts<'_>, db: &Db) -> Item {
    let max = f.readiness().sequence_max.unwrap_or(0.75);
    match health::sequences(&db.client, &db.excluded).await {
        Ok(all) => {
            let hidden: Vec<String> = all
                .iter()
                .filter(|s| !s.readable)
                .map(|s| s.sequence.display())
                .collect();
            let near: Vec<String> = all
                .iter()
                .filter_map(|s| {
                    let share = s.used_share()?;
                    (share > max).then(|| {
                        format!(
                            "{} at {:.0}% ({} of {}{})",
                            s.sequence.display(),
                            share * 100.0,
                            s.last_value.unwrap_or(0),
                            s.limit,
                            s.feeds
                                .as_deref()
                                .map(|c| format!(", feeds {c}"))
                                .unwrap_or_default()
                        )
                    })
                })
                .collect();
            let value = serde_json::json!({ "over_limit": near, "unreadable": hidden, "limit_share": max, "sequences": all.len() });
            if !near.is_empty() {
                return SEQUENCES.fail(
                    Evidence::sql(health::SEQUENCES_SQL, format!("past {:.0}% of their range: {}", max * 100.0, some_of(&near, 5))).value(value),
                    "ALTER TABLE t ALTER COLUMN id TYPE bigint (plan it: it rewrites the table) and ALTER SEQUENCE ... AS bigint",
                );
            }
            if !hidden.is_empty() {
                return SEQUENCES.unknown(
                    "database",
                    format!(
                        "role {} may not read {} sequences ({}): their use is not known",
                        db.user,
                        hidden.len(),
                        some_of(&hidden, 3)
                    ),
                    Some("run readiness as the owner, or GRANT SELECT ON ALL SEQUENCES IN SCHEMA public to this role".into()),
                );
            }
            SEQUENCES.pass(
                Evidence::sql(
                    health::SEQUENCES_SQL,
                    format!(
                        "{} sequences, none past {:.0}% of its range (or its column type's)",
                        all.len(),
                        max * 100.0
                    ),
                )
                .value(value),
            )
        }
        Err(e) => probe_unknown(&SEQUENCES, db, health::SEQUENCES_SQL, e),
    }
}

async fn wraparound(f: &Facts<'_>, db: &Db) -> Item {
    let max = f.readiness().wraparound_max.unwrap_or(0.5);
    match health::wraparound(&db.client).await {
        Ok(w) => WRAPAROUND.judge(
            w.share() <= max,
            Evidence::sql(
                health::WRAPAROUND_SQL,
                format!(
                    "oldest unfrozen transaction: database {} at age {} ({:.1}% of the 2^31 horizon; limit {:.0}%)",
                    w.database,
                    w.xid_age.max(w.mxid_age),
                    w.share() * 100.0,
                    max * 100.0
                ),
            )
            .value(&w),
            format!("VACUUM (FREEZE, VERBOSE) the oldest tables of {} and find what holds autovacuum back (long transactions, abandoned replication slots)", w.database),
        ),
        Err(e) => probe_unknown(&WRAPAROUND, db, health::WRAPAROUND_SQL, e),
    }
}

async fn maintenance(f: &Facts<'_>, db: &Db) -> Vec<Item> {
    let all = match health::maintenance(&db.client, &db.excluded).await {
        Ok(m) => m,
        Err(e) => {
            return [VACUUM, DEAD_TUPLES]
                .iter()
                .map(|d| probe_unknown(d, db, health::MAINTENANCE_SQL, e.clone()))
                .collect();
        }
    };
    let max_age = f
        .readiness()
        .vacuum_max_age
        .map_or(7.0 * 86_400.0, |d| d.as_std().as_secs_f64());
    let mut stale = Vec::new();
    for t in &all {
        let changed = t.modified_since_analyze > 0 || t.dead_rows > 0;
        let name = t.table.display();
        match (t.analyzed_secs_ago, t.vacuumed_secs_ago) {
            (None, _) if t.live_rows > 0 => stale.push(format!("{name}: never analyzed")),
            (Some(a), _) if changed && a > max_age => stale.push(format!(
                "{name}: analyzed {} ago, changed since",
                human_age(a)
            )),
            (_, Some(v)) if t.dead_rows > 0 && v > max_age => stale.push(format!(
                "{name}: vacuumed {} ago, {} dead rows",
                human_age(v),
                t.dead_rows
            )),
            _ => {}
        }
    }
    let vacuum_evidence = Evidence::sql(
        health::MAINTENANCE_SQL,
        if stale.is_empty() {
            format!(
                "all {} tables analyzed, and vacuumed within {} of changing",
                all.len(),
                human_age(max_age)
            )
        } else {
            some_of(&stale, 5)
        },
    )
    .value(serde_json::json!({ "stale": stale }));
    let vacuum = if stale.is_empty() {
        VACUUM.pass(vacuum_evidence)
    } else {
        VACUUM.warn(
            vacuum_evidence,
            "VACUUM (ANALYZE) them, and check autovacuum is on and not blocked (long transactions); after a restore, always ANALYZE",
        )
    };
    let ratio = f.readiness().dead_tuple_ratio.unwrap_or(0.2);
    // Small tables are vacuumed in a moment; their ratio says nothing.
    let bloated: Vec<String> = all
        .iter()
        .filter(|t| t.live_rows + t.dead_rows >= 10_000)
        .filter(|t| t.dead_rows as f64 / (t.live_rows + t.dead_rows) as f64 > ratio)
        .map(|t| {
            format!(
                "{} ({:.0}% dead: {} of {})",
                t.table.display(),
                t.dead_rows as f64 * 100.0 / (t.live_rows + t.dead_rows) as f64,
                t.dead_rows,
                t.live_rows + t.dead_rows
            )
        })
        .collect();
    let dead_evidence = Evidence::sql(
        health::MAINTENANCE_SQL,
        if bloated.is_empty() {
            format!(
                "no table of 10,000 rows or more has over {:.0}% dead rows",
                ratio * 100.0
            )
        } else {
            some_of(&bloated, 5)
        },
    )
    .value(serde_json::json!({ "tables": bloated, "limit_share": ratio }));
    let dead = if bloated.is_empty() {
        DEAD_TUPLES.pass(dead_evidence)
    } else {
        DEAD_TUPLES.warn(
            dead_evidence,
            "VACUUM them; lower autovacuum_vacuum_scale_factor for busy tables",
        )
    };
    vec![vacuum, dead]
}

async fn sessions(f: &Facts<'_>, db: &Db) -> Vec<Item> {
    let all = match health::sessions(&db.client).await {
        Ok(s) => s,
        Err(e) => {
            return [LONG_QUERIES, IDLE_TX]
                .iter()
                .map(|d| probe_unknown(d, db, health::SESSIONS_SQL, e.clone()))
                .collect();
        }
    };
    let limit = f
        .readiness()
        .long_running
        .map_or(300.0, |d| d.as_std().as_secs_f64());
    let hidden = all.iter().filter(|s| !s.visible).count();
    let describe = |s: &health::Session, secs: f64| {
        format!(
            "pid {} ({}) for {}",
            s.pid,
            s.user.as_deref().unwrap_or("?"),
            human_age(secs)
        )
    };
    let long: Vec<String> = all
        .iter()
        .filter(|s| s.state.as_deref() == Some("active"))
        .filter_map(|s| s.query_secs.filter(|q| *q > limit).map(|q| describe(s, q)))
        .collect();
    let idle: Vec<String> = all
        .iter()
        .filter(|s| {
            s.state
                .as_deref()
                .is_some_and(|st| st.starts_with("idle in transaction"))
        })
        .filter_map(|s| s.state_secs.filter(|q| *q > limit).map(|q| describe(s, q)))
        .collect();
    let judge = |def: &Def, found: Vec<String>, what: &str, fix: &str| -> Item {
        let value =
            serde_json::json!({ "sessions": found, "hidden": hidden, "limit_seconds": limit });
        if !found.is_empty() {
            return def.fail(
                Evidence::sql(
                    health::SESSIONS_SQL,
                    format!("{what} over {}: {}", human_age(limit), some_of(&found, 5)),
                )
                .value(value),
                fix,
            );
        }
        if hidden > 0 {
            let mut item = def.unknown(
                "database",
                format!(
                    "{hidden} sessions of other roles are not visible to {} (needs pg_read_all_stats): none of the visible ones is {what}",
                    db.user
                ),
                Some("GRANT pg_monitor TO the role readiness runs as".into()),
            );
            item.evidence.value = value;
            return item;
        }
        def.pass(
            Evidence::sql(
                health::SESSIONS_SQL,
                format!(
                    "{} sessions, none {what} over {}",
                    all.len(),
                    human_age(limit)
                ),
            )
            .value(value),
        )
    };
    vec![
        judge(
            &LONG_QUERIES,
            long,
            "running a query",
            "find them in pg_stat_activity; cancel with SELECT pg_cancel_backend(pid) and set statement_timeout for the app role",
        ),
        judge(
            &IDLE_TX,
            idle,
            "idle in a transaction",
            "they hold locks and block vacuum: SELECT pg_terminate_backend(pid), and set idle_in_transaction_session_timeout for the app role",
        ),
    ]
}

async fn connections(f: &Facts<'_>, db: &Db) -> Item {
    let max = f.readiness().connections_max.unwrap_or(0.75);
    match health::connections(&db.client).await {
        Ok(c) => CONNECTIONS.judge(
            c.share() <= max,
            Evidence::sql(
                health::CONNECTIONS_SQL,
                format!(
                    "{} client connections of {} available to ordinary roles ({:.0}%; limit {:.0}%)",
                    c.used,
                    c.max_connections - c.reserved,
                    c.share() * 100.0,
                    max * 100.0
                ),
            )
            .value(&c),
            "put a pooler in front (PgBouncer in transaction mode for the app, the direct URL for shipsafe) or lower the app's pool size",
        ),
        Err(e) => probe_unknown(&CONNECTIONS, db, health::CONNECTIONS_SQL, e),
    }
}

async fn cache(f: &Facts<'_>, db: &Db) -> Item {
    let min = f.readiness().cache_hit_min.unwrap_or(0.99);
    match health::cache(&db.client).await {
        Ok(c) if c.hits + c.reads < 1000 => CACHE.unknown(
            "database",
            format!(
                "only {} block reads since the statistics were reset: too few to judge",
                c.hits + c.reads
            ),
            None,
        ),
        Ok(c) => {
            let ratio = c.hits as f64 / (c.hits + c.reads) as f64;
            let evidence = Evidence::sql(
                health::CACHE_SQL,
                format!(
                    "{:.2}% of table and index block reads served from shared buffers (limit {:.0}%)",
                    ratio * 100.0,
                    min * 100.0
                ),
            )
            .value(serde_json::json!({ "hits": c.hits, "reads": c.reads, "ratio": ratio }));
            if ratio >= min {
                CACHE.pass(evidence)
            } else {
                CACHE.warn(evidence, "the working set does not fit in memory: raise shared_buffers (or the plan size), or find the queries reading most (pg_stat_statements)")
            }
        }
        Err(e) => probe_unknown(&CACHE, db, health::CACHE_SQL, e),
    }
}

/// Timeouts for the app role and slow-query logging.
async fn settings(db: &Db) -> Vec<Item> {
    let server = match health::settings(&db.client).await {
        Ok(s) => s,
        Err(e) => {
            return [TIMEOUTS, SLOW_LOG]
                .iter()
                .map(|d| probe_unknown(d, db, health::SETTINGS_SQL, e.clone()))
                .collect();
        }
    };
    let role = &db.app_role;
    let timeouts = match health::role_settings(&db.client, role).await {
        Ok(set) => {
            let mut unset = Vec::new();
            let mut unknown = Vec::new();
            let mut shown = Vec::new();
            for name in ["statement_timeout", "idle_in_transaction_session_timeout"] {
                let value = match set.iter().find(|(k, _)| k == name) {
                    Some((_, v)) => Some(format!("{v} (ALTER ROLE/DATABASE)")),
                    None => match server.iter().find(|(n, _, _)| n == name) {
                        // The session's value comes from the server's
                        // configuration only when no role or database
                        // setting of *this* session changed it.
                        Some((_, Some(v), Some(src)))
                            if matches!(
                                src.as_str(),
                                "default"
                                    | "configuration file"
                                    | "command line"
                                    | "environment variable"
                            ) =>
                        {
                            Some(format!("{v} (server {src})"))
                        }
                        Some((_, Some(v), Some(src))) if *role == db.user => {
                            Some(format!("{v} ({src})"))
                        }
                        _ => {
                            unknown.push(name);
                            None
                        }
                    },
                };
                if let Some(v) = value {
                    if v.starts_with("0 ") || v.starts_with("0(") {
                        unset.push(name);
                    }
                    shown.push(format!("{name} = {v}"));
                }
            }
            let value = serde_json::json!({ "role": role, "settings": shown });
            if !unset.is_empty() {
                TIMEOUTS.fail(
                    Evidence::sql(health::ROLE_SETTINGS_SQL, format!("role {role}: {}", shown.join(", "))).value(value),
                    format!(
                        "ALTER ROLE {role} SET statement_timeout = '30s'; ALTER ROLE {role} SET idle_in_transaction_session_timeout = '60s' (shipsafe sets its own for migrations)"
                    ),
                )
            } else if !unknown.is_empty() {
                TIMEOUTS.unknown(
                    "database",
                    format!(
                        "the server-wide value of {} is not visible from this session",
                        unknown.join(", ")
                    ),
                    None,
                )
            } else {
                TIMEOUTS.pass(
                    Evidence::sql(
                        health::ROLE_SETTINGS_SQL,
                        format!("role {role}: {}", shown.join(", ")),
                    )
                    .value(value),
                )
            }
        }
        Err(e) => probe_unknown(&TIMEOUTS, db, health::ROLE_SETTINGS_SQL, e),
    };
    let slow = match server.iter().find(|(n, _, _)| n == "log_min_duration_statement") {
        Some((_, Some(v), _)) => SLOW_LOG.judge(
            v != "-1",
            Evidence::sql(
                health::SETTINGS_SQL,
                if v == "-1" {
                    "log_min_duration_statement = -1: slow queries are not logged".to_string()
                } else {
                    format!("log_min_duration_statement = {v} ms")
                },
            )
            .value(serde_json::json!({ "log_min_duration_statement": v })),
            "ALTER SYSTEM SET log_min_duration_statement = '500ms' (or the provider's parameter group); SELECT pg_reload_conf()",
        ),
        _ => SLOW_LOG.unknown("database", format!("role {} may not read log_min_duration_statement", db.user), None),
    };
    vec![timeouts, slow]
}

async fn statements(db: &Db) -> Item {
    match health::stat_statements(&db.client).await {
        Ok(Ok(schema)) => STATEMENTS.pass(Evidence::sql(
            health::STAT_STATEMENTS_SQL,
            format!("pg_stat_statements is installed in schema {schema} and answers"),
        )),
        Ok(Err(why)) => STATEMENTS.fail(
            Evidence::sql(health::STAT_STATEMENTS_SQL, why),
            "add pg_stat_statements to shared_preload_libraries (restart), then CREATE EXTENSION pg_stat_statements",
        ),
        Err(e @ ProbeError { .. }) => probe_unknown(&STATEMENTS, db, health::STAT_STATEMENTS_SQL, e),
    }
}
