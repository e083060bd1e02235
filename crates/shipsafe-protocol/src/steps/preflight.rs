//! Step 1, preflight: the gates (window, git branch; `--override` is
//! recorded), whether a protected change can be confirmed at all, and the
//! environment's lock.

use shipsafe_config::{Config, DbUrl, Protection};
use tokio_postgres::Client;

use super::confirm;
use crate::error::CoreError;
use crate::gates::GateResult;
use crate::pipeline::Failed;
use crate::progress::Confirm;

/// The gates, checked now (the result goes into the run's audit entry).
pub fn gates(config: &Config, env: &str) -> Result<Vec<GateResult>, CoreError> {
    crate::gates::check(config, env, jiff::Timestamp::now())
}

/// The `gates` step: fails unless every gate passed or was overridden.
pub async fn enforce(
    results: &[GateResult],
    env: &str,
    override_reason: Option<&str>,
) -> Result<((), serde_json::Value), Failed> {
    crate::gates::enforce(results, env, override_reason)
        .map(|()| ((), serde_json::json!({ "gates": results })))
        .map_err(|e| Failed::blocked(e).with_detail(serde_json::json!({ "gates": results })))
}

/// A protected change needs a confirmation that can be given: asked before
/// anything costly runs (without a terminal and without `--confirm ENV` it
/// cannot be given later).
pub async fn confirmable(
    protection: Protection,
    confirm: &dyn Confirm,
    env: &str,
) -> Result<((), serde_json::Value), Failed> {
    if protection != Protection::Protected {
        return Ok(((), serde_json::json!({})));
    }
    confirm::possible(confirm, env)
        .map(|()| ((), serde_json::json!({})))
        .map_err(Failed::blocked)
}

/// Takes `env`'s migration lock on a connection kept open for the whole
/// operation (a session lock: closing the connection releases it).
pub async fn lock(client: &Client) -> Result<(), Failed> {
    shipsafe_migrate::history::lock(client)
        .await
        .map_err(|e| Failed::blocked(e.into()))
}

/// [`lock`] on a connection opened for a restore (pinned `search_path`, no
/// idle timeout), with the server's version read on the way.
pub async fn lock_for_restore(
    config: &Config,
    env: &str,
    url: &DbUrl,
) -> Result<((Client, shipsafe_pg::ServerInfo), serde_json::Value), Failed> {
    let locked = async {
        let client = crate::connection::open_for_restore(config, env, url).await?;
        let info = shipsafe_pg::server_info(&client, url).await?;
        shipsafe_migrate::history::lock(&client).await?;
        Ok::<_, CoreError>((client, info))
    }
    .await;
    match locked {
        Ok(held) => Ok((held, serde_json::json!({}))),
        Err(e @ CoreError::Blocked(_)) => Err(Failed::blocked(e)),
        Err(e) => Err(Failed::nothing_changed(e)),
    }
}

/// [`lock_for_restore`] recorded straight into `run`: a failed `lock` step
/// (a step only when it stops the run) and the outcome to end with.
pub async fn lock_for_run(
    config: &Config,
    env: &str,
    url: &DbUrl,
    run: &mut crate::runs::Run,
) -> Result<(Client, shipsafe_pg::ServerInfo), (CoreError, &'static str)> {
    lock_for_restore(config, env, url)
        .await
        .map(|(held, _)| held)
        .map_err(|f| {
            run.begin("lock");
            run.end("failed", f.detail);
            (f.stop.error, f.stop.outcome)
        })
}
