//! Step 6, apply: the pending change, by its source, with the project's
//! lock and statement timeouts and lock retries, recorded under this run.

use std::sync::Arc;

use shipsafe_config::{Config, DbUrl};
use tokio_postgres::Client;

use crate::progress::Progress;
use crate::source::{Applied, Before, Pending, Source, native};

#[allow(clippy::too_many_arguments)]
pub async fn run(
    config: &Config,
    source: &Source,
    env: &str,
    url: &DbUrl,
    client: &Client,
    pending: &Pending,
    before: &Before,
    applied_by: &str,
    run_id: &str,
    progress: &Arc<dyn Progress>,
) -> Applied {
    let opts = native::apply_options(config, applied_by, Some(run_id.to_string()), true);
    source
        .apply(config, env, url, client, pending, before, &opts, progress)
        .await
}

/// Cancels the change under way on the database at `url`: the statement of
/// shipsafe's own session `backend`, and (the team's tool) of every session
/// the tool's run opened there (named by `PGAPPNAME`). Best effort: what
/// cannot be cancelled finishes, and the rollback undoes it.
pub async fn cancel(url: &DbUrl, backend: Option<i32>, tool: bool) {
    let Ok(client) = shipsafe_pg::connect(url).await else {
        return;
    };
    let app = tool.then(crate::source::tool::config::deploy_app_name);
    let _ = client
        .query(
            "select pg_cancel_backend(pid) from pg_stat_activity \
             where datname = current_database() and pid <> pg_backend_pid() \
               and (pid = $1 or application_name = $2)",
            &[&backend, &app],
        )
        .await;
}
