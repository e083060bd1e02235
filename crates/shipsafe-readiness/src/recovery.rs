//! Data protection: a fresh backup, a recent restore drill that passed, a
//! copy off this machine, retention that runs, archives still intact, and
//! whether point-in-time recovery exists.

use shipsafe_backup::Manifest;
use shipsafe_config::{Duration, mask_secrets};
use shipsafe_pg::health;

use super::model::{Category, Def, Evidence, Item, Level};
use crate::facts::{Facts, age_secs, human_age, probe_unknown};

const BACKUP_RECENT: Def = Def {
    id: "backup-recent",
    category: Category::DataProtection,
    level: Level::Bronze,
    title: "A complete backup is recent",
};
const RESTORE_DRILL: Def = Def {
    id: "restore-drill-recent",
    category: Category::DataProtection,
    level: Level::Bronze,
    title: "A restore drill passed recently (RTO measured)",
};
const OFFSITE: Def = Def {
    id: "backup-offsite",
    category: Category::DataProtection,
    level: Level::Silver,
    title: "Backups are stored off this machine",
};
const RETENTION: Def = Def {
    id: "backup-retention",
    category: Category::DataProtection,
    level: Level::Silver,
    title: "Retention is applied",
};
const CHECKSUM: Def = Def {
    id: "backup-checksum",
    category: Category::DataProtection,
    level: Level::Silver,
    title: "The newest backup's archive matches its checksum",
};
const WAL: Def = Def {
    id: "wal-archiving",
    category: Category::DataProtection,
    level: Level::Gold,
    title: "WAL archiving (point-in-time recovery)",
};

pub(super) const DEFS: &[Def] = &[
    BACKUP_RECENT,
    RESTORE_DRILL,
    OFFSITE,
    RETENTION,
    CHECKSUM,
    WAL,
];

pub(super) async fn items(f: &Facts<'_>) -> Vec<Item> {
    let r = f.readiness();
    let max_backup = r.backup_max_age.unwrap_or(Duration::from_secs(26 * 3600));
    let max_drill = r.drill_max_age.unwrap_or(Duration::from_secs(8 * 86_400));
    let mut out = Vec::new();
    match &f.backups {
        Err(e) => {
            let why = format!("the backup catalog could not be read: {e}");
            for def in [BACKUP_RECENT, RESTORE_DRILL, RETENTION, CHECKSUM] {
                out.push(def.unknown("backup catalog", why.clone(), None));
            }
        }
        Ok(all) => {
            let newest = all.iter().find(|m| m.is_complete());
            out.push(backup_recent(f, newest, max_backup));
            out.push(restore_drill(f, all, newest, max_drill));
            out.push(retention(f, all));
            out.push(checksum(f, newest).await);
        }
    }
    out.insert(2, offsite(f));
    out.push(wal(f).await);
    out
}

fn backup_recent(f: &Facts<'_>, newest: Option<&Manifest>, max: Duration) -> Item {
    let fix = format!("shipsafe backup create {}", f.env);
    let Some(m) = newest else {
        return BACKUP_RECENT.fail(
            Evidence::new(
                "backup catalog",
                format!("{} has no complete backup", f.env),
            ),
            fix,
        );
    };
    let Some(age) = age_secs(&m.created_at, f.now) else {
        return BACKUP_RECENT.unknown(
            "backup catalog",
            format!("backup {} has an unreadable time {:?}", m.id, m.created_at),
            Some(fix),
        );
    };
    let evidence = Evidence::new(
        "backup catalog",
        format!(
            "newest complete backup {} taken {} ({} ago; limit {max})",
            m.id,
            m.created_at,
            human_age(age)
        ),
    )
    .value(serde_json::json!({
        "backup_id": m.id, "created_at": m.created_at, "age_seconds": age.round(),
        "size_bytes": m.size_bytes, "limit_seconds": max.as_std().as_secs(),
    }));
    BACKUP_RECENT.judge(
        age <= max.as_std().as_secs_f64(),
        evidence,
        format!("{fix} (and schedule it: daily at least)"),
    )
}

fn restore_drill(
    f: &Facts<'_>,
    all: &[Manifest],
    newest: Option<&Manifest>,
    max: Duration,
) -> Item {
    let fix = match newest {
        Some(m) => format!("shipsafe backup verify {}", m.id),
        None => format!(
            "shipsafe backup create {0}, then shipsafe backup verify <id>",
            f.env
        ),
    };
    let last = all
        .iter()
        .flat_map(|m| m.verifications.iter().map(move |v| (m, v)))
        .max_by(|a, b| a.1.at.cmp(&b.1.at));
    let Some((m, v)) = last else {
        return RESTORE_DRILL.fail(
            Evidence::new(
                "backup catalog",
                format!("no backup of {} was ever restored to prove it", f.env),
            ),
            fix,
        );
    };
    let age = age_secs(&v.at, f.now).unwrap_or(f64::INFINITY);
    // RPO evidence: how much would be lost if the database died now.
    let rpo = newest.and_then(|n| age_secs(&n.created_at, f.now));
    let value = serde_json::json!({
        "backup_id": m.id, "verified_at": v.at, "ok": v.ok,
        "restore_seconds": v.restore_seconds, "checks_passed": v.checks_passed,
        "checks_failed": v.checks_failed, "age_seconds": age.round(),
        "rto_seconds": v.restore_seconds, "rpo_seconds": rpo.map(f64::round),
    });
    if !v.ok {
        return RESTORE_DRILL.fail(
            Evidence::new(
                "backup catalog",
                format!(
                    "the last restore drill, of {} at {}, FAILED: {}",
                    m.id,
                    v.at,
                    v.error.as_deref().unwrap_or("checks failed")
                ),
            )
            .value(value),
            format!("{fix} after fixing what failed"),
        );
    }
    let evidence = Evidence::new(
        "backup catalog",
        format!(
            "backup {} restored and checked at {} ({} ago; limit {max}): restore took {:.1} s (RTO), {} checks passed; newest backup is {} old (RPO)",
            m.id,
            v.at,
            human_age(age),
            v.restore_seconds,
            v.checks_passed,
            rpo.map_or_else(|| "-".into(), human_age),
        ),
    )
    .value(value);
    RESTORE_DRILL.judge(age <= max.as_std().as_secs_f64(), evidence, fix)
}

fn offsite(f: &Facts<'_>) -> Item {
    let spec = match shipsafe_protocol::store::storage_spec(f.config, f.vars) {
        Ok(s) => s,
        Err(e) => {
            return OFFSITE.unknown(
                "config",
                format!("backup storage is not resolvable: {e}"),
                None,
            );
        }
    };
    let url = mask_secrets(&spec.url);
    let remote = spec.url.starts_with("s3://");
    OFFSITE.judge(
        remote,
        Evidence::new(
            "config",
            if remote {
                format!("backups go to object storage {url}")
            } else {
                format!("backups are kept on this machine's disk ({url}): a lost disk loses them with the server")
            },
        )
        .value(serde_json::json!({ "storage": url })),
        "set [backups] storage = \"s3://bucket/prefix\" (any S3-compatible store in another region or provider)",
    )
}

/// Retention planned over the backups already listed: what `backup prune`
/// would delete now.
fn retention(f: &Facts<'_>, all: &[Manifest]) -> Item {
    let r = f.config.file().backups.retention;
    let summary = format!(
        "keep_last {}, keep_daily {}, keep_monthly {}",
        r.keep_last, r.keep_daily, r.keep_monthly
    );
    let in_use = match shipsafe_protocol::steps::retention::backups_in_use(
        f.config.state_dir(),
        Some(f.env),
    ) {
        Ok(u) => u,
        Err(e) => {
            return RETENTION.unknown(
                "backup catalog",
                format!("retention ({summary}) could not be planned: {e}"),
                None,
            );
        }
    };
    let decisions = shipsafe_backup::plan(all, r, &in_use);
    let due: Vec<&str> = decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.id.as_str())
        .collect();
    let value = serde_json::json!({
        "keep_last": r.keep_last, "keep_daily": r.keep_daily, "keep_monthly": r.keep_monthly,
        "stored": decisions.len(), "past_retention": due,
    });
    if due.is_empty() {
        RETENTION.pass(
            Evidence::new(
                "backup catalog",
                format!(
                    "retention {summary}: all {} stored backups are within it",
                    decisions.len()
                ),
            )
            .value(value),
        )
    } else {
        RETENTION.warn(
            Evidence::new(
                "backup catalog",
                format!(
                    "retention {summary}: {} of {} stored backups are past it, so pruning is not running",
                    due.len(),
                    decisions.len()
                ),
            )
            .value(value),
            format!(
                "shipsafe backup prune {} (schedule it after each backup)",
                f.env
            ),
        )
    }
}

async fn checksum(f: &Facts<'_>, newest: Option<&Manifest>) -> Item {
    let Some(m) = newest else {
        return CHECKSUM.fail(
            Evidence::new(
                "backup catalog",
                format!("{} has no complete backup to check", f.env),
            ),
            format!("shipsafe backup create {}", f.env),
        );
    };
    let store = match shipsafe_protocol::store::open_store(f.config, f.vars) {
        Ok(s) => s,
        Err(e) => {
            return CHECKSUM.unknown(
                "backup catalog",
                format!("backup storage cannot be opened: {e}"),
                None,
            );
        }
    };
    match store.rehash(&m.id).await {
        Ok((sum, size)) => {
            let ok = sum == m.checksum && size == m.size_bytes;
            let summary = if ok {
                format!(
                    "archive of {} read again ({} bytes): {} as recorded",
                    m.id, size, m.checksum
                )
            } else {
                format!(
                    "archive of {} read again: {sum}, {size} bytes; its manifest says {}, {} bytes: the stored archive changed",
                    m.id, m.checksum, m.size_bytes
                )
            };
            CHECKSUM.judge(
                ok,
                Evidence::new("backup catalog", summary).value(serde_json::json!({
                    "backup_id": m.id, "expected": m.checksum, "actual": sum,
                    "expected_bytes": m.size_bytes, "actual_bytes": size,
                })),
                format!(
                    "shipsafe backup create {}: this archive cannot be trusted",
                    f.env
                ),
            )
        }
        Err(e) => CHECKSUM.fail(
            Evidence::new(
                "backup catalog",
                format!("archive of {} cannot be read: {e}", m.id),
            ),
            format!("shipsafe backup create {}", f.env),
        ),
    }
}

async fn wal(f: &Facts<'_>) -> Item {
    let db = match f.db(&WAL) {
        Ok(db) => db,
        Err(item) => return *item,
    };
    let settings = match health::settings(&db.client).await {
        Ok(s) => s,
        Err(e) => return probe_unknown(&WAL, db, health::SETTINGS_SQL, e),
    };
    let get = |name: &str| {
        settings
            .iter()
            .find(|(n, _, _)| n == name)
            .and_then(|(_, v, _)| v.clone())
    };
    let mode = get("archive_mode").unwrap_or_default();
    let fix = "archive WAL (archive_mode = on with pgBackRest or WAL-G), or turn on the provider's point-in-time recovery: restores can then reach any moment, not only the last backup";
    if mode == "off" || mode.is_empty() {
        return WAL.warn(
            Evidence::sql(
                health::SETTINGS_SQL,
                format!(
                    "archive_mode = {}: no point-in-time recovery; a restore returns to the last backup",
                    if mode.is_empty() { "unknown" } else { &mode }
                ),
            )
            .value(serde_json::json!({ "archive_mode": mode, "wal_level": get("wal_level") })),
            fix,
        );
    }
    match health::archiver(&db.client).await {
        Ok(a) => {
            let evidence = Evidence::sql(
                health::ARCHIVER_SQL,
                format!(
                    "archive_mode = {mode}; {} segments archived (last {}), {} failed (last {})",
                    a.archived,
                    a.last_archived.as_deref().unwrap_or("never"),
                    a.failed,
                    a.last_failed.as_deref().unwrap_or("never")
                ),
            )
            .value(&a);
            if a.failing {
                WAL.fail(
                    evidence,
                    "the newest WAL archiving attempt failed: read the server log for archive_command errors",
                )
            } else {
                WAL.pass(evidence)
            }
        }
        Err(e) => probe_unknown(&WAL, db, health::ARCHIVER_SQL, e),
    }
}
