//! Opening connections and reading basic facts about a server.

use std::time::Duration;

use serde::Serialize;
use shipsafe_config::{ConnInfo, DbUrl, SslMode};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, NoTls, Socket};

use crate::error::{PgError, describe};

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `url` with libpq's semantics for `sslmode` and friends; the
/// connection task runs on the current runtime.
pub async fn connect(url: &DbUrl) -> Result<Client, PgError> {
    let info = url.conninfo().map_err(|e| PgError::BadConnectionString {
        url: url.masked(),
        message: e.to_string(),
    })?;
    connect_info(&info, &url.masked()).await
}

/// [`connect`] for shipsafe's own statements on a database whose settings
/// it does not trust: `search_path` is `pg_catalog, pg_temp` from the first
/// statement on (set in the startup packet, which outranks the database's
/// and role's settings), so no look-alike of a catalog function that a
/// database owner put on the path runs in shipsafe's session.
pub async fn connect_pinned(url: &DbUrl) -> Result<Client, PgError> {
    let mut info = url.conninfo().map_err(|e| PgError::BadConnectionString {
        url: url.masked(),
        message: e.to_string(),
    })?;
    let pin = "-c search_path=pg_catalog,pg_temp";
    info.options = Some(match info.options.take() {
        Some(o) if !o.trim().is_empty() => format!("{o} {pin}"),
        _ => pin.to_string(),
    });
    connect_info(&info, &url.masked()).await
}

/// Connects with an already parsed connection string; `shown` names it in
/// errors (masked).
pub async fn connect_info(info: &ConnInfo, shown: &str) -> Result<Client, PgError> {
    let config = driver_config(info, shown)?;
    // libpq ignores sslmode on Unix sockets; so must we.
    let socket = config
        .get_hosts()
        .first()
        .is_some_and(|h| matches!(h, tokio_postgres::config::Host::Unix(_)));
    let mode = if socket {
        SslMode::Disable
    } else {
        info.sslmode
    };
    let fail = |e: tokio_postgres::Error| {
        let message = explain(info, describe(&e));
        let url = shown.to_string();
        if refused_login(&e) {
            PgError::Login { url, message }
        } else {
            PgError::Connect { url, message }
        }
    };
    let tls = || {
        crate::tls::client_config(info)
            .map(tokio_postgres_rustls::MakeRustlsConnect::new)
            .map_err(|message| PgError::TlsSetup {
                url: shown.to_string(),
                message,
            })
    };
    use tokio_postgres::config::SslMode as Driver;
    match mode {
        SslMode::Disable => {
            let mut c = config;
            c.ssl_mode(Driver::Disable);
            open(&c, NoTls).await.map_err(fail)
        }
        SslMode::Allow => {
            let mut plain = config.clone();
            plain.ssl_mode(Driver::Disable);
            match open(&plain, NoTls).await {
                Ok(c) => Ok(c),
                Err(_) => {
                    let mut c = config;
                    c.ssl_mode(Driver::Require);
                    open(&c, tls()?).await.map_err(fail)
                }
            }
        }
        SslMode::Prefer => {
            let mut c = config;
            c.ssl_mode(Driver::Prefer);
            open(&c, tls()?).await.map_err(fail)
        }
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            let mut c = config;
            c.ssl_mode(Driver::Require);
            open(&c, tls()?).await.map_err(fail)
        }
    }
}

async fn open<T>(config: &tokio_postgres::Config, tls: T) -> Result<Client, tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("connection closed: {}", describe(&e));
        }
    });
    Ok(client)
}

/// The server refused the login itself (SQLSTATE class 28: wrong password,
/// unknown role, no pg_hba.conf entry; 3D000: no such database): the URL is
/// wrong, not the network or the server.
fn refused_login(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        let code = db.code().code();
        code.starts_with("28") || code == "3D000"
    })
}

/// Adds what to do to the TLS failures people meet with managed providers.
fn explain(info: &ConnInfo, message: String) -> String {
    let lower = message.to_lowercase();
    let hint = if lower.contains("not valid for name") {
        Some(
            "the server's certificate does not name this host: connect with the host name it was issued for, or use sslmode=verify-ca to check only the chain",
        )
    } else if lower.contains("unknownissuer")
        || lower.contains("unknown issuer")
        || lower.contains("badsignature")
    {
        Some("the server's certificate is not signed by the root certificate given in sslrootcert")
    } else if lower.contains("server does not support tls")
        || lower.contains("does not support ssl")
    {
        Some("the server offers no TLS, and this sslmode refuses to send anything in clear")
    } else if lower.contains("no encryption") && info.sslmode == SslMode::Disable {
        Some("the server accepts only encrypted connections: use sslmode=require (or verify-full)")
    } else {
        None
    };
    match hint {
        Some(h) => format!("{message} ({h})"),
        None => message,
    }
}

/// The driver's configuration for `info`. Defaults follow libpq: the OS user
/// name, a database named like the user, the local socket folder.
fn driver_config(info: &ConnInfo, shown: &str) -> Result<tokio_postgres::Config, PgError> {
    let bad = |message: String| PgError::BadConnectionString {
        url: shown.to_string(),
        message,
    };
    let mut c = tokio_postgres::Config::new();
    if info.hosts.is_empty() {
        c.host(default_socket_dir());
    }
    for h in &info.hosts {
        c.host(if h.is_empty() {
            default_socket_dir()
        } else {
            h
        });
    }
    if let Some(a) = &info.hostaddr {
        for part in a.split(',') {
            c.hostaddr(
                part.trim()
                    .parse()
                    .map_err(|_| bad(format!("hostaddr {part:?} is not an IP address")))?,
            );
        }
    }
    for p in &info.ports {
        c.port(*p);
    }
    let user = info.user.clone().unwrap_or_else(os_user);
    c.user(&user);
    if let Some(p) = &info.password {
        c.password(p.as_bytes());
    }
    c.dbname(info.dbname.as_deref().unwrap_or(&user));
    c.application_name(info.application_name.as_deref().unwrap_or("shipsafe"));
    c.connect_timeout(
        info.connect_timeout
            .filter(|t| *t > 0)
            .map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_secs),
    );
    if let Some(o) = &info.options {
        c.options(o);
    }
    if let Some(cb) = &info.channel_binding {
        use tokio_postgres::config::ChannelBinding;
        c.channel_binding(match cb.as_str() {
            "disable" => ChannelBinding::Disable,
            "require" => ChannelBinding::Require,
            _ => ChannelBinding::Prefer,
        });
    }
    if let Some(t) = &info.target_session_attrs {
        use tokio_postgres::config::TargetSessionAttrs;
        c.target_session_attrs(match t.as_str() {
            "read-write" => TargetSessionAttrs::ReadWrite,
            "any" => TargetSessionAttrs::Any,
            other => {
                return Err(bad(format!(
                    "target_session_attrs={other} is not supported (use any or read-write)"
                )));
            }
        });
    }
    Ok(c)
}

fn default_socket_dir() -> &'static str {
    ["/var/run/postgresql", "/tmp"]
        .into_iter()
        .find(|d| std::path::Path::new(d).is_dir())
        .unwrap_or("localhost")
}

fn os_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "postgres".into())
}

/// The TLS version of this connection as the server sees it; no row in
/// clear. Simple protocol, so it works through any pooler.
pub const TLS_VERSION_SQL: &str =
    "select version from pg_catalog.pg_stat_ssl where pid = pg_catalog.pg_backend_pid() and ssl";

/// The TLS version of `client`'s connection, `None` when in clear.
pub async fn tls_version(client: &Client) -> Result<Option<String>, tokio_postgres::Error> {
    let rows = client.simple_query(TLS_VERSION_SQL).await?;
    Ok(rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    }))
}

/// What `status` shows about a server.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServerInfo {
    pub server_version: String,
    pub major: u32,
    pub database: String,
    pub user: String,
    pub size_bytes: i64,
    /// The TLS version of this connection (`pg_stat_ssl`), `None` in clear.
    pub tls: Option<String>,
}

pub async fn server_info(client: &Client, url: &DbUrl) -> Result<ServerInfo, PgError> {
    // An unnamed statement: works through a transaction-mode pooler.
    let row = client
        .query_typed(
            &format!(
                "select pg_catalog.current_setting('server_version'), \
                        pg_catalog.current_setting('server_version_num')::int, \
                        pg_catalog.current_database()::text, current_user::text, \
                        pg_catalog.pg_database_size(pg_catalog.current_database()), ({TLS_VERSION_SQL})"
            ),
            &[],
        )
        .await
        .map_err(|e| PgError::Query {
            url: url.masked(),
            message: describe(&e),
        })?
        .into_iter()
        .next()
        .ok_or_else(|| PgError::Query {
            url: url.masked(),
            message: "the server returned no row".into(),
        })?;
    let version: String = row.get(0);
    let num: i32 = row.get(1);
    Ok(ServerInfo {
        server_version: version
            .split_whitespace()
            .next()
            .unwrap_or(&version)
            .to_string(),
        major: (num / 10000) as u32,
        database: row.get(2),
        user: row.get(3),
        size_bytes: row.get(4),
        tls: row.get(5),
    })
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Which database `client` is connected to, for telling backups of this
/// database from those of another one that an environment's URL named
/// before: the server's system identifier where the role may read it
/// (else its address and port), the database's oid and its name.
pub async fn database_identity(client: &Client) -> Option<String> {
    let server = match client
        .query_one("select system_identifier::text from pg_catalog.pg_control_system()", &[])
        .await
    {
        Ok(r) => r.get::<_, String>(0),
        Err(_) => client
            .query_one(
                "select coalesce(host(pg_catalog.inet_server_addr()), 'socket') || ':' || coalesce(pg_catalog.inet_server_port()::text, '')",
                &[],
            )
            .await
            .ok()?
            .get::<_, String>(0),
    };
    let db = client
        .query_one(
            "select oid::text || '|' || datname::text from pg_catalog.pg_database where datname = pg_catalog.current_database()",
            &[],
        )
        .await
        .ok()?
        .get::<_, String>(0);
    Some(format!("{server}|{db}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
