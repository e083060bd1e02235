//! The scorecard as documents: Markdown for a launch review, HTML for a
//! browser. Every value is escaped; no secret is in a scorecard to begin
//! with (URLs are masked, query texts of sessions are never read).

use super::Scorecard;
use super::model::Status;

fn mark(s: Status) -> &'static str {
    match s {
        Status::Pass => "PASS",
        Status::Warn => "WARN",
        Status::Fail => "FAIL",
        Status::Unknown => "UNKNOWN",
        Status::Waived => "WAIVED",
    }
}

/// Escapes text for a Markdown table cell.
fn md(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('\n', " ")
        .replace('<', "&lt;")
}

pub fn markdown(card: &Scorecard) -> String {
    let mut out = format!(
        "# Production readiness: {} / {}\n\n\
         Measured {} by shipsafe. Level **{}**, score **{}/100**{}.\n\n\
         Every item below was measured, not declared: its evidence says from where (database, backup catalog, run history, audit log, config, repository, http). `UNKNOWN` means it could not be measured and counts as not met.\n\n",
        card.project,
        card.env,
        card.measured_at,
        card.level.as_str(),
        card.score,
        match card.min_level {
            Some(m) if card.meets_min_level => format!(" (required: {}, met)", m.as_str()),
            Some(m) => format!(" (required: {}, **NOT met**)", m.as_str()),
            None => String::new(),
        }
    );
    out.push_str("| Category | Level | Score | Pass | Warn | Fail | Unknown | Waived |\n|---|---|---|---|---|---|---|---|\n");
    for c in &card.categories {
        out.push_str(&format!("| {} |\n", c.cells().join(" | ")));
    }
    for c in &card.categories {
        out.push_str(&format!(
            "\n## {}\n\n| | Item | Level | Evidence | Fix |\n|---|---|---|---|---|\n",
            c.title
        ));
        for i in card.items.iter().filter(|i| i.category == c.category) {
            let mut evidence = md(&i.evidence.summary);
            if let Some(w) = &i.waiver {
                evidence.push_str(&format!(
                    " — waiver ({}, until {}): {}",
                    w.state,
                    w.until,
                    md(&w.reason)
                ));
            }
            out.push_str(&format!(
                "| {} | `{}` {} | {} | {} | {} |\n",
                mark(i.status),
                i.id,
                md(i.title),
                i.level.as_str(),
                evidence,
                i.fix
                    .as_deref()
                    .filter(|_| !matches!(i.status, Status::Pass))
                    .map(md)
                    .unwrap_or_default()
            ));
        }
    }
    if !card.expiring_waivers.is_empty() {
        out.push_str("\n## Waivers expiring\n\n");
        for w in &card.expiring_waivers {
            out.push_str(&format!("- {}\n", md(w)));
        }
    }
    if let Some(t) = &card.trend {
        out.push_str(&format!(
            "\n## Trend since {}\n\n| At | Level | Score | Failing |\n|---|---|---|---|\n",
            t.since
        ));
        for p in &t.points {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                p.at, p.level, p.score, p.failing
            ));
        }
        if !t.fixed.is_empty() {
            out.push_str(&format!("\nFixed since: {}\n", t.fixed.join(", ")));
        }
        if !t.regressed.is_empty() {
            out.push_str(&format!("\nRegressed since: {}\n", t.regressed.join(", ")));
        }
    }
    out.push_str(&format!("\nScorecard id `{}`.\n", card.id));
    out
}

/// A self-contained page (no scripts, no external resources).
pub fn html(card: &Scorecard) -> String {
    let e = |s: &str| esc(s);
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Readiness: {} / {}</title>\n\
         <style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:80em}}table{{border-collapse:collapse;width:100%}}\
         td,th{{border:1px solid #ccc;padding:.3em .5em;vertical-align:top;text-align:left}}\
         .pass{{color:#1a7f37}}.fail{{color:#cf222e;font-weight:bold}}.warn{{color:#9a6700}}.unknown{{color:#6e7781;font-weight:bold}}.waived{{color:#8250df}}</style></head><body>\n\
         <h1>Production readiness: {} / {}</h1>\n<p>Measured {}. Level <strong id=\"level\">{}</strong>, score <strong id=\"score\">{}</strong>/100.</p>\n",
        e(&card.project),
        e(&card.env),
        e(&card.project),
        e(&card.env),
        e(&card.measured_at),
        card.level.as_str(),
        card.score
    );
    out.push_str("<table><tr><th>Category</th><th>Level</th><th>Score</th><th>Pass</th><th>Warn</th><th>Fail</th><th>Unknown</th><th>Waived</th></tr>\n");
    for c in &card.categories {
        let cells: Vec<String> = c
            .cells()
            .iter()
            .map(|v| format!("<td>{}</td>", e(v)))
            .collect();
        out.push_str(&format!("<tr>{}</tr>\n", cells.concat()));
    }
    out.push_str("</table>\n");
    for c in &card.categories {
        out.push_str(&format!(
            "<h2>{}</h2>\n<table><tr><th>Status</th><th>Item</th><th>Level</th><th>Evidence</th><th>Fix</th></tr>\n",
            e(c.title)
        ));
        for i in card.items.iter().filter(|i| i.category == c.category) {
            out.push_str(&format!(
                "<tr id=\"{}\"><td class=\"{}\">{}</td><td><code>{}</code> {}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                e(i.id),
                i.status.as_str(),
                mark(i.status),
                e(i.id),
                e(i.title),
                i.level.as_str(),
                e(&i.evidence.summary),
                i.fix
                    .as_deref()
                    .filter(|_| i.status != Status::Pass)
                    .map(e)
                    .unwrap_or_default()
            ));
        }
        out.push_str("</table>\n");
    }
    out.push_str("</body></html>\n");
    out
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
