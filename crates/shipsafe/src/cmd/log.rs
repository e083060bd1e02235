use shipsafe_protocol::ExitKind;
use shipsafe_protocol::commands::log;

use super::Ctx;
use crate::output::{Rendered, table};

pub fn show(ctx: &Ctx, env: Option<&str>, limit: Option<usize>) -> anyhow::Result<Rendered> {
    let config = ctx.config()?;
    let entries = log::entries(&config, env, limit)?;
    let text = if entries.is_empty() {
        "The audit log is empty.\n".to_string()
    } else {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    e.at.clone(),
                    e.actor.short(),
                    e.command.clone(),
                    e.env.clone().unwrap_or_else(|| "-".into()),
                    e.outcome.clone(),
                    e.run_id.clone().unwrap_or_else(|| "-".into()),
                    if e.backup_ids.is_empty() {
                        "-".into()
                    } else {
                        e.backup_ids.join(",")
                    },
                ]
            })
            .collect();
        table(
            &[
                "#", "AT", "ACTOR", "COMMAND", "ENV", "OUTCOME", "RUN", "BACKUPS",
            ],
            &rows,
        )
    };
    Rendered::new(
        &serde_json::json!({ "entries": entries }),
        text,
        ExitKind::Success,
    )
}

pub async fn verify(ctx: &Ctx) -> anyhow::Result<Rendered> {
    let config = ctx.config()?;
    let mut report = log::verify(&config)?;
    // The chain alone cannot see a state.db replaced by an older copy, or
    // deleted: compare the head copies kept in databases and manifests.
    shipsafe_protocol::anchor::check(&config, &shipsafe_config::ProcessEnv, &mut report).await;
    let text = if report.ok {
        format!(
            "audit log intact: {} entries{}\n",
            report.entries,
            report
                .head_hash
                .as_deref()
                .map(|h| format!(", head {}", &h[..16.min(h.len())]))
                .unwrap_or_default()
        )
    } else {
        let mut t = format!(
            "audit log TAMPERED: the chain breaks at entry {} ({} entries read)\n",
            report.problems.first().map_or(0, |p| p.seq),
            report.entries
        );
        for p in &report.problems {
            t.push_str(&format!("  entry {}: {}\n", p.seq, p.problem));
        }
        t
    };
    let text = if report.anchors_checked.is_empty() {
        text
    } else {
        format!(
            "{text}compared with the head copies in: {}\n",
            report.anchors_checked.join("; ")
        )
    };
    let exit = if report.ok {
        ExitKind::Success
    } else {
        ExitKind::Problems
    };
    Rendered::new(&report, text, exit)
}
