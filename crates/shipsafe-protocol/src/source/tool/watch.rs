//! Where a rehearsal's tool cannot be kept off the network (no namespaces,
//! or a clone reached over TCP), the target is watched instead:
//!
//! - the tool runs with `PGAPPNAME=shipsafe-rehearsal-…`, and a connection
//!   held to the target for the whole rehearsal ends every session of that
//!   name there at once (a driver that ignores libpq's variables, or a URL
//!   that names its own `application_name`, escapes this);
//! - after every tool command, before the next (so before any `down`), the
//!   target's schema fingerprint and (a preset) the tool's history there are
//!   compared with the rehearsal's start: a change stops the rehearsal with
//!   the outcome `target_changed`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shipsafe_config::{Config, DbUrl};
use shipsafe_migrate::tool::ToolState;
use tokio_postgres::Client;

use super::config::External;
use super::history::state;

/// How often the target's sessions are looked at.
const EVERY: Duration = Duration::from_millis(100);

/// A watch on the target for one rehearsal.
pub(crate) struct Watch {
    target: DbUrl,
    client: Client,
    fingerprint: String,
    history: Option<ToolState>,
    ended: Arc<AtomicUsize>,
    /// The tool runs in a network and mount namespace: a change to the
    /// target then went another way (named in the message, never taken
    /// for harmless).
    pub isolated: bool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Why the watch ended the rehearsal.
pub(crate) enum Reached {
    /// The target's schema or history moved: it changed.
    Changed(String),
    /// The tool connected to the target and was cut off; nothing changed.
    Connected(String),
}

impl Watch {
    /// Starts watching `target` for sessions named `app_name`.
    pub async fn start(
        config: &Config,
        ext: &External,
        target: &DbUrl,
        app_name: &str,
    ) -> Result<Self, String> {
        let describe = |e: shipsafe_pg::PgError| format!("cannot watch the target: {e}");
        let client = shipsafe_pg::connect(target).await.map_err(describe)?;
        let watcher = shipsafe_pg::connect(target).await.map_err(describe)?;
        let fingerprint = shipsafe_pg::schema_fingerprint(&client)
            .await
            .map_err(|e| {
                format!(
                    "cannot read the target's schema: {}",
                    shipsafe_pg::describe(&e)
                )
            })?;
        let history = if ext.reads_history() {
            Some(
                state(config, ext, target)
                    .await
                    .map_err(|e| e.to_string())?,
            )
        } else {
            None
        };
        let ended = Arc::new(AtomicUsize::new(0));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let counted = ended.clone();
        let name = app_name.to_string();
        let task = tokio::spawn(async move {
            loop {
                let rows = watcher
                    .query(
                        "select pg_terminate_backend(pid) from pg_stat_activity \
                         where application_name = $1 and datname = current_database() \
                           and pid <> pg_backend_pid()",
                        &[&name],
                    )
                    .await;
                if let Ok(rows) = rows {
                    let n = rows.iter().filter(|r| r.get::<_, bool>(0)).count();
                    counted.fetch_add(n, Ordering::SeqCst);
                }
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(EVERY) => {}
                }
            }
        });
        Ok(Self {
            target: target.clone(),
            client,
            fingerprint,
            history,
            ended,
            isolated: false,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// After tool command `command`: whether the target is as it was.
    pub async fn check(
        &self,
        config: &Config,
        ext: &External,
        command: &str,
    ) -> Result<(), Reached> {
        let now = shipsafe_pg::schema_fingerprint(&self.client)
            .await
            .map_err(|e| {
                Reached::Changed(format!(
                    "cannot re-read the target's schema after `{command}`: {}",
                    shipsafe_pg::describe(&e)
                ))
            })?;
        let history_moved = match &self.history {
            Some(before) => {
                let after = state(config, ext, &self.target).await.ok();
                after.as_ref() != Some(before)
            }
            None => false,
        };
        if now == self.fingerprint && !history_moved {
            // As it was.
        } else if history_moved {
            // The history moving is the tool's doing, namespace or not, or
            // the app migrating on boot at that moment.
            return Err(Reached::Changed(format!(
                "the target's {} history moved while `{command}` ran on the clone: the tool did not use the clone's URL in {} (does the app read .env or a config file?), or the app migrated the target itself at that moment (a migrate-on-boot){}",
                ext.tool.as_str(),
                ext.url_env,
                if self.isolated {
                    ", and it reached the target although it ran in a network namespace (a server socket in a folder shipsafe does not hide?)"
                } else {
                    ""
                }
            )));
        } else {
            return Err(Reached::Changed(format!(
                "the target's schema changed while `{command}` ran on the clone: the tool did not use the clone's URL in {} (does the app read .env or a config file?), or another session changed it at the same time (the app's own DDL): shipsafe cannot tell which, since even a tool in a network namespace can reach the target through the clone's server (dblink, postgres_fdw) or a socket it does not hide; check what changed before anything else",
                ext.url_env
            )));
        }
        let ended = self.ended.load(Ordering::SeqCst);
        if ended > 0 {
            return Err(Reached::Connected(format!(
                "`{command}` connected to the target instead of the clone, and shipsafe ended its {ended} session(s) there; the target's schema and history are unchanged. Does the app read its database URL from .env or its settings instead of {}?",
                ext.url_env
            )));
        }
        Ok(())
    }

    /// Stops watching; returns how many of the tool's sessions were ended.
    pub async fn finish(mut self) -> usize {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.ended.load(Ordering::SeqCst)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
