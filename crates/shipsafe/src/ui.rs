//! Progress on stderr: a spinner when stderr is a terminal, otherwise only
//! log lines at -v.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use shipsafe_protocol::Progress;

#[derive(Debug)]
pub struct Spinner {
    bar: Option<ProgressBar>,
    id: u64,
}

/// The spinner on screen, so a prompt can hide it however deep in a command
/// the question is asked (one command, one spinner at a time).
static SHOWING: Mutex<Option<(u64, ProgressBar)>> = Mutex::new(None);
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn showing() -> Option<ProgressBar> {
    SHOWING
        .lock()
        .ok()
        .and_then(|s| s.as_ref().map(|(_, b)| b.clone()))
}

impl Spinner {
    pub fn new(enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(spinner_style());
            b.enable_steady_tick(Duration::from_millis(100));
            b
        });
        Self::showing(bar)
    }

    fn showing(bar: Option<ProgressBar>) -> Self {
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let (Some(b), Ok(mut s)) = (&bar, SHOWING.lock()) {
            *s = Some((id, b.clone()));
        }
        Self { bar, id }
    }
}

/// Runs a prompt with the spinner hidden. Afterwards the spinner says the
/// answer was taken rather than repeating what it showed before the
/// question; the next stage replaces that.
fn with_spinner_hidden<T>(env: &str, ask: impl FnOnce() -> T) -> T {
    match showing() {
        Some(b) => {
            let answer = b.suspend(ask);
            b.set_message(format!("answer for {env} taken"));
            answer
        }
        None => ask(),
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
        with_spinner_hidden(env, || {
            eprintln!("{what}");
            eprint!("Type the environment name ({env}) to continue: ");
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the confirmation: {e}"))?;
            Ok(line.trim() == env)
        })
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            if let Ok(mut s) = SHOWING.lock()
                && s.as_ref().is_some_and(|(id, _)| *id == self.id)
            {
                *s = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_hides_the_spinner_and_leaves_no_stale_message() {
        let bar = ProgressBar::hidden();
        let spinner = Spinner::showing(Some(bar.clone()));
        spinner.stage("rehearsing on a clone");
        // The prompt runs while the bar is suspended (it must not touch the
        // bar: a suspended bar is locked).
        let answer = with_spinner_hidden("production", || 42);
        assert_eq!(answer, 42);
        assert_eq!(bar.message(), "answer for production taken");
        drop(spinner);
        assert!(showing().is_none(), "a dropped spinner is not shown");
    }
}
