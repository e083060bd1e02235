//! Step 8, verify: the change's own verification (verify.sql), then
//! `[[checks]]`, then `[[smoke]]` against the running app.

use shipsafe_config::{Config, VarSource};
use shipsafe_migrate::VerifyReport;
use shipsafe_pg::{CheckOutcome, run_checks};
use tokio_postgres::Client;

use crate::smoke::SmokeOutcome;
use crate::source::{Applied, Source};

/// What verification found.
#[derive(Debug, Clone, Default)]
pub struct Verified {
    pub verified: Vec<VerifyReport>,
    pub checks: Vec<CheckOutcome>,
    pub smoke: Vec<SmokeOutcome>,
    /// Every failure, one line each; empty when all passed.
    pub problems: Vec<String>,
    /// verify.sql itself could not run.
    pub sql_error: Option<String>,
}

impl Verified {
    /// Why verification failed, if it did.
    pub fn failure(&self) -> Option<String> {
        if let Some(e) = &self.sql_error {
            return Some(e.clone());
        }
        (!self.problems.is_empty()).then(|| {
            format!(
                "verification after the migrations failed: {}",
                self.problems.join("; ")
            )
        })
    }

    pub fn detail(&self) -> serde_json::Value {
        let failed = self.checks.iter().filter(|c| !c.ok).count();
        let errored = self.checks.iter().filter(|c| c.is_error()).count();
        serde_json::json!({ "verify_sql": self.verified.len(), "checks_passed": self.checks.len() - failed,
                            "checks_failed": failed - errored, "checks_errored": errored,
                            "smoke": self.smoke.len() })
    }
}

pub async fn run(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    client: &Client,
    source: &Source,
    applied: &Applied,
) -> Verified {
    let mut out = Verified::default();
    match source.verify_sql(client, applied).await {
        Ok(v) => out.verified = v,
        Err(e) => {
            out.sql_error = Some(e);
            return out;
        }
    }
    out.checks = run_checks(client, &config.checks_for(env), false).await;
    if let Ok(Ok(smoke)) = crate::checks::smoke_for(config, vars, env).await {
        out.smoke = smoke;
    }
    out.problems
        .extend(crate::checks::check_failures(&out.checks));
    out.problems
        .extend(crate::checks::smoke_failures(&out.smoke));
    out
}
