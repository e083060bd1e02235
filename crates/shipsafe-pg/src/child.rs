//! What a libpq program (`pg_dump`, `pg_restore`, `psql`) started by
//! shipsafe gets: the connection as environment variables, never on its
//! command line where `ps` and `/proc/*/cmdline` show it to every local user.

use std::ffi::OsString;

use shipsafe_config::{ConnInfo, DbUrl};

use crate::error::PgError;

/// How to start a libpq program on one connection.
#[derive(Clone)]
pub struct LibpqChild {
    /// Variables to set (password included).
    pub set: Vec<(&'static str, String)>,
    /// Inherited libpq variables to remove, so a stray `PGHOST` or
    /// `PGSSLMODE=disable` in the caller's shell cannot redirect or weaken
    /// the connection.
    pub remove: Vec<OsString>,
    /// The `--dbname` argument: the database name only, in keyword form.
    pub dbname_arg: Option<String>,
}

impl std::fmt::Debug for LibpqChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibpqChild")
            .field("set", &self.set.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("dbname_arg", &self.dbname_arg)
            .finish_non_exhaustive()
    }
}

impl LibpqChild {
    pub fn for_url(url: &DbUrl) -> Result<Self, PgError> {
        let info = url.conninfo().map_err(|e| PgError::BadConnectionString {
            url: url.masked(),
            message: e.to_string(),
        })?;
        Ok(Self::for_info(&info))
    }

    pub fn for_info(info: &ConnInfo) -> Self {
        let mut set = info.libpq_env();
        set.push(("PGAPPNAME", "shipsafe".into()));
        let db = info.dbname.clone().or_else(|| info.user.clone());
        Self {
            set,
            remove: inherited_libpq_vars(),
            dbname_arg: db.map(|d| format!("--dbname=dbname='{}'", escape_keyword(&d))),
        }
    }

    /// Applies this to a std command.
    pub fn apply(&self, cmd: &mut std::process::Command) {
        for k in &self.remove {
            cmd.env_remove(k);
        }
        for (k, v) in &self.set {
            cmd.env(k, v);
        }
        if let Some(a) = &self.dbname_arg {
            cmd.arg(a);
        }
    }
}

/// The settings of `url` for a tool that reads its own URL (the external
/// migration tool): libpq uses them where the URL, as the tool's driver
/// understood it, says nothing. TLS, and where the server is: a driver that
/// drops a socket folder given as `?host=` (Rails) then still reaches the
/// same database instead of the default server's namesake. Not the
/// password, which stays in the URL alone.
pub fn tool_env(url: &DbUrl) -> Vec<(&'static str, String)> {
    let Ok(info) = url.conninfo() else {
        return Vec::new();
    };
    info.libpq_env()
        .into_iter()
        .filter(|(k, _)| {
            k.starts_with("PGSSL")
                || matches!(
                    *k,
                    "PGHOST" | "PGHOSTADDR" | "PGPORT" | "PGUSER" | "PGDATABASE"
                )
        })
        .collect()
}

/// Every `PG…` variable libpq reads that is set in this process.
fn inherited_libpq_vars() -> Vec<OsString> {
    std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| {
            k.to_str().is_some_and(|k| {
                k.len() > 2
                    && k.starts_with("PG")
                    && k[2..].bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
                    && k != "PG_BIN_DIR"
            })
        })
        .collect()
}

fn escape_keyword(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_goes_to_the_environment_only() {
        let url = DbUrl::new("postgresql://app:s%40cret@db.example.com/o'brien?sslmode=require");
        let c = LibpqChild::for_url(&url).expect("parses");
        let dump = format!("{:?} {:?}", c.dbname_arg, c);
        assert!(!dump.contains("cret"), "{dump}");
        assert_eq!(c.dbname_arg.as_deref(), Some("--dbname=dbname='o\\'brien'"));
        assert!(c.set.contains(&("PGPASSWORD", "s@cret".into())));
        assert!(c.set.contains(&("PGSSLMODE", "require".into())));
    }
}

/// `PGOPTIONS` for a child that should also get `option` (`-c name=value`),
/// the caller's own being `theirs`: added to it, or `None` (leave theirs
/// alone) when they set that setting themselves or end in a backslash,
/// which would escape the separating blank.
pub fn pgoptions_with(theirs: &str, option: &str) -> Option<String> {
    let name = option
        .trim_start_matches("-c")
        .trim()
        .split('=')
        .next()
        .unwrap_or_default();
    if theirs.contains(name) || theirs.ends_with('\\') {
        return None;
    }
    Some(format!("{theirs} {option}").trim_start().to_string())
}

#[cfg(test)]
mod pgoptions_tests {
    use super::pgoptions_with;

    #[test]
    fn an_option_is_added_to_the_callers_own_but_never_over_them() {
        let o = "-c client_connection_check_interval=1s";
        assert_eq!(pgoptions_with("", o).as_deref(), Some(o));
        assert_eq!(
            pgoptions_with("-c work_mem=64MB", o).as_deref(),
            Some("-c work_mem=64MB -c client_connection_check_interval=1s")
        );
        assert_eq!(
            pgoptions_with("-c client_connection_check_interval=0", o),
            None
        );
        assert_eq!(pgoptions_with("-c search_path=a\\", o), None);
    }
}
