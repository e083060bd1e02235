//! Database URLs that never print their password.
//!
//! Every way a URL can reach a human (Display, Debug, error messages, logs,
//! manifests) goes through [`mask_secrets`]. Only [`DbUrl::expose`] returns the
//! real text, for handing to a driver or a child process.

use std::fmt;

/// The text printed instead of a password.
pub const MASK: &str = "***";

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

/// Masks passwords in every URL (`scheme://user:PASSWORD@host`) and every
/// `password=VALUE` (query parameter or libpq keyword) found in `text`.
pub fn mask_secrets(text: &str) -> String {
    let masked = mask_userinfo(text);
    mask_password_params(&masked)
}

/// Returns the password written in a URL or keyword/value string, if any.
pub fn literal_password(text: &str) -> Option<String> {
    if let Some((_, pw)) = userinfo_password_span(text) {
        return Some(text[pw.0..pw.1].to_string());
    }
    password_param_spans(text)
        .first()
        .map(|&(s, e)| unquote(&text[s..e]))
}

fn unquote(v: &str) -> String {
    v.strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(v)
        .to_string()
}

/// The first `scheme://user:password@` in text: (user-info start, password
/// span). The URL runs to the next blank or quote; its user-info ends as the
/// connection parser decides ([`crate::conninfo::userinfo_end`]), so a
/// password holding `/`, `?`, `#` or `@` is masked whole.
fn userinfo_password_span(text: &str) -> Option<(usize, (usize, usize))> {
    let mut search = 0;
    while let Some(rel) = text[search..].find("://") {
        let body_start = search + rel + 3;
        let token_end = text[body_start..]
            .find([' ', '\n', '\t', '"', '\'', '<', '>'])
            .map_or(text.len(), |i| body_start + i);
        let body = &text[body_start..token_end];
        if let Some(at) = masking_userinfo_end(body).or_else(|| crate::conninfo::userinfo_end(body))
            && let Some(colon) = body[..at].find(':')
        {
            return Some((body_start, (body_start + colon + 1, body_start + at)));
        }
        search = token_end.max(body_start);
    }
    None
}

/// Masking is wider than parsing: any later `@` ends the user-info when what
/// precedes the first `:` looks like a user name, so a password the parser
/// would reject (unencoded `?` and `=`) is still never printed.
fn masking_userinfo_end(body: &str) -> Option<usize> {
    let at = body.rfind('@')?;
    let colon = body[..at].find(':')?;
    (!body[..colon].contains(['/', '?', '=', '#'])).then_some(at)
}

/// A value made only of `${NAME}` references names variables; it holds no
/// secret and stays readable.
fn is_reference_only(v: &str) -> bool {
    crate::template::Template::new(v).is_ok_and(|t| {
        t.has_variables()
            && t.parts()
                .iter()
                .all(|p| matches!(p, crate::template::Part::Var(_)))
    })
}

fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((_, (s, e))) = userinfo_password_span(rest) {
        out.push_str(&rest[..s]);
        if is_reference_only(&rest[s..e]) {
            out.push_str(&rest[s..e]);
        } else if s < e {
            out.push_str(MASK);
        }
        out.push_str(&rest[e..e + 1]); // the '@'
        rest = &rest[e + 1..];
    }
    out.push_str(rest);
    out
}

/// Spans of the values of `password=` parameters (`?password=`, `&password=`,
/// or a libpq keyword at a word boundary).
fn password_param_spans(text: &str) -> Vec<(usize, usize)> {
    let lower = text.to_ascii_lowercase();
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(rel) = lower[from..].find("password") {
        let key_start = from + rel;
        let mut i = key_start + "password".len();
        let boundary_ok = key_start == 0
            || matches!(
                text.as_bytes()[key_start - 1],
                b'?' | b'&' | b' ' | b'\t' | b'\n' | b'"' | b'\''
            );
        let bytes = text.as_bytes();
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if !boundary_ok || i >= bytes.len() || bytes[i] != b'=' {
            from = key_start + 1;
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        let start = i;
        let end = if i < bytes.len() && bytes[i] == b'\'' {
            // libpq quoted value: runs to the next unescaped quote.
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'\'' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(bytes.len())
        } else {
            let mut j = i;
            while j < bytes.len() && !matches!(bytes[j], b'&' | b' ' | b'\n' | b'#' | b'"' | b'\'')
            {
                j += 1;
            }
            j
        };
        if end > start {
            spans.push((start, end));
        }
        from = end.max(key_start + 1);
    }
    spans
}

fn mask_password_params(text: &str) -> String {
    let spans: Vec<_> = password_param_spans(text)
        .into_iter()
        .filter(|&(s, e)| !is_reference_only(&text[s..e]))
        .collect();
    if spans.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (s, e) in spans {
        out.push_str(&text[last..s]);
        out.push_str(MASK);
        last = e;
    }
    out.push_str(&text[last..]);
    out
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
