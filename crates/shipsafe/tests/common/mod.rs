//! Helpers for driving the built `shipsafe` binary.
#![allow(dead_code, clippy::unwrap_used)]

pub mod fidelity;
pub mod moto;

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;

/// A session on `url` holding the migration lock a shipsafe run takes, as
/// a second run in progress would.
pub async fn hold_migration_lock(url: &shipsafe_config::DbUrl) -> tokio_postgres::Client {
    let holder = shipsafe_pg::connect(url).await.unwrap();
    holder
        .execute(
            "select pg_advisory_lock($1)",
            &[&shipsafe_migrate::history::LOCK_KEY],
        )
        .await
        .unwrap();
    holder
}

/// The binary with a clean environment: no inherited shipsafe settings.
pub fn shipsafe(cwd: &Path) -> Command {
    let mut cmd = Command::cargo_bin("shipsafe").unwrap();
    cmd.current_dir(cwd)
        .env_remove("SHIPSAFE_CONFIG")
        .env_remove("SHIPSAFE_STATE_DIR")
        .env_remove("SHIPSAFE_FORMAT")
        .env_remove("SHIPSAFE_LOG")
        .env_remove("DATABASE_URL")
        .env_remove("LOCAL_DATABASE_URL");
    cmd
}

pub fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Parses stdout as exactly one JSON document.
pub fn json(o: &Output) -> serde_json::Value {
    let text = stdout(o);
    let mut stream = serde_json::Deserializer::from_str(&text).into_iter::<serde_json::Value>();
    let first = stream
        .next()
        .unwrap_or_else(|| panic!("no JSON on stdout; stderr: {}", stderr(o)))
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text}"));
    assert!(
        stream.next().is_none(),
        "more than one JSON document on stdout: {text}"
    );
    first
}

/// What a database holds, for before/after comparisons: its schema as
/// `pg_dump --schema-only` prints it and the row count of every table.
/// shipsafe's own bookkeeping (schema `shipsafe`) is left out.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub schema: String,
    pub rows: Vec<(String, i64)>,
}

/// `pg_dump --schema-only ARGS` of `url`, with strings always written the
/// standard way (whatever the database's own default).
pub fn schema_dump(url: &shipsafe_config::DbUrl, args: &[String]) -> String {
    let bins = shipsafe_pg::PgBinaries::find(None, &["pg_dump"]).unwrap();
    let out = std::process::Command::new(bins.path("pg_dump"))
        .env("PGOPTIONS", "-c standard_conforming_strings=on")
        .arg("--schema-only")
        .args(args)
        .arg(format!("--dbname={}", url.expose()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub async fn snapshot(url: &shipsafe_config::DbUrl) -> Snapshot {
    let text = schema_dump(
        url,
        &[
            "--no-owner".into(),
            "--no-privileges".into(),
            "--exclude-schema=shipsafe".into(),
        ],
    );
    let schema = text
        .lines()
        .filter(|l| {
            !l.starts_with("--") && !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let client = shipsafe_pg::connect(url).await.unwrap();
    let tables = client
        .query(
            "select format('%I.%I', schemaname, tablename) from pg_tables \
             where schemaname not in ('pg_catalog', 'information_schema', 'shipsafe') order by 1",
            &[],
        )
        .await
        .unwrap();
    let mut rows = Vec::new();
    for t in tables {
        let name: String = t.get(0);
        let n: i64 = client
            .query_one(&format!("select count(*) from {name}"), &[])
            .await
            .unwrap()
            .get(0);
        rows.push((name, n));
    }
    Snapshot { schema, rows }
}

/// Loads the demo's SME sample schema and data.
pub async fn load_sample(url: &shipsafe_config::DbUrl) {
    let client = shipsafe_pg::connect(url).await.unwrap();
    client
        .batch_execute(shipsafe_demo::SAMPLE_SQL)
        .await
        .unwrap();
}

/// A project folder whose environments point at the given URLs (through
/// variables, as a real project would).
pub struct Project {
    pub dir: tempfile::TempDir,
    pub vars: Vec<(String, String)>,
}

impl Project {
    /// `envs`: (name, protection, url). `extra`: more TOML.
    pub fn new(envs: &[(&str, &str, &shipsafe_config::DbUrl)], extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut toml = String::new();
        let mut vars = Vec::new();
        for (name, protection, url) in envs {
            let var = format!("{}_URL", name.to_uppercase());
            toml.push_str(&format!(
                "[environments.{name}]\ndatabase_url = \"${{{var}}}\"\nprotection = \"{protection}\"\n\n"
            ));
            vars.push((var, url.expose().to_string()));
        }
        toml.push_str(extra);
        write(dir.path(), "shipsafe.toml", &toml);
        Self { dir, vars }
    }

    pub fn cmd(&self) -> assert_cmd::Command {
        let mut c = shipsafe(self.dir.path());
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    /// Runs `shipsafe --format json ARGS`: (exit code, JSON, stderr).
    pub fn json(&self, args: &[&str]) -> (i32, serde_json::Value, String) {
        let out = self
            .cmd()
            .args(["--format", "json"])
            .args(args)
            .output()
            .unwrap();
        (code(&out), json(&out), stderr(&out))
    }

    /// Starts `shipsafe ARGS` without waiting for it (to signal or kill it).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("shipsafe"));
        cmd.current_dir(self.dir.path()).args(args);
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// [`Project::spawn`] with stdout and stderr kept for
    /// `wait_with_output`.
    pub fn spawn_capturing(&self, args: &[&str]) -> std::process::Child {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("shipsafe"));
        cmd.current_dir(self.dir.path()).args(args);
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn backups_dir(&self) -> std::path::PathBuf {
        self.dir.path().join(".shipsafe/backups")
    }
}

/// A `PG_BIN_DIR` whose `pg_dump` streams `bytes` of real output and then
/// dies of SIGKILL: pg_dump failing mid-stream, reproducibly.
pub fn pg_dump_dying_after(bytes: usize) -> tempfile::TempDir {
    let real = shipsafe_pg::PgBinaries::find(None, &["pg_dump", "pg_restore"]).unwrap();
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(real.path("pg_restore"), bin.path().join("pg_restore")).unwrap();
    let wrapper = bin.path().join("pg_dump");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\nif [ \"$1\" = --version ]; then exec '{0}' --version; fi\n'{0}' \"$@\" | head -c {bytes}\nkill -KILL $$\n",
            real.path("pg_dump").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    bin
}

/// Adds about `megabytes` of incompressible rows (md5 bytes) to `db`, so
/// archives are larger than the room a test leaves or span upload parts.
pub async fn add_noise(db: &shipsafe_testkit::TestDb, megabytes: u32) {
    db.client()
        .await
        .batch_execute(&format!(
            "create table noise as select g, decode(md5(g::text) || md5((g*7)::text), 'hex') b \
             from generate_series(1, {}) g",
            megabytes * 1024 * 1024 / 32
        ))
        .await
        .unwrap();
}

/// Waits (up to a minute) until `count_sql`, a `select count(*)` on
/// `client`, is above zero; panics naming `what` otherwise. For waiting on
/// a session of the process under test (a statement running, a lock wait).
pub async fn wait_for_sessions(client: &tokio_postgres::Client, count_sql: &str, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n: i64 = client.query_one(count_sql, &[]).await.unwrap().get(0);
        if n > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never happened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
