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
        .apply(config, url, client, pending, before, &opts, progress)
        .await
}
