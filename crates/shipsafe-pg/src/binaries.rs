//! Locating PostgreSQL's programs (`pg_dump`, `pg_restore`, `initdb`,
//! `postgres`) for a given major version.
//!
//! Search order: `PG_BIN_DIR`, the distribution folders for that major
//! version (`/usr/lib/postgresql/<major>/bin`, `/usr/pgsql-<major>/bin`),
//! then `PATH`. Without a requested major, the newest installed one wins.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::PgError;

/// A folder of PostgreSQL programs of one major version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    dir: PathBuf,
    major: u32,
    version: String,
}

/// Where to look; built from the process environment by [`SearchPaths::from_env`].
#[derive(Debug, Clone, Default)]
pub struct SearchPaths {
    pub pg_bin_dir: Option<PathBuf>,
    /// Distribution layouts, with `{major}` standing for the major version.
    pub distro_patterns: Vec<String>,
    pub path: Vec<PathBuf>,
}

impl SearchPaths {
    pub fn from_env() -> Self {
        Self {
            pg_bin_dir: std::env::var_os("PG_BIN_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            // Debian/Ubuntu and RHEL/PGDG layouts.
            distro_patterns: vec![
                "/usr/lib/postgresql/{major}/bin".into(),
                "/usr/pgsql-{major}/bin".into(),
            ],
            path: std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
        }
    }

    /// Candidate folders in order for `major` (or every installed major,
    /// newest first).
    fn candidates(&self, major: Option<u32>) -> Vec<PathBuf> {
        // An explicit choice is honoured, never quietly bypassed: with
        // PG_BIN_DIR set, nothing else is searched.
        if let Some(d) = &self.pg_bin_dir {
            return vec![d.clone()];
        }
        let mut out = Vec::new();
        for pattern in &self.distro_patterns {
            let mut majors: Vec<u32> = match major {
                Some(m) => vec![m],
                None => installed_majors(pattern),
            };
            majors.sort_unstable_by(|a, b| b.cmp(a));
            for m in majors {
                out.push(PathBuf::from(pattern.replace("{major}", &m.to_string())));
            }
        }
        out.extend(self.path.iter().cloned());
        out
    }
}

/// Majors present for a pattern such as `/usr/pgsql-{major}/bin`: lists the
/// folder above the `{major}` component and keeps names that fit.
fn installed_majors(pattern: &str) -> Vec<u32> {
    let Some(pos) = pattern.find("{major}") else {
        return Vec::new();
    };
    let head = &pattern[..pos];
    let (parent, prefix) = match head.rfind('/') {
        Some(i) => (&head[..=i], &head[i + 1..]),
        None => ("./", head),
    };
    let tail = &pattern[pos + "{major}".len()..];
    let suffix = tail.split('/').next().unwrap_or("");
    let Ok(rd) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix(prefix)?
                .strip_suffix(suffix)?
                .parse::<u32>()
                .ok()
        })
        .collect()
}

/// Runs `<program> --version` and returns the version text, e.g. "15.19".
pub fn program_version(program: &Path) -> Result<String, PgError> {
    let out = Command::new(program)
        .arg("--version")
        .output()
        .map_err(|e| PgError::io(format!("cannot run {}", program.display()), e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "pg_dump (PostgreSQL) 15.19 (Debian 15.19-0+deb12u1)"
    text.split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|v| {
            v.trim_end_matches(|c: char| !c.is_ascii_digit())
                .to_string()
        })
        .ok_or_else(|| PgError::CommandFailed {
            command: format!("{} --version", program.display()),
            output: text.trim().to_string(),
        })
}

/// The major version of a version string ("15.19" → 15, "9.6.24" → 9).
pub fn major_of(version: &str) -> Option<u32> {
    version.split(['.', ' ']).next()?.parse().ok()
}

impl PgBinaries {
    /// Finds a folder holding `required` programs of the given major version.
    pub fn find(major: Option<u32>, required: &[&str]) -> Result<Self, PgError> {
        Self::find_in(&SearchPaths::from_env(), major, required)
    }

    pub fn find_in(
        search: &SearchPaths,
        major: Option<u32>,
        required: &[&str],
    ) -> Result<Self, PgError> {
        let first = required.first().copied().unwrap_or("postgres");
        let candidates = search.candidates(major);
        for dir in &candidates {
            if !required.iter().all(|p| is_executable(&dir.join(p))) {
                continue;
            }
            let Ok(version) = program_version(&dir.join(first)) else {
                continue;
            };
            let Some(found) = major_of(&version) else {
                continue;
            };
            if major.is_none_or(|m| m == found) {
                return Ok(Self {
                    dir: dir.clone(),
                    major: found,
                    version,
                });
            }
        }
        Err(PgError::BinaryNotFound {
            name: required.join("`, `"),
            major,
            searched: dedup(candidates),
        })
    }

    /// Finds a client (`pg_dump`, `pg_restore`) able to work with a server of
    /// `server_major`: the same major if installed, else the newest that is
    /// not older. An older one is refused.
    pub fn for_server(server_major: u32, required: &[&str]) -> Result<Self, PgError> {
        Self::for_server_in(&SearchPaths::from_env(), server_major, required)
    }

    pub fn for_server_in(
        search: &SearchPaths,
        server_major: u32,
        required: &[&str],
    ) -> Result<Self, PgError> {
        match Self::find_in(search, Some(server_major), required) {
            Ok(b) => Ok(b),
            Err(not_found) => match Self::find_in(search, None, required) {
                Ok(b) if b.major >= server_major => Ok(b),
                Ok(b) => Err(PgError::BinaryTooOld {
                    path: b.path(required.first().copied().unwrap_or("pg_dump")),
                    found: b.major,
                    needed: server_major,
                }),
                Err(_) => Err(not_found),
            },
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn major(&self) -> u32 {
        self.major
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn path(&self, program: &str) -> PathBuf {
        self.dir.join(program)
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn dedup(v: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in v {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(major_of("15.19"), Some(15));
        assert_eq!(major_of("9.6.24"), Some(9));
        assert_eq!(major_of("17beta1"), None);
    }

    #[test]
    fn finds_the_installed_server() {
        let b = PgBinaries::find(None, &["postgres", "initdb", "pg_dump"]).unwrap();
        assert!(b.major() >= 10, "{b:?}");
        assert!(b.path("pg_restore").exists());
    }

    #[test]
    fn missing_major_names_what_was_searched() {
        let search = SearchPaths {
            pg_bin_dir: None,
            distro_patterns: vec!["/usr/lib/postgresql/{major}/bin".into()],
            path: vec![],
        };
        let err = PgBinaries::find_in(&search, Some(99), &["pg_dump"]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`pg_dump` for major version 99 not found"),
            "{msg}"
        );
        assert!(msg.contains("/usr/lib/postgresql/99/bin"), "{msg}");
        assert!(msg.contains("PG_BIN_DIR"), "{msg}");
        assert!(err.is_installation());
    }

    #[test]
    fn pg_bin_dir_is_the_only_place_searched_when_set() {
        let empty = tempfile::tempdir().unwrap();
        let mut search = SearchPaths::from_env();
        search.pg_bin_dir = Some(empty.path().to_path_buf());
        let err = PgBinaries::find_in(&search, None, &["initdb"]).unwrap_err();
        assert!(
            err.to_string()
                .contains(&empty.path().display().to_string())
        );
    }

    #[test]
    fn refuses_a_client_older_than_the_server() {
        let installed = PgBinaries::find(None, &["pg_dump"]).unwrap();
        let search = SearchPaths::from_env();
        let err =
            PgBinaries::for_server_in(&search, installed.major() + 1, &["pg_dump"]).unwrap_err();
        match err {
            PgError::BinaryTooOld { found, needed, .. } => {
                assert_eq!(found, installed.major());
                assert_eq!(needed, installed.major() + 1);
            }
            other => panic!("expected BinaryTooOld, got {other}"),
        }
    }
}
