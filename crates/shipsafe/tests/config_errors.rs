//! Every class of configuration error: exit 78 (64 for a wrong environment
//! name on the command line) and a message naming file:line:col and the fix.
//! Messages are snapshots, so wording changes are reviewed.
#![allow(clippy::unwrap_used)]

mod common;

use common::{code, shipsafe, stderr, write};

/// Runs `shipsafe ARGS` in a project whose shipsafe.toml is `config` and
/// returns (exit code, stderr with the temp path replaced by [DIR]).
fn run(config: &str, args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "shipsafe.toml", config);
    let out = shipsafe(dir.path()).args(args).output().unwrap();
    let root = dir.path().display().to_string();
    (code(&out), stderr(&out).replace(&root, "[DIR]"))
}

fn config_error(name: &str, config: &str) {
    config_error_with(name, config, &["status"]);
}

fn config_error_with(name: &str, config: &str, args: &[&str]) {
    let (code, msg) = run(config, args);
    assert_eq!(code, 78, "{name}: {msg}");
    insta::assert_snapshot!(name, msg);
}

const ENV: &str = "[environments.prod]\ndatabase_url = \"${DATABASE_URL}\"\n";

#[test]
fn toml_syntax() {
    config_error("toml_syntax", "[project\nname = \"x\"\n");
}

#[test]
fn unknown_top_level_table() {
    config_error("unknown_top_level_table", "[projekt]\nname = \"x\"\n");
}

#[test]
fn unknown_key_in_environment() {
    config_error(
        "unknown_key_in_environment",
        "[environments.prod]\ndatabase_url = \"${DATABASE_URL}\"\nprotecton = \"protected\"\n",
    );
}

#[test]
fn wrong_type() {
    config_error(
        "wrong_type",
        &format!("{ENV}[migrations]\nlock_retries = \"five\"\n"),
    );
}

#[test]
fn unknown_protection_level() {
    config_error(
        "unknown_protection_level",
        "[environments.prod]\ndatabase_url = \"${DATABASE_URL}\"\nprotection = \"paranoid\"\n",
    );
}

#[test]
fn bad_duration() {
    config_error(
        "bad_duration",
        &format!("{ENV}[migrations]\nlock_timeout = \"3 parsecs\"\n"),
    );
}

#[test]
fn bad_check_expectation() {
    config_error(
        "bad_check_expectation",
        &format!("{ENV}[[checks]]\nname = \"admins\"\nsql = \"select 1\"\nexpect = \"== 1\"\n"),
    );
}

#[test]
fn bad_window() {
    config_error(
        "bad_window",
        "[environments.prod]\ndatabase_url = \"${DATABASE_URL}\"\nwindow = \"Sat 22:00-02:00 Mars/Olympus\"\n",
    );
}

#[test]
fn literal_password_in_guarded_url() {
    config_error(
        "literal_password_in_guarded_url",
        "[environments.staging]\ndatabase_url = \"postgres://app:hunter2@db/app\"\nprotection = \"guarded\"\n",
    );
}

#[test]
fn literal_password_parameter_in_protected_url() {
    config_error(
        "literal_password_parameter_in_protected_url",
        "[environments.prod]\nprotection = \"protected\"\ndatabase_url = \"postgres://db/app?user=app&password=hunter2\"\n",
    );
}

#[test]
fn literal_password_is_allowed_when_open() {
    let (code, msg) = run(
        "[environments.local]\ndatabase_url = \"postgres://app:devpw@127.0.0.1:1/app\"\nprotection = \"open\"\n",
        &["status"],
    );
    assert_eq!(code, 1, "unreachable, but the config is valid: {msg}");
    assert!(!msg.contains("devpw"), "{msg}");
}

#[test]
fn missing_variable_when_used() {
    config_error_with("missing_variable_when_used", ENV, &["status", "prod"]);
}

#[test]
fn bad_variable_reference_syntax() {
    config_error(
        "bad_variable_reference_syntax",
        "[environments.prod]\ndatabase_url = \"${DATABASE_URL\"\n",
    );
}

#[test]
fn rehearsal_clone_names_unknown_environment() {
    config_error(
        "rehearsal_clone_names_unknown_environment",
        &format!("{ENV}[rehearsal]\nclone = \"env:staging\"\n"),
    );
}

#[test]
fn bad_rehearsal_clone() {
    config_error(
        "bad_rehearsal_clone",
        &format!("{ENV}[rehearsal]\nclone = \"snapshot\"\n"),
    );
}

#[test]
fn mask_key_without_table() {
    config_error(
        "mask_key_without_table",
        &format!("{ENV}[mask]\nemail = \"email\"\n"),
    );
}

#[test]
fn unknown_mask_kind() {
    config_error(
        "unknown_mask_kind",
        &format!("{ENV}[mask]\n\"users.email\" = \"scramble\"\n"),
    );
}

#[test]
fn external_migrations_without_pending() {
    config_error(
        "external_migrations_without_pending",
        &format!("{ENV}[migrations]\nup = \"alembic upgrade head\"\n"),
    );
}

#[test]
fn command_tool_without_up() {
    config_error(
        "command_tool_without_up",
        &format!("{ENV}[migrations]\ntool = \"command\"\n"),
    );
}

#[test]
fn unknown_migration_tool() {
    config_error(
        "unknown_migration_tool",
        &format!("{ENV}[migrations]\ntool = \"liquibase\"\n"),
    );
}

#[test]
fn a_preset_needs_no_commands_but_prisma_with_up_needs_pending() {
    let ok = run(
        &format!("{ENV}[migrations]\ntool = \"django\"\n"),
        &["lint"],
    );
    assert_ne!(ok.0, 78, "{}", ok.1);
    config_error(
        "prisma_up_without_pending",
        &format!("{ENV}[migrations]\ntool = \"prisma\"\nup = \"npx prisma migrate deploy\"\n"),
    );
}

#[test]
fn schedule_line_that_is_not_crontab() {
    config_error(
        "schedule_line_that_is_not_crontab",
        &format!("{ENV}[schedule.prod]\nbackup = \"every night\"\n"),
    );
}

#[test]
fn schedule_for_an_unknown_environment() {
    config_error(
        "schedule_for_an_unknown_environment",
        &format!("{ENV}[schedule.staging]\nbackup = \"0 3 * * *\"\n"),
    );
}

#[test]
fn serve_timezone_and_listen_are_checked() {
    config_error(
        "serve_timezone_unknown",
        &format!("{ENV}[serve]\ntimezone = \"Mars/Olympus\"\n"),
    );
    config_error(
        "serve_listen_not_an_address",
        &format!("{ENV}[serve]\nlisten = \"localhost\"\n"),
    );
}

#[test]
fn notify_url_written_in_the_file() {
    config_error(
        "notify_url_written_in_the_file",
        &format!(
            "{ENV}[[notify]]\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T0/B0/secret\"\n"
        ),
    );
    config_error(
        "notify_unknown_job",
        &format!(
            "{ENV}[[notify]]\nkind = \"webhook\"\nurl = \"${{HOOK}}\"\njobs = [\"backups\"]\n"
        ),
    );
}

#[test]
fn compression_level_out_of_range() {
    config_error(
        "compression_level_out_of_range",
        &format!("{ENV}[backups]\ncompression_level = 40\n"),
    );
}

#[test]
fn environment_name_with_spaces() {
    config_error(
        "environment_name_with_spaces",
        "[environments.\"my prod\"]\ndatabase_url = \"${DATABASE_URL}\"\n",
    );
}

#[test]
fn smoke_path_without_slash() {
    config_error(
        "smoke_path_without_slash",
        &format!("{ENV}[[smoke]]\nname = \"health\"\npath = \"health\"\n"),
    );
}

#[test]
fn data_set_without_key() {
    config_error(
        "data_set_without_key",
        &format!("{ENV}[data.tools]\ntable = \"tools\"\nkey = []\n"),
    );
}

#[test]
fn no_config_found() {
    let dir = tempfile::tempdir().unwrap();
    let out = shipsafe(dir.path()).arg("status").output().unwrap();
    assert_eq!(code(&out), 78);
    let msg = stderr(&out).replace(&dir.path().display().to_string(), "[DIR]");
    insta::assert_snapshot!("no_config_found", msg);
}

#[test]
fn config_flag_names_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = shipsafe(dir.path())
        .args(["--config", "nope.toml", "status"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 78);
    let msg = stderr(&out).replace(&dir.path().display().to_string(), "[DIR]");
    insta::assert_snapshot!("config_flag_names_a_missing_file", msg);
}

#[test]
fn unknown_environment_on_command_line_is_a_usage_error() {
    let (code, msg) = run(ENV, &["status", "production"]);
    assert_eq!(code, 64, "{msg}");
    insta::assert_snapshot!("unknown_environment_on_command_line", msg);
}

#[test]
fn config_error_in_json_mode_is_one_json_document() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "shipsafe.toml", "[projekt]\n");
    let out = shipsafe(dir.path())
        .args(["--format", "json", "status"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 78);
    let v = common::json(&out);
    assert_eq!(v["error"]["exit_code"], 78);
    assert_eq!(v["error"]["kind"], "config");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shipsafe.toml:1:2"),
        "{v}"
    );
}
