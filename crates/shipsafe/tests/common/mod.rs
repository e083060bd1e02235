//! Helpers for driving the built `shipsafe` binary.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;

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
