//! `shipsafe runbook ENV`: its "Without shipsafe" commands are run as
//! written, with `sh`, on a machine where shipsafe is not on PATH, into an
//! empty database, from local storage and from S3 (a local `moto_server`),
//! and the restored database is compared with the one backed up.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::moto::Moto;
use common::{Project, load_sample, snapshot, write};
use shipsafe_testkit::TestDb;

/// The shell block of the runbook's "Without shipsafe" section.
fn manual_block(book: &str) -> String {
    let section = book
        .split("## Without shipsafe")
        .nth(1)
        .unwrap_or_else(|| panic!("no \"Without shipsafe\" section: {book}"));
    let start = section.find("```sh\n").unwrap() + "```sh\n".len();
    let len = section[start..].find("```").unwrap();
    section[start..start + len].to_string()
}

/// PATH for a plain machine: the folders of the current PATH that hold no
/// `shipsafe`, after the folder of the server's `pg_restore`.
fn plain_path() -> String {
    let bins = shipsafe_pg::PgBinaries::find(None, &["pg_restore"]).unwrap();
    let mut dirs: Vec<PathBuf> = vec![bins.path("pg_restore").parent().unwrap().to_path_buf()];
    for d in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if !d.join("shipsafe").exists() {
            dirs.push(d);
        }
    }
    std::env::join_paths(dirs)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Runs `block` with `sh` in a new folder, with only `vars` (and a plain
/// PATH) in its environment.
fn run_block(block: &str, vars: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("restore.sh");
    std::fs::write(&script, block).unwrap();
    let path = plain_path();
    let mut cmd = Command::new("sh");
    cmd.arg(&script)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", &path)
        .env("HOME", dir.path());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let check = Command::new("sh")
        .args(["-c", "command -v shipsafe"])
        .env_clear()
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(!check.status.success(), "shipsafe is on PATH: {path}");
    cmd.output().unwrap()
}

fn project(toml_backups: &str, src: &TestDb) -> Project {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "shipsafe.toml",
        &format!(
            "[environments.staging]\ndatabase_url = \"${{STAGING_DATABASE_URL}}\"\nprotection = \"guarded\"\n\n\
             [[checks]]\nname = \"an admin\"\nsql = \"select count(*) from users\"\nexpect = \">= 1\"\n\n{toml_backups}"
        ),
    );
    Project {
        dir,
        vars: vec![(
            "STAGING_DATABASE_URL".into(),
            src.url().expose().to_string(),
        )],
    }
}

/// Backs staging up, proves the backup, writes the runbook and returns it.
fn backup_and_runbook(p: &Project) -> (String, String) {
    let (code, m, err) = p.json(&["backup", "create", "staging"]);
    assert_eq!(code, 0, "{err}");
    let id = m["id"].as_str().unwrap().to_string();
    let (code, _, err) = p.json(&["backup", "verify", &id]);
    assert_eq!(code, 0, "{err}");
    let (code, r, err) = p.json(&["runbook", "staging"]);
    assert_eq!(code, 0, "{err}");
    let book = std::fs::read_to_string(r["path"].as_str().unwrap()).unwrap();
    (id, book)
}

fn assert_ran(out: &std::process::Output, block: &str) {
    assert!(
        out.status.success(),
        "the runbook's commands failed:\n{block}\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn runbook_restore_without_shipsafe_from_local_storage() {
    let src = TestDb::new().await;
    load_sample(src.url()).await;
    let empty = TestDb::new().await;
    let p = project("", &src);
    let (id, book) = backup_and_runbook(&p);
    let block = manual_block(&book);
    // The environment's own variable, never one it does not name.
    assert!(block.contains("\"$STAGING_DATABASE_URL\""), "{block}");
    assert!(!block.contains("$DATABASE_URL"), "{block}");
    assert!(!block.contains("file://"), "{block}");
    assert!(block.contains(&id), "{block}");

    // DATABASE_URL names the source: the block must not read it.
    let out = run_block(
        &block,
        &[
            ("STAGING_DATABASE_URL", empty.url().expose()),
            ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"),
        ],
    );
    assert_ran(&out, &block);
    assert_eq!(snapshot(empty.url()).await, snapshot(src.url()).await);
}

#[tokio::test]
async fn runbook_restore_without_shipsafe_from_s3_storage() {
    let moto = Moto::start();
    moto.create_bucket("runbook-test");
    let src = TestDb::new().await;
    load_sample(src.url()).await;
    let empty = TestDb::new().await;
    let mut p = project(
        &format!(
            "[backups]\nstorage = \"s3://runbook-test/team/app\"\ns3_endpoint = \"http://127.0.0.1:{}\"\ns3_region = \"eu-west-1\"\ns3_allow_http = true\n",
            moto.port
        ),
        &src,
    );
    p.vars.push(("AWS_ACCESS_KEY_ID".into(), "testing".into()));
    p.vars
        .push(("AWS_SECRET_ACCESS_KEY".into(), "testing-secret".into()));
    let (id, book) = backup_and_runbook(&p);
    let block = manual_block(&book);
    assert!(block.contains("\"$STAGING_DATABASE_URL\""), "{block}");
    assert!(
        block.contains(&format!("runbook-test/team/app/{id}.dump.zst")),
        "{block}"
    );
    // No AWS CLI: a plain machine has curl.
    assert!(!block.contains("aws s3"), "{block}");
    assert!(!block.contains("testing-secret"), "{block}");

    let out = run_block(
        &block,
        &[
            ("STAGING_DATABASE_URL", empty.url().expose()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing-secret"),
        ],
    );
    assert_ran(&out, &block);
    assert_eq!(snapshot(empty.url()).await, snapshot(src.url()).await);
    drop(moto);
}
