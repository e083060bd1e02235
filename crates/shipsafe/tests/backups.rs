//! Backups as a user drives them, and what happens when things break:
//! pg_dump dies mid-stream, storage is unwritable or full, an archive is
//! corrupted, a check fails during restore. Every test compares the
//! databases before and after.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{Project, load_sample, snapshot};
use shipsafe_testkit::TestDb;

const CHECK: &str = r#"
[[checks]]
name = "one active superadmin"
sql = "select count(*) from users where role = 'superadmin' and is_active"
expect = "= 1"
"#;

async fn src_and_dst() -> (TestDb, TestDb) {
    let src = TestDb::new().await;
    load_sample(src.url()).await;
    let dst = TestDb::new().await;
    let c = dst.client().await;
    c.batch_execute(
        "create table users (id int primary key, role text, is_active bool);
         insert into users values (1, 'superadmin', true), (2, 'user', true);
         create table leftovers (x int); insert into leftovers values (1);",
    )
    .await
    .unwrap();
    (src, dst)
}

fn create(p: &Project, env: &str) -> serde_json::Value {
    let (code, v, err) = p.json(&["backup", "create", env]);
    assert_eq!(code, 0, "{err}");
    v
}

#[tokio::test]
async fn backup_manifest_has_the_documented_shape() {
    let src = TestDb::new().await;
    load_sample(src.url()).await;
    let p = Project::new(&[("prod", "guarded", src.url())], "");
    let m = create(&p, "prod");
    for key in [
        "id",
        "env",
        "database",
        "reason",
        "status",
        "created_at",
        "finished_at",
        "raw_bytes",
        "size_bytes",
        "checksum",
        "location",
        "server_version",
        "pg_dump_version",
        "verifications",
    ] {
        assert!(m.get(key).is_some(), "manifest lacks {key}: {m}");
    }
    assert_eq!(m["env"], "prod");
    assert_eq!(m["database"], src.name());
    assert_eq!(m["reason"], "manual");
    assert_eq!(m["status"], "complete");
    assert!(m["checksum"].as_str().unwrap().starts_with("blake3:"));
    assert!(m["size_bytes"].as_u64().unwrap() < m["raw_bytes"].as_u64().unwrap());
    let archive = m["location"]
        .as_str()
        .unwrap()
        .strip_prefix("file://")
        .unwrap()
        .to_string();
    let bytes = std::fs::read(&archive).unwrap();
    assert_eq!(bytes.len() as u64, m["size_bytes"].as_u64().unwrap());
    assert_eq!(
        format!("blake3:{}", blake3::hash(&bytes).to_hex()),
        m["checksum"]
    );
    // list: an array of manifests, newest first.
    let (code, list, _) = p.json(&["backup", "list"]);
    assert_eq!(code, 0);
    assert_eq!(list[0]["id"], m["id"]);
    assert_eq!(list[0]["verifications"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn round_trip_restores_data_and_schema_exactly() {
    let (src, dst) = src_and_dst().await;
    let p = Project::new(
        &[("prod", "guarded", src.url()), ("copy", "open", dst.url())],
        CHECK,
    );
    let before = snapshot(src.url()).await;
    let m = create(&p, "prod");
    let id = m["id"].as_str().unwrap();

    let (code, v, err) = p.json(&["backup", "verify", id]);
    assert_eq!(code, 0, "{err}");
    let last = &v["verifications"][0];
    assert_eq!(last["ok"], true);
    assert_eq!(last["checks_passed"], 1);
    assert!(last["restore_seconds"].as_f64().unwrap() > 0.0);

    let (code, run, err) = p.json(&["backup", "restore", id, "--to", "copy"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "restored");
    assert_eq!(run["backup_id"], id);
    assert_eq!(
        snapshot(dst.url()).await,
        before,
        "the copy equals the source"
    );
    assert_eq!(snapshot(src.url()).await, before, "the source is untouched");
}

#[tokio::test]
async fn stock_tools_restore_a_backup() {
    let (src, _) = src_and_dst().await;
    let target = TestDb::new().await;
    let p = Project::new(&[("prod", "guarded", src.url())], "");
    let m = create(&p, "prod");
    let file = m["location"]
        .as_str()
        .unwrap()
        .strip_prefix("file://")
        .unwrap()
        .to_string();
    let bins = shipsafe_pg::PgBinaries::find(None, &["pg_restore"]).unwrap();
    // Exactly what the README tells a person without shipsafe to run.
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; zstd -dc '{file}' | '{}' -d '{}'",
            bins.path("pg_restore").display(),
            target.url().expose()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(snapshot(target.url()).await, snapshot(src.url()).await);
}

#[tokio::test]
async fn flipped_byte_is_refused_by_verify_and_restore() {
    let (src, dst) = src_and_dst().await;
    let p = Project::new(
        &[
            ("prod", "guarded", src.url()),
            ("staging", "guarded", dst.url()),
        ],
        "",
    );
    let m = create(&p, "prod");
    let id = m["id"].as_str().unwrap().to_string();
    let file = m["location"]
        .as_str()
        .unwrap()
        .strip_prefix("file://")
        .unwrap()
        .to_string();
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let dst_before = snapshot(dst.url()).await;

    let (code, v, err) = p.json(&["backup", "verify", &id]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    assert_eq!(v["error"]["exit_code"], 1);
    // The failed verification is on record in the manifest.
    let (_, list, _) = p.json(&["backup", "list", "prod"]);
    let rec = &list[0]["verifications"][0];
    assert_eq!(rec["ok"], false);
    assert!(rec["error"].as_str().unwrap().contains("checksum mismatch"));

    let (code, _, err) = p.json(&["backup", "restore", &id, "--to", "staging"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    assert_eq!(snapshot(dst.url()).await, dst_before, "target untouched");
    let (_, list, _) = p.json(&["backup", "list", "staging"]);
    assert_eq!(
        list.as_array().unwrap().len(),
        0,
        "refused before any safety backup was needed"
    );
}

#[tokio::test]
async fn guarded_restore_takes_a_safety_backup_that_restores_the_previous_state() {
    let (src, dst) = src_and_dst().await;
    let p = Project::new(
        &[
            ("prod", "guarded", src.url()),
            ("staging", "guarded", dst.url()),
        ],
        "",
    );
    let staging_before = snapshot(dst.url()).await;
    let m = create(&p, "prod");
    let (code, run, err) = p.json(&[
        "backup",
        "restore",
        m["id"].as_str().unwrap(),
        "--to",
        "staging",
    ]);
    assert_eq!(code, 0, "{err}");
    let steps: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["checksum", "backup", "restore", "checks"]);
    let safety = run["report"]["safety_backup"].as_str().unwrap().to_string();
    assert_eq!(snapshot(dst.url()).await, snapshot(src.url()).await);

    let (_, list, _) = p.json(&["backup", "list", "staging"]);
    assert_eq!(list[0]["id"], safety.as_str());
    assert_eq!(list[0]["reason"], "pre-restore");

    let (code, _, err) = p.json(&["backup", "restore", &safety, "--to", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        snapshot(dst.url()).await,
        staging_before,
        "the safety backup brings back the old state"
    );
}

#[tokio::test]
async fn failing_check_rolls_the_restore_back() {
    let (src, dst) = src_and_dst().await;
    let failing = r#"
[[checks]]
name = "orders exist"
sql = "select count(*) from users where role = 'nobody'"
expect = ">= 1"
"#;
    let p = Project::new(
        &[
            ("prod", "guarded", src.url()),
            ("staging", "guarded", dst.url()),
        ],
        failing,
    );
    let before = snapshot(dst.url()).await;
    let m = create(&p, "prod");
    let (code, v, err) = p.json(&[
        "backup",
        "restore",
        m["id"].as_str().unwrap(),
        "--to",
        "staging",
    ]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(v["error"]["kind"], "rolled_back");
    assert!(
        err.contains("orders exist"),
        "names the failing check: {err}"
    );
    assert!(err.contains("rolled back"), "{err}");
    assert_eq!(
        snapshot(dst.url()).await,
        before,
        "the target is exactly as before"
    );
    let (_, log, _) = p.json(&["log", "--limit", "1"]);
    assert_eq!(log["entries"][0]["outcome"], "rolled_back");
}

#[tokio::test]
async fn protected_restore_needs_confirmation() {
    let (src, dst) = src_and_dst().await;
    let p = Project::new(
        &[
            ("staging", "guarded", src.url()),
            ("production", "protected", dst.url()),
        ],
        "",
    );
    let before = snapshot(dst.url()).await;
    let m = create(&p, "staging");
    let id = m["id"].as_str().unwrap();
    let (code, _, err) = p.json(&["backup", "restore", id, "--to", "production"]);
    assert_eq!(code, 3, "no terminal, no --confirm: {err}");
    assert!(err.contains("--confirm production"), "{err}");
    let (code, _, err) = p.json(&[
        "backup",
        "restore",
        id,
        "--to",
        "production",
        "--confirm",
        "staging",
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("does not match"), "{err}");
    assert_eq!(snapshot(dst.url()).await, before);
    let (_, list, _) = p.json(&["backup", "list", "production"]);
    assert_eq!(
        list.as_array().unwrap().len(),
        0,
        "blocked before the safety backup"
    );

    let (code, _, err) = p.json(&[
        "backup",
        "restore",
        id,
        "--to",
        "production",
        "--confirm",
        "production",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(snapshot(dst.url()).await, snapshot(src.url()).await);
}

/// Objects in storage that are not part of a complete backup.
fn assert_nothing_published(p: &Project, err: &str) {
    let (code, list, _) = p.json(&["backup", "list"]);
    assert_eq!(code, 0);
    for m in list.as_array().unwrap() {
        assert_eq!(m["status"], "failed", "a backup appeared as complete: {m}");
        assert!(!m["error"].as_str().unwrap_or_default().is_empty());
    }
    if let Ok(rd) = std::fs::read_dir(p.backups_dir()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(name.ends_with(".json"), "left behind {name} after: {err}");
        }
    }
}

#[tokio::test]
async fn pg_dump_killed_mid_stream_publishes_nothing() {
    let (src, _) = src_and_dst().await;
    let p = Project::new(&[("prod", "guarded", src.url())], "");
    // A pg_dump that streams real output, then dies of SIGKILL part-way.
    let bin = common::pg_dump_dying_after(20000);
    let out = p
        .cmd()
        .env("PG_BIN_DIR", bin.path())
        .args(["backup", "create", "prod"])
        .output()
        .unwrap();
    let err = common::stderr(&out);
    assert_eq!(common::code(&out), 4, "{err}");
    assert!(err.contains("pg_dump failed (killed by signal 9)"), "{err}");
    assert!(err.contains("not published"), "{err}");
    assert_nothing_published(&p, &err);
}

#[tokio::test]
async fn unwritable_storage_fails_cleanly() {
    let (src, _) = src_and_dst().await;
    let blocker = tempfile::NamedTempFile::new().unwrap();
    let storage = format!("file://{}/backups", blocker.path().display());
    let p = Project::new(
        &[("prod", "guarded", src.url())],
        &format!("[backups]\nstorage = \"{storage}\"\n"),
    );
    let (code, v, err) = p.json(&["backup", "create", "prod"]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(&blocker.path().display().to_string()),
        "names the place: {err}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("backup storage")
    );
}

/// Mounts a tmpfs (needs root); `None` where mounting is not allowed.
fn tmpfs(options: &str) -> Option<tempfile::TempDir> {
    let dir = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", options, "tmpfs"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(dir)
}

struct Mounted(tempfile::TempDir);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test]
async fn full_disk_fails_cleanly() {
    let (src, _) = src_and_dst().await;
    common::add_noise(&src, 3).await;
    let before = snapshot(src.url()).await;
    if nix::unistd::geteuid().is_root() {
        let mnt = Mounted(tmpfs("size=512k").expect("root can mount a tmpfs"));
        let storage = format!("file://{}", mnt.0.path().display());
        let p = Project::new(
            &[("prod", "guarded", src.url())],
            &format!("[backups]\nstorage = \"{storage}\"\n"),
        );
        let (code, _, err) = p.json(&["backup", "create", "prod"]);
        assert_eq!(code, 4, "{err}");
        assert!(
            err.contains("No space left on device"),
            "names the cause: {err}"
        );
        let (_, list, _) = p.json(&["backup", "list"]);
        for m in list.as_array().unwrap() {
            assert_eq!(m["status"], "failed");
        }
        for e in std::fs::read_dir(mnt.0.path()).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(name.ends_with(".json"), "left behind {name}");
        }
    } else {
        // Without root: a file-size limit makes writes fail the same way.
        let p = Project::new(&[("prod", "guarded", src.url())], "");
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("shipsafe"));
        cmd.current_dir(p.dir.path())
            .args(["backup", "create", "prod"]);
        for (k, v) in &p.vars {
            cmd.env(k, v);
        }
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_FSIZE,
                    512 * 1024,
                    512 * 1024,
                )
                .map_err(std::io::Error::from)
            });
        }
        let out = cmd.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(4),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_nothing_published(&p, "");
    }
    assert_eq!(snapshot(src.url()).await, before, "the source is untouched");
}

#[tokio::test]
async fn read_only_storage_fails_cleanly() {
    if !nix::unistd::geteuid().is_root() {
        return; // covered by unwritable_storage_fails_cleanly without root
    }
    let (src, _) = src_and_dst().await;
    let mnt = Mounted(tmpfs("ro,size=1m").expect("root can mount a tmpfs"));
    let p = Project::new(
        &[("prod", "guarded", src.url())],
        &format!(
            "[backups]\nstorage = \"file://{}\"\n",
            mnt.0.path().display()
        ),
    );
    let (code, _, err) = p.json(&["backup", "create", "prod"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(std::fs::read_dir(mnt.0.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn catalog_is_rebuilt_from_storage_alone() {
    let (src, _) = src_and_dst().await;
    let p = Project::new(&[("prod", "guarded", src.url())], "");
    let a = create(&p, "prod");
    let b = create(&p, "prod");
    let (code, _, err) = p.json(&["backup", "verify", a["id"].as_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    std::fs::remove_file(p.dir.path().join(".shipsafe/state.db")).unwrap();
    let (code, list, _) = p.json(&["backup", "list"]);
    assert_eq!(code, 0);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [b["id"].as_str().unwrap(), a["id"].as_str().unwrap()]);
    assert_eq!(
        list[1]["verifications"][0]["ok"], true,
        "verification survives too"
    );
}

#[tokio::test]
async fn unknown_backup_id_is_a_usage_error() {
    let src = TestDb::new().await;
    let p = Project::new(&[("prod", "guarded", src.url())], "");
    let (code, _, err) = p.json(&["backup", "verify", "prod-20200101T000000Z-0000"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("backup list"), "{err}");
    assert!(Path::new(&p.dir.path().join("shipsafe.toml")).exists());
}

#[tokio::test]
async fn prune_dry_run_then_prune_keeps_the_newest_verified() {
    let src = TestDb::new().await;
    load_sample(src.url()).await;
    let p = Project::new(
        &[("prod", "guarded", src.url())],
        "[backups]\nretention = { keep_last = 1, keep_daily = 0, keep_monthly = 0 }\n",
    );
    let ids: Vec<String> = (0..4)
        .map(|_| create(&p, "prod")["id"].as_str().unwrap().to_string())
        .collect();
    let (code, _, err) = p.json(&["backup", "verify", &ids[0]]);
    assert_eq!(code, 0, "{err}");

    let (code, dry, _) = p.json(&["backup", "prune", "--dry-run"]);
    assert_eq!(code, 0);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["deleted"].as_array().unwrap().len(), 0);
    let (_, list, _) = p.json(&["backup", "list"]);
    assert_eq!(
        list.as_array().unwrap().len(),
        4,
        "a dry run deletes nothing"
    );

    let (code, r, _) = p.json(&["backup", "prune", "prod"]);
    assert_eq!(code, 0);
    let mut deleted: Vec<String> = r["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    deleted.sort();
    let mut want = vec![ids[1].clone(), ids[2].clone()];
    want.sort();
    assert_eq!(deleted, want);
    let (_, list, _) = p.json(&["backup", "list"]);
    let left: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        left,
        [ids[3].as_str(), ids[0].as_str()],
        "newest, and the newest verified"
    );
    for id in &deleted {
        assert!(!p.backups_dir().join(format!("{id}.dump.zst")).exists());
    }
}

#[tokio::test]
async fn status_shows_last_backup_and_last_verified_restore() {
    let src = TestDb::new().await;
    load_sample(src.url()).await;
    let p = Project::new(&[("prod", "guarded", src.url())], "");
    let (_, st, _) = p.json(&["status", "prod"]);
    assert!(st["environments"][0]["last_backup"].is_null());
    assert!(st["environments"][0]["last_verified"].is_null());

    let a = create(&p, "prod")["id"].as_str().unwrap().to_string();
    let (code, _, err) = p.json(&["backup", "verify", &a]);
    assert_eq!(code, 0, "{err}");
    let b = create(&p, "prod")["id"].as_str().unwrap().to_string();
    let (code, st, err) = p.json(&["status", "prod"]);
    assert_eq!(code, 0, "{err}");
    let env = &st["environments"][0];
    assert_eq!(env["last_backup"]["id"], b.as_str(), "the newest backup");
    assert_eq!(
        env["last_verified"]["id"],
        a.as_str(),
        "only a restored backup counts as verified"
    );
    assert!(env["last_verified"]["restore_seconds"].as_f64().unwrap() > 0.0);
}

/// The restore must not interpret the SQL text pg_restore writes: a line
/// `COPY x FROM stdin;` inside a comment's string, and a line `\restrict`
/// inside a function body, are data like any other and come back unchanged.
#[tokio::test]
async fn sql_text_that_looks_like_restore_commands_restores_unchanged() {
    let src = TestDb::new().await;
    let dst = TestDb::new().await;
    src.client()
        .await
        .batch_execute(
            "create table notes (id int primary key, body text);
             insert into notes values (1, E'COPY notes FROM stdin;\\n\\\\.\\n'), (2, 'plain');
             comment on table notes is E'first line\\nCOPY notes FROM stdin;\\nlast line';
             create function tricky() returns text language sql as $f$ select '
\\restrict abc
\\unrestrict abc
COPY notes FROM stdin;
'::text $f$;",
        )
        .await
        .unwrap();
    let p = Project::new(
        &[("prod", "guarded", src.url()), ("copy", "open", dst.url())],
        "",
    );
    let m = create(&p, "prod");
    let id = m["id"].as_str().unwrap();
    let (code, run, err) = p.json(&["backup", "restore", id, "--to", "copy"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["outcome"], "restored");
    assert_eq!(snapshot(dst.url()).await, snapshot(src.url()).await);
    let q = "select tricky(), obj_description('notes'::regclass), string_agg(body, '|' order by id) from notes";
    let a = src.client().await.query_one(q, &[]).await.unwrap();
    let b = dst.client().await.query_one(q, &[]).await.unwrap();
    for i in 0..3 {
        assert_eq!(a.get::<_, String>(i), b.get::<_, String>(i), "column {i}");
    }
    assert!(b.get::<_, String>(0).contains("\\restrict abc"));
}

/// The catalog is keyed by the database backed up, not only by the
/// environment's name: after the URL is pointed at another database,
/// `status` no longer shows the old database's backup as this one's.
#[tokio::test]
async fn status_does_not_show_another_databases_backup_as_the_environments() {
    let old = TestDb::new().await;
    let new = TestDb::new().await;
    let mut p = Project::new(&[("staging", "guarded", old.url())], "");
    let (code, _, err) = p.json(&["backup", "create", "staging"]);
    assert_eq!(code, 0, "{err}");
    let (_, st, _) = p.json(&["status", "staging"]);
    assert!(st["environments"][0]["last_backup"].is_object(), "{st}");
    p.vars = vec![("STAGING_URL".into(), new.url().expose().to_string())];
    let (code, st, err) = p.json(&["status", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert!(st["environments"][0]["last_backup"].is_null(), "{st}");
    assert_eq!(
        st["environments"][0]["backups_of_another_database"], 1,
        "{st}"
    );
}
