//! Rows of a set as natural-key JSON, sorted by key.

use tokio_postgres::Client;

use crate::error::DataError;
use crate::set::SetDef;

/// Every row of the set as JSON text (PostgreSQL's own `jsonb` rendering,
/// so it is the same on every machine), sorted by key. Times are written in
/// UTC. Two rows with the same natural key are an error: they could not be
/// told apart in another environment.
pub async fn rows(client: &Client, def: &SetDef) -> Result<Vec<String>, DataError> {
    client
        .batch_execute(
            "begin isolation level repeatable read read only; set local timezone = 'UTC'",
        )
        .await
        .map_err(|e| DataError::db("starting the export", &e))?;
    let result = rows_in_transaction(client, def).await;
    let _ = client.batch_execute("rollback").await;
    result
}

pub(crate) async fn rows_in_transaction(
    client: &Client,
    def: &SetDef,
) -> Result<Vec<String>, DataError> {
    let sql = format!(
        "select {row}::text, {key}::text from {from} order by {key}::text collate \"C\"",
        row = def.row_expr("t"),
        key = def.key_expr("t"),
        from = def.from_clause("t"),
    );
    let found = client
        .query(&sql, &[])
        .await
        .map_err(|e| DataError::db(format!("reading {}", def.display), &e))?;
    let mut out = Vec::with_capacity(found.len());
    let mut last: Option<String> = None;
    for r in &found {
        let key: String = r.get(1);
        if last.as_deref() == Some(key.as_str()) {
            return Err(DataError::Invalid(format!(
                "data set {}: two rows of {} have the natural key {key}; make the key unique (a unique index on it) or choose other key columns",
                def.name, def.display
            )));
        }
        out.push(r.get(0));
        last = Some(key);
    }
    Ok(out)
}
