use std::path::PathBuf;

use shipsafe_protocol::ExitKind;
use shipsafe_protocol::lint;
use shipsafe_protocol::source::native as migrate;

use super::Ctx;
use crate::output::Rendered;

pub async fn run(ctx: &Ctx, paths: &[PathBuf], env: Option<&str>) -> anyhow::Result<Rendered> {
    let mut report = if paths.is_empty() {
        let config = ctx.config()?;
        let all = migrate::discover(&config)?;
        let refs: Vec<_> = all.iter().collect();
        lint::lint_migrations(&refs, config.root())?
    } else {
        lint::lint_paths(paths, &ctx.cwd)?
    };
    if let Some(env) = env {
        let config = ctx.config()?;
        lint::weigh_in(&mut report, &config, &shipsafe_config::ProcessEnv, env).await?;
    }
    let mut text: String = report.findings.iter().map(|f| f.render()).collect();
    let errors = report.blocking().len();
    let warnings = report
        .findings
        .iter()
        .filter(|f| !f.suppressed && f.severity == shipsafe_lint::Severity::Warning)
        .count();
    let info = report
        .findings
        .iter()
        .filter(|f| !f.suppressed && f.severity == shipsafe_lint::Severity::Info)
        .count();
    let suppressed = report.findings.iter().filter(|f| f.suppressed).count();
    text.push_str(&format!(
        "{} file(s) checked: {errors} error(s), {warnings} warning(s), {info} info, {suppressed} allowed\n",
        report.files_checked
    ));
    let exit = if errors > 0 {
        ExitKind::Problems
    } else {
        ExitKind::Success
    };
    Rendered::new(&report, text, exit)
}
