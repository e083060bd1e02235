//! Everything shipsafe writes (backups, manifests, state.db, reports,
//! temporary dumps) holds production data or its history: it is created for
//! its owner only (files 0600, folders 0700) through the process umask.
//! Commands of the team's own (migration tool, clone script) run with the
//! umask the user had.

use std::sync::OnceLock;

static ORIGINAL: OnceLock<u32> = OnceLock::new();

/// Sets the umask to 077, remembering the user's.
pub fn private_umask() {
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let _ = ORIGINAL.set(old.bits());
}

/// `sh -c` text that runs `command` with the user's own umask.
pub fn with_user_umask(command: &str) -> String {
    match ORIGINAL.get() {
        Some(m) => format!("umask {m:03o}; {command}"),
        None => command.to_string(),
    }
}
