//! Retention over a synthetic catalog spanning months keeps exactly the
//! expected set.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use shipsafe_backup::{Manifest, Status, Verification, plan};
use shipsafe_config::Retention;

fn backup(env: &str, at: &str, status: Status, verified: bool) -> Manifest {
    Manifest {
        id: format!("{env}-{at}"),
        env: env.into(),
        database: "app".into(),
        reason: "scheduled".into(),
        status,
        created_at: at.into(),
        finished_at: at.into(),
        raw_bytes: 10,
        size_bytes: 5,
        checksum: "blake3:00".into(),
        location: "file:///x".into(),
        server_version: "15.8".into(),
        pg_dump_version: "15.8".into(),
        extensions: vec![],
        roles: vec![],
        excluded_schemas: vec![],
        contents: None,
        database_level: vec![],
        database_identity: None,
        writes_at_backup: None,
        audit_head: None,
        checks: None,
        verifications: if verified {
            vec![Verification {
                at: at.into(),
                ok: true,
                restore_seconds: 1.0,
                checks_passed: 1,
                checks_failed: 0,
                error: None,
                method: None,
                proof: None,
            }]
        } else {
            vec![]
        },
        error: None,
    }
}

/// Two backups a day (03:00 and 15:00 UTC) from 2026-01-01 to 2026-06-30.
fn half_year(env: &str) -> Vec<Manifest> {
    let mut v = Vec::new();
    let mut day = jiff::civil::date(2026, 1, 1);
    while day <= jiff::civil::date(2026, 6, 30) {
        for hour in ["03", "15"] {
            v.push(backup(
                env,
                &format!("{day}T{hour}:00:00.000Z"),
                Status::Complete,
                false,
            ));
        }
        day = day.tomorrow().unwrap();
    }
    v
}

fn kept(decisions: &[shipsafe_backup::Decision]) -> BTreeSet<String> {
    decisions
        .iter()
        .filter(|d| d.keep)
        .map(|d| d.id.clone())
        .collect()
}

#[test]
fn grandfather_father_son_keeps_exactly_the_expected_set() {
    let mut all = half_year("prod");
    // A verified backup from long ago, and a failed attempt.
    all.push(backup(
        "prod",
        "2025-11-20T03:00:00.000Z",
        Status::Complete,
        true,
    ));
    all.push(backup(
        "prod",
        "2026-06-30T16:00:00.000Z",
        Status::Failed,
        false,
    ));
    let policy = Retention {
        keep_last: 3,
        keep_daily: 5,
        keep_monthly: 4,
    };
    let decisions = plan(&all, policy, &BTreeMap::new());
    assert_eq!(decisions.len(), all.len(), "a decision for every manifest");

    let expected: BTreeSet<String> = [
        // last 3
        "2026-06-30T15",
        "2026-06-30T03",
        "2026-06-29T15",
        // newest of each of the 5 most recent days (30th..26th)
        "2026-06-28T15",
        "2026-06-27T15",
        "2026-06-26T15",
        // newest of each of the 4 most recent months (June is the 30th 15:00)
        "2026-05-31T15",
        "2026-04-30T15",
        "2026-03-31T15",
    ]
    .iter()
    .map(|t| format!("prod-{t}:00:00.000Z"))
    .chain(["prod-2025-11-20T03:00:00.000Z".to_string()]) // newest verified, never deleted
    .collect();
    assert_eq!(kept(&decisions), expected);

    let failed = decisions
        .iter()
        .find(|d| d.id == "prod-2026-06-30T16:00:00.000Z")
        .unwrap();
    assert!(!failed.keep);
    assert_eq!(failed.reasons, ["failed attempt, not a backup"]);
    let verified = decisions
        .iter()
        .find(|d| d.id == "prod-2025-11-20T03:00:00.000Z")
        .unwrap();
    assert!(
        verified
            .reasons
            .iter()
            .any(|r| r.contains("newest verified"))
    );
    let last = decisions
        .iter()
        .find(|d| d.id == "prod-2026-06-30T15:00:00.000Z")
        .unwrap();
    assert_eq!(
        last.reasons.len(),
        3,
        "last, daily and monthly: {:?}",
        last.reasons
    );
}

#[test]
fn environments_are_pruned_separately_and_protected_ids_stay() {
    let mut all = half_year("prod");
    all.extend(half_year("staging"));
    let policy = Retention {
        keep_last: 1,
        keep_daily: 0,
        keep_monthly: 0,
    };
    let mut protected = BTreeMap::new();
    protected.insert(
        "staging-2026-02-14T03:00:00.000Z".to_string(),
        "referenced by deploy run 20260214-0300".to_string(),
    );
    let got = kept(&plan(&all, policy, &protected));
    let want: BTreeSet<String> = [
        "prod-2026-06-30T15:00:00.000Z",
        "staging-2026-06-30T15:00:00.000Z",
        "staging-2026-02-14T03:00:00.000Z",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(got, want);
}

#[test]
fn the_newest_verified_backup_survives_a_zero_policy() {
    let mut all = half_year("prod");
    let i = all
        .iter()
        .position(|m| m.created_at.starts_with("2026-03-03T03"))
        .unwrap();
    all[i] = backup("prod", "2026-03-03T03:00:00.000Z", Status::Complete, true);
    let zero = Retention {
        keep_last: 0,
        keep_daily: 0,
        keep_monthly: 0,
    };
    let got = kept(&plan(&all, zero, &BTreeMap::new()));
    assert_eq!(
        got,
        BTreeSet::from(["prod-2026-03-03T03:00:00.000Z".to_string()])
    );
}
