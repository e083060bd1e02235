//! `data export | diff | import`, `wipe`, `clone`.

use std::sync::Arc;

use anyhow::Context as _;
use shipsafe_config::ProcessEnv;
use shipsafe_data::ImportMode;
use shipsafe_protocol::commands::data;
use shipsafe_protocol::refdata::{DataOptions, DataReport};
use shipsafe_protocol::{ExitKind, Progress};

use super::Ctx;
use super::migrate::run_rendered_with;
use crate::cli::{DataAction, Mode};
use crate::output::{Rendered, table};
use crate::ui::{Spinner, TerminalConfirm};

fn mode(m: Mode) -> ImportMode {
    match m {
        Mode::Merge => ImportMode::Merge,
        Mode::Mirror => ImportMode::Mirror,
    }
}

/// The per-set table, conflicts, unresolved references and first changes.
fn render_plans(r: &DataReport) -> String {
    let rows: Vec<Vec<String>> = r
        .sets
        .iter()
        .map(|s| {
            vec![
                s.set.clone(),
                s.rows_in_file.to_string(),
                s.inserts.to_string(),
                s.updates.to_string(),
                s.deletes.to_string(),
                s.unchanged.to_string(),
                s.renamed.len().to_string(),
                s.conflicts.len().to_string(),
                s.unresolved.len().to_string(),
            ]
        })
        .collect();
    let mut t = table(
        &[
            "SET",
            "FILE ROWS",
            "INSERT",
            "UPDATE",
            "DELETE",
            "UNCHANGED",
            "RENAMED",
            "CONFLICTS",
            "UNRESOLVED",
        ],
        &rows,
    );
    for s in &r.sets {
        for (old, new) in &s.renamed {
            t.push_str(&format!("{}: rename {old:?} → {new:?}\n", s.set));
        }
        for c in &s.changes {
            let fields = if c.fields.is_empty() {
                String::new()
            } else {
                format!(" ({})", c.fields.join(", "))
            };
            t.push_str(&format!("{}: {} {}{fields}\n", s.set, c.action, c.key));
        }
        for c in &s.conflicts {
            t.push_str(&format!(
                "{}: CONFLICT {} {}: target {} / file {}\n",
                s.set,
                c.key,
                c.kind,
                c.target.as_ref().map_or("-".into(), ToString::to_string),
                c.file.as_ref().map_or("-".into(), ToString::to_string),
            ));
        }
        for u in &s.unresolved {
            t.push_str(&format!(
                "{}: UNRESOLVED {} → {} {}\n",
                s.set, u.key, u.reference, u.value
            ));
        }
    }
    t
}

pub async fn run(ctx: &Ctx, action: DataAction) -> anyhow::Result<Rendered> {
    let config = ctx.config()?;
    match action {
        DataAction::Export { sets, out } => {
            let r = data::export(
                &config,
                &ProcessEnv,
                &sets.env,
                &sets.sets,
                sets.all,
                out.as_deref(),
            )
            .await
            .with_context(|| format!("data export from {}", sets.env))?;
            let rows: Vec<Vec<String>> = r
                .sets
                .iter()
                .map(|s| {
                    vec![
                        s.set.clone(),
                        s.table.clone(),
                        s.rows.to_string(),
                        s.file.clone(),
                    ]
                })
                .collect();
            let text = table(&["SET", "TABLE", "ROWS", "FILE"], &rows);
            Rendered::new(&r, text, ExitKind::Success)
        }
        DataAction::Diff { sets, dir, mode: m } => {
            let opts = DataOptions {
                dir: dir.as_deref(),
                mode: mode(m),
                dry_run: true,
                force: false,
                skip_unresolved: false,
            };
            let r = data::diff(&config, &ProcessEnv, &sets.env, &sets.sets, sets.all, &opts)
                .await
                .with_context(|| format!("data diff against {}", sets.env))?;
            let text = render_plans(&r);
            // Differences are not problems; conflicts and unresolved rows are.
            let exit = if r.conflicts() + r.unresolved() > 0 {
                ExitKind::Problems
            } else {
                ExitKind::Success
            };
            Rendered::new(&r, text, exit)
        }
        DataAction::Import {
            sets,
            dir,
            mode: m,
            dry_run,
            force,
            skip_unresolved,
            confirm,
        } => {
            let progress: Arc<dyn Progress> = Arc::new(Spinner::new(ctx.progress));
            let confirm = TerminalConfirm { flag: confirm };
            let opts = DataOptions {
                dir: dir.as_deref(),
                mode: mode(m),
                dry_run,
                force,
                skip_unresolved,
            };
            let (run, error) = data::import(
                &config,
                &ProcessEnv,
                &ctx.cwd,
                &sets.env,
                &sets.sets,
                sets.all,
                &opts,
                &confirm,
                &progress,
            )
            .await
            .with_context(|| format!("data import into {}", sets.env))?;
            drop(progress);
            let extra = serde_json::from_value::<serde_json::Value>(run.report.clone())
                .ok()
                .map(|v| plans_text(&v))
                .unwrap_or_default();
            run_rendered_with("data import", &sets.env, run, error, &extra)
        }
    }
}

/// The import report's sets, from the stored run report.
fn plans_text(v: &serde_json::Value) -> String {
    let mut t = String::new();
    for s in v["sets"].as_array().into_iter().flatten() {
        t.push_str(&format!(
            "  {}: {} inserted, {} updated, {} deleted, {} unchanged, {} renamed, {} conflicts, {} unresolved\n",
            s["set"].as_str().unwrap_or_default(),
            s["inserts"],
            s["updates"],
            s["deletes"],
            s["unchanged"],
            s["renamed"].as_array().map_or(0, Vec::len),
            s["conflicts"].as_array().map_or(0, Vec::len),
            s["unresolved"].as_array().map_or(0, Vec::len),
        ));
    }
    t
}

pub async fn wipe(
    ctx: &Ctx,
    env: &str,
    keep: &[String],
    keep_table: &[String],
    reset_sequences: bool,
    dry_run: bool,
    confirm: Option<String>,
) -> anyhow::Result<Rendered> {
    let config = ctx.config()?;
    let progress: Arc<dyn Progress> = Arc::new(Spinner::new(ctx.progress));
    let confirm = TerminalConfirm { flag: confirm };
    let (run, error) = shipsafe_protocol::commands::wipe::wipe(
        &config,
        &ProcessEnv,
        &ctx.cwd,
        env,
        keep,
        keep_table,
        reset_sequences,
        dry_run,
        &confirm,
        &progress,
    )
    .await
    .with_context(|| format!("wipe of {env}"))?;
    drop(progress);
    let rows: Vec<Vec<String>> = run.report["tables"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            vec![
                t["table"].as_str().unwrap_or_default().to_string(),
                t["before"].to_string(),
                t["after"].to_string(),
                t["kept_because"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default(),
            ]
        })
        .collect();
    let mut extra = table(&["TABLE", "BEFORE", "AFTER", "KEPT BECAUSE"], &rows);
    for s in run.report["sequences"].as_array().into_iter().flatten() {
        extra.push_str(&format!(
            "sequence {} ({}) restarts at {}\n",
            s["sequence"].as_str().unwrap_or_default(),
            s["column"].as_str().unwrap_or_default(),
            s["next_value"]
        ));
    }
    run_rendered_with("wipe", env, run, error, &extra)
}

pub async fn clone(
    ctx: &Ctx,
    from: &str,
    to: &str,
    mask: bool,
    confirm: Option<String>,
) -> anyhow::Result<Rendered> {
    let config = ctx.config()?;
    let progress: Arc<dyn Progress> = Arc::new(Spinner::new(ctx.progress));
    let confirm = TerminalConfirm { flag: confirm };
    let (run, error) = shipsafe_protocol::commands::clone::clone(
        &config,
        &ProcessEnv,
        &ctx.cwd,
        from,
        to,
        mask,
        &confirm,
        &progress,
    )
    .await
    .with_context(|| format!("clone {from} {to}"))?;
    drop(progress);
    let r = &run.report;
    let copied = match (r["source_backup"].as_str(), r["safety_backup"].as_str()) {
        (Some(b), Some(s)) => format!(
            "  copied backup {b} ({}) of {from}; {to}'s previous state is in backup {s}\n",
            r["source"].as_str().unwrap_or("-")
        ),
        (Some(b), None) => format!(
            "  backup {b} ({}) of {from}\n",
            r["source"].as_str().unwrap_or("-")
        ),
        _ => String::new(),
    };
    let extra = format!(
        "{copied}{}{}",
        match r["masked"].as_array() {
            Some(m) if !m.is_empty() => format!(
                "  masked: {}\n",
                m.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => String::new(),
        },
        crate::output::proof_text(&r["proof"])
    );
    run_rendered_with("clone", to, run, error, &extra)
}
