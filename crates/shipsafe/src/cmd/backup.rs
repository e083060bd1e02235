use std::sync::Arc;

use anyhow::Context as _;
use shipsafe_backup::Manifest;
use shipsafe_config::ProcessEnv;
use shipsafe_protocol::commands::backup;
use shipsafe_protocol::{ExitKind, Progress};

use super::Ctx;
use crate::cli::BackupAction;
use crate::output::{Rendered, human_bytes, table};
use crate::ui::{Spinner, TerminalConfirm};

pub async fn run(ctx: &Ctx, action: BackupAction) -> anyhow::Result<Rendered> {
    let config = ctx.config()?;
    let progress: Arc<dyn Progress> = Arc::new(Spinner::new(ctx.progress));
    match action {
        BackupAction::Create { env, reason } => {
            super::stop_between_steps_on_ctrl_c();
            let m = backup::create(&config, &ProcessEnv, &ctx.cwd, &env, &reason, &progress)
                .await
                .with_context(|| format!("backup of {env}"))?;
            drop(progress);
            let text = format!(
                "Backup {} of {} ({}): {} stored ({} dump), {}\n  at {}\nNot verified yet: `shipsafe backup verify {}` proves it restores.\n",
                m.id,
                m.env,
                m.database,
                human_bytes(m.size_bytes as i64),
                human_bytes(m.raw_bytes as i64),
                m.checksum,
                m.location,
                m.id
            );
            Rendered::new(&m, text, ExitKind::Success)
        }
        BackupAction::List { env } => {
            let all = backup::list(&config, &ProcessEnv, env.as_deref()).await?;
            Rendered::new(&all, render_list(&all), ExitKind::Success)
        }
        BackupAction::Verify { id } => {
            let verified = backup::verify(&config, &ProcessEnv, &ctx.cwd, &id, &progress)
                .await
                .with_context(|| format!("verification of backup {id}"))?;
            drop(progress);
            let m = &verified.manifest;
            let v = m.verifications.last();
            let proof = v
                .and_then(|v| v.proof.as_ref())
                .and_then(|p| serde_json::to_value(p).ok())
                .map(|p| crate::output::proof_text(&p))
                .unwrap_or_default();
            let mut text = format!(
                "Backup {} restored into a scratch PostgreSQL {} cluster in {:.1}s, the way a restore into an environment runs; checks{}: {} passed, {} failed.\n",
                m.id,
                m.server_major()
                    .map_or_else(|| "?".into(), |n| n.to_string()),
                v.map_or(0.0, |v| v.restore_seconds),
                if m.checks.is_some() {
                    " recorded with the backup"
                } else {
                    ""
                },
                v.map_or(0, |v| v.checks_passed),
                v.map_or(0, |v| v.checks_failed),
            );
            text.push_str(&crate::output::check_lines(&verified.checks));
            if !verified.current_checks.is_empty() {
                text.push_str(
                    "Checks configured since the backup was taken (reported, not counted):\n",
                );
                text.push_str(&crate::output::check_lines(&verified.current_checks));
            }
            text.push_str(&proof);
            text.push_str("It now counts as verified.\n");
            // The manifest (SPEC), with what each check found.
            let mut json = serde_json::to_value(m)?;
            json["check_results"] = serde_json::to_value(&verified.checks)?;
            json["current_check_results"] = serde_json::to_value(&verified.current_checks)?;
            Ok(crate::output::Rendered {
                json,
                text,
                exit: ExitKind::Success,
            })
        }
        BackupAction::Restore { id, to, confirm } => {
            let confirm = TerminalConfirm { flag: confirm };
            let run = backup::restore(
                &config,
                &ProcessEnv,
                &ctx.cwd,
                &id,
                &to,
                &confirm,
                &progress,
            )
            .await
            .with_context(|| format!("restore of backup {id} into {to}"))?;
            drop(progress);
            let safety = run.report["safety_backup"].as_str().map(str::to_string);
            let mut text = format!(
                "Restored backup {id} into {to} in one transaction (run {}).\n",
                run.run_id
            );
            match safety {
                Some(s) => text.push_str(&format!(
                    "Safety backup of the previous state: {s} (`shipsafe backup restore {s} --to {to}` undoes this).\n"
                )),
                None => text.push_str("No safety backup: the environment is open.\n"),
            }
            let outcomes = |key: &str| {
                serde_json::from_value::<Vec<shipsafe_protocol::checks::CheckOutcome>>(
                    run.report[key].clone(),
                )
                .unwrap_or_default()
            };
            let checks = outcomes("checks");
            if !checks.is_empty() {
                text.push_str(&format!("Checks passed before commit: {}\n", checks.len()));
                text.push_str(&crate::output::check_lines(&checks));
            }
            let current = outcomes("current_checks");
            if !current.is_empty() {
                text.push_str(
                    "Checks configured since the backup was taken, after commit (reported, not counted):\n",
                );
                text.push_str(&crate::output::check_lines(&current));
            }
            text.push_str(&crate::output::proof_text(&run.report["proof"]));
            Ok(crate::output::Rendered {
                json: serde_json::to_value(&run)?,
                text,
                exit: ExitKind::Success,
            })
        }
        BackupAction::Prune { env, dry_run } => {
            let r = backup::prune(&config, &ProcessEnv, &ctx.cwd, env.as_deref(), dry_run).await?;
            let rows: Vec<Vec<String>> = r
                .decisions
                .iter()
                .map(|d| {
                    vec![
                        if d.keep {
                            "keep".into()
                        } else if dry_run {
                            "would delete".into()
                        } else {
                            "deleted".into()
                        },
                        d.id.clone(),
                        d.reasons.join("; "),
                    ]
                })
                .collect();
            let mut text = table(&["ACTION", "BACKUP", "WHY"], &rows);
            if r.decisions.is_empty() {
                text = "No backups to prune.\n".into();
            }
            for u in &r.unfinished {
                text.push_str(&format!(
                    "{} {} ({}): an upload that never finished, untouched for a day\n",
                    if dry_run { "would remove" } else { "removed" },
                    u.name,
                    human_bytes(u.bytes as i64)
                ));
            }
            Rendered::new(&r, text, ExitKind::Success)
        }
    }
}

fn age(created: &str) -> String {
    let Ok(t) = created.parse::<jiff::Timestamp>() else {
        return "?".into();
    };
    let secs = jiff::Timestamp::now().duration_since(t).as_secs().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}min", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn render_list(all: &[Manifest]) -> String {
    if all.is_empty() {
        return "No backups yet: `shipsafe backup create ENV` takes one.\n".into();
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|m| {
            let verified = match m.verifications.last() {
                _ if !m.is_complete() => "-".to_string(),
                None => "unverified".into(),
                Some(v) if v.ok => format!(
                    "verified {} ago ({:.1}s restore)",
                    age(&v.at),
                    v.restore_seconds
                ),
                Some(_) => "VERIFY FAILED".into(),
            };
            vec![
                m.id.clone(),
                m.env.clone(),
                m.reason.clone(),
                age(&m.created_at),
                human_bytes(m.size_bytes as i64),
                if m.is_complete() {
                    "complete".into()
                } else {
                    "FAILED".into()
                },
                verified,
            ]
        })
        .collect();
    table(
        &["ID", "ENV", "REASON", "AGE", "SIZE", "STATUS", "VERIFIED"],
        &rows,
    )
}
