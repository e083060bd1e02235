//! The atomic restore against a real server: what it loaded must be what
//! the archive holds, or nothing changes; and the archive reader counts the
//! same whatever pieces the archive arrives in.
#![allow(clippy::unwrap_used)]

use shipsafe_backup::{ArchiveContents, AtomicRestore, BackupError, restore_atomic};
use shipsafe_pg::PgBinaries;
use shipsafe_testkit::TestDb;

/// `pg_dump -Fc -Z0 EXTRA` of `db` into `dir`.
async fn archive_of(db: &TestDb, dir: &std::path::Path, extra: &[&str]) -> std::path::PathBuf {
    let bins = PgBinaries::find(None, &["pg_dump"]).unwrap();
    let file = dir.join("a.dump");
    let out = std::process::Command::new(bins.path("pg_dump"))
        .args(["-Fc", "-Z0"])
        .args(extra)
        .arg("-f")
        .arg(&file)
        .arg(format!("--dbname={}", db.url().expose()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    file
}

async fn source() -> TestDb {
    let src = TestDb::new().await;
    src.client()
        .await
        .batch_execute(
            "create table t (id int primary key, v text);
             insert into t select g, case when g % 3 = 0 then E'\\\\.' else E'a\\nb' end from generate_series(1, 10) g;
             create table \"e;mpty\" (x int);
             create sequence s; select setval('s', 5);
             create sequence fresh;
             select lo_from_bytea(0, 'lo');",
        )
        .await
        .unwrap();
    src
}

fn opts(contents: &ArchiveContents) -> AtomicRestore<'_> {
    AtomicRestore {
        checks: &[],
        before_checks: &[],
        lock_timeout: std::time::Duration::from_secs(5),
        on_bytes: None,
        contents: Some(contents),
        manifest: None,
        list: None,
        compare_database: false,
    }
}

#[tokio::test]
async fn the_archive_is_read_the_same_in_any_pieces() {
    let src = source().await;
    let dir = tempfile::tempdir().unwrap();
    let file = archive_of(&src, dir.path(), &[]).await;
    let whole = ArchiveContents::read_file(&file).unwrap().unwrap();
    let rows: Vec<(String, Option<u64>)> = whole
        .tables
        .iter()
        .map(|t| (t.table.clone(), t.rows))
        .collect();
    assert_eq!(
        rows,
        vec![("e;mpty".to_string(), Some(0)), ("t".to_string(), Some(10))]
    );
    let seqs: Vec<(String, i64, bool)> = whole
        .sequences
        .iter()
        .map(|s| (s.sequence.clone(), s.value, s.is_called))
        .collect();
    assert_eq!(
        seqs,
        vec![("fresh".to_string(), 1, false), ("s".to_string(), 5, true)]
    );
    assert_eq!(whole.large_objects, 1);
    let bytes = std::fs::read(&file).unwrap();
    // Pieces of every size from 1 to 97 bytes, cut at every position.
    for size in 1..98 {
        let mut scanner = shipsafe_backup::archive::ArchiveScanner::new();
        for piece in bytes.chunks(size) {
            scanner.feed(piece);
        }
        assert_eq!(scanner.finish().unwrap(), whole, "pieces of {size} bytes");
    }
    // A cut archive is not read as a whole one.
    let mut scanner = shipsafe_backup::archive::ArchiveScanner::new();
    scanner.feed(&bytes[..bytes.len() - 3]);
    assert!(scanner.finish().is_err());
}

#[tokio::test]
async fn a_restore_that_loaded_other_contents_than_the_archive_changes_nothing() {
    let src = source().await;
    let dir = tempfile::tempdir().unwrap();
    let file = archive_of(&src, dir.path(), &[]).await;
    let contents = ArchiveContents::read_file(&file).unwrap().unwrap();
    let bins = PgBinaries::find(None, &["pg_restore"]).unwrap();
    let dst = TestDb::new().await;
    dst.client()
        .await
        .batch_execute("create table keep (x int); insert into keep values (1);")
        .await
        .unwrap();

    let mut rows = contents.clone();
    rows.tables[1].rows = Some(11);
    let mut seq = contents.clone();
    seq.sequences[1].value = 6;
    let mut los = contents.clone();
    los.large_objects = 2;
    for (wrong, says) in [
        (rows, "public.t: 11 rows in the backup, 10 restored"),
        (seq, "sequence public.s: 6 in the backup, 5 restored"),
        (los, "2 large object(s) in the backup, 1 restored"),
    ] {
        let err = restore_atomic(&bins, &file, dst.url(), opts(&wrong))
            .await
            .unwrap_err();
        assert!(
            matches!(err, BackupError::RestoreRolledBack { .. }) && err.to_string().contains(says),
            "{err}"
        );
        let kept: i64 = dst
            .client()
            .await
            .query_one("select count(*) from keep", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(kept, 1, "the target is as it was");
    }

    let report = restore_atomic(&bins, &file, dst.url(), opts(&contents))
        .await
        .unwrap();
    assert_eq!(
        (
            report.proof.tables,
            report.proof.rows,
            report.proof.sequences,
            report.proof.large_objects
        ),
        (2, 10, 2, 1)
    );
    let c = dst.client().await;
    assert!(
        c.query_opt("select 1 from pg_class where relname = 'keep'", &[])
            .await
            .unwrap()
            .is_none()
    );
}

/// Archives of earlier versions kept the database's encoding; a restore
/// sends UTF-8, so it refuses them before anything changes.
#[tokio::test]
async fn an_archive_not_in_utf8_is_refused_before_anything_changes() {
    let src = source().await;
    let dir = tempfile::tempdir().unwrap();
    let bins = PgBinaries::find(None, &["pg_restore"]).unwrap();
    let file = archive_of(&src, dir.path(), &["--encoding=LATIN1"]).await;
    let contents = ArchiveContents::read_file(&file).unwrap().unwrap();
    assert_eq!(contents.encoding, "LATIN1");
    let dst = TestDb::new().await;
    dst.client()
        .await
        .batch_execute("create table keep (x int)")
        .await
        .unwrap();
    let err = restore_atomic(&bins, &file, dst.url(), opts(&contents))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackupError::RestoreRefused { .. }) && err.to_string().contains("LATIN1"),
        "{err}"
    );
    let kept: bool = dst
        .client()
        .await
        .query_one("select to_regclass('keep') is not null", &[])
        .await
        .unwrap()
        .get(0);
    assert!(kept);
}
