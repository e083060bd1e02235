//! libpq connection strings, parsed by shipsafe itself.
//!
//! Provider URLs carry parameters the Rust driver rejects (`verify-full`,
//! `sslrootcert`, `channel_binding`, Prisma's `pgbouncer=true`), so both
//! forms libpq accepts are read here: `postgres[ql]://user:pw@host:port/db?k=v`
//! (percent-decoded) and `key=value key='quoted value'`. The result drives
//! shipsafe's own connections and the environment handed to libpq programs
//! (`pg_dump`, `pg_restore`, `psql`), so both see the same settings and the
//! password never goes on a command line.

use std::fmt;

/// libpq's `sslmode`, with its meaning kept exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    /// Plaintext first, TLS if the server insists.
    Allow,
    /// TLS if the server offers it, no certificate check (libpq's default).
    #[default]
    Prefer,
    /// TLS, no certificate check (self-signed provider certificates work).
    Require,
    /// TLS, certificate chain checked, host name not.
    VerifyCa,
    /// TLS, chain and host name checked.
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    /// True when a connection in this mode is never plaintext.
    pub fn requires_tls(self) -> bool {
        matches!(self, Self::Require | Self::VerifyCa | Self::VerifyFull)
    }
}

/// Where the trusted root certificates come from (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    File(String),
    /// The operating system's trust store (`sslrootcert=system`).
    System,
}

/// A parse failure. Never contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConnInfoError(String);

/// A parsed connection string.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnInfo {
    /// Host names, IP addresses or Unix-socket folders (absolute paths).
    pub hosts: Vec<String>,
    pub hostaddr: Option<String>,
    pub ports: Vec<u16>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub dbname: Option<String>,
    pub sslmode: SslMode,
    /// Whether `sslmode` was written (libpq derives it otherwise).
    pub sslmode_explicit: bool,
    pub sslrootcert: Option<RootCert>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
    pub channel_binding: Option<String>,
    pub application_name: Option<String>,
    pub connect_timeout: Option<u64>,
    pub options: Option<String>,
    pub target_session_attrs: Option<String>,
    /// Prisma's `pgbouncer=true`: the URL points at a transaction pooler.
    pub pgbouncer: bool,
    /// Parameters libpq programs would reject (e.g. Prisma's `schema`,
    /// `connection_limit`); kept only so they can be reported.
    pub ignored: Vec<String>,
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnInfo")
            .field("hosts", &self.hosts)
            .field("ports", &self.ports)
            .field("user", &self.user)
            .field(
                "password",
                &self.password.as_ref().map(|_| crate::mask::MASK),
            )
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .finish_non_exhaustive()
    }
}

/// Ports of managed transaction poolers (Supabase's Supavisor).
const POOLER_PORTS: &[u16] = &[6543];

impl ConnInfo {
    /// Parses a URL (`postgres://`, `postgresql://`) or a keyword/value string.
    pub fn parse(text: &str) -> Result<Self, ConnInfoError> {
        let t = text.trim();
        let mut info = if let Some(rest) = t
            .strip_prefix("postgresql://")
            .or_else(|| t.strip_prefix("postgres://"))
        {
            parse_url(rest)?
        } else if t.contains("://") {
            let scheme = t.split("://").next().unwrap_or_default();
            return Err(ConnInfoError(format!(
                "unsupported URL scheme {scheme:?}: use postgres:// or postgresql://"
            )));
        } else {
            parse_keywords(t)?
        };
        info.finish()?;
        Ok(info)
    }

    fn set(&mut self, key: &str, value: String) -> Result<(), ConnInfoError> {
        let bad = |what: &str| ConnInfoError(format!("invalid {key} {what}"));
        match key {
            "host" => {
                self.hosts = value.split(',').map(str::to_string).collect();
            }
            "hostaddr" => self.hostaddr = Some(value),
            "port" => {
                self.ports = value
                    .split(',')
                    .map(|p| p.trim().parse::<u16>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| bad(&format!("{value:?}: expected a number")))?;
            }
            "user" => self.user = Some(value),
            "password" => self.password = Some(value),
            "dbname" => self.dbname = Some(value),
            "sslmode" => {
                self.sslmode = SslMode::parse(&value).ok_or_else(|| {
                    bad(&format!(
                        "{value:?}: expected disable, allow, prefer, require, verify-ca or verify-full"
                    ))
                })?;
                self.sslmode_explicit = true;
            }
            "sslrootcert" => {
                self.sslrootcert = Some(if value == "system" {
                    RootCert::System
                } else {
                    RootCert::File(value)
                });
            }
            "sslcert" => self.sslcert = Some(value),
            "sslkey" => self.sslkey = Some(value),
            "channel_binding" => {
                if !matches!(value.as_str(), "disable" | "prefer" | "require") {
                    return Err(bad(&format!(
                        "{value:?}: expected disable, prefer or require"
                    )));
                }
                self.channel_binding = Some(value);
            }
            "application_name" => self.application_name = Some(value),
            "connect_timeout" => {
                self.connect_timeout = Some(
                    value
                        .trim()
                        .parse()
                        .map_err(|_| bad(&format!("{value:?}: expected seconds")))?,
                );
            }
            "options" => self.options = Some(value),
            "target_session_attrs" => self.target_session_attrs = Some(value),
            "pgbouncer" => self.pgbouncer = matches!(value.as_str(), "true" | "1" | "yes"),
            // Accepted by libpq, with nothing for shipsafe to do.
            "keepalives"
            | "keepalives_idle"
            | "keepalives_interval"
            | "keepalives_count"
            | "tcp_user_timeout"
            | "sslcompression"
            | "sslsni"
            | "gssencmode"
            | "fallback_application_name"
            | "client_encoding" => {}
            other => self.ignored.push(other.to_string()),
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ConnInfoError> {
        if self.sslrootcert == Some(RootCert::System) {
            // As libpq 16: the system store implies verify-full, and a weaker
            // explicit mode would silently trust any certificate.
            if !self.sslmode_explicit {
                self.sslmode = SslMode::VerifyFull;
            } else if self.sslmode != SslMode::VerifyFull {
                return Err(ConnInfoError(format!(
                    "sslrootcert=system needs sslmode=verify-full, not {}",
                    self.sslmode.as_str()
                )));
            }
        }
        if self.ports.len() > 1 && self.ports.len() != self.hosts.len().max(1) {
            return Err(ConnInfoError(format!(
                "{} ports for {} hosts",
                self.ports.len(),
                self.hosts.len()
            )));
        }
        Ok(())
    }

    /// The first host, or the default socket folder's marker `None`.
    pub fn host(&self) -> Option<&str> {
        self.hosts
            .first()
            .map(String::as_str)
            .filter(|h| !h.is_empty())
    }

    pub fn port(&self) -> u16 {
        self.ports.first().copied().unwrap_or(5432)
    }

    /// True when every host is this machine (Unix socket or loopback).
    pub fn is_local(&self) -> bool {
        if self.hosts.is_empty() {
            return true;
        }
        self.hosts.iter().all(|h| is_loopback_host(h))
    }

    /// Why the URL looks like a transaction pooler, if it does.
    pub fn pooler_hint(&self) -> Option<String> {
        if self.pgbouncer {
            return Some("the URL says pgbouncer=true".into());
        }
        if POOLER_PORTS.contains(&self.port()) {
            return Some(format!(
                "port {} is a transaction pooler's port",
                self.port()
            ));
        }
        if let Some(h) = self
            .hosts
            .iter()
            .find(|h| h.split('.').next().is_some_and(|l| l.ends_with("-pooler")))
        {
            return Some(format!("host {h} is a pooler endpoint"));
        }
        if let Some(h) = self.hosts.iter().find(|h| h.contains(".pooler.")) {
            return Some(format!("host {h} is a pooler endpoint"));
        }
        None
    }

    /// The environment a libpq program needs to make this same connection.
    /// `sslrootcert=system` becomes the system bundle file, which libpq
    /// before 16 cannot resolve itself.
    pub fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let mut env = Vec::new();
        let mut put = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                env.push((k, v));
            }
        };
        put(
            "PGHOST",
            (!self.hosts.is_empty()).then(|| self.hosts.join(",")),
        );
        put("PGHOSTADDR", self.hostaddr.clone());
        put(
            "PGPORT",
            (!self.ports.is_empty()).then(|| {
                self.ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            }),
        );
        put("PGUSER", self.user.clone());
        put("PGPASSWORD", self.password.clone());
        put("PGDATABASE", self.dbname.clone());
        put("PGSSLMODE", Some(self.sslmode.as_str().to_string()));
        put(
            "PGSSLROOTCERT",
            match &self.sslrootcert {
                Some(RootCert::File(f)) => Some(f.clone()),
                Some(RootCert::System) => system_ca_bundle(),
                None => None,
            },
        );
        put("PGSSLCERT", self.sslcert.clone());
        put("PGSSLKEY", self.sslkey.clone());
        put("PGCHANNELBINDING", self.channel_binding.clone());
        put(
            "PGCONNECT_TIMEOUT",
            self.connect_timeout.map(|t| t.to_string()),
        );
        put("PGOPTIONS", self.options.clone());
        put("PGTARGETSESSIONATTRS", self.target_session_attrs.clone());
        env
    }

    /// The same connection with another database name.
    pub fn with_dbname(&self, db: &str) -> Self {
        Self {
            dbname: Some(db.to_string()),
            ..self.clone()
        }
    }

    /// A `postgresql://` URL for this connection, percent-encoded, for tools
    /// that take a URL (the external migration tool). Ignored parameters
    /// are left out.
    pub fn to_url(&self) -> String {
        let mut s = String::from("postgresql://");
        if let Some(u) = &self.user {
            s.push_str(&encode(u));
            if let Some(p) = &self.password {
                s.push(':');
                s.push_str(&encode(p));
            }
            s.push('@');
        }
        let mut query: Vec<(String, String)> = Vec::new();
        let sockets = self.hosts.iter().any(|h| h.starts_with('/'));
        if sockets {
            query.push(("host".into(), self.hosts.join(",")));
            if !self.ports.is_empty() {
                query.push(("port".into(), self.ports[0].to_string()));
            }
        } else {
            for (i, h) in self.hosts.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                if h.contains(':') {
                    s.push_str(&format!("[{h}]"));
                } else {
                    s.push_str(h);
                }
                if let Some(p) = self.ports.get(i).or(self.ports.first()) {
                    s.push_str(&format!(":{p}"));
                }
            }
        }
        s.push('/');
        if let Some(d) = &self.dbname {
            s.push_str(&encode(d));
        }
        if self.sslmode_explicit {
            query.push(("sslmode".into(), self.sslmode.as_str().into()));
        }
        let mut opt = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                query.push((k.into(), v.clone()));
            }
        };
        opt("hostaddr", &self.hostaddr);
        opt(
            "sslrootcert",
            &self.sslrootcert.as_ref().map(|r| match r {
                RootCert::File(f) => f.clone(),
                RootCert::System => "system".into(),
            }),
        );
        opt("sslcert", &self.sslcert);
        opt("sslkey", &self.sslkey);
        opt("channel_binding", &self.channel_binding);
        opt("application_name", &self.application_name);
        opt("options", &self.options);
        opt("target_session_attrs", &self.target_session_attrs);
        opt(
            "connect_timeout",
            &self.connect_timeout.map(|t| t.to_string()),
        );
        for (i, (k, v)) in query.iter().enumerate() {
            s.push(if i == 0 { '?' } else { '&' });
            s.push_str(k);
            s.push('=');
            s.push_str(&encode(v));
        }
        s
    }
}

/// True for Unix-socket folders, `localhost` and loopback addresses.
pub fn is_loopback_host(h: &str) -> bool {
    if h.is_empty() || h.starts_with('/') || h.starts_with('@') || h == "localhost" {
        return true;
    }
    h.trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The system CA bundle, as OpenSSL would find it.
pub fn system_ca_bundle() -> Option<String> {
    if let Ok(f) = std::env::var("SSL_CERT_FILE")
        && std::path::Path::new(&f).is_file()
    {
        return Some(f);
    }
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).is_file())
    .map(str::to_string)
}

fn decode(s: &str, what: &str) -> Result<String, ConnInfoError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    ConnInfoError(format!("invalid percent-encoding in the URL's {what}"))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| ConnInfoError(format!("the URL's {what} is not UTF-8 after decoding")))
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

use crate::mask::userinfo_end;

fn parse_url(body: &str) -> Result<ConnInfo, ConnInfoError> {
    let mut info = ConnInfo::default();
    let mut rest = body;
    if let Some(at) = userinfo_end(body) {
        let userinfo = &body[..at];
        rest = &body[at + 1..];
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        if !user.is_empty() {
            info.user = Some(decode(user, "user name")?);
        }
        if let Some(p) = password {
            info.password = Some(decode(p, "password")?);
        }
    }
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let before_query = before_query.split('#').next().unwrap_or_default();
    let (hostlist, path) = match before_query.find('/') {
        Some(i) => (&before_query[..i], Some(&before_query[i + 1..])),
        None => (before_query, None),
    };
    if !hostlist.is_empty() {
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for part in hostlist.split(',') {
            let (h, p) = split_host_port(part)?;
            hosts.push(decode(h, "host")?);
            if let Some(p) = p {
                ports.push(p);
            }
        }
        info.hosts = hosts;
        if !ports.is_empty() {
            if ports.len() != info.hosts.len() && ports.len() != 1 {
                return Err(ConnInfoError(
                    "every host in the URL needs a port, or none does".into(),
                ));
            }
            info.ports = ports;
        }
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        info.dbname = Some(decode(db, "database name")?);
    }
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                ConnInfoError(format!(
                    "URL parameter {:?} has no value",
                    pair.split('=').next().unwrap_or(pair)
                ))
            })?;
            let key = decode(k, "parameter name")?;
            let value = decode(v, &format!("parameter {key}"))?;
            info.set(&key, value)?;
        }
    }
    Ok(info)
}

fn split_host_port(part: &str) -> Result<(&str, Option<u16>), ConnInfoError> {
    let bad = || ConnInfoError(format!("invalid port in the URL's host {part:?}"));
    if let Some(inner) = part.strip_prefix('[') {
        let close = inner
            .find(']')
            .ok_or_else(|| ConnInfoError(format!("unclosed '[' in the URL's host {part:?}")))?;
        let host = &inner[..close];
        let after = &inner[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) if !p.is_empty() => Some(p.parse().map_err(|_| bad())?),
            _ => None,
        };
        return Ok((host, port));
    }
    match part.rsplit_once(':') {
        Some((h, "")) => Ok((h, None)),
        Some((h, p)) => Ok((h, Some(p.parse().map_err(|_| bad())?))),
        None => Ok((part, None)),
    }
}

fn parse_keywords(text: &str) -> Result<ConnInfo, ConnInfoError> {
    let mut info = ConnInfo::default();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && chars[i] != '=' && !chars[i].is_whitespace() {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        skip_ws(&mut i);
        if i >= chars.len() || chars[i] != '=' {
            return Err(ConnInfoError(format!(
                "missing \"=\" after {key:?} in the connection string"
            )));
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = String::new();
        if i < chars.len() && chars[i] == '\'' {
            i += 1;
            let mut closed = false;
            while i < chars.len() {
                match chars[i] {
                    '\\' if i + 1 < chars.len() => {
                        value.push(chars[i + 1]);
                        i += 2;
                    }
                    '\'' => {
                        closed = true;
                        i += 1;
                        break;
                    }
                    c => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
            if !closed {
                return Err(ConnInfoError(format!(
                    "unterminated quoted value for {key:?} in the connection string"
                )));
            }
        } else {
            while i < chars.len() && !chars[i].is_whitespace() {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    value.push(chars[i + 1]);
                    i += 2;
                } else {
                    value.push(chars[i]);
                    i += 1;
                }
            }
        }
        info.set(&key, value)?;
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_urls_parse() {
        let c = ConnInfo::parse(
            "postgresql://app:p%40ss%2Fw@db.example.com:5432/my%20db?sslmode=verify-full&sslrootcert=/etc/ca.pem&channel_binding=require",
        )
        .unwrap();
        assert_eq!(c.user.as_deref(), Some("app"));
        assert_eq!(c.password.as_deref(), Some("p@ss/w"));
        assert_eq!(c.hosts, vec!["db.example.com"]);
        assert_eq!(c.port(), 5432);
        assert_eq!(c.dbname.as_deref(), Some("my db"));
        assert_eq!(c.sslmode, SslMode::VerifyFull);
        assert_eq!(c.sslrootcert, Some(RootCert::File("/etc/ca.pem".into())));
        assert_eq!(c.channel_binding.as_deref(), Some("require"));
        assert!(!c.is_local());

        let p = ConnInfo::parse(
            "postgres://u.ref:pw@aws-0-eu.pooler.supabase.com:6543/postgres?pgbouncer=true&connection_limit=1",
        )
        .unwrap();
        assert!(p.pgbouncer);
        assert_eq!(p.ignored, vec!["connection_limit"]);
        assert!(p.pooler_hint().is_some());
        let neon =
            ConnInfo::parse("postgresql://u:pw@ep-cool-1-pooler.eu-central-1.aws.neon.tech/db")
                .unwrap();
        assert!(neon.pooler_hint().unwrap().contains("pooler"));
        let direct = ConnInfo::parse("postgresql://u:pw@ep-cool-1.aws.neon.tech/db").unwrap();
        assert_eq!(direct.pooler_hint(), None);
    }

    #[test]
    fn passwords_with_reserved_characters_unencoded() {
        let c = ConnInfo::parse("postgres://app:a/b?c#d@host:5433/db").unwrap();
        assert_eq!(c.password.as_deref(), Some("a/b?c#d"));
        assert_eq!(c.hosts, vec!["host"]);
        assert_eq!(c.port(), 5433);
        assert_eq!(c.dbname.as_deref(), Some("db"));
        let c = ConnInfo::parse("postgres://app:p@ss@host/db").unwrap();
        assert_eq!(c.password.as_deref(), Some("p@ss"));
        // An '@' in a parameter is not user-info.
        let c = ConnInfo::parse("postgres://host/db?user=me@corp").unwrap();
        assert_eq!(c.user.as_deref(), Some("me@corp"));
        assert_eq!(c.hosts, vec!["host"]);
    }

    #[test]
    fn keyword_strings_parse() {
        let c = ConnInfo::parse(
            r"host=/var/run/postgresql port=5433 user=app password='it\'s secret' dbname=x sslmode=disable",
        )
        .unwrap();
        assert_eq!(c.password.as_deref(), Some("it's secret"));
        assert_eq!(c.hosts, vec!["/var/run/postgresql"]);
        assert!(c.is_local());
        assert_eq!(c.sslmode, SslMode::Disable);
        assert!(ConnInfo::parse("host=h sslmode=sometimes").is_err());
        assert!(ConnInfo::parse("host h").is_err());
        assert!(ConnInfo::parse("mysql://h/db").is_err());
    }

    #[test]
    fn sockets_ipv6_and_multiple_hosts() {
        let c = ConnInfo::parse("postgresql://postgres@/db?host=%2Ftmp%2Fx&port=5432").unwrap();
        assert_eq!(c.hosts, vec!["/tmp/x"]);
        assert!(c.is_local());
        let c = ConnInfo::parse("postgresql://[::1]:5433,h2:5434/db").unwrap();
        assert_eq!(c.hosts, vec!["::1", "h2"]);
        assert_eq!(c.ports, vec![5433, 5434]);
        assert!(!c.is_local());
        assert!(
            ConnInfo::parse("postgres://127.0.0.1/db")
                .unwrap()
                .is_local()
        );
    }

    #[test]
    fn system_roots_imply_verify_full() {
        let c = ConnInfo::parse("postgres://h/db?sslrootcert=system").unwrap();
        assert_eq!(c.sslmode, SslMode::VerifyFull);
        assert!(ConnInfo::parse("postgres://h/db?sslrootcert=system&sslmode=require").is_err());
    }

    #[test]
    fn env_for_children_carries_everything_and_url_round_trips() {
        let c = ConnInfo::parse(
            "postgresql://app:p%40ss@db.example.com:6000/app?sslmode=require&application_name=x",
        )
        .unwrap();
        let env = c.libpq_env();
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PGPASSWORD"), Some("p@ss"));
        assert_eq!(get("PGHOST"), Some("db.example.com"));
        assert_eq!(get("PGPORT"), Some("6000"));
        assert_eq!(get("PGSSLMODE"), Some("require"));
        assert_eq!(get("PGDATABASE"), Some("app"));
        let again = ConnInfo::parse(&c.to_url()).unwrap();
        assert_eq!(again, c);
        let sock = ConnInfo::parse("host=/tmp/s port=5432 user=postgres dbname=x").unwrap();
        assert_eq!(ConnInfo::parse(&sock.to_url()).unwrap(), sock);
    }
}
