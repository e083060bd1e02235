//! `shipsafe demo`: a self-contained tour on a scratch cluster. Needs
//! nothing but PostgreSQL's server binaries.

use serde::Serialize;
use shipsafe_config::{Config, ProcessEnv};
use shipsafe_pg::{ScratchCluster, connect, quote_ident};

use crate::commands::status::{StatusReport, status};
use crate::error::CoreError;
use crate::progress::Progress;

/// The sample application database.
pub const SAMPLE_SQL: &str = include_str!("sample.sql");
pub const SAMPLE_DATABASE: &str = "sme_app";
/// Tables of the sample database, in foreign-key order.
pub const SAMPLE_TABLES: &[&str] = &["users", "employees", "tools", "tool_access"];

#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub cluster: ClusterInfo,
    pub database: String,
    pub tables: Vec<TableRows>,
    pub status: StatusReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterInfo {
    pub server_version: String,
    pub port: u16,
    pub start_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableRows {
    pub table: String,
    pub rows: i64,
}

/// Creates the sample database in a running cluster and returns its URL.
pub async fn create_sample_database(
    cluster: &ScratchCluster,
) -> Result<shipsafe_config::DbUrl, CoreError> {
    let admin = connect(&cluster.url("postgres")).await?;
    admin
        .batch_execute(&format!("create database {}", quote_ident(SAMPLE_DATABASE)))
        .await
        .map_err(|e| {
            CoreError::Failed(format!(
                "cannot create the sample database: {}",
                shipsafe_pg::describe(&e)
            ))
        })?;
    let url = cluster.url(SAMPLE_DATABASE);
    let client = connect(&url).await?;
    client.batch_execute(SAMPLE_SQL).await.map_err(|e| {
        CoreError::Failed(format!(
            "cannot load the sample schema: {}",
            shipsafe_pg::describe(&e)
        ))
    })?;
    Ok(url)
}

pub async fn run(progress: &dyn Progress) -> Result<DemoReport, CoreError> {
    progress.stage("starting a scratch PostgreSQL cluster");
    let started = std::time::Instant::now();
    let cluster = tokio::task::spawn_blocking(ScratchCluster::start)
        .await
        .map_err(|e| CoreError::Failed(format!("scratch cluster start was interrupted: {e}")))??;
    let start_ms = started.elapsed().as_millis() as u64;

    progress.stage("building the sample SME database (users, employees, tools, tool_access)");
    let url = create_sample_database(&cluster).await?;

    let project = tempfile::Builder::new()
        .prefix("shipsafe-demo-")
        .tempdir()
        .map_err(|e| CoreError::io("cannot create the demo project folder", e))?;
    let config_path = project.path().join("shipsafe.toml");
    let config_text = format!(
        "[project]\nname = \"shipsafe-demo\"\n\n[environments.demo]\ndatabase_url = \"{}\"\nprotection = \"guarded\"\n",
        url.expose()
    );
    std::fs::write(&config_path, &config_text)
        .map_err(|e| CoreError::io(format!("cannot write {}", config_path.display()), e))?;
    let config = Config::parse(&config_path, &config_text)?;

    progress.stage("checking the environment");
    let report = status(&config, &ProcessEnv, None).await?;

    let client = connect(&url).await?;
    let mut tables = Vec::new();
    for t in SAMPLE_TABLES {
        let row = client
            .query_one(&format!("select count(*) from {}", quote_ident(t)), &[])
            .await
            .map_err(|e| {
                CoreError::Failed(format!("cannot count {t}: {}", shipsafe_pg::describe(&e)))
            })?;
        tables.push(TableRows {
            table: (*t).to_string(),
            rows: row.get(0),
        });
    }
    drop(client);
    let server_version = report
        .environments
        .first()
        .and_then(|e| e.server_version.clone())
        .unwrap_or_default();
    let port = cluster.port();
    progress.stage("stopping the scratch cluster");
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .map_err(|e| CoreError::Failed(format!("scratch cluster stop was interrupted: {e}")))??;
    Ok(DemoReport {
        cluster: ClusterInfo {
            server_version,
            port,
            start_ms,
        },
        database: SAMPLE_DATABASE.to_string(),
        tables,
        status: report,
    })
}
