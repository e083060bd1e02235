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
