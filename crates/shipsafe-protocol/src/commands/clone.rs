//! `shipsafe clone FROM TO [--mask] [--confirm TO]` (SPEC §9).
//!
//! TO is backed up, then FROM's newest verified backup (or a fresh one) is
//! restored into TO in one transaction; the checks run inside it, and only
//! then does it commit. With `--mask`, `[mask]` is applied to a private
//! scratch copy first ([`crate::steps::mask`]) and TO receives the masked
//! copy: the original values never reach TO's files.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use shipsafe_config::{Config, VarSource};
use shipsafe_pg::CheckOutcome;

use crate::error::CoreError;
use crate::progress::{Confirm, Progress};
use crate::runs::Run;

#[derive(Debug, Clone, Serialize)]
pub struct CloneReport {
    pub from: String,
    pub to: String,
    /// The backup of FROM that was restored.
    pub source_backup: Option<String>,
    /// Whether it was already verified, or taken fresh for this clone.
    pub source: String,
    pub safety_backup: Option<String>,
    pub masked: Vec<String>,
    pub checks: Vec<CheckOutcome>,
    /// What the restore compared with the backup, and what it did not do.
    pub proof: Option<shipsafe_backup::RestoreProof>,
}

/// The masking key, `SHIPSAFE_MASK_KEY`: required, since with a known key
/// anyone could recompute masked values from guessed originals.
fn mask_key(vars: &dyn VarSource) -> Result<String, CoreError> {
    match vars.var(MASK_KEY_ENV).filter(|k| !k.is_empty()) {
        Some(k) if k.chars().count() >= MIN_MASK_KEY => Ok(k),
        Some(_) => Err(CoreError::Setup(format!(
            "{MASK_KEY_ENV} is too short: use at least {MIN_MASK_KEY} random characters (e.g. `openssl rand -hex 16`)"
        ))),
        None => Err(CoreError::Setup(format!(
            "clone --mask needs a secret key in {MASK_KEY_ENV} (at least {MIN_MASK_KEY} random characters, e.g. `openssl rand -hex 16`, kept like a password): masked values are derived from it, and without a secret they could be recomputed from guessed originals; nothing was changed"
        ))),
    }
}

const MASK_KEY_ENV: &str = "SHIPSAFE_MASK_KEY";
const MIN_MASK_KEY: usize = 16;

#[allow(clippy::too_many_arguments)]
pub fn clone<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    cwd: &'a Path,
    from: &'a str,
    to: &'a str,
    mask: bool,
    confirm: &'a dyn Confirm,
    progress: &'a Arc<dyn Progress>,
) -> crate::Task<'a, Result<(shipsafe_state::RunRecord, Option<CoreError>), CoreError>> {
    Box::pin(async move {
        config.environment(from)?;
        config.environment(to)?;
        if from == to {
            return Err(CoreError::Usage(format!(
                "clone {from} {to}: FROM and TO must be different environments"
            )));
        }
        let masking: indexmap::IndexMap<String, shipsafe_config::MaskKind> = config
            .file()
            .mask
            .iter()
            .map(|(k, v)| (k.clone(), *v.get_ref()))
            .collect();
        if mask && masking.is_empty() {
            return Err(CoreError::Usage(
            "--mask needs a [mask] table in shipsafe.toml (\"table.column\" = \"email\" | \"phone\" | \"name\" | \"text\" | \"null\" | \"keep\")".into(),
        ));
        }
        let statements = if mask {
            shipsafe_data::mask::statements(&masking, &mask_key(vars)?)?
        } else {
            Vec::new()
        };
        let mut report = CloneReport {
            from: from.to_string(),
            to: to.to_string(),
            source_backup: None,
            source: String::new(),
            safety_backup: None,
            masked: if mask {
                masking
                    .iter()
                    .filter(|(_, k)| **k != shipsafe_config::MaskKind::Keep)
                    .map(|(c, _)| c.clone())
                    .collect()
            } else {
                Vec::new()
            },
            checks: Vec::new(),
            proof: None,
        };
        let mut run = Run::start("clone", Some(to));
        let audit = serde_json::json!({ "from": from, "to": to, "mask": mask });
        let finish = |run: Run, outcome: &str, report: &CloneReport, ids: Vec<String>| {
            let rec = run.finish(outcome, report, config.state_dir(), cwd, ids, audit.clone())?;
            crate::runs::write_markdown(config.state_dir(), &rec)?;
            Ok::<_, CoreError>(rec)
        };
        // The source: FROM's newest verified backup (its age shown before
        // anything is asked), or a fresh one.
        let store = crate::store::open_store(config, vars)?;
        let newest_verified = store
            .list()
            .await?
            .into_iter()
            .find(|m| m.env == from && m.is_complete() && m.is_verified());
        let copy_of = match &newest_verified {
            Some(m) => format!(
                "{from}'s newest verified backup {} (taken {}, {})",
                m.id,
                m.created_at,
                crate::steps::rollback::backup_age(m)
            ),
            None => format!("a fresh backup of {from} (it has no verified backup)"),
        };
        if let Err(e) = crate::steps::confirm::require(
            config,
            to,
            &format!(
                "replacing {to}'s data with {copy_of}{}; {to}'s current data is backed up first",
                if mask { ", masked" } else { "" }
            ),
            confirm,
        ) {
            run.begin("confirm");
            run.end("failed", serde_json::json!({ "error": e.to_string() }));
            return Ok((finish(run, "blocked", &report, vec![])?, Some(e)));
        }
        let mut ids = Vec::new();

        // TO's lock, as a deploy or restore of TO takes it.
        let url = config.database_url(to, vars)?;
        let lock = match crate::steps::preflight::lock_for_run(config, to, &url, &mut run).await {
            Ok((client, _)) => client,
            Err((e, outcome)) => return Ok((finish(run, outcome, &report, ids)?, Some(e))),
        };

        run.begin("source");
        let source = match newest_verified {
            Some(m) => {
                report.source = format!(
                    "newest verified backup, taken {}",
                    crate::steps::rollback::backup_age(&m)
                );
                m
            }
            None => {
                progress.stage(&format!("backing up {from} (it has no verified backup)"));
                match crate::steps::backup::take_backup(config, vars, from, "pre-clone", progress)
                    .await
                {
                    Ok(m) => {
                        report.source = "fresh backup".into();
                        m
                    }
                    Err(e) => {
                        run.end("failed", serde_json::json!({ "error": e.to_string() }));
                        return Ok((
                            finish(run, "failed_nothing_changed", &report, ids)?,
                            Some(e),
                        ));
                    }
                }
            }
        };
        run.end(
            "ok",
            serde_json::json!({ "backup_id": source.id, "source": report.source }),
        );
        report.source_backup = Some(source.id.clone());
        ids.push(source.id.clone());

        // TO's safety backup.
        match crate::steps::backup::recorded(config, vars, to, "pre-clone", &mut run, progress)
            .await
        {
            Ok(id) => {
                report.safety_backup = Some(id.clone());
                ids.push(id);
            }
            Err(e) => {
                return Ok((
                    finish(run, "failed_nothing_changed", &report, ids)?,
                    Some(e),
                ));
            }
        }

        // Masking happens on a private copy; TO only ever receives its result.
        let masked = if mask {
            run.begin("mask");
            match crate::steps::mask::masked_copy(&store, &source, &statements, to, progress).await
            {
                Ok(copy) => {
                    run.end(
                        "ok",
                        serde_json::json!({ "masked_columns": report.masked.len(), "copy_bytes": copy.manifest.size_bytes }),
                    );
                    Some(copy)
                }
                Err(e) => {
                    run.end("failed", serde_json::json!({ "error": e.to_string() }));
                    return Ok((
                        finish(run, "failed_nothing_changed", &report, ids)?,
                        Some(e),
                    ));
                }
            }
        } else {
            None
        };
        run.begin("restore");
        progress.stage(&format!("restoring {} into {to}", source.id));
        let result = async {
            let url = config.database_url(to, vars)?;
            let (store, manifest) = match &masked {
                Some(copy) => (&copy.store, &copy.manifest),
                None => (&store, &source),
            };
            crate::steps::restore::restore_into(
                config,
                store,
                manifest,
                &url,
                &config.checks_for(to),
                &[],
            )
            .await
        }
        .await;
        drop(masked);
        match result {
            Ok(restored) => {
                // The restore brought FROM's copy of the audit head along.
                crate::anchor::write(config, &lock).await;
                drop(lock);
                report.checks = restored.checks;
                report.proof = Some(restored.proof);
                run.end(
                    "ok",
                    serde_json::json!({ "masked_columns": report.masked.len() }),
                );
                Ok((finish(run, "cloned", &report, ids)?, None))
            }
            Err(e) => {
                run.end("failed", serde_json::json!({ "error": e.to_string() }));
                let outcome = match e.exit_kind() {
                    crate::ExitKind::RolledBack => "rolled_back",
                    _ => "failed_nothing_changed",
                };
                Ok((finish(run, outcome, &report, ids)?, Some(e)))
            }
        }
    })
}
