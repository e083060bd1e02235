//! TLS as managed providers require it, against a real cluster that accepts
//! only `hostssl` with a password, its certificate signed by a test CA and
//! naming only `localhost`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Project, code, stderr, stdout, write};
use shipsafe_config::DbUrl;
use shipsafe_pg::{PgError, connect};
use shipsafe_testkit::servers::{TLS_PASSWORD, TlsCluster, encode};

async fn tls_version(url: &str) -> Result<Option<String>, PgError> {
    let c = connect(&DbUrl::new(url)).await?;
    Ok(c.query_one(
        "select version from pg_stat_ssl where pid = pg_backend_pid() and ssl",
        &[],
    )
    .await
    .ok()
    .map(|r| r.get(0)))
}

#[tokio::test]
async fn sslmodes_behave_as_libpq() {
    let s = tokio::task::spawn_blocking(TlsCluster::start)
        .await
        .unwrap();
    let ca = s.ca.ca().display().to_string();

    // Encrypted without a certificate check (self-signed providers).
    for mode in ["require", "prefer", "allow"] {
        let v = tls_version(&s.url("127.0.0.1", &format!("sslmode={mode}")))
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(v.is_some_and(|v| v.starts_with("TLS")), "{mode}");
    }
    // The default is prefer: encrypted when offered.
    assert!(
        tls_version(&s.url("127.0.0.1", ""))
            .await
            .unwrap()
            .is_some()
    );
    // Chain and name.
    assert!(
        tls_version(&s.url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}")
        ))
        .await
        .unwrap()
        .is_some()
    );
    // The certificate does not name 127.0.0.1: verify-full refuses,
    // verify-ca (chain only) accepts.
    let e = tls_version(&s.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("does not name this host"), "{e}");
    assert!(
        !e.contains(TLS_PASSWORD) && !e.contains(&encode(TLS_PASSWORD)),
        "{e}"
    );
    tls_version(&s.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")))
        .await
        .unwrap();
    // A certificate from another CA is refused, even by verify-ca.
    let other = tempfile::tempdir().unwrap();
    let other_ca = shipsafe_testkit::servers::TestCa::new(other.path(), "DNS:localhost");
    let e = tls_version(&s.url(
        "localhost",
        &format!("sslmode=verify-ca&sslrootcert={}", other_ca.ca().display()),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("not signed by the root certificate"), "{e}");
    // verify-full with no root certificate anywhere: a configuration error.
    let e = tls_version(&s.url("localhost", "sslmode=verify-full"))
        .await
        .unwrap_err();
    assert!(e.is_installation(), "{e}");
    // The server accepts only TLS: disable cannot connect, and says why.
    let e = tls_version(&s.url("127.0.0.1", "sslmode=disable"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("accepts only encrypted connections"), "{e}");
}

fn project(url: &str, protection: &str, extra: &str) -> Project {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "shipsafe.toml",
        &format!(
            "[environments.production]\ndatabase_url = \"${{DATABASE_URL}}\"\nprotection = \"{protection}\"\n{extra}\n"
        ),
    );
    Project {
        dir,
        vars: vec![("DATABASE_URL".into(), url.to_string())],
    }
}

/// Every process's command line, sampled until `stop` is set.
fn sample_cmdlines(stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Vec<String> {
    let mut seen = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                if let Ok(c) = std::fs::read(e.path().join("cmdline"))
                    && !c.is_empty()
                {
                    seen.push(String::from_utf8_lossy(&c).replace('\0', " "));
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    seen
}

#[tokio::test]
async fn status_backup_and_deploy_over_verified_tls_never_show_the_password() {
    let s = tokio::task::spawn_blocking(TlsCluster::start)
        .await
        .unwrap();
    let url = s.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", s.ca.ca().display()),
    );
    let admin = connect(&DbUrl::new(&url)).await.unwrap();
    admin
        .batch_execute(
            "create table t (id int primary key); insert into t select generate_series(1, 500)",
        )
        .await
        .unwrap();
    let p = project(&url, "protected", "");
    write(
        p.dir.path(),
        "migrations/1_add/up.sql",
        "alter table t add column note text;",
    );
    write(
        p.dir.path(),
        "migrations/1_add/down.sql",
        "alter table t drop column note;",
    );

    let st = p.cmd().args(["status", "production"]).output().unwrap();
    assert_eq!(code(&st), 0, "{}", stderr(&st));
    assert!(
        stdout(&st).contains("production: tls: on (TLSv1.3)"),
        "{}",
        stdout(&st)
    );

    // pg_dump gets the password from its environment: no command line
    // shows it while the backup runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || sample_cmdlines(stop))
    };
    let b = p
        .cmd()
        .args(["backup", "create", "production"])
        .output()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let cmdlines = sampler.join().unwrap();
    assert_eq!(code(&b), 0, "{}", stderr(&b));
    assert!(
        cmdlines.iter().any(|c| c.contains("pg_dump")),
        "the sampler never saw pg_dump: the check proves nothing"
    );
    for c in &cmdlines {
        assert!(
            !c.contains("S3cr") && !c.contains(&encode(TLS_PASSWORD)),
            "{c}"
        );
    }

    let d = p
        .cmd()
        .args(["deploy", "production", "--confirm", "production"])
        .output()
        .unwrap();
    assert_eq!(code(&d), 0, "{}{}", stdout(&d), stderr(&d));
    let n: i64 = admin
        .query_one(
            "select count(*) from information_schema.columns where table_name = 't' and column_name = 'note'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);

    // Nothing shipsafe printed or wrote holds the password, raw or encoded.
    let mut texts = vec![
        stdout(&st),
        stderr(&st),
        stdout(&b),
        stderr(&b),
        stdout(&d),
        stderr(&d),
    ];
    for e in walk(p.dir.path()) {
        texts.push(String::from_utf8_lossy(&std::fs::read(e).unwrap()).into_owned());
    }
    for t in texts {
        assert!(
            !t.contains("S3cr@t") && !t.contains(&encode(TLS_PASSWORD)),
            "secret in: {t:.300}"
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn wrong_host_name_and_disable_fail_clearly() {
    let s = tokio::task::spawn_blocking(TlsCluster::start)
        .await
        .unwrap();
    let ca = s.ca.ca().display().to_string();
    let p = project(
        &s.url(
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        "guarded",
        "",
    );
    let o = p
        .cmd()
        .args(["backup", "create", "production"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("does not name this host"),
        "{}",
        stderr(&o)
    );
    let p = project(&s.url("127.0.0.1", "sslmode=disable"), "guarded", "");
    let o = p
        .cmd()
        .args(["backup", "create", "production"])
        .output()
        .unwrap();
    // The URL's TLS setting is what is wrong: a configuration error.
    assert_eq!(code(&o), 78, "{}", stderr(&o));
    assert!(stderr(&o).contains("only encrypted"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("S3cr"));
}

/// A protected environment on another host must not be reached in clear.
/// `hostaddr` sends the connection to the local plaintext test server while
/// the host name is a remote one, as a real remote database would be named.
#[tokio::test]
async fn protected_plaintext_to_a_remote_host_is_refused() {
    let db = shipsafe_testkit::TestDb::new().await;
    let info = db.url().conninfo().unwrap();
    let url = format!(
        "postgres://{}@db.example.test:{}/{}?hostaddr=127.0.0.1&sslmode=disable",
        info.user.as_deref().unwrap_or("postgres"),
        info.port(),
        db.name()
    );
    let p = project(&url, "protected", "");
    let o = p.cmd().args(["status", "production"]).output().unwrap();
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("production: tls: OFF"),
        "{}",
        stdout(&o)
    );
    let o = p
        .cmd()
        .args(["backup", "create", "production"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 78, "{}", stderr(&o));
    assert!(stderr(&o).contains("not encrypted"), "{}", stderr(&o));
    assert!(!p.backups_dir().exists() || std::fs::read_dir(p.backups_dir()).unwrap().count() == 0);
    // Said explicitly in the config, it is allowed.
    let p = project(&url, "protected", "allow_plaintext = true");
    let o = p
        .cmd()
        .args(["backup", "create", "production"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // The same URL on a guarded environment is not refused.
    let p = project(&url, "guarded", "");
    let o = p
        .cmd()
        .args(["backup", "create", "production"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// `sslcert`/`sslkey`: a role that logs in with a client certificate only,
/// for shipsafe's own connections and for pg_dump.
#[tokio::test]
async fn client_certificates_log_in_and_reach_pg_dump() {
    let s = tokio::task::spawn_blocking(TlsCluster::start)
        .await
        .unwrap();
    let ca = s.ca.ca().display().to_string();
    let admin = connect(&DbUrl::new(s.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    )))
    .await
    .unwrap();
    admin
        .batch_execute("create role certuser login superuser; create table t (id int); insert into t values (1)")
        .await
        .unwrap();
    let ca_dir = s.ca.dir.clone();
    let (crt, key) = tokio::task::spawn_blocking(move || {
        shipsafe_testkit::servers::TestCa { dir: ca_dir }.client("certuser")
    })
    .await
    .unwrap();
    let url = format!(
        "postgresql://certuser@localhost:{}/postgres?sslmode=verify-full&sslrootcert={ca}&sslcert={}&sslkey={}",
        s.port,
        crt.display(),
        key.display()
    );
    let c = connect(&DbUrl::new(&url)).await.unwrap();
    let who: String = c
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "certuser");
    // Without the certificate the same role is refused.
    let without = format!(
        "postgresql://certuser@localhost:{}/postgres?sslmode=verify-full&sslrootcert={ca}",
        s.port
    );
    assert!(connect(&DbUrl::new(&without)).await.is_err());
    let p = project(&url, "guarded", "");
    let o = p
        .cmd()
        .args(["backup", "create", "production"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// A wrong password (the TLS cluster authenticates with scram-sha-256) and
/// a role the server does not have (the test server trusts 127.0.0.1, so
/// there a password is never checked): the server refuses the login, which
/// is a configuration error (exit 78) before anything started, not a
/// failed-and-rolled-back operation (exit 4).
#[tokio::test]
async fn a_refused_login_stops_deploy_as_a_configuration_error() {
    let s = tokio::task::spawn_blocking(TlsCluster::start)
        .await
        .unwrap();
    let wrong_password = format!(
        "postgresql://postgres:not-the-password@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        s.port,
        s.ca.ca().display()
    );
    let server = std::env::var("SHIPSAFE_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let info = DbUrl::new(&server).conninfo().unwrap();
    let host = info
        .hosts
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1".into());
    let port = info.ports.first().copied().unwrap_or(5432);
    let no_such_role = if host.starts_with('/') {
        format!("postgres://shipsafe_no_such_role_7f3a:whatever@/postgres?host={host}&port={port}")
    } else {
        format!("postgres://shipsafe_no_such_role_7f3a:whatever@{host}:{port}/postgres")
    };
    for (url, said) in [
        (wrong_password.as_str(), "password authentication failed"),
        (no_such_role.as_str(), "does not exist"),
    ] {
        let p = project(url, "guarded", "");
        write(
            p.dir.path(),
            "migrations/1_add/up.sql",
            "create table t (id int primary key);",
        );
        write(p.dir.path(), "migrations/1_add/down.sql", "drop table t;");
        let out = p
            .cmd()
            .args(["--format", "json", "deploy", "production"])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(code(&out), 78, "{url}: {}{err}", stdout(&out));
        let v = common::json(&out);
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("cannot log in"), "{v}");
        assert!(message.contains(said), "{v}");
        assert!(message.contains("nothing was started"), "{v}");
        assert!(
            !message.contains("not-the-password") && !message.contains("whatever"),
            "{v}"
        );
        // Nothing started: no backup was taken.
        let backups = p.dir.path().join(".shipsafe/backups");
        assert!(
            std::fs::read_dir(&backups).map_or(true, |mut d| d.next().is_none()),
            "{url}: a backup was taken"
        );
    }
}
