//! Reference-data sets (`[data.NAME]`): which sets, their files, and
//! merging them in one transaction.

use std::path::{Path, PathBuf};

use serde::Serialize;
use shipsafe_config::{Config, DataSetConfig};
use shipsafe_data::{DataError, DataFile, ImportMode, ImportOptions, SetDef, SetPlan};

use crate::error::CoreError;

impl From<DataError> for CoreError {
    fn from(e: DataError) -> Self {
        match e {
            DataError::Definition { .. } => {
                CoreError::Failed(format!("{e}; fix [data] in shipsafe.toml or the database"))
            }
            DataError::File { .. } => CoreError::Usage(e.to_string()),
            DataError::Invalid(_) => CoreError::Problems(e.to_string()),
            DataError::Db { .. } => CoreError::Failed(e.to_string()),
        }
    }
}

/// The sets named on the command line (or all with `--all`), ordered so a
/// set comes after the sets whose tables it references.
pub fn selected<'a>(
    config: &'a Config,
    sets: &[String],
    all: bool,
) -> Result<Vec<(&'a str, &'a DataSetConfig)>, CoreError> {
    let configured = &config.file().data;
    if configured.is_empty() {
        return Err(CoreError::Usage(
            "no reference-data sets are configured: add a [data.NAME] table to shipsafe.toml"
                .into(),
        ));
    }
    let mut chosen: Vec<(&str, &DataSetConfig)> = Vec::new();
    if all {
        chosen.extend(configured.iter().map(|(k, v)| (k.as_str(), v)));
    } else if sets.is_empty() {
        return Err(CoreError::Usage(
            "name the sets (e.g. `tools tool_access`) or pass --all".into(),
        ));
    } else {
        for s in sets {
            let Some((k, v)) = configured.get_key_value(s) else {
                let known: Vec<&str> = configured.keys().map(String::as_str).collect();
                return Err(CoreError::Usage(format!(
                    "no data set {s:?} in shipsafe.toml (configured: {})",
                    known.join(", ")
                )));
            };
            chosen.push((k.as_str(), v));
        }
    }
    // Referenced tables first: a stable topological sort by repeated passes.
    let mut ordered: Vec<(&str, &DataSetConfig)> = Vec::new();
    while !chosen.is_empty() {
        let ready = chosen.iter().position(|(_, c)| {
            c.references.values().all(|r| {
                !chosen
                    .iter()
                    .any(|(_, other)| other.table == r.table && other.table != c.table)
            })
        });
        ordered.push(chosen.remove(ready.unwrap_or(0)));
    }
    Ok(ordered)
}

pub fn data_dir(config: &Config, dir: Option<&Path>) -> PathBuf {
    match dir {
        Some(d) if d.is_absolute() => d.to_path_buf(),
        Some(d) => config.root().join(d),
        None => config.root().join("data"),
    }
}

pub fn file_of(dir: &Path, set: &str) -> PathBuf {
    dir.join(format!("{set}.json"))
}

/// What `data diff` and `data import` report.
#[derive(Debug, Clone, Serialize)]
pub struct DataReport {
    pub env: String,
    pub mode: ImportMode,
    pub dry_run: bool,
    pub force: bool,
    pub sets: Vec<SetPlan>,
    pub checks: Vec<shipsafe_pg::CheckOutcome>,
}

impl DataReport {
    pub fn conflicts(&self) -> usize {
        self.sets.iter().map(|s| s.conflicts.len()).sum()
    }
    pub fn unresolved(&self) -> usize {
        self.sets.iter().map(|s| s.unresolved.len()).sum()
    }
    pub fn changes_anything(&self) -> bool {
        self.sets.iter().any(SetPlan::changes_anything)
    }
}

/// Options of `data import` (and `diff`).
#[derive(Debug, Clone, Copy)]
pub struct DataOptions<'a> {
    pub dir: Option<&'a Path>,
    pub mode: ImportMode,
    pub dry_run: bool,
    pub force: bool,
    pub skip_unresolved: bool,
}

/// Reads every chosen set's file before anything touches the database.
pub fn read_files(
    config: &Config,
    chosen: &[(&str, &DataSetConfig)],
    dir: Option<&Path>,
) -> Result<Vec<DataFile>, CoreError> {
    let dir = data_dir(config, dir);
    chosen
        .iter()
        .map(|(name, _)| {
            let f = DataFile::read(&file_of(&dir, name))?;
            if f.set != *name {
                return Err(CoreError::Usage(format!(
                    "{} holds set {:?}, not {name:?}",
                    file_of(&dir, name).display(),
                    f.set
                )));
            }
            Ok(f)
        })
        .collect()
}

/// Runs the import of every set in one transaction on `client`, leaving it
/// open for the caller to commit or roll back.
pub async fn plan_all(
    client: &tokio_postgres::Client,
    chosen: &[(&str, &DataSetConfig)],
    files: &[DataFile],
    opts: &DataOptions<'_>,
    lock: bool,
) -> Result<Vec<SetPlan>, CoreError> {
    let mut plans = Vec::new();
    for ((name, cfg), file) in chosen.iter().zip(files) {
        let def = SetDef::resolve(client, name, cfg).await?;
        let plan = shipsafe_data::import::import_set(
            client,
            &def,
            file,
            ImportOptions {
                mode: opts.mode,
                force: opts.force,
                skip_unresolved: opts.skip_unresolved,
                apply: lock,
            },
        )
        .await?;
        plans.push(plan);
    }
    Ok(plans)
}

/// Deploy's data step: merges `sets` (their files in `data/`) on `client`
/// in one transaction and commits, unless conflicts or unresolved
/// references stop it (then nothing of it is committed).
pub async fn merge_in_transaction(
    config: &Config,
    client: &tokio_postgres::Client,
    env: &str,
    sets: &[String],
) -> Result<Vec<SetPlan>, (Vec<SetPlan>, CoreError)> {
    let fail = |e: CoreError| (Vec::new(), e);
    let chosen = selected(config, sets, false).map_err(fail)?;
    let files = read_files(config, &chosen, None).map_err(fail)?;
    let opts = DataOptions {
        dir: None,
        mode: ImportMode::Merge,
        dry_run: false,
        force: false,
        skip_unresolved: false,
    };
    crate::checks::begin(client, config).await.map_err(fail)?;
    let plans = match plan_all(client, &chosen, &files, &opts, true).await {
        Ok(p) => p,
        Err(e) => {
            let _ = client.batch_execute("rollback").await;
            return Err(fail(e));
        }
    };
    let report = DataReport {
        env: env.to_string(),
        mode: ImportMode::Merge,
        dry_run: false,
        force: false,
        sets: plans,
        checks: Vec::new(),
    };
    if let Some(msg) = problems(&report) {
        let _ = client.batch_execute("rollback").await;
        return Err((report.sets, CoreError::Problems(msg)));
    }
    if let Err(e) = client.batch_execute("commit").await {
        return Err((report.sets, CoreError::Failed(shipsafe_pg::describe(&e))));
    }
    Ok(report.sets)
}

pub fn problems(report: &DataReport) -> Option<String> {
    let mut lines = Vec::new();
    for s in &report.sets {
        for u in &s.unresolved {
            lines.push(format!(
                "{}: row {} references {} {}, which {} does not have",
                s.set, u.key, u.reference, u.value, report.env
            ));
        }
        for c in &s.conflicts {
            lines.push(format!(
                "{}: row {} was {} since the last import",
                s.set,
                c.key,
                if c.kind == "deleted_in_target" {
                    "deleted in the target"
                } else {
                    "edited in the target"
                }
            ));
        }
    }
    if lines.is_empty() {
        return None;
    }
    let total = lines.len();
    lines.truncate(20);
    Some(format!(
        "{total} row(s) cannot be imported as they are, so nothing was changed:\n  {}{}\nFix the rows, pass --skip-unresolved to leave out rows with unresolved references, or --force to overwrite what was changed in the target (audited).",
        lines.join("\n  "),
        if total > 20 { "\n  …" } else { "" }
    ))
}
