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
        if let Some(why) = null_in_key(&key) {
            return Err(DataError::Invalid(format!(
                "data set {}: the row of {} with the natural key {key} has {why}; give it a value (or the column NOT NULL) or choose other key columns",
                def.name, def.display
            )));
        }
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

/// Why a natural key (as JSON) cannot name its row elsewhere: NULL equals
/// nothing, not even NULL, so a key holding one matches no row (and a
/// unique index lets such rows repeat).
pub(crate) fn null_in_key(key: &str) -> Option<&'static str> {
    fn has_null(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Null => true,
            serde_json::Value::Array(a) => a.iter().any(has_null),
            serde_json::Value::Object(o) => o.values().any(has_null),
            _ => false,
        }
    }
    let v: serde_json::Value = serde_json::from_str(key).ok()?;
    has_null(&v).then_some(
        "NULL in its key (a key column, or a reference in the key that is not set or whose own key holds NULL): NULL equals nothing, so the row could not be found again in another environment",
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_key_holding_null_anywhere_is_named() {
        assert!(super::null_in_key(r#"["x", null]"#).is_some());
        assert!(super::null_in_key(r#"[{"username": "a", "email": null}]"#).is_some());
        assert!(super::null_in_key(r#"["x", {"code": "B"}]"#).is_none());
        assert!(super::null_in_key(r#"["null"]"#).is_none());
    }
}
