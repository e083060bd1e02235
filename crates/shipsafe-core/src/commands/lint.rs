//! `shipsafe lint [PATH...]`, and the lint step of `plan` and `deploy`.

use std::path::{Path, PathBuf};

use serde::Serialize;
use shipsafe_lint::{Finding, Severity};
use shipsafe_migrate::Migration;

use crate::error::CoreError;

/// SPEC §5's JSON shape.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LintReport {
    pub files_checked: usize,
    pub findings: Vec<Finding>,
}

impl LintReport {
    /// Unsuppressed errors: these block a deploy.
    pub fn blocking(&self) -> Vec<&Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error && !f.suppressed)
            .collect()
    }

    fn add(&mut self, display: &str, text: &str) -> Result<(), CoreError> {
        let found =
            shipsafe_lint::lint(display, text).map_err(|e| CoreError::Problems(e.to_string()))?;
        self.files_checked += 1;
        self.findings.extend(found);
        Ok(())
    }
}

/// A path as shown in findings: relative to `base` when inside it.
fn shown(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Lints the forward scripts of migrations.
pub fn lint_migrations(migrations: &[&Migration], base: &Path) -> Result<LintReport, CoreError> {
    let mut report = LintReport::default();
    for m in migrations {
        report.add(&shown(&m.up.path, base), &m.up.text)?;
    }
    Ok(report)
}

/// Forward migration scripts under `dir` (not down.sql or verify.sql).
fn sql_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CoreError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| CoreError::io(format!("cannot read {}", dir.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if p.is_dir() {
            sql_files(&p, out)?;
        } else if name.ends_with(".sql") && name != "down.sql" && name != "verify.sql" {
            out.push(p);
        }
    }
    Ok(())
}

/// Lints files and folders given on the command line.
pub fn lint_paths(paths: &[PathBuf], base: &Path) -> Result<LintReport, CoreError> {
    let mut files = Vec::new();
    for p in paths {
        let p = if p.is_absolute() {
            p.clone()
        } else {
            base.join(p)
        };
        if p.is_dir() {
            sql_files(&p, &mut files)?;
        } else if p.is_file() {
            files.push(p);
        } else {
            return Err(CoreError::Usage(format!("{} does not exist", p.display())));
        }
    }
    let mut report = LintReport::default();
    for f in files {
        let text = std::fs::read_to_string(&f)
            .map_err(|e| CoreError::io(format!("cannot read {}", f.display()), e))?;
        report.add(&shown(&f, base), &text)?;
    }
    Ok(report)
}
