//! Turning results and errors into text or JSON, and errors into exit codes
//! (the one place that does so).

use std::io::Write;

use serde::Serialize;
use shipsafe_config::{ConfigError, mask_secrets};
use shipsafe_protocol::{CoreError, ExitKind};

use crate::cli::Format;

/// What a command hands back for printing.
#[derive(Debug)]
pub struct Rendered {
    pub json: serde_json::Value,
    pub text: String,
    pub exit: ExitKind,
}

impl Rendered {
    pub fn new(value: &impl Serialize, text: String, exit: ExitKind) -> anyhow::Result<Self> {
        Ok(Self {
            json: serde_json::to_value(value)?,
            text,
            exit,
        })
    }
}

/// The exit status for an error: the first typed error in the chain decides.
pub fn exit_kind(err: &anyhow::Error) -> ExitKind {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<CoreError>() {
            return e.exit_kind();
        }
        if let Some(e) = cause.downcast_ref::<ConfigError>() {
            return if e.is_usage() {
                ExitKind::Usage
            } else {
                ExitKind::Config
            };
        }
    }
    // Every error a command returns is typed; an untyped one happened before
    // anything was changed (argument handling, runtime start-up).
    ExitKind::RolledBack
}

/// The full message: context first, then causes not already contained in it.
pub fn error_message(err: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    mask_secrets(&msg)
}

pub fn print_result(format: Format, quiet: bool, r: &Rendered) {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            let text = serde_json::to_string_pretty(&r.json).unwrap_or_else(|_| "null".into());
            let _ = writeln!(out, "{}", mask_secrets(&text));
        }
        Format::Text | Format::Md | Format::Html => {
            if !quiet || r.exit != ExitKind::Success {
                let _ = write!(out, "{}", mask_secrets(&r.text));
            }
        }
    }
}

pub fn print_error(format: Format, kind: ExitKind, message: &str) {
    let _ = writeln!(std::io::stderr(), "error: {message}");
    if format == Format::Json {
        let doc = serde_json::json!({
            "error": { "message": message, "kind": kind, "exit_code": kind.code() }
        });
        let _ = writeln!(
            std::io::stdout(),
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        );
    }
}

/// Bytes as a short human size (binary units).
pub fn human_bytes(n: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// Left-aligned columns, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// What a restore compared with its backup, what it did differently and
/// what it did not prove, one line each (JSON of a `RestoreProof`).
pub fn proof_text(proof: &serde_json::Value) -> String {
    let Ok(p) = serde_json::from_value::<shipsafe_backup::RestoreProof>(proof.clone()) else {
        return String::new();
    };
    let mut out = format!(
        "Compared with the backup before commit: {} table(s) with {} row(s), {} sequence(s), {} large object(s).\n",
        p.tables, p.rows, p.sequences, p.large_objects
    );
    for w in &p.warnings {
        out.push_str(&format!("  warning: {w}\n"));
    }
    for n in &p.not_proven {
        out.push_str(&format!("  not proven: {n}\n"));
    }
    out
}

/// The word a check's row starts with: `ok`, `FAIL` (the expectation did
/// not hold) or `ERROR` (the query could not run).
pub fn check_status(c: &shipsafe_protocol::checks::CheckOutcome) -> &'static str {
    match c.status {
        shipsafe_protocol::checks::CheckStatus::Passed => "ok",
        shipsafe_protocol::checks::CheckStatus::Failed => "FAIL",
        shipsafe_protocol::checks::CheckStatus::Error => "ERROR",
    }
}

/// What a check found, for a table cell: the expectation and the value, or
/// the server's message.
pub fn check_detail(c: &shipsafe_protocol::checks::CheckOutcome) -> String {
    if c.is_error() {
        return c.error.clone().unwrap_or_default();
    }
    format!(
        "{} = {}{}",
        c.expect,
        c.actual.as_deref().unwrap_or("-"),
        c.reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    )
}

/// Checks one per line, indented: status, name, detail.
pub fn check_lines(checks: &[shipsafe_protocol::checks::CheckOutcome]) -> String {
    checks
        .iter()
        .map(|c| {
            format!(
                "  {:<5} {} ({})\n",
                check_status(c),
                c.name,
                check_detail(c)
            )
        })
        .collect()
}
