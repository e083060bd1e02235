//! Opening connections and reading basic facts about a server.

use std::time::Duration;

use serde::Serialize;
use shipsafe_config::DbUrl;
use tokio_postgres::{Client, NoTls};

use crate::error::{PgError, describe};

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `url`; the connection task runs on the current runtime.
pub async fn connect(url: &DbUrl) -> Result<Client, PgError> {
    let mut config: tokio_postgres::Config =
        url.expose().parse().map_err(|e| PgError::Connect {
            url: url.masked(),
            message: format!("the connection string is not valid: {}", describe(&e)),
        })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("shipsafe");
    }
    let (client, connection) = config.connect(NoTls).await.map_err(|e| PgError::Connect {
        url: url.masked(),
        message: describe(&e),
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("connection closed: {}", describe(&e));
        }
    });
    Ok(client)
}

/// What `status` shows about a server.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServerInfo {
    pub server_version: String,
    pub major: u32,
    pub database: String,
    pub user: String,
    pub size_bytes: i64,
}

pub async fn server_info(client: &Client, url: &DbUrl) -> Result<ServerInfo, PgError> {
    let row = client
        .query_one(
            "select current_setting('server_version'), \
                    current_setting('server_version_num')::int, \
                    current_database()::text, current_user::text, \
                    pg_database_size(current_database())",
            &[],
        )
        .await
        .map_err(|e| PgError::Query {
            url: url.masked(),
            message: describe(&e),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
