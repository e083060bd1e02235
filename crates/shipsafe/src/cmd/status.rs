use anyhow::Context as _;
use shipsafe_config::ProcessEnv;
use shipsafe_core::ExitKind;
use shipsafe_core::commands::status::status;

use super::Ctx;
use crate::output::{Rendered, human_bytes, table};

pub async fn run(ctx: &Ctx, env: Option<&str>) -> anyhow::Result<Rendered> {
    let config = ctx.config()?;
    let report = status(&config, &ProcessEnv, env)
        .await
        .with_context(|| format!("status of {}", env.unwrap_or("all environments")))?;
    let mut rows = Vec::new();
    for e in &report.environments {
        rows.push(vec![
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
            e.url.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut text = format!("{} ({})\n\n", report.project, report.config);
    if report.environments.is_empty() {
        text.push_str("No environments configured: add an [environments.NAME] table.\n");
    } else {
        text.push_str(&table(
            &[
                "ENV",
                "PROTECTION",
                "REACHABLE",
                "VERSION",
                "DATABASE",
                "SIZE",
                "URL",
            ],
            &rows,
        ));
    }
    for e in report.environments.iter().filter(|e| e.error.is_some()) {
        text.push_str(&format!(
            "\n{}: {}\n",
            e.name,
            e.error.as_deref().unwrap_or_default()
        ));
    }
    let exit = if report.all_reachable() {
        ExitKind::Success
    } else {
        ExitKind::Problems
    };
    Rendered::new(&report, text, exit)
}
