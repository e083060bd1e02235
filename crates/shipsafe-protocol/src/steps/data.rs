//! Step 7, data: every configured reference-data set whose file exists in
//! `data/`, merged in its own transaction. Conflicts and unresolved
//! references fail the deploy (and roll it back), as they would stop
//! `data import`.

use shipsafe_config::Config;
use shipsafe_data::SetPlan;
use tokio_postgres::Client;

use crate::error::CoreError;

/// The sets a deploy merges: configured, with a file in `data/`.
pub fn sets(config: &Config) -> Vec<String> {
    let dir = crate::refdata::data_dir(config, None);
    config
        .file()
        .data
        .keys()
        .filter(|s| dir.join(format!("{s}.json")).is_file())
        .cloned()
        .collect()
}

/// Merges `names`. Returns the plans (also those of a failed merge) and the
/// step's detail.
pub async fn merge(
    config: &Config,
    client: &Client,
    env: &str,
    names: &[String],
) -> (
    Vec<SetPlan>,
    Result<serde_json::Value, (CoreError, serde_json::Value)>,
) {
    match crate::refdata::merge_in_transaction(config, client, env, names).await {
        Ok(plans) => {
            let detail = serde_json::json!({ "sets": plans.iter().map(|p| serde_json::json!({
                "set": p.set, "inserts": p.inserts, "updates": p.updates, "deletes": p.deletes,
                "unchanged": p.unchanged })).collect::<Vec<_>>() });
            (plans, Ok(detail))
        }
        Err((plans, e)) => {
            let detail = serde_json::json!({ "error": e.to_string() });
            (plans, Err((e, detail)))
        }
    }
}
