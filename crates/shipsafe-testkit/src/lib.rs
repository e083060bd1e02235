//! Test support: a uniquely named database per test on a real PostgreSQL
//! server, dropped afterwards.
//!
//! The server is `SHIPSAFE_TEST_DATABASE_URL` when set (CI points it at the
//! local server), otherwise one scratch cluster per test process. Databases
//! of test processes that died are swept on first use. Nothing is mocked.

pub mod servers;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use shipsafe_config::DbUrl;
use shipsafe_pg::{ScratchCluster, connect, quote_ident};
use tokio_postgres::Client;

pub const TEST_URL_ENV: &str = "SHIPSAFE_TEST_DATABASE_URL";
const PREFIX: &str = "shipsafe_test_";

/// The maintenance URL of the test server.
fn server_url() -> DbUrl {
    static URL: OnceLock<DbUrl> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(u) = std::env::var(TEST_URL_ENV)
            && !u.is_empty()
        {
            return DbUrl::new(u);
        }
        // Kept for the whole test process; the postmaster dies with the
        // process (parent-death signal) and its folder is swept later.
        static CLUSTER: OnceLock<ScratchCluster> = OnceLock::new();
        let c = CLUSTER.get_or_init(|| {
            ScratchCluster::start().unwrap_or_else(|e| {
                panic!("no {TEST_URL_ENV} and no scratch cluster could start: {e}")
            })
        });
        c.url("postgres")
    })
    .clone()
}

/// `url` with its database name replaced.
pub fn with_database(url: &DbUrl, db: &str) -> DbUrl {
    let s = url.expose();
    let (base, query) = match s.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (s, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map(|i| scheme_end + i);
    let mut out = match path_start {
        Some(p) => format!("{}/{db}", &base[..p]),
        None => format!("{base}/{db}"),
    };
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    DbUrl::new(out)
}

fn pid_alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

async fn admin() -> Client {
    connect(&server_url())
        .await
        .unwrap_or_else(|e| panic!("the test server must be reachable (set {TEST_URL_ENV}): {e}"))
}

/// Drops database `name`, and first the subscriptions that would keep it
/// (a subscription's database cannot be dropped, even forcibly).
async fn drop_database(admin: &Client, name: &str) {
    let dropped = admin
        .batch_execute(&format!(
            "drop database if exists {} with (force)",
            quote_ident(name)
        ))
        .await;
    if dropped.is_ok() {
        return;
    }
    if let Ok(c) = connect(&with_database(&server_url(), name)).await {
        let _ = c
            .batch_execute(
                "do $$ declare s record; begin \
                   for s in select subname from pg_subscription \
                            where subdbid = (select oid from pg_database where datname = current_database()) loop \
                     execute format('alter subscription %I disable', s.subname); \
                     execute format('alter subscription %I set (slot_name = none)', s.subname); \
                     execute format('drop subscription %I', s.subname); \
                   end loop; end $$",
            )
            .await;
    }
    let _ = admin
        .batch_execute(&format!(
            "drop database if exists {} with (force)",
            quote_ident(name)
        ))
        .await;
}

async fn sweep(admin: &Client) {
    let rows = admin
        .query(
            "select datname::text from pg_database where datname like 'shipsafe\\_test\\_%'",
            &[],
        )
        .await
        .expect("list test databases");
    for r in rows {
        let name: String = r.get(0);
        let pid = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| !pid_alive(p)) {
            drop_database(admin, &name).await;
        }
    }
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: DbUrl,
}

impl TestDb {
    /// Creates a fresh, empty database.
    pub async fn new() -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        let admin = admin().await;
        SWEPT.get_or_init(|| sweep(&admin)).await;
        let name = format!(
            "{PREFIX}{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        // A database of this name can only be left by an earlier process
        // that had this process's id.
        drop_database(&admin, &name).await;
        admin
            .batch_execute(&format!("create database {}", quote_ident(&name)))
            .await
            .unwrap_or_else(|e| {
                panic!("create test database {name}: {}", shipsafe_pg::describe(&e))
            });
        let url = with_database(&server_url(), &name);
        Self { name, url }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn url(&self) -> &DbUrl {
        &self.url
    }

    pub async fn client(&self) -> Client {
        connect(&self.url).await.expect("connect to test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop may run inside a runtime; use a thread with its own.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(c) = connect(&server_url()).await {
                    drop_database(&c, &name).await;
                }
            });
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_database_in_urls() {
        let u = DbUrl::new("postgres://u:p@h:5432/postgres?sslmode=disable");
        assert_eq!(
            with_database(&u, "x").expose(),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        let u = DbUrl::new("postgres://h");
        assert_eq!(with_database(&u, "x").expose(), "postgres://h/x");
    }

    async fn exists(name: &str) -> bool {
        admin()
            .await
            .query_one(
                "select exists (select 1 from pg_database where datname = $1)",
                &[&name],
            )
            .await
            .unwrap()
            .get(0)
    }

    #[tokio::test]
    async fn each_test_db_is_fresh_and_dropped() {
        let name;
        {
            let db = TestDb::new().await;
            name = db.name().to_string();
            let c = db.client().await;
            let n: i64 = c
                .query_one(
                    "select count(*) from pg_tables where schemaname = 'public'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 0);
        }
        assert!(!exists(&name).await, "{name} was not dropped");
    }

    /// A database with a subscription cannot be dropped, even forcibly,
    /// until the subscription is gone; a test's database is dropped anyway.
    #[tokio::test]
    async fn a_test_db_with_a_subscription_is_dropped_too() {
        let name;
        {
            let db = TestDb::new().await;
            name = db.name().to_string();
            db.client()
                .await
                .batch_execute(
                    "create subscription s connection 'host=127.0.0.1 dbname=nowhere' publication p \
                     with (connect = false)",
                )
                .await
                .unwrap();
        }
        assert!(!exists(&name).await, "{name} was not dropped");
    }
}
