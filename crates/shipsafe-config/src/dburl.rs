//! Database URLs that never print their password.
//!
//! Every way a URL can reach a human (Display, Debug, error messages, logs,
//! manifests) goes through [`mask_secrets`]. Only [`DbUrl::expose`] returns the
//! real text, for handing to a driver or a child process.

use std::fmt;

pub use crate::mask::{MASK, literal_password, mask_secrets};

/// A resolved connection string (URL or libpq `key=value` form).
#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl(String);

impl DbUrl {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The real connection string, password included. Use only to connect.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The connection string with any password replaced by `***`.
    pub fn masked(&self) -> String {
        mask_secrets(&self.0)
    }

    /// The password, if the string carries one (URL userinfo or `password=`),
    /// percent-decoded as libpq would.
    pub fn password(&self) -> Option<String> {
        match self.conninfo() {
            Ok(c) => c.password,
            Err(_) => literal_password(&self.0),
        }
    }

    /// The parsed connection string.
    pub fn conninfo(&self) -> Result<crate::conninfo::ConnInfo, crate::conninfo::ConnInfoError> {
        crate::conninfo::ConnInfo::parse(&self.0)
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbUrl({:?})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_url_userinfo_password() {
        let u = DbUrl::new("postgres://app:hunter2@db.example.com:5432/app?sslmode=require");
        assert_eq!(
            u.to_string(),
            "postgres://app:***@db.example.com:5432/app?sslmode=require"
        );
        assert!(!format!("{u:?}").contains("hunter2"));
        assert_eq!(u.password().as_deref(), Some("hunter2"));
        assert!(u.expose().contains("hunter2"));
    }

    #[test]
    fn password_with_at_sign_is_masked_whole() {
        let u = DbUrl::new("postgresql://app:p@ss@host/db");
        assert_eq!(u.masked(), "postgresql://app:***@host/db");
    }

    #[test]
    fn masks_query_and_keyword_passwords() {
        assert_eq!(
            mask_secrets("postgres://host/db?user=a&password=zz9&sslmode=disable"),
            "postgres://host/db?user=a&password=***&sslmode=disable"
        );
        assert_eq!(
            mask_secrets("host=db user=app password='x y z' dbname=app"),
            "host=db user=app password=*** dbname=app"
        );
        assert_eq!(
            mask_secrets("host=db password = abc dbname=app"),
            "host=db password = *** dbname=app"
        );
    }

    #[test]
    fn masks_every_url_in_text() {
        let t = "copy postgres://a:one@h1/x to postgres://b:two@h2/y";
        assert_eq!(
            mask_secrets(t),
            "copy postgres://a:***@h1/x to postgres://b:***@h2/y"
        );
    }

    #[test]
    fn passwords_with_reserved_characters_are_masked_whole() {
        for (url, secret) in [
            ("postgres://app:a/b?c#d@host:5432/db", "a/b?c#d"),
            ("postgres://app:x@y/z@host/db?sslmode=require", "x@y/z"),
            ("postgresql://app:s%40f%2F@host/db", "s%40f%2F"),
            ("postgres://app:q?w=e#r@host/db", "q?w=e#r"),
        ] {
            let m = mask_secrets(url);
            assert!(!m.contains(secret), "{url} -> {m}");
            assert!(m.contains("app:***@host"), "{url} -> {m}");
            let line = format!("error: cannot connect to {url}: refused");
            assert!(!mask_secrets(&line).contains(secret));
        }
        assert_eq!(
            DbUrl::new("postgresql://app:s%40f@host/db")
                .password()
                .as_deref(),
            Some("s@f")
        );
    }

    #[test]
    fn variable_references_are_not_secrets() {
        for s in [
            "postgres://app:${DB_PASSWORD}@host/db",
            "postgres://host/db?password=${PW}",
        ] {
            assert_eq!(mask_secrets(s), s);
        }
        assert_eq!(
            mask_secrets("postgres://app:x${PW}@host/db"),
            "postgres://app:***@host/db"
        );
    }

    #[test]
    fn leaves_urls_without_password_alone() {
        for s in [
            "postgres://app@db/app",
            "postgres://db/app",
            "postgres:///app?host=/tmp",
            "https://example.com/path?x=1",
            "no url here: password_hash column",
        ] {
            assert_eq!(mask_secrets(s), s);
            assert_eq!(literal_password(s), None, "{s}");
        }
    }
}
