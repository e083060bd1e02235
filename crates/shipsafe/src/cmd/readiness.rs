use std::path::{Path, PathBuf};

use anyhow::Context as _;
use shipsafe_config::ProcessEnv;
use shipsafe_protocol::ExitKind;
use shipsafe_readiness::runbook::runbook as write_runbook;
use shipsafe_readiness::{self as readiness, Level, Scorecard, Status, report};

use super::Ctx;
use crate::cli::{Format, MinLevel};
use crate::output::Rendered;

pub struct Flags {
    pub format: Format,
    pub markdown: Option<PathBuf>,
    pub since: Option<std::time::Duration>,
    pub min_level: Option<MinLevel>,
}

pub async fn run(ctx: &Ctx, env: &str, flags: Flags) -> anyhow::Result<Rendered> {
    let config = ctx.config()?;
    let opts = readiness::Options {
        since: flags.since,
        min_level: flags.min_level.map(|l| match l {
            MinLevel::Bronze => Level::Bronze,
            MinLevel::Silver => Level::Silver,
            MinLevel::Gold => Level::Gold,
        }),
    };
    let card = readiness::readiness(&config, &ProcessEnv, &ctx.cwd, env, &opts)
        .await
        .with_context(|| format!("readiness of {env}"))?;
    if let Some(path) = &flags.markdown {
        std::fs::write(path, report::markdown(&card)).map_err(|e| {
            shipsafe_protocol::CoreError::io(format!("cannot write {}", path.display()), e)
        })?;
    }
    let text = match flags.format {
        Format::Md => report::markdown(&card),
        Format::Html => report::html(&card),
        _ => render(&card),
    };
    let exit = if card.meets_min_level {
        ExitKind::Success
    } else {
        ExitKind::Problems
    };
    Rendered::new(&card, text, exit)
}

fn label(s: Status) -> &'static str {
    match s {
        Status::Pass => "pass",
        Status::Warn => "WARN",
        Status::Fail => "FAIL",
        Status::Unknown => "UNKNOWN",
        Status::Waived => "waived",
    }
}

pub fn render(card: &Scorecard) -> String {
    let mut t = format!(
        "Readiness of {} / {} ({}): {} (score {}/100){}\n\n",
        card.project,
        card.env,
        card.protection,
        card.level.as_str().to_uppercase(),
        card.score,
        match card.min_level {
            Some(m) if card.meets_min_level => format!(", required {}: met", m.as_str()),
            Some(m) => format!(", required {}: NOT met", m.as_str()),
            None => String::new(),
        }
    );
    let width = card.items.iter().map(|i| i.id.len()).max().unwrap_or(10);
    for c in &card.categories {
        let cells = c.cells();
        t.push_str(&format!(
            "{}: {} (score {}; {} pass, {} warn, {} fail, {} unknown, {} waived)\n",
            cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6], cells[7]
        ));
        for i in card.items.iter().filter(|i| i.category == c.category) {
            t.push_str(&format!(
                "  {:<7} {:<width$} [{}] {}\n",
                label(i.status),
                i.id,
                i.level.as_str(),
                i.evidence.summary
            ));
            if let Some(w) = &i.waiver {
                t.push_str(&format!(
                    "  {:<7} {:<width$} waiver {} until {}: {}\n",
                    "", "", w.state, w.until, w.reason
                ));
            }
            if i.status != Status::Pass
                && let Some(fix) = i.fix.as_deref().filter(|f| !f.is_empty())
            {
                t.push_str(&format!("  {:<7} {:<width$} fix: {fix}\n", "", ""));
            }
        }
        t.push('\n');
    }
    for w in &card.expiring_waivers {
        t.push_str(&format!("waiver: {w}\n"));
    }
    if let Some(trend) = &card.trend {
        t.push_str(&format!("Trend since {}:\n", trend.since));
        for p in &trend.points {
            t.push_str(&format!(
                "  {}  {:<9} score {:>3}  {} failing\n",
                p.at, p.level, p.score, p.failing
            ));
        }
        if !trend.fixed.is_empty() {
            t.push_str(&format!("  fixed since: {}\n", trend.fixed.join(", ")));
        }
        if !trend.regressed.is_empty() {
            t.push_str(&format!(
                "  regressed since: {}\n",
                trend.regressed.join(", ")
            ));
        }
    }
    t
}

pub async fn runbook(ctx: &Ctx, env: &str, output: Option<&Path>) -> anyhow::Result<Rendered> {
    let config = ctx.config()?;
    let r = write_runbook(&config, &ProcessEnv, env, output)
        .await
        .with_context(|| format!("runbook of {env}"))?;
    let text = format!(
        "runbook of {env} written to {}{}\n",
        r.path,
        match (&r.backup_id, r.restore_seconds) {
            (Some(id), Some(s)) => format!(" (restores {id}; last drill took {s:.1} s)"),
            _ => " (no backup of it has been proven by a restore yet)".into(),
        }
    );
    Rendered::new(&r, text, ExitKind::Success)
}
