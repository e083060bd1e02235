//! Tampering with the audit log is detected and the broken entry is named.
#![allow(clippy::unwrap_used)]

use rusqlite::Connection;
use shipsafe_state::{Actor, NewAuditEntry, RunRecord, StateStore, StepRecord};

fn store_with(n: usize) -> (tempfile::TempDir, StateStore) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(dir.path()).unwrap();
    for i in 1..=n {
        store
            .append_audit(&NewAuditEntry {
                actor: Actor {
                    os_user: "alice".into(),
                    git_author: Some("Alice <alice@example.com>".into()),
                    ci: Default::default(),
                },
                command: "deploy".into(),
                env: Some(if i % 2 == 0 { "staging" } else { "production" }.into()),
                outcome: "deployed".into(),
                backup_ids: vec![format!("b{i}")],
                run_id: Some(format!("run-{i}")),
                detail: serde_json::json!({ "n": i }),
            })
            .unwrap();
    }
    (dir, store)
}

fn raw(dir: &tempfile::TempDir) -> Connection {
    Connection::open(dir.path().join("state.db")).unwrap()
}

fn first_problem(store: &StateStore) -> (i64, String) {
    let report = store.verify_audit().unwrap();
    assert!(!report.ok, "tampering went unnoticed: {report:?}");
    let p = &report.problems[0];
    (p.seq, p.problem.clone())
}

#[test]
fn intact_chain_verifies() {
    let (_d, store) = store_with(5);
    let report = store.verify_audit().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.entries, 5);
    let entries = store.audit_entries(None, None).unwrap();
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[0].seq, 5, "newest first");
    assert_eq!(entries[4].prev_hash, shipsafe_state::audit::GENESIS);
    assert_eq!(entries[3].prev_hash, entries[4].hash);
    assert_eq!(store.audit_entries(Some("staging"), None).unwrap().len(), 2);
    assert_eq!(store.audit_entries(None, Some(2)).unwrap().len(), 2);
}

#[test]
fn empty_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let r = store.verify_audit().unwrap();
    assert!(r.ok);
    assert_eq!(r.entries, 0);
}

#[test]
fn edited_entry_is_named() {
    let (d, store) = store_with(5);
    raw(&d)
        .execute(
            "update audit set outcome = 'nothing_to_do' where seq = 3",
            [],
        )
        .unwrap();
    let (seq, msg) = first_problem(&store);
    assert_eq!(seq, 3);
    assert!(msg.contains("entry 3 was altered"), "{msg}");
}

#[test]
fn edited_entry_with_recomputed_hash_breaks_the_next_link() {
    let (d, store) = store_with(5);
    // An attacker who edits entry 3 and fixes its own hash still cannot fix
    // entry 4's link without rewriting everything after it.
    let c = raw(&d);
    c.execute("update audit set env = 'local' where seq = 3", [])
        .unwrap();
    let fake: String = c
        .query_row("select hash from audit where seq = 2", [], |r| r.get(0))
        .unwrap();
    c.execute("update audit set hash = ?1 where seq = 3", [fake])
        .unwrap();
    let report = store.verify_audit().unwrap();
    assert!(!report.ok);
    assert!(report.problems.iter().any(|p| p.seq == 3));
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.seq == 4 && p.problem.contains("does not follow entry 3")),
        "{report:?}"
    );
}

#[test]
fn reordered_entries_are_named() {
    let (d, store) = store_with(5);
    let c = raw(&d);
    c.execute_batch(
        "update audit set seq = -1 where seq = 2;
         update audit set seq = 2 where seq = 3;
         update audit set seq = 3 where seq = -1;",
    )
    .unwrap();
    let (seq, msg) = first_problem(&store);
    assert_eq!(seq, 2, "{msg}");
}

#[test]
fn deleted_entry_is_named() {
    let (d, store) = store_with(5);
    raw(&d)
        .execute("delete from audit where seq = 3", [])
        .unwrap();
    let (seq, msg) = first_problem(&store);
    assert_eq!(seq, 3);
    assert!(msg.contains("entry 3 is missing"), "{msg}");
}

#[test]
fn deleted_newest_entry_is_named() {
    let (d, store) = store_with(5);
    raw(&d)
        .execute("delete from audit where seq = 5", [])
        .unwrap();
    let (seq, msg) = first_problem(&store);
    assert_eq!(seq, 5);
    assert!(msg.contains("entries 5 to 5 were deleted"), "{msg}");
}

#[test]
fn deleted_head_record_is_detected() {
    let (d, store) = store_with(2);
    raw(&d).execute("delete from audit_head", []).unwrap();
    let (_, msg) = first_problem(&store);
    assert!(msg.contains("chain head record is missing"), "{msg}");
}

#[test]
fn appends_continue_the_chain_across_reopen() {
    let (d, store) = store_with(2);
    drop(store);
    let mut again = StateStore::open(d.path()).unwrap();
    let e = again
        .append_audit(&NewAuditEntry {
            command: "init".into(),
            outcome: "ok".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(e.seq, 3);
    assert!(again.verify_audit().unwrap().ok);
}

#[test]
fn runs_round_trip_with_steps() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(dir.path()).unwrap();
    let run = RunRecord {
        run_id: "20261121-101500-ab12".into(),
        command: "deploy".into(),
        env: Some("staging".into()),
        outcome: "rolled_back".into(),
        backup_id: Some("b1".into()),
        started_at: "2026-11-21T10:15:00.000Z".into(),
        duration_ms: 1234,
        steps: vec![
            StepRecord {
                name: "backup".into(),
                status: "ok".into(),
                duration_ms: 800,
                detail: serde_json::json!({"bytes": 10}),
            },
            StepRecord {
                name: "apply".into(),
                status: "failed".into(),
                duration_ms: 30,
                detail: serde_json::Value::Null,
            },
        ],
        report: serde_json::json!({"why": "check failed"}),
    };
    store.save_run(&run).unwrap();
    assert_eq!(store.run(&run.run_id).unwrap().unwrap(), run);
    assert_eq!(store.runs(Some("staging"), 10).unwrap(), vec![run.clone()]);
    assert!(store.runs(Some("production"), 10).unwrap().is_empty());
}
