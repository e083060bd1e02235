//! Matching a data file against a database by natural key, and applying it.
//!
//! Set-based, in the caller's transaction: the file's rows are `COPY`ed into
//! a temporary table and typed as the table's columns (references resolved
//! to the target's ids by natural key), then matched to the target's rows
//! on the typed key with one join and compared column by column. Only rows
//! that differ are rendered as natural-key JSON again.
//!
//! `shipsafe.data_imported` in the target keeps, per set and key, a hash of the
//! row shipsafe last wrote (of its typed values, so the file's formatting of
//! a number or a time does not matter). That makes the comparison three-way: a row that
//! differs from the file *and* from what shipsafe last wrote was edited in
//! the target, and is a conflict rather than something to overwrite. A dry
//! run is the same work, rolled back.
//!
//! `shipsafe.data_fingerprint` keeps, per set, what a clean import (nothing
//! left out, no conflict left) left behind: a hash of the file and the set's
//! definition, and a fingerprint of the target table and of the referenced
//! tables' keys as they were at its end. When both still match, the run
//! has nothing to do and says so without loading a row; any difference
//! (a row edited, a referenced key renamed, another file) takes the full
//! comparison, so the shortcut can only skip work, never a finding.

use futures::SinkExt;
use serde::Serialize;
use shipsafe_pg::{quote_ident, quote_literal};
use tokio_postgres::Client;

use crate::columns::Layout;
use crate::error::DataError;
use crate::file::{DataFile, copy_line};
use crate::set::{KeyPart, Reference, SetDef};

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
    /// A real import: lock the table against concurrent writers, apply the
    /// plan and record the base. Otherwise (`data diff`, dry runs) nothing
    /// is written to the target's tables, so no trigger fires and no
    /// sequence moves (neither rolls back).
    pub apply: bool,
}

/// A row edited (or deleted) in the target since shipsafe last imported it.
#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    pub key: serde_json::Value,
    /// `changed_in_target` or `deleted_in_target`.
    pub kind: String,
    /// The row as the target has it now (absent when deleted there).
    pub target: Option<serde_json::Value>,
    /// The row as the file has it.
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

/// The base's hashes do not compress: stored as they are, writing them
/// costs half.
const BASE_TABLE: &str = "create schema if not exists shipsafe; \
     create table if not exists shipsafe.data_base (\
       set_name text primary key, kh bigint[] not null, rh bigint[] not null, \
       imported_at timestamptz not null default now()); \
     do $$ begin \
       if exists (select 1 from pg_attribute where attrelid = 'shipsafe.data_base'::regclass \
                   and attname in ('kh', 'rh') and attstorage <> 'e') then \
         alter table shipsafe.data_base alter kh set storage external, alter rh set storage external; \
       end if; end $$; \
     alter table shipsafe.data_base add column if not exists hash_version int not null default 1; \
     create table if not exists shipsafe.data_fingerprint (\
       set_name text primary key, file text not null, state text not null, \
       unchanged bigint not null)";

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

/// A 64-bit hash of the typed values of the set's columns and foreign keys
/// of the row aliased `alias` (`fk` names a foreign key's value).
///
/// `hash_record_extended` hashes a NULL field as 0, as it hashes float 0
/// and -0, numeric NaN and ±Infinity: a row holding NULL where another
/// holds 0 would hash alike, and an edit between them would go unseen. A
/// row with any NULL field therefore also hashes which fields are NULL;
/// a row without one hashes as [`HASH_VERSION`] 1 did, so bases written
/// then stay valid for it.
fn row_hash(def: &SetDef, alias: &str, fk: &dyn Fn(usize) -> String) -> String {
    row_hash_v(def, alias, fk, HASH_VERSION)
}

/// The hashes a base written by this version holds. 1: NULL hashed like a
/// zero-hash value; 2: NULL fields also hashed as such; 3: values hashed
/// by their text, as [`Sql::same_row`] compares them.
const HASH_VERSION: i32 = 3;

fn row_hash_v(def: &SetDef, alias: &str, fk: &dyn Fn(usize) -> String, version: i32) -> String {
    let mut parts: Vec<String> = def
        .columns
        .iter()
        .map(|c| {
            let v = def.comparable(c, &format!("{alias}.{}", quote_ident(c)));
            if version >= 3 { as_text(&v) } else { v }
        })
        .collect();
    parts.extend((0..def.references.len()).map(fk));
    if parts.is_empty() {
        return "0::int8".into();
    }
    let plain = format!("hash_record_extended(row({}), 0)", parts.join(", "));
    if version < 2 {
        return plain;
    }
    // num_nulls: whether the value itself is NULL (`x IS NULL` is also
    // true for a composite whose fields are all NULL).
    let flags: Vec<String> = parts.iter().map(|p| format!("num_nulls({p})")).collect();
    format!(
        "case when num_nulls({}) > 0 then hash_record_extended(row({}, {}), 0) else {plain} end",
        parts.join(", "),
        parts.join(", "),
        flags.join(", ")
    )
}

/// A value as the comparison of rows takes it: its text. Values equal
/// under `=` can differ (`interval '30 days'` and `'1 mon'`, numeric
/// `1.50` and `1.5`, citext `'Abc'` and `'abc'`): the file's value must
/// still reach the target. The session's output settings are pinned
/// ([`PINNED_OUTPUT`]) so the text is the same in every run.
fn as_text(expr: &str) -> String {
    format!("({expr})::text")
}

/// Output settings that decide a value's text, pinned for every import so
/// hashes of text agree between runs and roles.
const PINNED_OUTPUT: &str = "set local datestyle = 'ISO, MDY'; set local intervalstyle = 'postgres'; \
     set local extra_float_digits = 1; set local bytea_output = 'hex'; ";

/// Where earlier versions kept the base, with the natural key hashed as
/// JSON (`jsonb_hash_extended`); read once and converted (see
/// [`load_base`]).
const LEGACY_BASE: &str = "shipsafe.data_imported";

/// A reference key's value `expr` of type `ty` as the key hash takes it:
/// text-like types as text (citext's own hash ignores case), the rest as
/// [`SetDef::comparable`] has them (a hash needs what equality needs).
fn hashable(ty: &str, expr: &str) -> String {
    let base = ty.trim_end_matches("[]");
    if crate::columns::text_like(base) {
        format!("({expr})::text{}", &ty[base.len()..])
    } else {
        crate::set::comparable_as(ty, expr)
    }
}

/// The natural key's 64-bit hash, of the typed file row (`x` its columns,
/// `f.h<i>` whether reference `i` is given, `f.k<i>_<n>` its key's typed
/// values) or, with `target`, of the target's row aliased `t` joined as in
/// [`SetDef::from_clause`]. Both give the same hash for the same key.
fn key_hash(def: &SetDef, target: bool) -> String {
    let mut parts = Vec::new();
    for p in &def.key {
        match p {
            KeyPart::Column(c) => {
                let alias = if target { "t" } else { "x" };
                parts.push(def.comparable(c, &format!("{alias}.{}", quote_ident(c))));
            }
            KeyPart::Reference(i) => {
                let r = &def.references[*i];
                parts.push(if target {
                    format!("t.{} is not null", quote_ident(&r.column))
                } else {
                    format!("f.h{i}")
                });
                for (n, (k, ty)) in r.key.iter().zip(&r.key_types).enumerate() {
                    let value = if target {
                        format!("r{i}.{}", quote_ident(k))
                    } else {
                        format!("f.k{i}_{n}")
                    };
                    parts.push(hashable(ty, &value));
                }
            }
        }
    }
    format!("hash_record_extended(row({}), 0)", parts.join(", "))
}

/// [`row_hash`] of the target's row aliased `t` (foreign keys as stored).
fn target_row_hash(def: &SetDef) -> String {
    target_row_hash_v(def, HASH_VERSION)
}

fn target_row_hash_v(def: &SetDef, version: i32) -> String {
    row_hash_v(
        def,
        "t",
        &|i| format!("t.{}", quote_ident(&def.references[i].column)),
        version,
    )
}

/// The SQL pieces that depend on the set.
struct Sql {
    /// `t` (target) and `s` (typed file row) have the same key.
    same_key: String,
    /// ... and the same values in every column the set covers.
    same_row: String,
    /// `alias`'s key column is one the set's `deletes` names.
    deleted: Box<dyn Fn(&str) -> String + Send + Sync>,
}

fn pieces(def: &SetDef) -> Sql {
    let key: Vec<String> = def
        .key
        .iter()
        .map(|p| match p {
            KeyPart::Column(c) => format!("t.{c} = s.{c}", c = quote_ident(c)),
            KeyPart::Reference(i) => format!(
                "t.{} = s._ss_fk{i}",
                quote_ident(&def.references[*i].column)
            ),
        })
        .collect();
    // Values by their text (see `as_text`); keys matched by `=` above.
    let mut left: Vec<String> = def
        .columns
        .iter()
        .map(|c| as_text(&def.comparable(c, &format!("t.{}", quote_ident(c)))))
        .collect();
    let mut right: Vec<String> = def
        .columns
        .iter()
        .map(|c| as_text(&def.comparable(c, &format!("s.{}", quote_ident(c)))))
        .collect();
    for (i, r) in def.references.iter().enumerate() {
        left.push(format!("t.{}", quote_ident(&r.column)));
        right.push(format!("s._ss_fk{i}"));
    }
    let same_row = if left.is_empty() {
        "true".to_string()
    } else {
        format!(
            "row({}, null) is not distinct from row({}, null)",
            left.join(", "),
            right.join(", ")
        )
    };
    let deletes: Vec<String> = def.deletes.iter().map(|d| quote_literal(d)).collect();
    let deleted: Box<dyn Fn(&str) -> String + Send + Sync> =
        match (def.key.as_slice(), deletes.is_empty()) {
            ([KeyPart::Column(c)], false) => {
                let c = quote_ident(c);
                let list = deletes.join(", ");
                Box::new(move |alias: &str| format!("({alias}.{c})::text in ({list})"))
            }
            _ => Box::new(|_: &str| "false".to_string()),
        };
    Sql {
        same_key: key.join(" and "),
        same_row,
        deleted,
    }
}

/// The set as a plan that is not applied sees it: its table replaced by a
/// private copy when a rename would change it, and references to tables an
/// earlier set of the run copied pointed at those copies.
async fn planning_def(client: &Client, def: &SetDef) -> Result<SetDef, DataError> {
    exec(
        client,
        "preparing the plan",
        "create temp table if not exists ss_pending (tbl text, r jsonb) on commit drop; \
         create temp table if not exists ss_copies (tbl text primary key, copy text not null) on commit drop",
    )
    .await?;
    let copies: std::collections::HashMap<String, String> = client
        .query("select tbl, copy from pg_temp.ss_copies", &[])
        .await
        .map_err(|e| DataError::db("preparing the plan", &e))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut out = def.clone();
    for r in &mut out.references {
        if let Some(c) = copies.get(&r.table) {
            r.table = c.clone();
        }
    }
    if let Some(c) = copies.get(&def.table) {
        out.table = c.clone();
        return Ok(out);
    }
    let [KeyPart::Column(col)] = def.key.as_slice() else {
        return Ok(out);
    };
    if def.renames.is_empty() {
        return Ok(out);
    }
    let olds: Vec<&str> = def.renames.iter().map(|(o, _)| o.as_str()).collect();
    let renames_pending: bool = client
        .query_one(
            &format!(
                "select exists (select 1 from {t} where {c}::text = any($1))",
                t = def.table,
                c = quote_ident(col)
            ),
            &[&olds],
        )
        .await
        .map_err(|e| DataError::db(format!("reading {}", def.display), &e))?
        .get(0);
    if renames_pending {
        let copy = format!("pg_temp.ss_copy_{}", copies.len());
        exec(
            client,
            &format!("copying {} for the plan", def.display),
            &format!(
                "create temp table {name} on commit drop as select * from {t}; \
                 insert into pg_temp.ss_copies values ({tl}, {cl})",
                name = copy.trim_start_matches("pg_temp."),
                t = def.table,
                tl = quote_literal(&def.table),
                cl = quote_literal(&copy)
            ),
        )
        .await?;
        out.table = copy;
    }
    Ok(out)
}

/// A hash of the file and of everything about the set that decides how its
/// rows are read: table, columns and their types, key, references,
/// renames, deletes, and the mode.
fn file_fingerprint(def: &SetDef, file: &DataFile, mode: ImportMode) -> String {
    let mut h = blake3::Hasher::new();
    let types: std::collections::BTreeMap<&String, &String> = def.types.iter().collect();
    let refs: Vec<_> = def
        .references
        .iter()
        .map(|r| {
            (
                &r.name,
                &r.table,
                &r.key,
                &r.column,
                &r.target,
                &r.key_types,
            )
        })
        .collect();
    // The versions name how keys and rows are hashed: a fingerprint of
    // another version's state must not be taken for this one's.
    let described = format!(
        "v2 h{HASH_VERSION} {:?}",
        (
            &def.table,
            &def.columns,
            &def.key,
            refs,
            &def.renames,
            &def.deletes,
            types,
            mode
        )
    );
    h.update(&(described.len() as u64).to_le_bytes());
    h.update(described.as_bytes());
    h.update(file.digest.as_bytes());
    h.finalize().to_hex().to_string()
}

/// The target as the set sees it: row count and sum of row hashes of the
/// table (every row, the set's columns and foreign keys), of each
/// referenced table's id and natural key, and of the base.
fn state_query(def: &SetDef) -> String {
    let mut parts = vec![format!(
        "(select count(*) || ':' || coalesce(sum(h), 0) from (select {h} as h from {t} t) x)",
        h = target_row_hash(def),
        t = def.table
    )];
    for r in &def.references {
        // As text: a key column's type may have no hash function.
        let mut cols = vec![format!("r.{}::text", quote_ident(&r.target))];
        cols.extend(r.key.iter().map(|k| format!("r.{}::text", quote_ident(k))));
        parts.push(format!(
            "(select count(*) || ':' || coalesce(sum(hash_record_extended(row({c}), 0)), 0) from {t} r)",
            c = cols.join(", "),
            t = r.table
        ));
    }
    parts.push(format!(
        "(select cardinality(kh) || ':' || hash_array_extended(kh, 0) || ':' || hash_array_extended(rh, 0) \
            from shipsafe.data_base where set_name = {})",
        quote_literal(&def.name)
    ));
    let parts: Vec<String> = parts
        .into_iter()
        .map(|p| format!("coalesce({p}, '-')"))
        .collect();
    format!("select concat_ws(';', {})", parts.join(", "))
}

/// The number of unchanged rows when the last clean import of this very
/// file left the target as it still is (nothing to do), else `None`.
async fn unchanged_since_last_import(
    client: &Client,
    def: &SetDef,
    file: &str,
    apply: bool,
) -> Result<Option<u64>, DataError> {
    let what = "comparing with the last import";
    // A plan that is not applied sees earlier sets of the run through
    // private copies and pending rows the real tables do not have.
    if !apply {
        let planned: bool = client
            .query_one("select to_regclass('pg_temp.ss_pending') is not null", &[])
            .await
            .map_err(|e| DataError::db(what, &e))?
            .get(0);
        let pending = planned
            && client
                .query_one(
                    "select exists (select 1 from pg_temp.ss_pending) \
                         or exists (select 1 from pg_temp.ss_copies)",
                    &[],
                )
                .await
                .map_err(|e| DataError::db(what, &e))?
                .get::<_, bool>(0);
        if pending {
            return Ok(None);
        }
    }
    let Some(last) = client
        .query_opt(
            "select state, unchanged from shipsafe.data_fingerprint where set_name = $1 and file = $2",
            &[&def.name, &file],
        )
        .await
        .map_err(|e| DataError::db(what, &e))?
    else {
        return Ok(None);
    };
    let now: Option<String> = client
        .query_one(&state_query(def), &[])
        .await
        .map_err(|e| DataError::db(what, &e))?
        .get(0);
    let state: String = last.get(0);
    Ok((now.as_deref() == Some(state.as_str())).then(|| last.get::<_, i64>(1) as u64))
}

/// After an import: remembers what a clean one left behind, or forgets
/// what an earlier one did (rows were left out, so the next run must look).
async fn record_fingerprint(
    client: &Client,
    def: &SetDef,
    plan: &SetPlan,
    file: &str,
) -> Result<(), DataError> {
    let what = format!("recording the import of {}", def.display);
    if !plan.unresolved.is_empty() || !plan.conflicts.is_empty() {
        return client
            .execute(
                "delete from shipsafe.data_fingerprint where set_name = $1",
                &[&def.name],
            )
            .await
            .map(drop)
            .map_err(|e| DataError::db(what, &e));
    }
    let unchanged = (plan.inserts + plan.updates + plan.unchanged) as i64;
    client
        .execute(
            &format!(
                "insert into shipsafe.data_fingerprint (set_name, file, state, unchanged) \
                 select $1, $2, ({}), $3 \
                 on conflict (set_name) do update set file = excluded.file, state = excluded.state, \
                   unchanged = excluded.unchanged",
                state_query(def)
            ),
            &[&def.name, &file, &unchanged],
        )
        .await
        .map(drop)
        .map_err(|e| DataError::db(what, &e))
}

/// Classifies the file's rows against the target and applies the result
/// (the caller commits, or rolls back for a dry run). Returns the plan; the
/// rows of unresolved references are applied only with `skip_unresolved`
/// (and then left out). Conflicts are never applied without `force`.
pub async fn import_set(
    client: &Client,
    def: &SetDef,
    file: &DataFile,
    opts: ImportOptions,
) -> Result<SetPlan, DataError> {
    let rows = file.rows();
    let rows = rows.as_slice();
    let mut plan = SetPlan {
        set: def.name.clone(),
        table: def.display.clone(),
        rows_in_file: rows.len() as u64,
        ..Default::default()
    };
    // Temporary tables stay in memory and hash joins in one batch: the
    // session's temp_buffers can only grow before its first temp table.
    exec(
        client,
        "preparing the import",
        &format!(
            "{PINNED_OUTPUT}set local timezone = 'UTC'; set local work_mem = '256MB'; \
             do $$ begin perform set_config('temp_buffers', '512MB', false); \
             exception when others then null; end $$"
        ),
    )
    .await?;
    if opts.apply {
        exec(
            client,
            &format!("locking {}", def.display),
            &format!("lock table {} in share row exclusive mode", def.table),
        )
        .await?;
    }
    exec(client, "creating shipsafe.data_imported", BASE_TABLE).await?;
    let fingerprint = file_fingerprint(def, file, opts.mode);
    if let Some(unchanged) =
        unchanged_since_last_import(client, def, &fingerprint, opts.apply).await?
    {
        tracing::info!(
            "data set {}: the file and the target are as the last import left them; nothing to compare",
            def.name
        );
        plan.unchanged = unchanged;
        return Ok(plan);
    }
    exec(
        client,
        "preparing the import",
        "drop view if exists pg_temp.ss_sx, pg_temp.ss_fx; \
         drop table if exists pg_temp.ss_file, pg_temp.ss_json, pg_temp.ss_s, pg_temp.ss_th, pg_temp.ss_b, pg_temp.ss_plan",
    )
    .await?;
    for (n, row) in rows.iter().enumerate() {
        def.check_fields(row).map_err(|why| {
            DataError::Invalid(format!(
                "data set {}: row {} of its file: {why}; nothing was changed",
                def.name,
                n + 1
            ))
        })?;
    }
    let layout = load_rows(client, def, rows).await?;
    let loaded = Loaded {
        rows,
        split: layout.is_some(),
    };

    // Renames first, so the renamed rows keep their ids (and whatever
    // points at them) and then match the file's new keys. A plan that is not
    // applied writes nothing to the target: it renames in a private copy of
    // the table, which later sets of the run then reference.
    let original_table = def.table.clone();
    let original_refs: Vec<String> = def.references.iter().map(|r| r.table.clone()).collect();
    let planned;
    let def = if opts.apply {
        def
    } else {
        planned = planning_def(client, def).await?;
        &planned
    };
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
        if !opts.apply && !plan.renamed.is_empty() {
            let news: Vec<&str> = plan.renamed.iter().map(|(_, n)| n.as_str()).collect();
            client
                .execute(
                    &format!(
                        "insert into pg_temp.ss_pending select {tbl}, to_jsonb(t) from {t} t where {c}::text = any($1)",
                        tbl = quote_literal(&original_table),
                        t = def.table,
                        c = quote_ident(col)
                    ),
                    &[&news],
                )
                .await
                .map_err(|e| DataError::db("planning renames", &e))?;
        }
    }

    typed_file_rows(client, def, layout.as_ref()).await?;
    duplicate_keys(client, def, &loaded).await?;
    let sql = pieces(def);
    let (mirror, force) = (opts.mode == ImportMode::Mirror, opts.force);
    // One join of the typed file rows with the target classifies them; the
    // target's rows are rendered as JSON only where they differ (for the
    // report) and only hashed where a base must be compared.
    let base = load_base(client, def, &loaded).await?;
    exec(
        client,
        &format!("matching {} by natural key", def.display),
        &format!(
            "create temp table ss_plan on commit drop as \
             select s._ss_kh as kh, {shash} as rh, b.rh as brh, t.ctid as tid, s._ss_fid as fid, \
               case \
                 when {deleted_s} then case when t.ctid is null then 'absent' else 'delete' end \
                 when t.ctid is null and b.kh is null then 'insert' \
                 when t.ctid is null then case when {force} then 'insert' else 'conflict_deleted' end \
                 when {same} then 'unchanged' \
                 when b.kh is null or b.rh = {thash} then 'update' \
                 when {force} then 'update' \
                 else 'conflict_changed' \
               end as action, \
               {force} and b.kh is not null and (t.ctid is null or (not ({same}) and b.rh <> {thash})) as forced{values} \
             from ss_s s left join {table} t on {key} left join ss_b b on b.kh = s._ss_kh; \
             insert into ss_plan (kh, rh, brh, tid, fid, action, forced) \
             select {tkh}, null, b.rh, t.ctid, null, \
               case \
                 when {deleted_t} then 'delete' \
                 when b.kh is not null and b.rh <> {thash} and not {force} then 'conflict_changed' \
                 else 'delete' \
               end, \
               {force} and b.kh is not null and b.rh <> {thash} \
             from {from} left join ss_b b on b.kh = {tkh} \
             where ({mirror} or {deleted_t}) and not exists (select 1 from ss_s s where {key}); \
             {analyze_plan}; \
             create temp table ss_th on commit drop as \
             select t.ctid as tid, {tkey} as k, {trow} as r from {from} \
              where t.ctid = any(array(select tid from ss_plan where tid is not null \
                                       and action not in ('insert', 'unchanged', 'absent')))",
            analyze_plan = analyze("ss_plan (kh, action)"),
            tkh = key_hash(def, true),
            shash = row_hash(def, "s", &|i| format!("s._ss_fk{i}")),
            values = written_values(def, "s")
                .iter()
                .map(|v| format!(", {v}"))
                .collect::<String>(),
            deleted_s = (sql.deleted)("s"),
            deleted_t = (sql.deleted)("t"),
            same = sql.same_row,
            thash = target_row_hash(def),
            table = def.table,
            key = sql.same_key,
            tkey = def.key_expr("t"),
            trow = def.row_expr("t"),
            from = def.from_clause("t"),
        ),
    )
    .await?;
    summarize(client, &mut plan, &loaded).await?;
    unresolved(
        client,
        def,
        &mut plan,
        &loaded,
        (!opts.apply).then_some(original_refs.as_slice()),
    )
    .await?;
    if !opts.apply {
        exec(
            client,
            "planning",
            &format!(
                "insert into pg_temp.ss_pending select {tbl}, to_jsonb(s) from ss_s s \
                   join ss_plan p on p.kh = s._ss_kh where p.action = 'insert'",
                tbl = quote_literal(&original_table)
            ),
        )
        .await?;
    }
    if !plan.unresolved.is_empty() && !opts.skip_unresolved {
        return Ok(plan);
    }
    if opts.apply {
        apply(client, def, &plan, base).await?;
        record_fingerprint(client, def, &plan, &fingerprint).await?;
    }
    Ok(plan)
}

/// `ANALYZE what` from a sample of 3,000 rows: enough for the join plans
/// that follow, where the default 30,000 cost as much as typing the rows.
fn analyze(what: &str) -> String {
    format!(
        "set local default_statistics_target = 10; analyze {what}; reset default_statistics_target"
    )
}

/// Loads the file's rows into `ss_file`: as plain-text fields when the
/// set's types allow it and every row can be split ([`Layout`]), else each
/// row as `jsonb`. Returns the layout used, if any.
async fn load_rows(
    client: &Client,
    def: &SetDef,
    rows: &[&str],
) -> Result<Option<Layout>, DataError> {
    let what = "loading the file's rows";
    if let Some(layout) = Layout::of(def) {
        exec(
            client,
            what,
            &format!(
                "create temp table ss_file ({}) on commit drop",
                layout.table_columns()
            ),
        )
        .await?;
        let split = copy_lines(
            client,
            what,
            "copy ss_file from stdin",
            rows.iter().enumerate(),
            |(n, r), buf| layout.line(n, r, buf),
        )
        .await?;
        if split {
            exec(
                client,
                what,
                "create temp table ss_json (n int primary key, r jsonb) on commit drop",
            )
            .await?;
            return Ok(Some(layout));
        }
        tracing::info!(
            "data set {}: a value needs the server's JSON reading; rows go as jsonb",
            def.name
        );
        exec(client, what, "drop table pg_temp.ss_file").await?;
    }
    exec(
        client,
        what,
        "create temp table ss_file (r jsonb) on commit drop",
    )
    .await?;
    copy_lines(
        client,
        "loading the file's rows (is every row valid JSON?)",
        "copy ss_file (r) from stdin",
        rows,
        |r, buf| {
            copy_line(r, buf);
            true
        },
    )
    .await?;
    Ok(None)
}

/// The file's rows as loaded: split into text fields, their JSON sent only
/// for the rows a report shows (`ss_json`), or whole as jsonb.
struct Loaded<'a> {
    rows: &'a [&'a str],
    split: bool,
}

impl Loaded<'_> {
    /// Makes `ss_sx` and `ss_fx` show the JSON of the rows whose
    /// `_ss_fid` the query `fids` returns (sends what is not there yet).
    /// Returns how many rows the query named; `None` when the rows were
    /// loaded whole (nothing to send, and the query is not run).
    async fn show(&self, client: &Client, fids: &str) -> Result<Option<usize>, DataError> {
        let what = "loading rows for the report";
        if !self.split {
            return Ok(None);
        }
        let named = client
            .query(
                &format!(
                    "select x.n, exists (select 1 from ss_json j where j.n = x.n) \
                       from (select distinct n from ({fids}) y(n) where n is not null) x"
                ),
                &[],
            )
            .await
            .map_err(|e| DataError::db(what, &e))?;
        let wanted: Vec<i32> = named
            .iter()
            .filter(|r| !r.get::<_, bool>(1))
            .map(|r| r.get(0))
            .collect();
        if wanted.is_empty() {
            return Ok(Some(named.len()));
        }
        copy_lines(
            client,
            what,
            "copy ss_json (n, r) from stdin",
            wanted,
            |n, buf| {
                if let Some(row) = usize::try_from(n).ok().and_then(|i| self.rows.get(i)) {
                    buf.extend_from_slice(format!("{n}\t").as_bytes());
                    copy_line(row, buf);
                }
                true
            },
        )
        .await?;
        Ok(Some(named.len()))
    }
}

/// How the base was found: in the legacy table, or with an older hash.
#[derive(Debug, Clone, Copy)]
struct BaseFound {
    legacy: bool,
    /// Converted from an older hash: to be written back as this one.
    stale: bool,
}

/// Reads the set's base into `ss_b` (key hash, row hash). A base an
/// earlier version kept (keys hashed as JSON) is converted through the
/// keys of the file's rows and of the target's rows; an entry that names
/// neither is dropped. Says whether the base was such a one (it then moves
/// to the new table when the import is applied) or was converted from an
/// older row hash.
async fn load_base(
    client: &Client,
    def: &SetDef,
    loaded: &Loaded<'_>,
) -> Result<BaseFound, DataError> {
    let what = "reading what was last imported";
    let set = quote_literal(&def.name);
    let legacy = client
        .query_one(
            &format!(
                "select not exists (select 1 from shipsafe.data_base where set_name = {set}) \
                   and to_regclass('{LEGACY_BASE}') is not null"
            ),
            &[],
        )
        .await
        .map_err(|e| DataError::db(what, &e))?
        .get::<_, bool>(0)
        && client
            .query_one(
                &format!("select exists (select 1 from {LEGACY_BASE} where set_name = {set})"),
                &[],
            )
            .await
            .map_err(|e| DataError::db(what, &e))?
            .get::<_, bool>(0);
    let sql = if legacy {
        loaded.show(client, "select _ss_fid from ss_s").await?;
        format!(
            "create temp table ss_b on commit drop as \
             select distinct on (m.kh) m.kh, o.rh \
               from (select u.kh, u.rh from {LEGACY_BASE} d, unnest(d.kh, d.rh) as u(kh, rh) where d.set_name = {set}) o \
               join (select jsonb_hash_extended(s._ss_k, 0) as lkh, s._ss_kh as kh from ss_sx s \
                     union all select jsonb_hash_extended({tkey}, 0), {tkh} from {from}) m on m.lkh = o.kh \
              order by m.kh; \
             {}",
            analyze("ss_b"),
            tkey = def.key_expr("t"),
            tkh = key_hash(def, true),
            from = def.from_clause("t"),
        )
    } else {
        format!(
            "create temp table ss_b on commit drop as \
               select u.kh, u.rh from shipsafe.data_base d, unnest(d.kh, d.rh) as u(kh, rh) where d.set_name = {set}; \
             {}",
            analyze("ss_b")
        )
    };
    exec(client, what, &sql).await?;
    let version: i32 = client
        .query_opt(
            &format!("select hash_version from shipsafe.data_base where set_name = {set}"),
            &[],
        )
        .await
        .map_err(|e| DataError::db(what, &e))?
        .map_or(HASH_VERSION, |r| r.get(0));
    // Legacy bases were matched with the old hashes of today's rows.
    let old = if legacy { 1 } else { version };
    if old < HASH_VERSION {
        exec(client, what, &convert_base(def, old)).await?;
    }
    Ok(BaseFound {
        legacy,
        stale: old < HASH_VERSION,
    })
}

/// Rewrites the base's row hashes in `ss_b`, written by hash `version`, as
/// this version hashes: for each base key, the rows (target and file) whose
/// old hash is the base's give the new one. Rows without a NULL hash alike
/// in both versions. Where those rows disagree (one holds NULL, the other
/// a value the old hash took for NULL), the base cannot tell which it was:
/// it then matches neither, and an edit shows as a conflict rather than
/// being overwritten.
fn convert_base(def: &SetDef, version: i32) -> String {
    format!(
        "with m as ( \
           select {tkh} as kh, {old_t} as orh, {new_t} as nrh from {from} \
           union all \
           select s._ss_kh, {old_s}, {new_s} from ss_s s), \
         c as ( \
           select b.kh, min(m.nrh) as lo, max(m.nrh) as hi \
             from ss_b b join m on m.kh = b.kh and m.orh = b.rh group by b.kh) \
         update ss_b b set rh = case when c.lo = c.hi then c.lo else b.rh # 1 end \
           from c where c.kh = b.kh and (c.lo <> b.rh or c.hi <> b.rh)",
        tkh = key_hash(def, true),
        old_t = target_row_hash_v(def, version),
        new_t = target_row_hash_v(def, HASH_VERSION),
        from = def.from_clause("t"),
        old_s = row_hash_v(def, "s", &|i| format!("s._ss_fk{i}"), version),
        new_s = row_hash_v(def, "s", &|i| format!("s._ss_fk{i}"), HASH_VERSION),
    )
}

/// Reference `i`'s key column `k` (of type `ty`) typed from the file row's
/// reference value `json` (an SQL jsonb expression), as its table holds it.
fn reference_part_from_json(r: &Reference, k: &str, ty: &str, json: &str) -> String {
    let field = quote_literal(k);
    if ty.ends_with("[]") {
        format!(
            "(jsonb_populate_record(null::{}, nullif({json}, 'null'::jsonb))).{}",
            r.table,
            quote_ident(k)
        )
    } else if crate::columns::text_like(ty) {
        format!("{json}->>{field}")
    } else if ty == "jsonb" || ty == "json" {
        format!("{json}->{field}")
    } else {
        format!("({json}->>{field})::{ty}")
    }
}

/// `ss_s`: every file row typed as the table's columns, with its key
/// hashed, its typed hash, and each reference resolved by natural key. The
/// row's JSON stays in `ss_file` (`_ss_fid`); `ss_sx` shows both.
async fn typed_file_rows(
    client: &Client,
    def: &SetDef,
    layout: Option<&Layout>,
) -> Result<(), DataError> {
    // `f`: the file row with each reference's given flag (`h<i>`) and key
    // values typed (`k<i>_<n>`); `row`: the row as jsonb.
    let mut fields = vec![
        if layout.is_some() {
            "n as fid"
        } else {
            "ctid as fid"
        }
        .to_string(),
    ];
    for (i, r) in def.references.iter().enumerate() {
        let json = format!("r->{}", quote_literal(&r.name));
        if layout.is_none() {
            fields.push(format!("nullif({json}, 'null'::jsonb) is not null as h{i}"));
        }
        for (n, (k, ty)) in r.key.iter().zip(&r.key_types).enumerate() {
            let value = match layout {
                Some(_) if crate::columns::text_like(ty) => format!("p{i}_{n}"),
                Some(_) => format!("(p{i}_{n})::{ty}"),
                None => reference_part_from_json(r, k, ty, &json),
            };
            fields.push(format!("{value} as k{i}_{n}"));
        }
    }
    fields.push("*".into());
    let (typed, row) = match layout {
        Some(l) => {
            let col = |c: &str| format!("f.{}", l.column(c).unwrap_or_default());
            let cols = def
                .typed_columns_with(&|c| format!("{}::jsonb", col(c)), &col)
                .unwrap_or_default();
            (format!("lateral (select {}) x", cols.join(", ")), "j.r")
        }
        None => (
            match def.typed_columns("f.r") {
                Some(cols) => format!("lateral (select {}) x", cols.join(", ")),
                None => format!("lateral jsonb_populate_record(null::{}, f.r) x", def.table),
            },
            "f.r",
        ),
    };
    let mut select = vec![
        "f.fid as _ss_fid".to_string(),
        format!("{} as _ss_kh", key_hash(def, false)),
        "x.*".into(),
    ];
    let mut view = vec!["s.*".to_string(), "x._ss_r".into(), "x._ss_k".into()];
    let mut joins = String::new();
    for (i, r) in def.references.iter().enumerate() {
        let name = quote_literal(&r.name);
        select.push(format!("r{i}.{} as _ss_fk{i}", quote_ident(&r.target)));
        select.push(format!("f.h{i} as _ss_has{i}"));
        view.push(format!(
            "nullif(x._ss_r->{name}, 'null'::jsonb) as _ss_ref{i}"
        ));
        let on: Vec<String> = r
            .key
            .iter()
            .zip(&r.key_types)
            .enumerate()
            .map(|(n, (k, ty))| {
                let col = format!("r{i}.{}", quote_ident(k));
                if ty == "json" {
                    format!("{col}::jsonb = f.k{i}_{n}")
                } else {
                    format!("{col} = f.k{i}_{n}")
                }
            })
            .collect();
        joins.push_str(&format!(
            " left join {} r{i} on {}",
            r.table,
            on.join(" and ")
        ));
    }
    // Statistics only for what later joins match on.
    let mut stats = vec!["_ss_kh".to_string()];
    stats.extend(def.key.iter().map(|p| match p {
        KeyPart::Column(c) => quote_ident(c),
        KeyPart::Reference(i) => format!("_ss_fk{i}"),
    }));
    exec(
        client,
        &format!("reading the file's rows for {}", def.display),
        &format!(
            "create temp table ss_s on commit drop as select {select} \
             from (select {fields} from ss_file) f \
               cross join {typed}{joins}; \
             {analyze}; \
             create temp view ss_fx as select {fid} as _ss_fid, {row} as _ss_r, {key} as _ss_k from {json}; \
             create temp view ss_sx as select {view} from ss_s s left join ss_fx x on x._ss_fid = s._ss_fid",
            select = select.join(", "),
            fields = fields.join(", "),
            view = view.join(", "),
            analyze = analyze(&format!("ss_s ({})", stats.join(", "))),
            key = def.key_of_json(row),
            json = if layout.is_some() { "ss_json j" } else { "ss_file f" },
            fid = if layout.is_some() { "j.n" } else { "f.ctid" },
        ),
    )
    .await
}

async fn duplicate_keys(
    client: &Client,
    def: &SetDef,
    loaded: &Loaded<'_>,
) -> Result<(), DataError> {
    let counts = client
        .query_one("select count(*), count(distinct _ss_kh) from ss_s", &[])
        .await
        .map_err(|e| DataError::db("checking keys", &e))?;
    let (typed, keys): (i64, i64) = (counts.get(0), counts.get(1));
    let in_file = loaded.rows.len() as i64;
    if typed > in_file {
        return Err(DataError::Invalid(format!(
            "data set {}: a reference's natural key matches more than one row in the target; make the referenced key unique",
            def.name
        )));
    }
    // Named only when there is one: finding it costs a grouping.
    if keys != typed {
        loaded
            .show(
                client,
                "select _ss_fid from ss_s where _ss_kh = \
                   (select _ss_kh from ss_s group by _ss_kh having count(*) > 1 limit 1)",
            )
            .await?;
        let k: Option<String> = client
            .query_one(
                "select min(s._ss_k::text) from ss_sx s where s._ss_kh = \
                   (select _ss_kh from ss_s group by _ss_kh having count(*) > 1 limit 1)",
                &[],
            )
            .await
            .map_err(|e| DataError::db("checking keys", &e))?
            .get(0);
        let k = k.unwrap_or_else(|| "?".into());
        return Err(DataError::Invalid(format!(
            "data set {}: the file has two rows with the natural key {k}; a natural key must name one row",
            def.name
        )));
    }
    // A key holding NULL matches no row (NULL equals nothing): refused, as
    // export refuses it, rather than inserted again on every import.
    let null_part: Vec<String> = def
        .key
        .iter()
        .map(|p| match p {
            KeyPart::Column(c) => format!("s.{} is null", quote_ident(c)),
            KeyPart::Reference(i) => format!("not coalesce(s._ss_has{i}, false)"),
        })
        .collect();
    let with_null = format!(
        "select s._ss_fid from ss_s s where {} limit 1",
        null_part.join(" or ")
    );
    let found: bool = client
        .query_one(&format!("select exists ({with_null})"), &[])
        .await
        .map_err(|e| DataError::db("checking keys", &e))?
        .get(0);
    if found {
        loaded.show(client, &with_null).await?;
        let k: Option<String> = client
            .query_one(
                &format!("select s._ss_k::text from ss_sx s where s._ss_fid = ({with_null})"),
                &[],
            )
            .await
            .map_err(|e| DataError::db("checking keys", &e))?
            .get(0);
        let k = k.unwrap_or_else(|| "?".into());
        return Err(DataError::Invalid(format!(
            "data set {}: the file's row with the natural key {k} has {}",
            def.name,
            crate::export::null_in_key(&k).unwrap_or("NULL in its key")
        )));
    }
    let cols: Vec<String> = def
        .key
        .iter()
        .map(|p| match p {
            KeyPart::Column(c) => quote_ident(c),
            KeyPart::Reference(i) => quote_ident(&def.references[*i].column),
        })
        .collect();
    let dup = client
        .query_opt(
            &format!(
                "select 1 from {} group by {} having count(*) > 1 limit 1",
                def.table,
                cols.join(", ")
            ),
            &[],
        )
        .await
        .map_err(|e| DataError::db("checking keys", &e))?;
    if dup.is_some() {
        return Err(DataError::Invalid(format!(
            "data set {}: {} has two rows with the same natural key ({}); make the key unique (a unique index on it) or choose other key columns",
            def.name,
            def.display,
            def.key_names().join(", ")
        )));
    }
    Ok(())
}

async fn summarize(
    client: &Client,
    plan: &mut SetPlan,
    loaded: &Loaded<'_>,
) -> Result<(), DataError> {
    let mut conflicts = 0;
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
            a if a.starts_with("conflict") => conflicts += n,
            _ => {}
        }
    }
    if conflicts > 0 {
        list_conflicts(client, plan, loaded).await?;
    }
    list_changes(client, plan, loaded).await
}

async fn list_conflicts(
    client: &Client,
    plan: &mut SetPlan,
    loaded: &Loaded<'_>,
) -> Result<(), DataError> {
    loaded
        .show(
            client,
            "select fid from ss_plan where action like 'conflict%'",
        )
        .await?;
    for r in client
        .query(
            "select coalesce(s._ss_k, th.k)::text as key, p.action, th.r::text, s._ss_r::text \
               from ss_plan p left join ss_sx s on s._ss_kh = p.kh left join ss_th th on th.tid = p.tid \
              where p.action like 'conflict%' order by coalesce(s._ss_k, th.k)::text collate \"C\"",
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
            file: json(r.get(3)),
        });
    }
    Ok(())
}

/// The first changes of each kind, for the report.
async fn list_changes(
    client: &Client,
    plan: &mut SetPlan,
    loaded: &Loaded<'_>,
) -> Result<(), DataError> {
    // A kind with no rows is not looked for (a constant false skips the scan).
    let (ins, upd, del) = (plan.inserts > 0, plan.updates > 0, plan.deletes > 0);
    // The file is sorted by key, so its order is the key order.
    exec(
        client,
        "listing changes",
        &format!(
            "drop table if exists pg_temp.ss_pick; \
             create temp table ss_pick on commit drop as \
               (select 'insert'::text as action, fid, tid from ss_plan where {ins} and action = 'insert' order by fid limit 20) \
               union all (select 'update', fid, tid from ss_plan where {upd} and action = 'update' order by fid limit 20)"
        ),
    )
    .await?;
    loaded.show(client, "select fid from ss_pick").await?;
    for r in client
        .query(
            &format!("with del as (select 'delete'::text as action, th.k from ss_plan p join ss_th th on th.tid = p.tid \
                           where {del} and p.action = 'delete' order by th.k::text collate \"C\" limit 20) \
             select action, k, fields from ( \
               select c.action, x._ss_k::text as k, case when c.action = 'update' then \
                   (select coalesce(array_agg(e.key order by e.key), '{{}}') from jsonb_each(x._ss_r) e where th.r->e.key is distinct from e.value) \
                   else '{{}}'::text[] end as fields, x._ss_k::text collate \"C\" as o \
                 from ss_pick c join ss_fx x on x._ss_fid = c.fid \
                 left join ss_th th on th.tid = c.tid \
               union all select action, k::text, '{{}}'::text[], k::text collate \"C\" from del) z \
             order by action, o"),
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
    Ok(())
}

/// `COPY` (`sql`, from stdin) of one line per item, written by `line` and
/// sent in 1 MB pieces. A `false` from `line` ends the copy after the lines
/// before it (cleanly: the transaction stays usable) and is returned.
async fn copy_lines<T>(
    client: &Client,
    what: &str,
    sql: &str,
    items: impl IntoIterator<Item = T>,
    mut line: impl FnMut(T, &mut Vec<u8>) -> bool,
) -> Result<bool, DataError> {
    let sink = client
        .copy_in(sql)
        .await
        .map_err(|e| DataError::db(what, &e))?;
    futures::pin_mut!(sink);
    let mut buf = Vec::with_capacity(1 << 20);
    let mut all = true;
    for item in items {
        if !line(item, &mut buf) {
            all = false;
            break;
        }
        if buf.len() >= 1 << 20 {
            sink.send(bytes::Bytes::from(std::mem::take(&mut buf)))
                .await
                .map_err(|e| DataError::db(what, &e))?;
        }
    }
    if !buf.is_empty() {
        sink.send(bytes::Bytes::from(buf))
            .await
            .map_err(|e| DataError::db(what, &e))?;
    }
    sink.finish().await.map_err(|e| DataError::db(what, &e))?;
    Ok(all)
}

/// Rows to insert or update whose references the target cannot resolve.
/// They are listed, and marked so that a `--skip-unresolved` import leaves
/// them out.
/// With `planned` (the referenced tables' real names, for a plan that is not
/// applied), a reference also resolves to a row an earlier set of the same
/// run would insert or rename.
async fn unresolved(
    client: &Client,
    def: &SetDef,
    plan: &mut SetPlan,
    loaded: &Loaded<'_>,
    planned: Option<&[String]>,
) -> Result<(), DataError> {
    if def.references.is_empty() {
        return Ok(());
    }
    // Rows with a reference given but not found: usually none, and then
    // nothing more to look at. An unchanged row counts too: the target's
    // row may have lost that reference (its parent deleted there), which
    // the file still names.
    let candidates: Vec<String> = (0..def.references.len())
        .map(|i| format!("(s._ss_has{i} and s._ss_fk{i} is null)"))
        .collect();
    let named = loaded
        .show(
            client,
            &format!(
                "select s._ss_fid from ss_s s join ss_plan p on p.kh = s._ss_kh \
                  where p.action in ('insert', 'update', 'unchanged') and ({})",
                candidates.join(" or ")
            ),
        )
        .await?;
    if named == Some(0) {
        return Ok(());
    }
    let missing = |i: usize| {
        let mut c = format!("(s._ss_has{i} and s._ss_fk{i} is null");
        if let Some(tables) = planned {
            c.push_str(&format!(
                " and not exists (select 1 from pg_temp.ss_pending q where q.tbl = {} and q.r @> s._ss_ref{i})",
                quote_literal(&tables[i])
            ));
        }
        c.push(')');
        c
    };
    for (i, r) in def.references.iter().enumerate() {
        for row in client
            .query(
                &format!(
                    "select s._ss_k::text, s._ss_ref{i}::text from ss_sx s join ss_plan p on p.kh = s._ss_kh \
                      where p.action in ('insert', 'update', 'unchanged') and {m} \
                      order by s._ss_k::text collate \"C\"",
                    m = missing(i)
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
        let cond: Vec<String> = (0..def.references.len()).map(missing).collect();
        exec(
            client,
            "leaving out unresolved rows",
            &format!(
                "update ss_plan p set action = 'unresolved' from ss_sx s \
                  where s._ss_kh = p.kh and p.action in ('insert', 'update', 'unchanged') and ({})",
                cond.join(" or ")
            ),
        )
        .await?;
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
        plan.unchanged = count(
            client,
            "recounting",
            "select count(*) from ss_plan where action = 'unchanged'",
        )
        .await? as u64;
    }
    Ok(())
}

/// What a file row (`alias` of `ss_s`) writes to the table, in
/// [`SetDef::columns`] then reference order, as `_ss_v<j>`: the plan
/// carries it so that writing needs no second join.
fn written_values(def: &SetDef, alias: &str) -> Vec<String> {
    let mut vals: Vec<String> = def
        .columns
        .iter()
        .map(|c| format!("{alias}.{}", quote_ident(c)))
        .collect();
    vals.extend((0..def.references.len()).map(|i| format!("{alias}._ss_fk{i}")));
    vals.iter()
        .enumerate()
        .map(|(j, v)| format!("{v} as _ss_v{j}"))
        .collect()
}

/// Writes the plan and the new base (moved out of the legacy table when it
/// was there).
async fn apply(
    client: &Client,
    def: &SetDef,
    plan: &SetPlan,
    base: BaseFound,
) -> Result<(), DataError> {
    let mut cols: Vec<String> = def.columns.iter().map(|c| quote_ident(c)).collect();
    cols.extend(def.references.iter().map(|r| quote_ident(&r.column)));
    let vals: Vec<String> = (0..cols.len()).map(|j| format!("p._ss_v{j}")).collect();
    let sets: Vec<String> = cols
        .iter()
        .zip(&vals)
        .map(|(c, v)| format!("{c} = {v}"))
        .collect();
    let set_name = quote_literal(&def.name);
    let mut sql = String::new();
    if !cols.is_empty() && plan.inserts > 0 {
        sql.push_str(&format!(
            "insert into {} ({}) select {} from ss_plan p where p.action = 'insert'; ",
            def.table,
            cols.join(", "),
            vals.join(", "),
        ));
    }
    if !cols.is_empty() && plan.updates > 0 {
        sql.push_str(&format!(
            "update {} t set {} from ss_plan p where p.action = 'update' and t.ctid = p.tid; ",
            def.table,
            sets.join(", ")
        ));
    }
    if plan.deletes > 0 {
        sql.push_str(&format!(
            "delete from {} t using ss_plan p where p.action = 'delete' and t.ctid = p.tid; ",
            def.table
        ));
    }
    // The base changes when rows were written or removed, or when an
    // unchanged row's base is missing or stale; a no-op writes nothing.
    let refresh: bool = base.legacy
        || base.stale
        || client
        .query_one(
            "select exists (select 1 from ss_plan where action in ('insert', 'update', 'delete', 'absent') \
                     or (action = 'unchanged' and brh is distinct from rh))",
            &[],
        )
        .await
        .map_err(|e| DataError::db("checking what was imported", &e))?
        .get::<_, bool>(0);
    if refresh {
        // Both arrays from one pass over the same rows are in the same
        // order, which is all `unnest(kh, rh)` needs: no sort.
        sql.push_str(&format!(
        "insert into shipsafe.data_base (set_name, kh, rh, hash_version) \
           select {set_name}, coalesce(array_agg(kh), '{{}}'), coalesce(array_agg(rh), '{{}}'), {HASH_VERSION} from ( \
             select kh, rh from ss_plan where action in ('insert', 'update', 'unchanged') \
             union all \
             select b.kh, b.rh from ss_b b where not exists (select 1 from ss_plan p where p.kh = b.kh \
               and p.action in ('insert', 'update', 'unchanged', 'delete', 'absent'))) n \
           on conflict (set_name) do update set kh = excluded.kh, rh = excluded.rh, \
             hash_version = excluded.hash_version, imported_at = now(); "
        ));
    }
    if base.legacy {
        sql.push_str(&format!(
            "delete from {LEGACY_BASE} where set_name = {set_name}; "
        ));
    }
    let checked = if plan.inserts >= SET_CHECK_FROM {
        set_checkable_keys(client, def).await?
    } else {
        Vec::new()
    };
    let mut off = String::new();
    for (trigger, _) in &checked {
        off.push_str(&format!(
            "alter table {} disable trigger {}; ",
            def.table,
            quote_ident(trigger)
        ));
    }
    exec(
        client,
        &format!("writing {}", def.display),
        &format!("{off}{sql}"),
    )
    .await?;
    check_keys_at_once(client, def, &checked).await
}

/// From this many inserted rows, a superuser's import checks the set's
/// foreign keys once for all rows instead of once per row and key.
const SET_CHECK_FROM: u64 = 2_000;

/// The set's foreign keys whose per-row insert check one set-based check can
/// replace. PostgreSQL checks a foreign key with one query per inserted row
/// (three quarters of a bulk insert's time); the trigger that does it can
/// only be disabled by a superuser, for this transaction, and only while
/// nothing else writes the table (the import holds a lock that blocks
/// writers). Plain tables, immediate single-column keys to the referenced
/// table's id; anything else keeps its per-row check, and so does every
/// key while an event trigger is enabled (it would see the `ALTER TABLE`s
/// and act on them: a data import must not look like a schema change).
/// Returns (trigger, reference index).
async fn set_checkable_keys(
    client: &Client,
    def: &SetDef,
) -> Result<Vec<(String, usize)>, DataError> {
    let mut out = Vec::new();
    for (i, r) in def.references.iter().enumerate() {
        let found: Vec<String> = client
            .query(
                "select t.tgname::text from pg_trigger t join pg_constraint c on c.oid = t.tgconstraint \
                  where t.tgrelid = to_regclass($1) and t.tgfoid = 'pg_catalog.\"RI_FKey_check_ins\"'::regproc \
                    and t.tgenabled = 'O' and c.contype = 'f' and not c.condeferrable \
                    and c.confrelid = to_regclass($2) \
                    and c.conkey = array[(select attnum from pg_attribute where attrelid = to_regclass($1) and attname = $3)] \
                    and c.confkey = array[(select attnum from pg_attribute where attrelid = to_regclass($2) and attname = $4)] \
                    and exists (select 1 from pg_roles where rolname = current_user and rolsuper) \
                    and not exists (select 1 from pg_event_trigger where evtenabled <> 'D') \
                    and exists (select 1 from pg_class where oid = to_regclass($1) and relkind = 'r')",
                &[&def.table, &r.table, &r.column, &r.target],
            )
            .await
            .map_err(|e| DataError::db("reading the foreign keys", &e))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        out.extend(found.into_iter().map(|t| (t, i)));
    }
    Ok(out)
}

/// The check the disabled triggers would have made, for all inserted rows
/// at once: every referenced row exists and is locked against deletion and
/// key changes until commit (`FOR KEY SHARE`, as the per-row check locks
/// it); then the triggers are enabled again.
async fn check_keys_at_once(
    client: &Client,
    def: &SetDef,
    checked: &[(String, usize)],
) -> Result<(), DataError> {
    if checked.is_empty() {
        return Ok(());
    }
    let what = format!("checking the references of {}", def.display);
    // Every id the file's rows resolved to: the inserted rows' and a few
    // more (those of unchanged or left-out rows), which costs less than
    // singling out the inserted ones and locks nothing it should not.
    let mut ctes = Vec::new();
    let mut missing = Vec::new();
    for (n, (_, i)) in checked.iter().enumerate() {
        let r = &def.references[*i];
        ctes.push(format!(
            "need{n} as (select distinct _ss_fk{i} as id from ss_s where _ss_fk{i} is not null), \
             held{n} as (select r.{id} from {t} r where r.{id} in (select id from need{n}) for key share of r)",
            id = quote_ident(&r.target),
            t = r.table
        ));
        missing.push(format!(
            "(select count(*) from need{n}) - (select count(*) from held{n})"
        ));
    }
    let row = client
        .query_one(
            &format!("with {} select {}", ctes.join(", "), missing.join(", ")),
            &[],
        )
        .await
        .map_err(|e| DataError::db(what.clone(), &e))?;
    for (n, (_, i)) in checked.iter().enumerate() {
        let missing: i64 = row.get(n);
        if missing > 0 {
            let r = &def.references[*i];
            return Err(DataError::Invalid(format!(
                "data set {}: {missing} row(s) of {} that rows of {} point at (through {}) no longer exist (deleted while importing?); nothing was changed",
                def.name, r.table, def.display, r.column
            )));
        }
    }
    let on: Vec<String> = checked
        .iter()
        .map(|(trigger, _)| {
            format!(
                "alter table {} enable trigger {}",
                def.table,
                quote_ident(trigger)
            )
        })
        .collect();
    exec(client, &what, &on.join("; ")).await
}
