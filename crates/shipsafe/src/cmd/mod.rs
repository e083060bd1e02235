//! One file per command: call the core, render the result.

pub mod backup;
pub mod data;
pub mod demo;
pub mod init;
pub mod lint;
pub mod log;
pub mod migrate;
pub mod readiness;
pub mod serve;
pub mod status;
pub mod verify;

use std::path::PathBuf;

use anyhow::Context as _;
use shipsafe_config::{Config, LoadOptions, ProcessEnv};

use crate::cli::Cli;

/// Everything a command needs from the global flags.
#[derive(Debug)]
pub struct Ctx {
    pub cwd: PathBuf,
    pub config_flag: Option<PathBuf>,
    pub state_dir_flag: Option<PathBuf>,
    pub progress: bool,
}

impl Ctx {
    pub fn from_cli(cli: &Cli) -> anyhow::Result<Self> {
        Ok(Self {
            cwd: std::env::current_dir().context("cannot read the current folder")?,
            config_flag: cli.config.clone(),
            state_dir_flag: cli.state_dir.clone(),
            progress: !cli.no_progress && !cli.quiet,
        })
    }

    /// Loads the config: flag > SHIPSAFE_CONFIG > nearest shipsafe.toml.
    /// Every command starts here, so runs a killed process left behind get
    /// their `interrupted` audit entry here too.
    pub fn config(&self) -> Result<Config, shipsafe_config::ConfigError> {
        let config = shipsafe_config::load(
            &LoadOptions {
                config_flag: self.config_flag.clone(),
                state_dir_flag: self.state_dir_flag.clone(),
                cwd: self.cwd.clone(),
            },
            &ProcessEnv,
        )?;
        if let Err(e) = shipsafe_protocol::runs::note_interrupted(config.state_dir(), &self.cwd) {
            tracing::warn!("cannot record interrupted runs: {e}");
        }
        Ok(config)
    }
}

/// A first Ctrl-C (or SIGTERM, SIGHUP) asks the run to stop before its next step
/// (nothing is changed before the change; during it, the change is rolled
/// back); a second one removes the scratch clones and ends the process at
/// once.
pub(crate) fn stop_between_steps_on_ctrl_c() {
    use tokio::signal::unix::{SignalKind, signal};
    shipsafe_serve::stop_gracefully_on_signals();
    // SIGHUP: the terminal was closed; the run stops as on Ctrl-C rather
    // than dying with pg_dump or the tool left running.
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return;
    };
    tokio::spawn(async move {
        let mut next = async || {
            tokio::select! {
                _ = int.recv() => ("Ctrl-C", 130),
                _ = term.recv() => ("SIGTERM", 143),
                _ = hup.recv() => ("SIGHUP", 129),
            }
        };
        let (first, _) = next().await;
        shipsafe_protocol::pipeline::request_stop();
        eprintln!(
            "shipsafe: {first}: stopping. A backup or rehearsal under way is cancelled now and nothing is changed; a change already under way is finished or rolled back, then the run is recorded as interrupted. Send it again to end at once"
        );
        let (second, code) = next().await;
        use shipsafe_protocol::pipeline::Abandoned;
        let recorded = shipsafe_protocol::pipeline::record_abandoned();
        eprintln!(
            "shipsafe: {second} again: ending now; scratch clones are removed; {}",
            match recorded {
                Abandoned::Recorded(id) =>
                    format!("run {id} changed nothing and is recorded as interrupted"),
                Abandoned::Changing(id) => format!(
                    "run {id} was inside its change: the server rolls back the statement it was running, and `shipsafe rollback` finds the run"
                ),
                Abandoned::Nothing => "no run was under way".into(),
            }
        );
        shipsafe_protocol::pipeline::remove_scratch_now();
        std::process::exit(code);
    });
}
