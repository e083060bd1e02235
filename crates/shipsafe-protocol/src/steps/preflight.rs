//! Step 1, preflight: the gates (window, git branch; `--override` is
//! recorded) and the environment's lock. Whether a protected change can be
//! confirmed at all is `confirm::possible`.

use shipsafe_config::{Config, DbUrl};
use tokio_postgres::Client;

use crate::error::CoreError;
use crate::gates::GateResult;
use crate::pipeline::Failed;

/// The gates, checked now (the result goes into the run's audit entry).
pub fn gates(config: &Config, env: &str) -> Result<Vec<GateResult>, CoreError> {
    crate::gates::check(config, env, jiff::Timestamp::now())
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

/// [`lock_for_run`] for a command that changes ENV outside a deploy (wipe,
/// data import): a run inside another run's window would be undone by that
/// run's rollback. A dry run reads only and takes no lock.
pub async fn lock_to_change(
    config: &Config,
    env: &str,
    url: &DbUrl,
    run: &mut crate::runs::Run,
    dry_run: bool,
) -> Result<Option<Client>, (CoreError, &'static str)> {
    if dry_run {
        return Ok(None);
    }
    lock_for_run(config, env, url, run)
        .await
        .map(|(held, _)| Some(held))
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
