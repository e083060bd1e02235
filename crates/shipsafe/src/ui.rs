//! Progress on stderr: a spinner when stderr is a terminal, otherwise only
//! log lines at -v.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use shipsafe_protocol::Progress;

#[derive(Debug)]
pub struct Spinner {
    bar: Option<ProgressBar>,
}

impl Spinner {
    pub fn new(enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(spinner_style());
            b.enable_steady_tick(Duration::from_millis(100));
            b
        });
        Self { bar }
    }
}

impl Progress for Spinner {
    fn stage(&self, message: &str) {
        tracing::info!("{message}");
        if let Some(b) = &self.bar {
            b.set_message(message.to_string());
            b.set_style(spinner_style());
            b.set_length(0);
            b.set_position(0);
        }
    }

    fn suspend(&self, f: &mut dyn FnMut()) {
        match &self.bar {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    fn bytes(&self, done: u64, total: Option<u64>) {
        let Some(b) = &self.bar else { return };
        match total {
            Some(t) if t > 0 && b.length() != Some(t) => {
                b.set_length(t);
                b.set_style(
                    ProgressStyle::with_template(
                        "{spinner} {msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
            }
            None if b.length() != Some(u64::MAX) => {
                b.set_length(u64::MAX);
                b.set_style(
                    ProgressStyle::with_template(
                        "{spinner} {msg} {binary_bytes} ({binary_bytes_per_sec})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
            }
            _ => {}
        }
        b.set_position(done);
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// Confirmation for protected environments: `--confirm ENV`, or the typed
/// environment name on a terminal. Never assumes yes.
#[derive(Debug)]
pub struct TerminalConfirm {
    pub flag: Option<String>,
}

fn on_terminal() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

impl shipsafe_protocol::Confirm for TerminalConfirm {
    fn can_confirm(&self, env: &str) -> Result<bool, String> {
        match &self.flag {
            Some(given) if given == env => Ok(true),
            Some(given) => Err(format!(
                "--confirm {given} does not match the environment {env}"
            )),
            None => Ok(on_terminal()),
        }
    }

    fn confirm(&self, env: &str, what: &str) -> Result<bool, String> {
        if let Some(given) = &self.flag {
            return if given == env {
                Ok(true)
            } else {
                Err(format!(
                    "--confirm {given} does not match the environment {env}"
                ))
            };
        }
        if !on_terminal() {
            return Ok(false);
        }
        eprintln!("{what}");
        eprint!("Type the environment name ({env}) to continue: ");
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the confirmation: {e}"))?;
        Ok(line.trim() == env)
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
