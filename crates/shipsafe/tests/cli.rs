//! The command line as a user drives it: precedence, exit codes, JSON
//! shapes, init, status, log and demo.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{code, json, shipsafe, stderr, stdout, write};
use shipsafe_state::{Actor, NewAuditEntry, StateStore};
use shipsafe_testkit::TestDb;

fn project(name: &str) -> String {
    format!("[project]\nname = \"{name}\"\n")
}

fn status_json(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> serde_json::Value {
    let mut cmd = shipsafe(cwd);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd
        .args(args)
        .args(["--format", "json", "status"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    json(&out)
}

#[test]
fn config_location_precedence_flag_env_walk_up() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "shipsafe.toml", &project("from-walk-up"));
    write(root, "env.toml", &project("from-env"));
    write(root, "flag.toml", &project("from-flag"));
    let nested = root.join("a/b");
    std::fs::create_dir_all(&nested).unwrap();
    let env = (
        "SHIPSAFE_CONFIG",
        root.join("env.toml").display().to_string(),
    );
    let flag = root.join("flag.toml").display().to_string();

    assert_eq!(status_json(&nested, &[], &[])["project"], "from-walk-up");
    assert_eq!(
        status_json(&nested, &[], &[(env.0, &env.1)])["project"],
        "from-env"
    );
    assert_eq!(
        status_json(&nested, &["--config", &flag], &[(env.0, &env.1)])["project"],
        "from-flag"
    );
}

#[test]
fn state_dir_precedence_flag_env_file_default() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    write(&root, "shipsafe.toml", "");
    let sd = |v: &serde_json::Value| v["state_dir"].as_str().unwrap().to_string();
    assert_eq!(
        sd(&status_json(&root, &[], &[])),
        root.join(".shipsafe").display().to_string()
    );
    write(
        &root,
        "shipsafe.toml",
        "[project]\nstate_dir = \"from-file\"\n",
    );
    assert_eq!(
        sd(&status_json(&root, &[], &[])),
        root.join("from-file").display().to_string()
    );
    let env = [("SHIPSAFE_STATE_DIR", "/tmp/from-env")];
    assert_eq!(sd(&status_json(&root, &[], &env)), "/tmp/from-env");
    assert_eq!(
        sd(&status_json(
            &root,
            &["--state-dir", "/tmp/from-flag"],
            &env
        )),
        "/tmp/from-flag"
    );
}

#[test]
fn format_precedence_flag_over_env() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "shipsafe.toml", "");
    let out = shipsafe(dir.path())
        .env("SHIPSAFE_FORMAT", "json")
        .arg("status")
        .output()
        .unwrap();
    json(&out);
    let out = shipsafe(dir.path())
        .env("SHIPSAFE_FORMAT", "json")
        .args(["--format", "text", "status"])
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("No environments configured"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn status_reports_reachable_and_unreachable_environments() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "shipsafe.toml",
        "[environments.app]\ndatabase_url = \"${APP_URL}\"\n\n\
         [environments.down]\ndatabase_url = \"postgres://app@127.0.0.1:1/app?connect_timeout=2\"\n\n\
         [environments.unset]\ndatabase_url = \"${NOT_SET_ANYWHERE}\"\nprotection = \"protected\"\n",
    );
    let run = |args: &[&str]| {
        shipsafe(dir.path())
            .env("APP_URL", db.url().expose())
            .args(["--format", "json", "status"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["app"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v = json(&out);
    let app = &v["environments"][0];
    assert_eq!(app["name"], "app");
    assert_eq!(app["protection"], "guarded", "the default protection");
    assert_eq!(app["reachable"], true);
    assert_eq!(app["database"], db.name());
    assert!(
        app["server_version"]
            .as_str()
            .unwrap()
            .starts_with(|c: char| c.is_ascii_digit())
    );
    assert!(app["size_bytes"].as_i64().unwrap() > 0);

    let out = run(&[]);
    assert_eq!(
        code(&out),
        1,
        "an unreachable environment is a problem found"
    );
    let v = json(&out);
    let envs = v["environments"].as_array().unwrap();
    assert_eq!(envs.len(), 3);
    assert_eq!(envs[1]["reachable"], false);
    assert!(
        envs[1]["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect to postgres://app@127.0.0.1:1/app")
    );
    assert!(
        envs[2]["error"]
            .as_str()
            .unwrap()
            .contains("NOT_SET_ANYWHERE")
    );

    let out = run(&["down"]);
    assert_eq!(code(&out), 1);
}

#[test]
fn init_writes_a_config_that_loads_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "prisma/migrations/20260101000000_init/migration.sql",
        "create table t (id int);",
    );
    write(dir.path(), ".gitignore", "node_modules\n");
    let out = shipsafe(dir.path())
        .args(["--format", "json", "init"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["migrations"]["tool"], "prisma");
    assert_eq!(v["gitignore_updated"], true);
    let cfg = std::fs::read_to_string(dir.path().join("shipsafe.toml")).unwrap();
    assert!(cfg.contains("tool = \"prisma\""), "{cfg}");
    assert!(cfg.contains("format = \"prisma\""), "{cfg}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".gitignore"))
            .unwrap()
            .matches(".shipsafe/")
            .count(),
        1
    );
    // The starter config loads: status works (environments are unresolved).
    let out = shipsafe(dir.path()).arg("status").output().unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stdout(&out).contains("LOCAL_DATABASE_URL"));

    // A second init refuses and leaves the file alone.
    write(dir.path(), "shipsafe.toml", "# edited by hand\n");
    let out = shipsafe(dir.path()).arg("init").output().unwrap();
    assert_eq!(code(&out), 64);
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("shipsafe.toml")).unwrap(),
        "# edited by hand\n"
    );
    let out = shipsafe(dir.path())
        .args(["init", "--force"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0);
    // init is recorded in the audit log.
    let out = shipsafe(dir.path())
        .args(["--format", "json", "log"])
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(v["entries"][0]["command"], "init");
}

/// The app reads DATABASE_URL (Flask, Django, Rails, Prisma): production
/// set there would be what every local command of the app reaches. `init`
/// points production at a variable of its own, for a Flask-Migrate project
/// and a native one, and says so.
#[tokio::test]
async fn init_points_production_at_its_own_variable_not_the_apps() {
    // What DATABASE_URL names on a developer's machine: the app's database.
    let app_db = TestDb::new().await;
    let production = TestDb::new().await;
    let layouts: [(&str, &[&str]); 2] = [
        (
            "flask_migrate",
            &["migrations/alembic.ini", "migrations/env.py"],
        ),
        ("native", &["migrations/20260101000000_init/up.sql"]),
    ];
    for (tool, files) in layouts {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            write(dir.path(), f, "");
        }
        let out = shipsafe(dir.path()).arg("init").output().unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let said = stdout(&out);
        assert!(
            said.contains("PRODUCTION_DATABASE_URL for production")
                && said.contains("not DATABASE_URL"),
            "{tool}: {said}"
        );
        let cfg = std::fs::read_to_string(dir.path().join("shipsafe.toml")).unwrap();
        let parsed = shipsafe_config::Config::parse(Path::new("shipsafe.toml"), &cfg).unwrap();
        assert_eq!(
            parsed
                .environment("production")
                .unwrap()
                .config
                .database_url
                .get_ref()
                .raw(),
            "${PRODUCTION_DATABASE_URL}",
            "{tool}: {cfg}"
        );
        if tool == "flask_migrate" {
            // The tool still gets each environment's URL where the app reads it.
            assert!(parsed.file().migrations.is_external(), "{cfg}");
            assert_eq!(parsed.file().migrations.url_env, "DATABASE_URL", "{cfg}");
        }
        let json_of = |out: &std::process::Output| {
            assert_eq!(code(out), 0, "{tool}: {}", stderr(out));
            json(out)
        };
        // Both set, as on a machine that runs the app and shipsafe: the
        // production backup is of production, not of the app's database.
        let out = shipsafe(dir.path())
            .env("DATABASE_URL", app_db.url().expose())
            .env("LOCAL_DATABASE_URL", app_db.url().expose())
            .env("PRODUCTION_DATABASE_URL", production.url().expose())
            .args(["--format", "json", "backup", "create", "production"])
            .output()
            .unwrap();
        assert_eq!(json_of(&out)["database"], production.name(), "{tool}");
        // DATABASE_URL alone never reaches production.
        let out = shipsafe(dir.path())
            .env("DATABASE_URL", app_db.url().expose())
            .env_remove("PRODUCTION_DATABASE_URL")
            .args(["backup", "create", "production"])
            .output()
            .unwrap();
        assert_eq!(code(&out), 78, "{tool}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("PRODUCTION_DATABASE_URL"),
            "{}",
            stderr(&out)
        );
    }
}

/// A guarded environment's rollback by restore needs `--confirm` as a
/// protected one's does; `rollback --help` says so.
#[tokio::test]
async fn rollback_help_says_guarded_restores_need_confirm_too() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "shipsafe.toml",
        "[environments.staging]\ndatabase_url = \"${STAGING_URL}\"\nprotection = \"guarded\"\n\n[migrations]\ndir = \"migrations\"\n",
    );
    write(
        dir.path(),
        "migrations/20260101000000_accounts/up.sql",
        "create table accounts (id bigint primary key);\n",
    );
    write(
        dir.path(),
        "migrations/20260101000000_accounts/down.sql",
        "drop table accounts;\n",
    );
    let run = |args: &[&str]| {
        shipsafe(dir.path())
            .env("STAGING_URL", db.url().expose())
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["deploy", "staging"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Not rehearsed: the rollback restores the pre-deploy backup, which a
    // person must confirm in a guarded environment.
    let out = run(&["rollback", "staging"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--confirm staging"),
        "{}",
        stderr(&out)
    );

    let out = run(&["rollback", "--help"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let help = stdout(&out);
    let confirm = help
        .split("--confirm <ENV>")
        .nth(1)
        .unwrap_or_else(|| panic!("{help}"));
    let confirm = confirm.split("\n  -").next().unwrap();
    assert!(
        confirm.contains("protected") && confirm.contains("guarded"),
        "{help}"
    );

    let out = run(&["rollback", "staging", "--confirm", "staging"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

fn seeded_state(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "shipsafe.toml",
        "[environments.prod]\ndatabase_url = \"${DATABASE_URL}\"\n[environments.staging]\ndatabase_url = \"${STAGING_URL}\"\n",
    );
    let mut store = StateStore::open(&dir.path().join(".shipsafe")).unwrap();
    for i in 1..=n {
        store
            .append_audit(&NewAuditEntry {
                actor: Actor {
                    os_user: "ops".into(),
                    ..Default::default()
                },
                command: "deploy".into(),
                env: Some(if i % 2 == 0 { "staging" } else { "prod" }.into()),
                outcome: "deployed".into(),
                backup_ids: vec![format!("backup-{i}")],
                run_id: Some(format!("run-{i}")),
                detail: serde_json::json!({}),
            })
            .unwrap();
    }
    dir
}

#[test]
fn log_lists_newest_first_with_filters() {
    let dir = seeded_state(5);
    let out = shipsafe(dir.path())
        .args(["--format", "json", "log"])
        .output()
        .unwrap();
    let v = json(&out);
    let seqs: Vec<i64> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [5, 4, 3, 2, 1]);
    let out = shipsafe(dir.path())
        .args([
            "--format", "json", "log", "--env", "staging", "--limit", "1",
        ])
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(v["entries"].as_array().unwrap().len(), 1);
    assert_eq!(v["entries"][0]["seq"], 4);
    let out = shipsafe(dir.path()).arg("log").output().unwrap();
    assert!(stdout(&out).contains("run-3") && stdout(&out).contains("backup-3"));
    let out = shipsafe(dir.path())
        .args(["log", "--env", "qa"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 64, "unknown environment");
}

#[test]
fn log_verify_passes_then_names_the_tampered_entry() {
    let tamperings = [
        (
            "edit",
            "update audit set outcome = 'rolled_back' where seq = 2",
            2,
        ),
        (
            "reorder",
            "update audit set seq = -1 where seq = 2; update audit set seq = 2 where seq = 3; \
             update audit set seq = 3 where seq = -1;",
            2,
        ),
        ("delete", "delete from audit where seq = 3", 3),
        ("delete newest", "delete from audit where seq = 4", 4),
    ];
    for (what, sql, broken) in tamperings {
        let dir = seeded_state(4);
        let out = shipsafe(dir.path())
            .args(["log", "verify"])
            .output()
            .unwrap();
        assert_eq!(code(&out), 0);
        assert!(stdout(&out).contains("intact: 4 entries"));

        let db = rusqlite::Connection::open(dir.path().join(".shipsafe/state.db")).unwrap();
        db.execute_batch(sql).unwrap();
        let out = shipsafe(dir.path())
            .args(["log", "verify"])
            .output()
            .unwrap();
        assert_eq!(code(&out), 1, "{what}");
        assert!(
            stdout(&out).contains(&format!("breaks at entry {broken}")),
            "{what}: {}",
            stdout(&out)
        );
        let out = shipsafe(dir.path())
            .args(["--format", "json", "log", "verify"])
            .output()
            .unwrap();
        assert_eq!(code(&out), 1);
        let v = json(&out);
        assert_eq!(v["ok"], false, "{what}");
        assert_eq!(v["problems"][0]["seq"], broken, "{what}");
    }
}

#[test]
fn missing_postgres_binaries_are_a_clear_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = shipsafe(dir.path())
        .env("PG_BIN_DIR", dir.path())
        .arg("demo")
        .output()
        .unwrap();
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    let msg = stderr(&out);
    assert!(msg.contains("`postgres`, `initdb` not found"), "{msg}");
    assert!(
        msg.contains(&dir.path().display().to_string()),
        "names where it looked: {msg}"
    );
    assert!(msg.contains("PG_BIN_DIR"), "says what to do: {msg}");
}

#[test]
fn log_without_state_is_empty_and_intact() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "shipsafe.toml", "");
    let out = shipsafe(dir.path()).arg("log").output().unwrap();
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("empty"));
    let out = shipsafe(dir.path())
        .args(["log", "verify"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0);
    assert!(
        !dir.path().join(".shipsafe").exists(),
        "read-only commands create no state"
    );
}

#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let out = shipsafe(dir.path()).arg("frobnicate").output().unwrap();
    assert_eq!(code(&out), 64);
    let out = shipsafe(dir.path())
        .args(["--format", "json", "frobnicate"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 64);
    assert_eq!(json(&out)["error"]["exit_code"], 64);
    let out = shipsafe(dir.path())
        .args(["status", "a", "b"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 64);
    let out = shipsafe(dir.path()).arg("--help").output().unwrap();
    assert_eq!(code(&out), 0);
    let help = stdout(&out);
    for listed in [
        "init",
        "demo",
        "status",
        "log",
        "backup",
        "new",
        "plan",
        "deploy",
        "lint",
        "verify",
        "rollback",
        "rehearse",
        "data",
        "wipe",
        "clone",
        "readiness",
        "runbook",
        "serve",
    ] {
        assert!(help.contains(listed), "{help}");
    }
}

#[test]
fn demo_builds_the_sample_database_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let out = shipsafe(dir.path())
        .env("TMPDIR", dir.path())
        .env("SHIPSAFE_SCRATCH_DIR", dir.path())
        .args(["--format", "json", "demo"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v = json(&out);
    let rows = |t: &str| {
        v["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["table"] == t)
            .unwrap()["rows"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(rows("users"), 50);
    assert_eq!(rows("tools"), 5);
    assert!(rows("tool_access") > 50);
    assert_eq!(v["status"]["environments"][0]["reachable"], true);
    // The tour: the broken deploy rolled back by restoring its backup, the
    // fixed one deployed to staging, then rehearsed and deployed to production.
    let tour = v["tour"].as_array().unwrap();
    assert_eq!(tour.len(), 3);
    assert_eq!(tour[0]["run"]["outcome"], "rolled_back");
    assert_eq!(tour[0]["exit_code"], 4);
    assert_eq!(tour[0]["run"]["report"]["rollback"]["method"], "restore");
    assert!(
        tour[0]["message"]
            .as_str()
            .unwrap()
            .contains("at least one active superadmin")
    );
    assert_eq!(tour[1]["run"]["outcome"], "deployed");
    assert_eq!(tour[2]["run"]["outcome"], "deployed");
    assert_eq!(
        tour[2]["command"],
        "shipsafe deploy production --confirm production"
    );
    let rehearsal = &tour[2]["run"]["report"]["rehearsal"];
    assert_eq!(rehearsal["verdict"], "safe");
    assert_eq!(rehearsal["round_trip"]["status"], "proven");
    assert_eq!(v["as_expected"], true);
    assert!(v["verified_backups"].as_u64().unwrap() >= 1);
    assert_eq!(v["audit_entries"], 3);
    assert_eq!(v["audit_chain_ok"], true);
    // The scorecard of production after the tour: its rehearsed, proven
    // deploy and its verified backup are measured as such.
    let card = &v["readiness"];
    assert_eq!(card["env"], "production");
    assert_eq!(card["items"].as_array().unwrap().len(), 46);
    let status_of = |id: &str| {
        card["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .map(|i| i["status"].as_str().unwrap().to_string())
    };
    assert_eq!(
        status_of("last-deploy-rehearsed").as_deref(),
        Some("pass"),
        "{card}"
    );
    assert_eq!(
        status_of("restore-drill-recent").as_deref(),
        Some("pass"),
        "{card}"
    );
    assert_eq!(
        status_of("runbook-current").as_deref(),
        Some("pass"),
        "{card}"
    );
    for env in v["status"]["environments"].as_array().unwrap() {
        assert_eq!(env["pending_migrations"], 0, "{env}");
    }
    // Its scratch cluster and demo project are gone; only the template cache stays.
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("shipsafe-cache-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// scripts/install puts a given binary (a release artifact built elsewhere:
/// no Rust needed) stripped into PREFIX/bin and says what it needs at run
/// time; bad arguments are clear errors.
#[test]
fn the_install_script_installs_a_prebuilt_binary() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install");
    let bin = assert_cmd::cargo::cargo_bin("shipsafe");
    let prefix = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("--binary")
        .arg(&bin)
        .arg("--prefix")
        .arg(prefix.path())
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(code(&out), 0, "{text}");
    let installed = prefix.path().join("bin/shipsafe");
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&installed).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o755);
    assert!(
        meta.len() < std::fs::metadata(&bin).unwrap().len(),
        "stripped"
    );
    let v = std::process::Command::new(&installed)
        .arg("--version")
        .output()
        .unwrap();
    assert!(stdout(&v).starts_with("shipsafe "), "{}", stdout(&v));
    assert!(text.contains("pg_dump"), "{text}");
    assert!(text.contains("glibc"), "{text}");

    let missing = std::process::Command::new("bash")
        .arg(&script)
        .args(["--binary", "/nonexistent/shipsafe", "--prefix"])
        .arg(prefix.path())
        .output()
        .unwrap();
    assert_eq!(code(&missing), 66, "{}", stderr(&missing));
    let bad = std::process::Command::new("bash")
        .arg(&script)
        .arg("--frobnicate")
        .output()
        .unwrap();
    assert_eq!(code(&bad), 64);
}
