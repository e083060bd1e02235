use std::sync::Arc;

use anyhow::Context as _;
use shipsafe_protocol::{ExitKind, Progress};

use super::Ctx;
use crate::output::{Rendered, table};
use crate::ui::Spinner;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Rendered> {
    let spinner: Arc<dyn Progress> = Arc::new(Spinner::new(ctx.progress));
    let report = shipsafe_demo::run(&spinner).await.context("demo")?;
    drop(spinner);
    let mut text = format!(
        "Started a scratch PostgreSQL {} cluster on port {} in {} ms.\n\
         Built the sample SME database `{}` as production (protected) and a copy as staging (guarded):\n\n",
        report.cluster.server_version,
        report.cluster.port,
        report.cluster.start_ms,
        report.database
    );
    let rows: Vec<Vec<String>> = report
        .tables
        .iter()
        .map(|t| vec![t.table.clone(), t.rows.to_string()])
        .collect();
    text.push_str(&table(&["TABLE", "ROWS"], &rows));
    for (i, step) in report.tour.iter().enumerate() {
        let run = &step.run;
        text.push_str(&format!(
            "\n{}. {}\n   $ {}\n   {} (exit {}) in {} ms{}\n",
            i + 1,
            step.title,
            step.command,
            run.outcome,
            step.exit_code,
            run.duration_ms,
            if run.outcome == step.expected {
                String::new()
            } else {
                format!(" (expected {})", step.expected)
            }
        ));
        let steps: Vec<String> = run
            .steps
            .iter()
            .map(|s| format!("{} {} {} ms", s.name, s.status, s.duration_ms))
            .collect();
        text.push_str(&format!("   steps: {}\n", steps.join(", ")));
        if let Some(m) = &step.message {
            text.push_str(&format!("   {m}\n"));
        }
        if let Some(r) = run.report.get("rehearsal").filter(|r| !r.is_null()) {
            for line in shipsafe_protocol::rehearsal_text::render(r).lines() {
                text.push_str(&format!("   {line}\n"));
            }
        }
    }
    text.push_str("\nThe state afterwards:\n\n");
    text.push_str(&super::status::render(&report.status));
    text.push_str(&format!(
        "\nBackups: {} ({} verified by a restore). Audit log: {} entries, hash chain {}.\n",
        report.backups,
        report.verified_backups,
        report.audit_entries,
        if report.audit_chain_ok {
            "intact"
        } else {
            "BROKEN"
        }
    ));
    let card = &report.readiness;
    text.push_str(&format!(
        "\nReadiness of production: {} (score {}/100), every item measured (`shipsafe readiness production` shows all {}):\n",
        card.level.as_str(),
        card.score,
        card.items.len()
    ));
    for c in &card.categories {
        let open: Vec<&str> = card
            .items
            .iter()
            .filter(|i| i.category == c.category && !i.status.holds())
            .map(|i| i.id)
            .collect();
        text.push_str(&format!(
            "  {:<26} {:<9} score {:>3}{}\n",
            c.title,
            c.level.as_str(),
            c.score,
            if open.is_empty() {
                String::new()
            } else {
                format!("  not met: {}", open.join(", "))
            }
        ));
    }
    text.push_str(&format!(
        "The scratch cluster and the demo project have been removed. The tour took {:.1} s.\n",
        report.duration_ms as f64 / 1000.0
    ));
    let exit = if report.as_expected && report.status.all_reachable() {
        ExitKind::Success
    } else {
        ExitKind::Problems
    };
    Rendered::new(&report, text, exit)
}
