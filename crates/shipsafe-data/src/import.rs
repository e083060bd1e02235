//! Matching a data file against a database by natural key, and applying it.
//!
//! Set-based, in the caller's transaction: the file's rows are `COPY`ed into
//! a temporary table, the target's rows are rendered as the same JSON, and
//! one full join on the key classifies every row. `shipsafe.data_base` in
//! the target keeps what was last imported per set, which makes the
//! comparison three-way: a row that differs from the file *and* from what
//! shipsafe last wrote was edited in the target, and is a conflict rather
//! than something to overwrite. A dry run is the same work, rolled back.

use futures::SinkExt;
use serde::Serialize;
use shipsafe_pg::{quote_ident, quote_literal};
use tokio_postgres::Client;

use crate::error::DataError;
use crate::file::copy_line;
use crate::set::{KeyPart, SetDef};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportMode {
    /// Insert and update; delete only what the set's `deletes` names.
    Merge,
    /// Also delete rows that are not in the file.
    Mirror,
}

#[derive(Debug, Clone, Copy)]
pub struct ImportOptions {
    pub mode: ImportMode,
    /// Overwrite rows edited in the target since the last import.
    pub force: bool,
    /// Leave out rows whose references do not resolve, instead of failing.
    pub skip_unresolved: bool,
    /// Lock the table against concurrent writers (a real import).
    pub lock: bool,
}

/// A row edited (or deleted) in the target since shipsafe last imported it.
#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    pub key: serde_json::Value,
    /// `changed_in_target` or `deleted_in_target`.
    pub kind: String,
    pub target: Option<serde_json::Value>,
    pub last_imported: Option<serde_json::Value>,
    pub file: Option<serde_json::Value>,
}

/// A row whose reference names a row the target does not have.
#[derive(Debug, Clone, Serialize)]
pub struct Unresolved {
    pub key: serde_json::Value,
    pub reference: String,
    pub value: serde_json::Value,
}

/// One change, for the report (the first ones of each kind).
#[derive(Debug, Clone, Serialize)]
pub struct RowChange {
    pub action: String,
    pub key: serde_json::Value,
    /// Fields whose value changes (updates).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SetPlan {
    pub set: String,
    pub table: String,
    pub rows_in_file: u64,
    /// Renames applied to the target before matching (old → new).
    pub renamed: Vec<(String, String)>,
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    pub unchanged: u64,
    /// Conflicts overwritten because of `--force`.
    pub forced: u64,
    pub conflicts: Vec<Conflict>,
    pub unresolved: Vec<Unresolved>,
    /// The first changes of each kind.
    pub changes: Vec<RowChange>,
}

impl SetPlan {
    pub fn changes_anything(&self) -> bool {
        self.inserts + self.updates + self.deletes > 0 || !self.renamed.is_empty()
    }
}

const BASE_TABLE: &str = "create schema if not exists shipsafe; \
     create table if not exists shipsafe.data_base (\
       set_name text not null, k jsonb not null, r jsonb not null, \
       imported_at timestamptz not null default now(), primary key (set_name, k))";

async fn exec(client: &Client, what: &str, sql: &str) -> Result<(), DataError> {
    client
        .batch_execute(sql)
        .await
        .map_err(|e| DataError::db(what.to_string(), &e))
}

async fn count(client: &Client, what: &str, sql: &str) -> Result<i64, DataError> {
    client
        .query_one(sql, &[])
        .await
        .map(|r| r.get(0))
        .map_err(|e| DataError::db(what.to_string(), &e))
}

fn json(text: Option<String>) -> Option<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

/// Classifies the file's rows against the target and applies the result
/// (the caller commits, or rolls back for a dry run). Returns the plan; the
/// rows of unresolved references are applied only with `skip_unresolved`
/// (and then left out). Conflicts are never applied without `force`.
pub async fn import_set(
    client: &Client,
    def: &SetDef,
    rows: &[&str],
    opts: ImportOptions,
) -> Result<SetPlan, DataError> {
    let mut plan = SetPlan {
        set: def.name.clone(),
        table: def.display.clone(),
        rows_in_file: rows.len() as u64,
        ..Default::default()
    };
    exec(client, "preparing the import", "set local timezone = 'UTC'").await?;
    if opts.lock {
        exec(
            client,
            &format!("locking {}", def.display),
            &format!("lock table {} in share row exclusive mode", def.table),
        )
        .await?;
    }
    exec(client, "creating shipsafe.data_base", BASE_TABLE).await?;
    exec(
        client,
        "preparing the import",
        "drop table if exists pg_temp.ss_file, pg_temp.ss_f, pg_temp.ss_t, pg_temp.ss_b, pg_temp.ss_del, pg_temp.ss_plan, pg_temp.ss_src; \
         create temp table ss_file (r jsonb) on commit drop",
    )
    .await?;
    copy_rows(client, rows).await?;

    // Renames first, so the renamed rows keep their ids (and whatever
    // points at them) and then match the file's new keys.
    if let [KeyPart::Column(col)] = def.key.as_slice() {
        for (old, new) in &def.renames {
            let n = client
                .execute(
                    &format!(
                        "update {t} set {c} = $2 where {c} = $1 and not exists (select 1 from {t} where {c} = $2)",
                        t = def.table,
                        c = quote_ident(col)
                    ),
                    &[old, new],
                )
                .await
                .map_err(|e| DataError::db(format!("renaming {old:?} in {}", def.display), &e))?;
            if n > 0 {
                plan.renamed.push((old.clone(), new.clone()));
            }
        }
    }

    let deletes: Vec<serde_json::Value> =
        def.deletes.iter().map(|d| serde_json::json!([d])).collect();
    let deletes = serde_json::Value::from(deletes).to_string();
    exec(
        client,
        &format!("matching {} by natural key", def.display),
        &format!(
            "create temp table ss_f on commit drop as select {fkey} as k, r from ss_file; \
             create temp table ss_t on commit drop as select {tkey} as k, {trow} as r, t.ctid as tid from {from}; \
             create temp table ss_b on commit drop as select k, r from shipsafe.data_base where set_name = {set}; \
             create temp table ss_del on commit drop as select distinct d as k from jsonb_array_elements({deletes}::jsonb) d; \
             analyze ss_f; analyze ss_t; analyze ss_b",
            fkey = def.key_of_json("r"),
            tkey = def.key_expr("t"),
            trow = def.row_expr("t"),
            from = def.from_clause("t"),
            set = quote_literal(&def.name),
            deletes = quote_literal(&deletes),
        ),
    )
    .await?;
    for (table, whose) in [("ss_f", "the file"), ("ss_t", "the target")] {
        if let Some(r) = client
            .query_opt(
                &format!("select k::text from {table} group by k having count(*) > 1 limit 1"),
                &[],
            )
            .await
            .map_err(|e| DataError::db("checking keys", &e))?
        {
            let k: String = r.get(0);
            return Err(DataError::Invalid(format!(
                "data set {}: {whose} has two rows with the natural key {k} ({}); a natural key must name one row",
                def.name, def.display
            )));
        }
    }
    let (mirror, force) = (opts.mode == ImportMode::Mirror, opts.force);
    exec(
        client,
        "classifying rows",
        &format!(
            "create temp table ss_plan on commit drop as \
             select coalesce(f.k, t.k) as k, f.r as fr, t.r as tr, b.r as br, t.tid, \
               case \
                 when d.k is not null then case when t.k is null then 'absent' else 'delete' end \
                 when f.k is not null and t.k is null and b.k is null then 'insert' \
                 when f.k is not null and t.k is null then case when {force} then 'insert' else 'conflict_deleted' end \
                 when f.k is not null and f.r = t.r then 'unchanged' \
                 when f.k is not null and (b.k is null or b.r = t.r) then 'update' \
                 when f.k is not null then case when {force} then 'update' else 'conflict_changed' end \
                 when {mirror} then case when b.k is not null and b.r <> t.r and not {force} then 'conflict_changed' else 'delete' end \
                 else 'keep' \
               end as action, \
               {force} and b.k is not null and ((f.k is not null and t.k is null) or (t.k is not null and b.r <> t.r and f.r is distinct from t.r)) as forced \
             from ss_f f full join ss_t t on t.k = f.k \
             left join ss_b b on b.k = coalesce(f.k, t.k) \
             left join ss_del d on d.k = coalesce(f.k, t.k)"
        ),
    )
    .await?;
    for r in client
        .query(
            "select action, count(*), count(*) filter (where forced) from ss_plan group by action",
            &[],
        )
        .await
        .map_err(|e| DataError::db("counting the plan", &e))?
    {
        let action: String = r.get(0);
        let n = r.get::<_, i64>(1) as u64;
        plan.forced += r.get::<_, i64>(2) as u64;
        match action.as_str() {
            "insert" => plan.inserts = n,
            "update" => plan.updates = n,
            "delete" => plan.deletes = n,
            "unchanged" => plan.unchanged = n,
            _ => {}
        }
    }
    for r in client
        .query(
            "select k::text, action, tr::text, br::text, fr::text from ss_plan \
              where action like 'conflict%' order by k::text collate \"C\"",
            &[],
        )
        .await
        .map_err(|e| DataError::db("listing conflicts", &e))?
    {
        let action: String = r.get(1);
        plan.conflicts.push(Conflict {
            key: json(r.get(0)).unwrap_or_default(),
            kind: if action == "conflict_deleted" {
                "deleted_in_target".into()
            } else {
                "changed_in_target".into()
            },
            target: json(r.get(2)),
            last_imported: json(r.get(3)),
            file: json(r.get(4)),
        });
    }
    for r in client
        .query(
            "select action, k::text, case when action = 'update' then \
                (select coalesce(array_agg(e.key order by e.key), '{}') from jsonb_each(fr) e where tr->e.key is distinct from e.value) \
                else '{}'::text[] end \
             from (select *, row_number() over (partition by action order by k::text collate \"C\") as n from ss_plan \
                    where action in ('insert', 'update', 'delete')) p where n <= 20 order by action, k::text collate \"C\"",
            &[],
        )
        .await
        .map_err(|e| DataError::db("listing changes", &e))?
    {
        plan.changes.push(RowChange {
            action: r.get(0),
            key: json(r.get(1)).unwrap_or_default(),
            fields: r.get(2),
        });
    }

    resolve_references(client, def, &mut plan).await?;
    if !plan.unresolved.is_empty() && !opts.skip_unresolved {
        return Ok(plan);
    }
    apply(client, def).await?;
    Ok(plan)
}

async fn copy_rows(client: &Client, rows: &[&str]) -> Result<(), DataError> {
    let sink = client
        .copy_in("copy ss_file (r) from stdin")
        .await
        .map_err(|e| DataError::db("loading the file's rows", &e))?;
    futures::pin_mut!(sink);
    let mut buf = Vec::with_capacity(1 << 20);
    for r in rows {
        copy_line(r, &mut buf);
        if buf.len() >= 1 << 20 {
            sink.send(bytes::Bytes::from(std::mem::take(&mut buf)))
                .await
                .map_err(|e| DataError::db("loading the file's rows", &e))?;
        }
    }
    if !buf.is_empty() {
        sink.send(bytes::Bytes::from(buf))
            .await
            .map_err(|e| DataError::db("loading the file's rows", &e))?;
    }
    sink.finish()
        .await
        .map_err(|e| DataError::db("loading the file's rows (is every row valid JSON?)", &e))?;
    Ok(())
}

/// Builds `ss_src`: the rows to insert or update, typed as the table's
/// columns, with every reference resolved to the target's id by natural key.
async fn resolve_references(
    client: &Client,
    def: &SetDef,
    plan: &mut SetPlan,
) -> Result<(), DataError> {
    let mut select = vec![
        "p.k as _ss_k".to_string(),
        "p.action as _ss_action".into(),
        "p.tid as _ss_tid".into(),
        "x.*".into(),
    ];
    let mut joins = String::new();
    for (i, r) in def.references.iter().enumerate() {
        let name = quote_literal(&r.name);
        select.push(format!("r{i}.{} as _ss_fk{i}", quote_ident(&r.target)));
        select.push(format!("nullif(p.fr->{name}, 'null'::jsonb) as _ss_ref{i}"));
        let on: Vec<String> = r
            .key
            .iter()
            .map(|k| format!("r{i}.{c} = y{i}.{c}", c = quote_ident(k)))
            .collect();
        joins.push_str(&format!(
            " left join lateral jsonb_populate_record(null::{t}, nullif(p.fr->{name}, 'null'::jsonb)) y{i} on true \
              left join {t} r{i} on {on}",
            t = r.table,
            on = on.join(" and ")
        ));
    }
    exec(
        client,
        &format!("resolving references of {}", def.display),
        &format!(
            "create temp table ss_src on commit drop as select {} \
             from ss_plan p cross join lateral jsonb_populate_record(null::{}, p.fr) x{joins} \
             where p.action in ('insert', 'update')",
            select.join(", "),
            def.table
        ),
    )
    .await?;
    if !def.references.is_empty() {
        let dup = count(
            client,
            "checking references",
            "select count(*) - count(distinct _ss_k) from ss_src",
        )
        .await?;
        if dup > 0 {
            return Err(DataError::Invalid(format!(
                "data set {}: a reference's natural key matches more than one row in the target; make the referenced key unique",
                def.name
            )));
        }
    }
    for (i, r) in def.references.iter().enumerate() {
        for row in client
            .query(
                &format!(
                    "select _ss_k::text, _ss_ref{i}::text from ss_src \
                      where _ss_ref{i} is not null and _ss_fk{i} is null order by _ss_k::text collate \"C\""
                ),
                &[],
            )
            .await
            .map_err(|e| DataError::db("listing unresolved references", &e))?
        {
            plan.unresolved.push(Unresolved {
                key: json(row.get(0)).unwrap_or_default(),
                reference: format!("{} → {}", r.name, r.table),
                value: json(row.get(1)).unwrap_or_default(),
            });
        }
    }
    if !plan.unresolved.is_empty() {
        let cond: Vec<String> = (0..def.references.len())
            .map(|i| format!("(_ss_ref{i} is not null and _ss_fk{i} is null)"))
            .collect();
        exec(
            client,
            "leaving out unresolved rows",
            &format!(
                "update ss_plan p set action = 'unresolved' from ss_src s where s._ss_k = p.k and ({c}); \
                 delete from ss_src where {c}",
                c = cond.join(" or ")
            ),
        )
        .await?;
        let n = plan.unresolved.len() as u64;
        plan.inserts = count(
            client,
            "recounting",
            "select count(*) from ss_plan where action = 'insert'",
        )
        .await? as u64;
        plan.updates = count(
            client,
            "recounting",
            "select count(*) from ss_plan where action = 'update'",
        )
        .await? as u64;
        tracing::debug!("{n} rows of {} left out: unresolved references", def.name);
    }
    Ok(())
}

async fn apply(client: &Client, def: &SetDef) -> Result<(), DataError> {
    let mut cols: Vec<String> = def.columns.iter().map(|c| quote_ident(c)).collect();
    let mut vals: Vec<String> = def
        .columns
        .iter()
        .map(|c| format!("s.{}", quote_ident(c)))
        .collect();
    for (i, r) in def.references.iter().enumerate() {
        cols.push(quote_ident(&r.column));
        vals.push(format!("s._ss_fk{i}"));
    }
    let sets: Vec<String> = cols
        .iter()
        .zip(&vals)
        .map(|(c, v)| format!("{c} = {v}"))
        .collect();
    let set_name = quote_literal(&def.name);
    let mut sql = String::new();
    if !cols.is_empty() {
        sql.push_str(&format!(
            "insert into {t} ({cols}) select {vals} from ss_src s where s._ss_action = 'insert'; \
             update {t} t set {sets} from ss_src s where s._ss_action = 'update' and t.ctid = s._ss_tid; ",
            t = def.table,
            cols = cols.join(", "),
            vals = vals.join(", "),
            sets = sets.join(", ")
        ));
    }
    sql.push_str(&format!(
        "delete from {t} t using ss_plan p where p.action = 'delete' and t.ctid = p.tid; \
         delete from shipsafe.data_base b using ss_plan p where b.set_name = {set_name} and b.k = p.k and p.action in ('delete', 'absent'); \
         insert into shipsafe.data_base (set_name, k, r) \
           select {set_name}, k, fr from ss_plan where action in ('insert', 'update', 'unchanged') and br is distinct from fr \
           on conflict (set_name, k) do update set r = excluded.r, imported_at = now()",
        t = def.table
    ));
    exec(client, &format!("writing {}", def.display), &sql).await
}
