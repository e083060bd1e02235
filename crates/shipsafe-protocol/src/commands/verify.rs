//! `shipsafe verify ENV`: `[[checks]]` and `[[smoke]]` now.

use serde::Serialize;
use shipsafe_config::{Config, VarSource};
use shipsafe_pg::{CheckOutcome, run_checks};

use crate::checks::smoke_for;
use crate::error::CoreError;
use crate::smoke::SmokeOutcome;

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub env: String,
    pub ok: bool,
    pub checks: Vec<CheckOutcome>,
    pub smoke: Vec<SmokeOutcome>,
    /// Why smoke tests did not run (no app_url).
    pub smoke_skipped: Option<String>,
}

pub fn verify<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    env: &'a str,
) -> crate::Task<'a, Result<VerifyReport, CoreError>> {
    Box::pin(async move {
        config.environment(env)?;
        let url = config.database_url(env, vars)?;
        let client =
            crate::connection::open(config, env, &url, crate::connection::Access::Read).await?;
        let checks = run_checks(&client, &config.checks_for(env), false).await;
        let (smoke, smoke_skipped) = match smoke_for(config, vars, env).await? {
            Ok(s) => (s, None),
            Err(why) => (Vec::new(), Some(why)),
        };
        let ok = checks.iter().all(|c| c.ok) && smoke.iter().all(|s| s.ok);
        Ok(VerifyReport {
            env: env.to_string(),
            ok,
            checks,
            smoke,
            smoke_skipped,
        })
    })
}
