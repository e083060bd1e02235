//! Backups in S3-compatible storage, against a real local server
//! (`moto_server` on 127.0.0.1), including the server going away.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::moto::Moto;
use common::{Project, load_sample, snapshot};
use shipsafe_testkit::TestDb;

fn s3_project(moto: &Moto, src: &TestDb, dst: &TestDb) -> Project {
    let mut p = Project::new(
        &[("prod", "guarded", src.url()), ("copy", "open", dst.url())],
        &format!(
            "[backups]\nstorage = \"s3://shipsafe-test/team/app\"\ns3_endpoint = \"{}\"\ns3_region = \"us-east-1\"\ns3_allow_http = true\n",
            moto.endpoint()
        ),
    );
    p.vars.push(("AWS_ACCESS_KEY_ID".into(), "testing".into()));
    p.vars
        .push(("AWS_SECRET_ACCESS_KEY".into(), "testing-secret-key".into()));
    p
}

#[tokio::test]
async fn backups_round_trip_through_s3_and_the_catalog_lives_there() {
    let mut moto = Moto::start();
    moto.create_bucket("shipsafe-test");
    let src = TestDb::new().await;
    load_sample(src.url()).await;
    let dst = TestDb::new().await;
    let p = s3_project(&moto, &src, &dst);

    let (code, m, err) = p.json(&["backup", "create", "prod"]);
    assert_eq!(code, 0, "{err}");
    let id = m["id"].as_str().unwrap().to_string();
    assert_eq!(
        m["location"],
        format!("s3://shipsafe-test/team/app/{id}.dump.zst")
    );

    let (code, v, err) = p.json(&["backup", "verify", &id]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["verifications"][0]["ok"], true);

    // No state folder: the catalog comes from the manifests in the bucket.
    std::fs::remove_dir_all(p.dir.path().join(".shipsafe")).unwrap();
    let (code, list, _) = p.json(&["backup", "list"]);
    assert_eq!(code, 0);
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["verifications"][0]["ok"], true);

    let (code, _, err) = p.json(&["backup", "restore", &id, "--to", "copy"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(snapshot(dst.url()).await, snapshot(src.url()).await);

    // The secret key never shows.
    let out = p.cmd().args(["-vv", "backup", "list"]).output().unwrap();
    let all = format!("{}{}", common::stdout(&out), common::stderr(&out));
    assert!(!all.contains("testing-secret-key"));

    // The server goes away: the next backup fails, saying why, quickly.
    moto.stop();
    let started = Instant::now();
    let (code, _, err) = p.json(&["backup", "create", "prod"]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("backup storage s3://shipsafe-test/team/app"),
        "{err}"
    );
    assert!(
        err.to_lowercase().contains("connect"),
        "names the cause: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
}

/// Object keys in a bucket, read straight from the server.
fn bucket_keys(moto: &Moto, bucket: &str) -> Vec<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", moto.port)).unwrap();
    write!(
        s,
        "GET /{bucket}?list-type=2 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        moto.port
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split("<Key>")
        .skip(1)
        .filter_map(|k| k.split("</Key>").next().map(str::to_string))
        .collect()
}

async fn noisy_db() -> TestDb {
    let src = TestDb::new().await;
    // Incompressible data: several 8 MiB upload parts.
    common::add_noise(&src, 32).await;
    src
}

#[tokio::test]
async fn pg_dump_dying_mid_upload_completes_no_s3_object() {
    let moto = Moto::start();
    moto.create_bucket("shipsafe-test");
    let src = noisy_db().await;
    let dst = TestDb::new().await;
    let p = s3_project(&moto, &src, &dst);
    // Dies after ~20 MB: at least two parts have been uploaded by then.
    let bin = common::pg_dump_dying_after(20 << 20);
    let out = p
        .cmd()
        .env("PG_BIN_DIR", bin.path())
        .args(["backup", "create", "prod"])
        .output()
        .unwrap();
    let err = common::stderr(&out);
    assert_eq!(common::code(&out), 4, "{err}");
    assert!(err.contains("killed by signal 9"), "{err}");
    let keys = bucket_keys(&moto, "shipsafe-test");
    assert!(
        keys.iter().all(|k| !k.ends_with(".dump.zst")),
        "an archive was published: {keys:?}"
    );
    assert_eq!(
        keys.len(),
        1,
        "only the record of the failed attempt: {keys:?}"
    );
    let (_, list, _) = p.json(&["backup", "list"]);
    assert_eq!(list[0]["status"], "failed");
}

#[tokio::test]
async fn s3_server_stopping_mid_upload_fails_promptly() {
    let mut moto = Moto::start();
    moto.create_bucket("shipsafe-test");
    let src = noisy_db().await;
    let dst = TestDb::new().await;
    let p = s3_project(&moto, &src, &dst);
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("shipsafe"));
    cmd.current_dir(p.dir.path())
        .args(["backup", "create", "prod"]);
    for (k, v) in &p.vars {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let running = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let the dump start streaming, then take the server away.
    std::thread::sleep(Duration::from_millis(500));
    moto.stop();
    let out = running.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("backup storage s3://shipsafe-test/team/app"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
}
