use std::sync::Arc;

use anyhow::Context as _;
use shipsafe_config::ProcessEnv;
use shipsafe_core::commands::migrate;
use shipsafe_core::{ExitKind, Progress};

use super::Ctx;
use crate::output::{Rendered, table};
use crate::ui::Spinner;

pub fn new(ctx: &Ctx, name: &str) -> anyhow::Result<Rendered> {
    let config = ctx.config()?;
    let r = migrate::new_migration(&config, name)?;
    let text = format!(
        "Created {}\n{}",
        r.dir,
        r.files
            .iter()
            .map(|f| format!("  {f}\n"))
            .collect::<String>()
    );
    Rendered::new(&r, text, ExitKind::Success)
}

pub async fn plan(ctx: &Ctx, env: &str) -> anyhow::Result<Rendered> {
    let config = ctx.config()?;
    let r = migrate::plan(&config, &ProcessEnv, env)
        .await
        .with_context(|| format!("plan for {env}"))?;
    let mut text = format!(
        "{env} ({}): {} applied, {} pending\n",
        r.protection,
        r.applied,
        r.pending.len()
    );
    if !r.pending.is_empty() {
        let rows: Vec<Vec<String>> = r
            .pending
            .iter()
            .map(|m| {
                vec![
                    m.version.clone(),
                    m.name.clone(),
                    if m.transactional {
                        "transaction".into()
                    } else {
                        "NO TRANSACTION".into()
                    },
                    if m.irreversible {
                        "irreversible".into()
                    } else if m.has_down {
                        "down.sql".into()
                    } else {
                        "-".into()
                    },
                    if m.has_verify {
                        "verify.sql".into()
                    } else {
                        "-".into()
                    },
                ]
            })
            .collect();
        text.push('\n');
        text.push_str(&table(
            &["VERSION", "NAME", "RUNS IN", "UNDO", "VERIFY"],
            &rows,
        ));
        text.push_str(if r.backup_first {
            "\ndeploy takes a backup first.\n"
        } else {
            "\n"
        });
    }
    for p in &r.problems {
        text.push_str(&format!("problem: {p}\n"));
    }
    let exit = if r.problems.is_empty() {
        ExitKind::Success
    } else {
        ExitKind::Problems
    };
    Rendered::new(&r, text, exit)
}

pub async fn deploy(
    ctx: &Ctx,
    env: &str,
    override_reason: Option<&str>,
) -> anyhow::Result<Rendered> {
    let config = ctx.config()?;
    let progress: Arc<dyn Progress> = Arc::new(Spinner::new(ctx.progress));
    let actor = shipsafe_state::Actor::detect(&ctx.cwd);
    let out = migrate::deploy(
        &config,
        &ProcessEnv,
        &ctx.cwd,
        env,
        &actor.short(),
        override_reason,
        &progress,
    )
    .await
    .with_context(|| format!("deploy to {env}"))?;
    drop(progress);
    let run = out.run;
    let mut text = format!(
        "deploy {env}: {} (run {}, {} ms)\n",
        run.outcome, run.run_id, run.duration_ms
    );
    for s in &run.steps {
        text.push_str(&format!(
            "  {:<10} {:<8} {:>6} ms\n",
            s.name, s.status, s.duration_ms
        ));
    }
    let exit = match &out.error {
        None => ExitKind::Success,
        Some(e) => {
            // The run document is the result; the error goes to stderr.
            eprintln!("error: {}", shipsafe_config::mask_secrets(&e.to_string()));
            e.exit_kind()
        }
    };
    Ok(Rendered {
        json: serde_json::to_value(&run)?,
        text,
        exit,
    })
}

pub async fn rollback(
    ctx: &Ctx,
    env: &str,
    run_id: Option<&str>,
    confirm: Option<String>,
) -> anyhow::Result<Rendered> {
    let config = ctx.config()?;
    let progress: Arc<dyn Progress> = Arc::new(Spinner::new(ctx.progress));
    let confirm = crate::ui::TerminalConfirm { flag: confirm };
    let run = shipsafe_core::commands::rollback::rollback(
        &config,
        &ProcessEnv,
        &ctx.cwd,
        env,
        run_id,
        &confirm,
        &progress,
    )
    .await
    .with_context(|| format!("rollback of {env}"))?;
    drop(progress);
    let text = format!(
        "rollback {env}: {} (run {}): {}\n",
        run.outcome,
        run.run_id,
        run.report["detail"].as_str().unwrap_or_default()
    );
    Ok(Rendered {
        json: serde_json::to_value(&run)?,
        text,
        exit: ExitKind::Success,
    })
}
