use std::sync::Arc;

use anyhow::Context as _;
use shipsafe_config::ProcessEnv;
use shipsafe_protocol::commands::deploy::DeployOptions;
use shipsafe_protocol::commands::migrate;
use shipsafe_protocol::{ExitKind, Progress};

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
    let pending = if r.pending.is_empty() && r.external_pending == Some(true) {
        "changes pending (the tool does not list them)".to_string()
    } else {
        format!("{} pending", r.pending.len())
    };
    let at = match (&r.tool, &r.tool_state) {
        (Some(tool), Some(state)) => format!("{tool} at {state}, "),
        _ => String::new(),
    };
    let mut text = format!(
        "{env} ({}): {at}{} applied, {pending}\n",
        r.protection, r.applied
    );
    if !r.pending.is_empty() {
        let rows: Vec<Vec<String>> = r
            .pending
            .iter()
            .map(|p| {
                let m = &p.migration;
                vec![
                    m.version.clone(),
                    m.name.clone(),
                    if m.transactional {
                        "transaction".into()
                    } else {
                        "NO TRANSACTION".into()
                    },
                    if p.empty_down == Some(true) {
                        "irreversible (empty downgrade)".into()
                    } else if m.irreversible {
                        "irreversible".into()
                    } else if m.has_down && r.tool.is_some() {
                        // The team's tool goes back with its own command.
                        "tool's down".into()
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
    // Every finding that is not an error (errors are the problems below;
    // the team's tool's are not, they inform): rule, severity after the
    // catalog's evidence, and that evidence.
    for f in r.lint.iter().filter(|f| {
        !f.suppressed && (r.tool.is_some() || f.severity != shipsafe_lint::Severity::Error)
    }) {
        text.push_str(&f.render());
    }
    // What deploy would not stop for but a person should know: start-up
    // commands that migrate on boot, revisions the tool cannot undo.
    for w in &r.warnings {
        text.push_str(&format!("warning: {w}\n"));
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

/// Deploy's command-line flags.
#[derive(Debug)]
pub struct DeployFlags {
    pub confirm: Option<String>,
    pub override_reason: Option<String>,
    pub rehearse: bool,
    pub accept_risk: bool,
}

pub async fn deploy(ctx: &Ctx, env: &str, flags: DeployFlags) -> anyhow::Result<Rendered> {
    let config = ctx.config()?;
    let progress: Arc<dyn Progress> = Arc::new(Spinner::new(ctx.progress));
    let actor = shipsafe_state::Actor::detect(&ctx.cwd);
    let applied_by = actor.short();
    let confirm = crate::ui::TerminalConfirm {
        flag: flags.confirm,
    };
    let opts = DeployOptions {
        applied_by: &applied_by,
        override_reason: flags.override_reason.as_deref(),
        rehearse: flags.rehearse,
        accept_risk: flags.accept_risk,
        confirm: &confirm,
    };
    super::stop_between_steps_on_ctrl_c();
    let result = shipsafe_protocol::commands::deploy::deploy(
        &config,
        &ProcessEnv,
        &ctx.cwd,
        env,
        &opts,
        &progress,
    )
    .await;
    drop(progress);
    let out = match result {
        Ok(out) => out,
        Err(e) => {
            // Ended before its outcome was decided (a missing variable, an
            // unreachable server): a failed deploy is news all the same.
            shipsafe_serve::notify::after_cli_error(
                &config,
                &ProcessEnv,
                env,
                "deploy",
                e.to_string(),
            )
            .await;
            return Err(anyhow::Error::new(e).context(format!("deploy to {env}")));
        }
    };
    // Told, never changing the outcome: a failed webhook is only logged.
    shipsafe_serve::notify::after_cli(
        &config,
        &ProcessEnv,
        env,
        "deploy",
        out.error.as_ref().map(|e| e.to_string()),
    )
    .await;
    run_rendered("deploy", env, out.run, out.error)
}

/// `shipsafe rehearse ENV`.
pub async fn rehearse(ctx: &Ctx, env: &str) -> anyhow::Result<Rendered> {
    let config = ctx.config()?;
    super::stop_between_steps_on_ctrl_c();
    let progress: Arc<dyn Progress> = Arc::new(Spinner::new(ctx.progress));
    let (run, error) = shipsafe_protocol::commands::rehearse::rehearse(
        &config,
        &ProcessEnv,
        &ctx.cwd,
        env,
        &progress,
    )
    .await
    .with_context(|| format!("rehearsal of {env}"))?;
    drop(progress);
    run_rendered("rehearse", env, run, error)
}

/// A run as text (steps, then the rehearsal when there was one) and JSON;
/// the error, if any, goes to stderr and decides the exit code.
fn run_rendered(
    command: &str,
    env: &str,
    run: shipsafe_state::RunRecord,
    error: Option<shipsafe_protocol::CoreError>,
) -> anyhow::Result<Rendered> {
    run_rendered_with(command, env, run, error, "")
}

/// [`run_rendered`] with more text after the steps.
pub(crate) fn run_rendered_with(
    command: &str,
    env: &str,
    run: shipsafe_state::RunRecord,
    error: Option<shipsafe_protocol::CoreError>,
    extra: &str,
) -> anyhow::Result<Rendered> {
    let mut text = format!(
        "{command} {env}: {} (run {}, {} ms)\n",
        run.outcome, run.run_id, run.duration_ms
    );
    for s in &run.steps {
        text.push_str(&format!(
            "  {:<10} {:<8} {:>6} ms\n",
            s.name, s.status, s.duration_ms
        ));
    }
    if let Some(r) = run.report.get("rehearsal").filter(|r| !r.is_null()) {
        text.push_str(&shipsafe_protocol::rehearsal_text::render(r));
    }
    text.push_str(extra);
    let exit = match &error {
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
    let result = shipsafe_protocol::commands::rollback::rollback(
        &config,
        &ProcessEnv,
        &ctx.cwd,
        env,
        run_id,
        &confirm,
        &progress,
    )
    .await;
    if matches!(
        &result,
        Ok(_) | Err(shipsafe_protocol::CoreError::RollbackFailed(_))
    ) {
        shipsafe_serve::notify::after_cli(
            &config,
            &ProcessEnv,
            env,
            "rollback",
            result.as_ref().err().map(|e| e.to_string()),
        )
        .await;
    }
    let run = result.with_context(|| format!("rollback of {env}"))?;
    drop(progress);
    let mut text = format!(
        "rollback {env}: {} (run {}): {}\n",
        run.outcome,
        run.run_id,
        run.report["detail"].as_str().unwrap_or_default()
    );
    if let Some(b) = run.report["safety_backup"].as_str() {
        text.push_str(&format!(
            "  what it replaced is in backup {b} (kept 30 days by retention)\n"
        ));
    }
    Ok(Rendered {
        json: serde_json::to_value(&run)?,
        text,
        exit: ExitKind::Success,
    })
}
