//! Opening an environment's database with the checks every command shares:
//! a protected environment is never reached in clear over a network, and
//! nothing is changed through a transaction-mode pooler (session state,
//! advisory locks and multi-statement transactions would silently land on
//! different server connections there).

use std::time::Duration;

use shipsafe_config::{Config, DbUrl, Protection};
use shipsafe_pg::connect;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::error::CoreError;

/// What the command is about to do with the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only (status, plan, verify): works through any pooler.
    Read,
    /// Changes the database: needs a direct or session-mode connection.
    Change,
}

/// How long the pooler probe waits for a second server connection.
const PROBE_WAIT: Duration = Duration::from_secs(2);

/// Connects to environment `env` at `url` and applies the checks.
pub async fn open(
    config: &Config,
    env: &str,
    url: &DbUrl,
    access: Access,
) -> Result<Client, CoreError> {
    open_with(config, env, url, access, connect(url).await?).await
}

/// [`open`] for a connection that runs only shipsafe's own catalog queries
/// (a backup's): its `search_path` is pinned to `pg_catalog, pg_temp`, so no
/// look-alike of a catalog function that the database's owner put on the
/// path runs as the role shipsafe connects with.
pub async fn open_pinned(
    config: &Config,
    env: &str,
    url: &DbUrl,
    access: Access,
) -> Result<Client, CoreError> {
    let client = shipsafe_pg::connect_pinned(url).await?;
    open_with(config, env, url, access, client).await
}

async fn open_with(
    config: &Config,
    env: &str,
    url: &DbUrl,
    access: Access,
    client: Client,
) -> Result<Client, CoreError> {
    guard(config, env, url, &client, access).await?;
    if access == Access::Change {
        end_with_client(&client).await;
        // Before changing anything: a copy of the audit chain's head in the
        // database, out of reach of whatever happens to state.db.
        crate::anchor::write(config, &client).await;
    }
    Ok(client)
}

/// [`open`] for an operation that replaces the database's contents (a
/// restore): shipsafe's statements on it run with a pinned `search_path`
/// (the database's owner may be less trusted than the role restoring), the
/// server may not end it for idling while the restore holds its lock on it,
/// and nothing is written before the restore itself succeeds.
pub async fn open_for_restore(
    config: &Config,
    env: &str,
    url: &DbUrl,
) -> Result<Client, CoreError> {
    let client = shipsafe_pg::connect_pinned(url).await?;
    guard(config, env, url, &client, Access::Change).await?;
    // PostgreSQL 14 and later; older servers have no such limit to lift.
    let _ = client.batch_execute("set idle_session_timeout = 0").await;
    end_with_client(&client).await;
    Ok(client)
}

/// Has the server cancel this connection's statement within a second of
/// this process dying (kill -9, OOM, a lost network), instead of running
/// it on to the end with its locks held. PostgreSQL 14 and later; on older
/// servers (`status` says so) the next deploy or rollback terminates the
/// backend its dead run recorded.
async fn end_with_client(client: &Client) {
    let _ = client
        .batch_execute("set client_connection_check_interval = '1s'")
        .await;
}

/// The dead-client check, set on shipsafe's own session `client` and then
/// given as an option for sessions shipsafe does not open itself (the
/// team's tool and pg_dump, through `PGOPTIONS`), when both the server took it and a connection to
/// `url` with it in its startup packet is accepted: a server without the
/// setting (before 14, or a platform that cannot tell) would refuse it, and
/// so does PgBouncer unless told to ignore `options`. `None` also when the
/// URL's own options set it already.
pub async fn dead_client_check(client: &Client, url: &DbUrl) -> Option<String> {
    // Set here as on every changing connection (a no-op there): what the
    // server kept says whether it has the setting.
    end_with_client(client).await;
    let row = client
        .query_one(
            "select current_setting('client_connection_check_interval', true)",
            &[],
        )
        .await
        .ok()?;
    let value: String = row.get::<_, Option<String>>(0).filter(|v| v != "0")?;
    let option = format!("-c client_connection_check_interval={value}");
    let mut info = url.conninfo().ok()?;
    if info
        .options
        .as_deref()
        .is_some_and(|o| o.contains("client_connection_check_interval"))
    {
        return None;
    }
    info.options = Some(match info.options.take() {
        Some(o) if !o.trim().is_empty() => format!("{o} {option}"),
        _ => option.clone(),
    });
    shipsafe_pg::connect_info(&info, &url.masked()).await.ok()?;
    Some(option)
}

/// The checks, for a connection already open.
pub async fn guard(
    config: &Config,
    env: &str,
    url: &DbUrl,
    client: &Client,
    access: Access,
) -> Result<(), CoreError> {
    let environment = config.environment(env)?;
    let info = url.conninfo().map_err(|e| {
        CoreError::UnsafeConnection(format!("the connection string of {env} is not valid: {e}"))
    })?;
    if environment.protection() == Protection::Protected
        && !environment.config.allow_plaintext
        && !info.is_local()
        && !info.sslmode.requires_tls()
        && shipsafe_pg::tls_version(client)
            .await
            .map_err(|e| {
                CoreError::Failed(format!(
                    "cannot read pg_stat_ssl: {}",
                    shipsafe_pg::describe(&e)
                ))
            })?
            .is_none()
    {
        return Err(CoreError::UnsafeConnection(format!(
            "{env} is protected and its connection to {} is not encrypted: add sslmode=require (or verify-full with sslrootcert) to its URL, or set allow_plaintext = true under [environments.{env}] if the network is private",
            info.host().unwrap_or("the server")
        )));
    }
    if access == Access::Change {
        let reason = match info.pooler_hint() {
            Some(r) => Some(r),
            None => probe_transaction_pooler(url, client).await,
        };
        if let Some(reason) = reason {
            return Err(CoreError::UnsafeConnection(format!(
                "{env}'s URL reaches a transaction-mode connection pooler ({reason}): changes need one server session from start to end (locks, transactions, session settings), which such a pooler does not give. Use the direct database URL (Supabase: port 5432 / db.<project>.supabase.co; Neon: the host without -pooler) or a session-mode pooler URL"
            )));
        }
    }
    Ok(())
}

fn first_value(rows: &[SimpleQueryMessage]) -> Option<String> {
    rows.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    })
}

async fn backend_pid(client: &Client) -> Option<String> {
    first_value(
        &client
            .simple_query("select pg_catalog.pg_backend_pid()")
            .await
            .ok()?,
    )
}

/// Detects a transaction-mode pooler by behaviour: while a second client
/// holds a transaction open, ask this client for its server process again.
/// A direct or session-pooled connection answers with the same pid at once;
/// a transaction pooler hands out another server connection (another pid),
/// or makes this client wait for the other's transaction.
async fn probe_transaction_pooler(url: &DbUrl, client: &Client) -> Option<String> {
    let first = backend_pid(client).await?;
    // No second connection (connection limit): the URL hints decide alone.
    let Ok(holder) = connect(url).await else {
        return None;
    };
    if holder.batch_execute("begin; select 1").await.is_err() {
        return None;
    }
    let verdict = match tokio::time::timeout(PROBE_WAIT, backend_pid(client)).await {
        Err(_) => Some(format!(
            "one client waited {} s for another client's transaction",
            PROBE_WAIT.as_secs()
        )),
        Ok(Some(second)) if second != first => Some(format!(
            "two transactions of one connection ran in server processes {first} and {second}"
        )),
        Ok(_) => None,
    };
    let _ = holder.batch_execute("rollback").await;
    verdict
}
