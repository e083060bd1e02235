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

    /// Lints `files` as one ordered history (see [`shipsafe_lint::lint_batch`]).
    pub fn batch(files: &[(String, String)]) -> Result<Self, CoreError> {
        let findings =
            shipsafe_lint::lint_batch(files.iter().map(|(d, t)| (d.as_str(), t.as_str())))
                .map_err(|e| CoreError::Problems(e.to_string()))?;
        Ok(Self {
            files_checked: files.len(),
            findings,
        })
    }
}

/// Reads the size of every table a size-dependent finding names from the
/// target's catalog: below `[lint] small_table` (bytes and rows) the finding
/// becomes `info`, with the evidence; above it stays as it was, with the
/// evidence. A table that does not exist yet is new. Unreadable sizes
/// leave the finding as it was.
pub async fn weigh(
    report: &mut LintReport,
    client: &tokio_postgres::Client,
    limits: &shipsafe_config::LintConfig,
) {
    let (max_bytes, max_rows) = (limits.small_table_bytes(), limits.small_table_rows());
    let mut sizes: std::collections::HashMap<String, Option<(i64, i64)>> =
        std::collections::HashMap::new();
    for f in report
        .findings
        .iter_mut()
        .filter(|f| f.size_dependent() && !f.suppressed)
    {
        let Some(table) = f.table.clone() else {
            continue;
        };
        if !sizes.contains_key(&table) {
            // Names as PostgreSQL stored them: quoted, so Prisma's "User" is
            // not folded to user.
            let regclass = table
                .split('.')
                .map(shipsafe_pg::quote_ident)
                .collect::<Vec<_>>()
                .join(".");
            let size = client
                .query_typed(
                    "select c.reltuples::int8, pg_total_relation_size(c.oid) \
                       from pg_class c where c.oid = to_regclass($1)",
                    &[(&regclass, tokio_postgres::types::Type::TEXT)],
                )
                .await;
            let Ok(rows) = size else { continue };
            sizes.insert(
                table.clone(),
                rows.first()
                    .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1))),
            );
        }
        match sizes.get(&table).copied().flatten() {
            None => {
                f.severity = Severity::Info;
                f.evidence = Some(format!("{table} does not exist yet: a new table is empty"));
            }
            Some((rows, bytes)) => {
                // reltuples is -1 for a table never vacuumed or analyzed.
                let rows_known = rows >= 0;
                let small = bytes as u64 <= max_bytes && (!rows_known || rows as u64 <= max_rows);
                let shown_rows = if rows_known {
                    format!("{} rows", thousands(rows))
                } else {
                    "rows not counted yet".to_string()
                };
                let size = format!(
                    "{table}: {shown_rows}, {}",
                    crate::rehearsal_text::mib(bytes)
                );
                if small {
                    f.severity = Severity::Info;
                    f.evidence = Some(format!(
                        "{size}: small (at most {} and {} rows, [lint] small_table), so the lock is held for milliseconds",
                        crate::rehearsal_text::mib(max_bytes as i64),
                        thousands(max_rows as i64)
                    ));
                } else {
                    f.evidence = Some(format!(
                        "{size}: larger than [lint] small_table ({} or {} rows)",
                        crate::rehearsal_text::mib(max_bytes as i64),
                        thousands(max_rows as i64)
                    ));
                }
            }
        }
    }
}

fn thousands(n: i64) -> String {
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Before a rehearsal: size-dependent errors stop blocking and say that the
/// rehearsal's measurements decide. Returns how many were deferred.
pub fn defer_to_rehearsal(report: &mut LintReport) -> usize {
    let mut n = 0;
    for f in report
        .findings
        .iter_mut()
        .filter(|f| f.size_dependent() && !f.suppressed && f.severity == Severity::Error)
    {
        f.severity = Severity::Warning;
        let note = "left to the rehearsal: its measured locks and rewrites decide";
        f.evidence = Some(match f.evidence.take() {
            Some(e) => format!("{e}; {note}"),
            None => note.to_string(),
        });
        n += 1;
    }
    n
}

/// [`weigh`] against environment `env`'s catalog.
pub fn weigh_in<'a>(
    report: &'a mut LintReport,
    config: &'a shipsafe_config::Config,
    vars: &'a dyn shipsafe_config::VarSource,
    env: &'a str,
) -> crate::Task<'a, Result<(), CoreError>> {
    Box::pin(async move {
        let url = config.database_url(env, vars)?;
        let client =
            crate::connection::open(config, env, &url, crate::connection::Access::Read).await?;
        weigh(report, &client, &config.file().lint).await;
        Ok(())
    })
}

/// Compares paths as people number migrations: digit runs by value, so
/// `2_x` comes before `10_y`.
fn natural_cmp(a: &Path, b: &Path) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match out.last_mut() {
                Some((d, run)) if *d == digit => run.push(c),
                _ => out.push((digit, c.to_string())),
            }
        }
        out
    }
    let (pa, pb) = (parts(&a.to_string_lossy()), parts(&b.to_string_lossy()));
    for (x, y) in pa.iter().zip(&pb) {
        let o = match (x, y) {
            ((true, m), (true, n)) => {
                let (m, n) = (m.trim_start_matches('0'), n.trim_start_matches('0'));
                m.len().cmp(&n.len()).then_with(|| m.cmp(n))
            }
            _ => x.1.cmp(&y.1),
        };
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

/// A path as shown in findings: relative to `base` when inside it.
fn shown(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Lints the forward scripts of migrations, in order, as one batch.
pub fn lint_migrations(migrations: &[&Migration], base: &Path) -> Result<LintReport, CoreError> {
    let files: Vec<(String, String)> = migrations
        .iter()
        .map(|m| (shown(&m.up.path, base), m.up.text.clone()))
        .collect();
    LintReport::batch(&files)
}

/// Forward migration scripts under `dir` (not down.sql or verify.sql).
fn sql_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CoreError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| CoreError::io(format!("cannot read {}", dir.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort_by(|a, b| natural_cmp(a, b));
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
    // The files given form one ordered history (a folder of migrations).
    let mut texts = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)
            .map_err(|e| CoreError::io(format!("cannot read {}", f.display()), e))?;
        texts.push((shown(&f, base), text));
    }
    LintReport::batch(&texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_sort_by_number_not_by_text() {
        let mut v: Vec<PathBuf> = [
            "m/10_c/up.sql",
            "m/2_b/up.sql",
            "m/1_a/up.sql",
            "m/002_x/up.sql",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        v.sort_by(|a, b| natural_cmp(a, b));
        let s: Vec<String> = v.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            s,
            [
                "m/1_a/up.sql",
                "m/2_b/up.sql",
                "m/002_x/up.sql",
                "m/10_c/up.sql"
            ]
        );
    }
}
