//! `shipsafe rehearse ENV`: preflight → backup → clone → rehearse → record.
//! The target is not changed.

use std::path::Path;
use std::sync::Arc;

use shipsafe_config::{Config, VarSource};

use crate::error::CoreError;
use crate::pipeline::{Failed, Pipeline, Stop};
use crate::progress::Progress;
use crate::rehearsal::{Verdict, target_changed_error};
use crate::source::{Pending, Source};
use crate::steps;

pub fn rehearse<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    cwd: &'a Path,
    env: &'a str,
    progress: &'a Arc<dyn Progress>,
) -> crate::Task<'a, Result<(shipsafe_state::RunRecord, Option<CoreError>), CoreError>> {
    Box::pin(async move {
        config.environment(env)?;
        let source = Source::of(config);
        let mut p = Pipeline::start(config, cwd, "rehearse", Some(env), serde_json::json!({}));
        let url = config.database_url(env, vars)?;
        let preflight = async {
            let client =
                crate::connection::open(config, env, &url, crate::connection::Access::Read)
                    .await
                    .map_err(Failed::nothing_changed)?;
            let pending = source
                .pending(config, &url, &client)
                .await
                .map_err(Failed::nothing_changed)?;
            let mut detail = pending.detail();
            detail["external"] = serde_json::json!(source.tool().is_some());
            Ok::<(Pending, _), Failed>((pending, detail))
        };
        let pending = match p.step("preflight", preflight).await {
            Ok(pending) => pending,
            Err(stop) => return Err(stop.error),
        };
        if !pending.any() {
            let rec = p.finish("nothing_to_do", &serde_json::json!({}))?;
            return Ok((rec, None));
        }
        let stopped = |p: Pipeline, stop: Stop| {
            let report = serde_json::json!({ "error": stop.error.to_string() });
            p.stop(stop, &report)
        };
        let backup = steps::clone::backup_for_clone(config, vars, env, "pre-rehearsal", progress);
        let (mut manifest, clone) = match p.step_or_stop("backup", backup).await {
            Ok(x) => x,
            Err(stop) => return stopped(p, stop),
        };
        p.keep_backup(&manifest.id, true);
        p.begin("rehearse");
        let r = steps::rehearse::on_clone(
            config,
            vars,
            env,
            &source,
            &pending,
            &mut manifest,
            clone,
            progress,
        );
        let r = match p.cancellable("rehearsal", r).await {
            Ok(r) => r,
            Err(stop) => return stopped(p, stop),
        };
        let report = match r {
            Ok(r) => r,
            Err(e) => {
                p.end(false, serde_json::json!({ "error": e.to_string() }));
                return stopped(p, Stop::nothing_changed(e));
            }
        };
        let blocked = report.verdict == Verdict::Blocked;
        p.end(
        !blocked,
        serde_json::json!({ "verdict": report.verdict, "round_trip": report.round_trip.status }),
    );
        let error = blocked.then(|| {
            if report.target_changed {
                target_changed_error(env, &manifest.id, &report.reasons.join("; "))
            } else {
                CoreError::Problems(format!(
                    "the rehearsal of {env} failed on the clone ({}); {env} was not touched",
                    report.reasons.join("; ")
                ))
            }
        });
        let outcome = if report.target_changed {
            "target_changed"
        } else if blocked {
            "blocked"
        } else {
            "rehearsed"
        };
        let rec = p.finish(outcome, &serde_json::json!({ "rehearsal": report }))?;
        Ok((rec, error))
    })
}
