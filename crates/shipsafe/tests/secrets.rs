//! A known password never appears in anything shipsafe prints or writes,
//! whichever command runs, in text or JSON, with or without -vv, and on
//! success or failure paths.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{shipsafe, write};
use shipsafe_testkit::TestDb;

const SECRET: &str = "Sup3r-S3cret-PW-4711";

fn all_files_text(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            text.push_str(&all_files_text(&p));
        } else {
            text.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
        }
    }
    text
}

fn with_password(url: &str, pw: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap();
            format!("{scheme}://{user}:{pw}@{host}")
        }
        None => format!("{scheme}://postgres:{pw}@{rest}"),
    }
}

#[tokio::test]
async fn password_never_printed_or_stored() {
    let db = TestDb::new().await;
    // The test server trusts local connections, so a URL with a password still
    // connects: success paths are exercised, not only errors.
    let reachable = with_password(db.url().expose(), SECRET);
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "shipsafe.toml",
        &format!(
            r#"
[environments.prod]
database_url = "${{PROD_URL}}"
protection = "protected"

[environments.staging]
database_url = "postgres://app:${{DB_PASSWORD}}@127.0.0.1:1/app?connect_timeout=2"
protection = "guarded"

[environments.local]
database_url = "postgres://app:{SECRET}@127.0.0.1:1/app?password={SECRET}&connect_timeout=2"
protection = "open"

[environments.kv]
database_url = "host=127.0.0.1 port=1 user=app password={SECRET} dbname=app connect_timeout=2"
protection = "open"
"#
        ),
    );
    let runs: &[&[&str]] = &[
        &["status"],
        &["status", "prod"],
        &["status", "staging"],
        &["status", "local"],
        &["status", "kv"],
        &["-vv", "status"],
        &["--format", "json", "status"],
        &["--format", "json", "status", "staging"],
        &["log"],
        &["log", "verify"],
        &["--format", "json", "log"],
        &["status", "nosuchenv"],
        &["--format", "json", "demo"],
        &["init"],
        &["init", "--force"],
    ];
    let mut seen_reachable = false;
    for args in runs {
        let out = shipsafe(dir.path())
            .env("PROD_URL", &reachable)
            .env("DB_PASSWORD", SECRET)
            .args(*args)
            .output()
            .unwrap();
        let all = format!("{}{}", common::stdout(&out), common::stderr(&out));
        assert!(
            !all.contains(SECRET),
            "`shipsafe {}` printed the password:\n{all}",
            args.join(" ")
        );
        if args == &["status", "prod"] {
            assert_eq!(common::code(&out), 0, "{all}");
            assert!(all.contains("***"), "the masked URL is shown: {all}");
            seen_reachable = true;
        }
    }
    assert!(seen_reachable);
    assert!(
        dir.path().join(".shipsafe/state.db").is_file(),
        "init recorded an audit entry"
    );
    assert!(
        !all_files_text(&dir.path().join(".shipsafe")).contains(SECRET),
        "the state folder holds the password"
    );
}

/// `-vv` shows what shipsafe does, never the masking key nor row data (the
/// database driver's own debug output carries statements and parameters).
#[tokio::test]
async fn verbose_output_never_shows_the_mask_key_or_rows() {
    let prod = TestDb::new().await;
    let staging = TestDb::new().await;
    prod.client()
        .await
        .batch_execute(
            "create table users (id int primary key, email text not null);
             insert into users select g, 'secret-person' || g || '@real.example' from generate_series(1, 20) g;",
        )
        .await
        .unwrap();
    let key = "very-secret-mask-key-0042";
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "shipsafe.toml",
        "[environments.prod]\ndatabase_url = \"${PROD_URL}\"\nprotection = \"guarded\"\n\
         [environments.staging]\ndatabase_url = \"${STAGING_URL}\"\nprotection = \"open\"\n\
         [mask]\n\"users.email\" = \"email\"\n",
    );
    let out = shipsafe(dir.path())
        .args(["-vv", "clone", "prod", "staging", "--mask"])
        .env("PROD_URL", prod.url().expose())
        .env("STAGING_URL", staging.url().expose())
        .env("SHIPSAFE_MASK_KEY", key)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("DEBUG") || err.contains("INFO"),
        "-vv printed nothing: {err}"
    );
    let all = format!(
        "{err}{}{}",
        String::from_utf8_lossy(&out.stdout),
        all_files_text(dir.path())
    );
    assert!(!all.contains(key), "the mask key was printed");
    assert!(!all.contains("secret-person"), "row data was printed");
}
