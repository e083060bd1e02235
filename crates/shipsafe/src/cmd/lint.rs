use std::path::PathBuf;

use shipsafe_core::ExitKind;
use shipsafe_core::commands::{lint, migrate};

use super::Ctx;
use crate::output::Rendered;

pub fn run(ctx: &Ctx, paths: &[PathBuf]) -> anyhow::Result<Rendered> {
    let report = if paths.is_empty() {
        let config = ctx.config()?;
        let all = migrate::discover(&config)?;
        let refs: Vec<_> = all.iter().collect();
        lint::lint_migrations(&refs, config.root())?
    } else {
        lint::lint_paths(paths, &ctx.cwd)?
    };
    let mut text: String = report.findings.iter().map(|f| f.render()).collect();
    let errors = report.blocking().len();
    let warnings = report
        .findings
        .iter()
        .filter(|f| !f.suppressed && f.severity == shipsafe_lint::Severity::Warning)
        .count();
    let suppressed = report.findings.iter().filter(|f| f.suppressed).count();
    text.push_str(&format!(
        "{} file(s) checked: {errors} error(s), {warnings} warning(s), {suppressed} allowed\n",
        report.files_checked
    ));
    let exit = if errors > 0 {
        ExitKind::Problems
    } else {
        ExitKind::Success
    };
    Rendered::new(&report, text, exit)
}
