use anyhow::Context as _;
use shipsafe_config::ProcessEnv;
use shipsafe_protocol::ExitKind;
use shipsafe_protocol::commands::status::{StatusReport, status};

use super::Ctx;
use crate::output::{Rendered, human_bytes, table};

pub async fn run(ctx: &Ctx, env: Option<&str>) -> anyhow::Result<Rendered> {
    let config = ctx.config()?;
    let report = status(&config, &ProcessEnv, env)
        .await
        .with_context(|| format!("status of {}", env.unwrap_or("all environments")))?;
    let text = format!(
        "{} ({})\n\n{}",
        report.project,
        report.config,
        render(&report)
    );
    let exit = if report.all_reachable() {
        ExitKind::Success
    } else {
        ExitKind::Problems
    };
    Rendered::new(&report, text, exit)
}

/// The environments table plus each environment's problem, if any.
pub fn render(report: &StatusReport) -> String {
    if report.environments.is_empty() {
        return "No environments configured: add an [environments.NAME] table.\n".into();
    }
    let rows: Vec<Vec<String>> = report
        .environments
        .iter()
        .map(|e| {
            vec![
                e.name.clone(),
                e.protection.clone(),
                if e.reachable {
                    "yes".into()
                } else {
                    "NO".into()
                },
                e.server_version.clone().unwrap_or_else(|| "-".into()),
                e.database.clone().unwrap_or_else(|| "-".into()),
                e.size_bytes.map_or_else(|| "-".into(), human_bytes),
                match (e.pending_migrations, &e.migrations_error) {
                    (Some(n), _) => n.to_string(),
                    (None, Some(_)) => "ERROR".into(),
                    (None, None) => "-".into(),
                },
                e.last_backup
                    .as_ref()
                    .map_or_else(|| "none".into(), |b| b.created_at.clone()),
                e.last_verified.as_ref().map_or_else(
                    || "never".into(),
                    |v| format!("{} ({:.1} s)", v.verified_at, v.restore_seconds),
                ),
                e.url.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut text = table(
        &[
            "ENV",
            "PROTECTION",
            "REACHABLE",
            "VERSION",
            "DATABASE",
            "SIZE",
            "PENDING",
            "LAST BACKUP",
            "LAST VERIFIED RESTORE",
            "URL",
        ],
        &rows,
    );
    for e in report.environments.iter() {
        if let Some(m) = &e.migrations_error {
            text.push_str(&format!("\n{}: migrations: {m}\n", e.name));
        }
    }
    for e in report.environments.iter() {
        if let Some(t) = &e.tls {
            text.push_str(&format!("\n{}: tls: {t}", e.name));
        }
    }
    if report.environments.iter().any(|e| e.tls.is_some()) {
        text.push('\n');
    }
    for e in report.environments.iter() {
        if let Some(p) = &e.pooler {
            text.push_str(&format!(
                "\n{}: pooler: {p}; reads work through it, changes need the direct URL\n",
                e.name
            ));
        }
    }
    for e in report.environments.iter() {
        if let Some(n) = e.backups_of_another_database {
            text.push_str(&format!(
                "\n{}: {n} backup(s) in the catalog were taken of another database than the one its URL names now; they are not shown as its backups\n",
                e.name
            ));
        }
        if e.cancels_dead_clients == Some(false) {
            text.push_str(&format!(
                "\n{}: this server (before PostgreSQL 14) does not cancel a dead client's statement: if shipsafe is killed during a change, its statement runs on, holding its locks, until the next deploy or rollback of {} ends it\n",
                e.name, e.name
            ));
        }
    }
    match &report.tool_isolation {
        Some(i) if i == "available" => text.push_str(
            "\nrehearsals: the migration tool runs in a network namespace that reaches only the scratch clone\n",
        ),
        Some(why) => text.push_str(&format!(
            "\nrehearsals: the migration tool is NOT isolated from the network ({why}); an app that reads its database URL from .env or its settings could reach the target, which shipsafe then detects and stops\n"
        )),
        None => {}
    }
    for e in report.environments.iter().filter(|e| e.error.is_some()) {
        text.push_str(&format!(
            "\n{}: {}\n",
            e.name,
            e.error.as_deref().unwrap_or_default()
        ));
    }
    text
}
