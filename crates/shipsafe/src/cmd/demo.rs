use anyhow::Context as _;
use shipsafe_core::ExitKind;

use super::Ctx;
use crate::output::{Rendered, table};
use crate::ui::Spinner;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Rendered> {
    let spinner = Spinner::new(ctx.progress);
    let report = shipsafe_core::demo::run(&spinner).await.context("demo")?;
    drop(spinner);
    let mut text = format!(
        "Started a scratch PostgreSQL {} cluster on port {} in {} ms.\n\
         Built the sample SME database `{}`:\n\n",
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
    text.push_str("\nshipsafe status of that environment:\n\n");
    text.push_str(&super::status::render(&report.status));
    text.push_str("\nThe scratch cluster has been stopped and removed.\n");
    let exit = if report.status.all_reachable() {
        ExitKind::Success
    } else {
        ExitKind::Problems
    };
    Rendered::new(&report, text, exit)
}
