//! A configured `[data.SET]` resolved against a database's catalog, and the
//! SQL that turns its rows into natural-key JSON.
//!
//! A row of a set is one JSON object: each data column by name, and each
//! reference by its name, holding the referenced row's natural key as an
//! object (`"user": {"username": "ann", "email": "ann@x"}`), never a
//! surrogate id. Its key is a JSON array of the key parts in order.

use shipsafe_config::DataSetConfig;
use shipsafe_pg::{quote_ident, quote_literal};
use tokio_postgres::Client;

use crate::error::DataError;

/// One part of a natural key: a column of the table, or a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    Column(String),
    Reference(usize),
}

#[derive(Debug, Clone)]
pub struct Reference {
    pub name: String,
    /// Quoted `schema.table`.
    pub table: String,
    pub key: Vec<String>,
    /// The foreign-key column in the set's table.
    pub column: String,
    /// The referenced table's primary-key column.
    pub target: String,
    /// Types of the `key` columns in the referenced table.
    pub key_types: Vec<String>,
    /// Whether each `key` column's type is a base or enum type, not an
    /// array (its value is read through the type's text input).
    pub key_scalar: Vec<bool>,
}

#[derive(Debug, Clone)]
pub struct SetDef {
    pub name: String,
    /// Quoted `schema.table`.
    pub table: String,
    /// `schema.table` as people read it.
    pub display: String,
    pub key: Vec<KeyPart>,
    /// Data columns written to the file (plain key columns included).
    pub columns: Vec<String>,
    pub references: Vec<Reference>,
    pub renames: Vec<(String, String)>,
    pub deletes: Vec<String>,
    /// Column name → type, for every column of the table.
    pub types: std::collections::HashMap<String, String>,
    /// Columns of a base or enum type that is not an array: a JSON scalar
    /// becomes their value through the type's text input, as
    /// `jsonb_populate_record` does it.
    pub scalar: std::collections::HashSet<String>,
}

struct TableInfo {
    quoted: String,
    display: String,
    /// (name, has a default or is generated/identity)
    columns: Vec<(String, bool)>,
    /// Column name → type name (`format_type`).
    types: std::collections::HashMap<String, String>,
    /// Generated columns (`GENERATED ALWAYS AS (...) STORED`): the database
    /// computes them, and writing one is an error.
    generated: Vec<String>,
    scalar: std::collections::HashSet<String>,
    primary_key: Vec<String>,
}

async fn table_info(client: &Client, set: &str, name: &str) -> Result<TableInfo, DataError> {
    let def = |message: String| DataError::Definition {
        set: set.to_string(),
        message,
    };
    let row = client
        .query_opt(
            "select c.oid::int8, format('%I.%I', n.nspname, c.relname), n.nspname || '.' || c.relname \
               from pg_class c join pg_namespace n on n.oid = c.relnamespace \
              where c.oid = to_regclass($1) and c.relkind in ('r', 'p')",
            &[&name],
        )
        .await
        .map_err(|e| DataError::db(format!("looking up table {name}"), &e))?
        .ok_or_else(|| def(format!("table {name:?} does not exist in this database")))?;
    let oid: i64 = row.get(0);
    let columns = client
        .query(
            "select a.attname::text, (a.atthasdef or a.attidentity <> '' or a.attgenerated <> ''), format_type(a.atttypid, a.atttypmod), \
                    t.typtype in ('b', 'e') and t.typcategory <> 'A', a.attgenerated <> '' \
               from pg_attribute a join pg_type t on t.oid = a.atttypid \
              where a.attrelid = $1::int8::oid and a.attnum > 0 and not a.attisdropped \
              order by a.attnum",
            &[&oid],
        )
        .await
        .map_err(|e| DataError::db(format!("reading the columns of {name}"), &e))?;
    let types = columns
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(2)))
        .collect();
    let scalar = columns
        .iter()
        .filter(|r| r.get::<_, bool>(3))
        .map(|r| r.get::<_, String>(0))
        .collect();
    let generated = columns
        .iter()
        .filter(|r| r.get::<_, bool>(4))
        .map(|r| r.get::<_, String>(0))
        .collect();
    let columns = columns.iter().map(|r| (r.get(0), r.get(1))).collect();
    let primary_key = client
        .query(
            "select a.attname::text from pg_index i \
               join lateral unnest(i.indkey) with ordinality k(attnum, n) on true \
               join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum \
              where i.indrelid = $1::int8::oid and i.indisprimary order by k.n",
            &[&oid],
        )
        .await
        .map_err(|e| DataError::db(format!("reading the primary key of {name}"), &e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(TableInfo {
        quoted: row.get(1),
        display: row.get(2),
        columns,
        generated,
        types,
        scalar,
        primary_key,
    })
}

impl SetDef {
    /// Resolves `cfg` against the database `client` is connected to.
    pub async fn resolve(
        client: &Client,
        name: &str,
        cfg: &DataSetConfig,
    ) -> Result<Self, DataError> {
        let def = |message: String| DataError::Definition {
            set: name.to_string(),
            message,
        };
        let info = table_info(client, name, &cfg.table).await?;
        let has = |c: &str| info.columns.iter().any(|(n, _)| n == c);
        let mut references = Vec::new();
        for (rname, r) in &cfg.references {
            if !has(&r.column) {
                return Err(def(format!(
                    "references.{rname}.column {:?} is not a column of {}",
                    r.column, info.display
                )));
            }
            let target = table_info(client, name, &r.table).await?;
            for k in &r.key {
                if !target.columns.iter().any(|(n, _)| n == k) {
                    return Err(def(format!(
                        "references.{rname}.key: {k:?} is not a column of {}",
                        target.display
                    )));
                }
            }
            let [pk] = target.primary_key.as_slice() else {
                return Err(def(format!(
                    "references.{rname}: {} needs a one-column primary key for {} to point at",
                    target.display, r.column
                )));
            };
            // The column holds the primary key's values (that is how it is
            // resolved): a foreign key to another column of the table
            // would resolve to nothing and export every reference as null.
            let points_at: Vec<String> = client
                .query(
                    "select af.attname::text from pg_constraint c \
                       join pg_attribute a on a.attrelid = c.conrelid and a.attnum = c.conkey[1] \
                       join pg_attribute af on af.attrelid = c.confrelid and af.attnum = c.confkey[1] \
                      where c.contype = 'f' and cardinality(c.conkey) = 1 \
                        and c.conrelid = $1::text::regclass and c.confrelid = $2::text::regclass \
                        and a.attname = $3",
                    &[&info.quoted, &target.quoted, &r.column],
                )
                .await
                .map_err(|e| DataError::db(format!("reading the foreign keys of {}", info.display), &e))?
                .iter()
                .map(|row| row.get(0))
                .collect();
            if let Some(other) = points_at.iter().find(|c| *c != pk) {
                return Err(def(format!(
                    "references.{rname}: {}.{} is a foreign key to {}.{other}, not to its primary key {pk}; a reference resolves through the primary key, so write {other} as a plain column instead",
                    info.display, r.column, target.display
                )));
            }
            let key_types = r
                .key
                .iter()
                .map(|k| target.types.get(k).cloned().unwrap_or_default())
                .collect();
            let key_scalar = r.key.iter().map(|k| target.scalar.contains(k)).collect();
            references.push(Reference {
                key_types,
                key_scalar,
                name: rname.clone(),
                table: target.quoted,
                key: r.key.clone(),
                column: r.column.clone(),
                target: pk.clone(),
            });
        }
        let mut key = Vec::new();
        for k in &cfg.key {
            if let Some(i) = references.iter().position(|r| &r.name == k) {
                key.push(KeyPart::Reference(i));
            } else if has(k) {
                key.push(KeyPart::Column(k.clone()));
            } else {
                return Err(def(format!(
                    "key part {k:?} is neither a column of {} nor a reference of the set",
                    info.display
                )));
            }
        }
        let fk_columns: Vec<&str> = references.iter().map(|r| r.column.as_str()).collect();
        let mut columns: Vec<String> = match &cfg.columns {
            Some(list) => {
                for c in list {
                    if !has(c) {
                        return Err(def(format!(
                            "column {c:?} is not a column of {}",
                            info.display
                        )));
                    }
                    if info.generated.contains(c) {
                        return Err(def(format!(
                            "column {c:?} of {} is generated: the database computes it and it cannot be written; leave it out of columns",
                            info.display
                        )));
                    }
                }
                list.clone()
            }
            // Every column but foreign keys (written as references), a
            // surrogate primary key the database fills in, and generated
            // columns (computed, never written).
            None => info
                .columns
                .iter()
                .filter(|(c, defaulted)| {
                    let surrogate =
                        *defaulted && info.primary_key.len() == 1 && &info.primary_key[0] == c;
                    !(fk_columns.contains(&c.as_str()) || surrogate || info.generated.contains(c))
                })
                .map(|(c, _)| c.clone())
                .collect(),
        };
        for part in &key {
            if let KeyPart::Column(c) = part
                && !columns.contains(c)
            {
                columns.insert(0, c.clone());
            }
        }
        if !cfg.renames.is_empty() && !matches!(key.as_slice(), [KeyPart::Column(_)]) {
            return Err(def(
                "renames need a key of one column (old value → new value)".into(),
            ));
        }
        if !cfg.deletes.is_empty() && !matches!(key.as_slice(), [KeyPart::Column(_)]) {
            return Err(def("deletes need a key of one column".into()));
        }
        Ok(Self {
            name: name.to_string(),
            table: info.quoted,
            display: info.display,
            key,
            columns,
            references,
            renames: cfg
                .renames
                .iter()
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect(),
            deletes: cfg.deletes.clone(),
            types: info.types,
            scalar: info.scalar,
        })
    }

    /// The referenced row's natural key as a JSON object (NULL when the
    /// foreign key is NULL), for reference `i` joined as `r{i}`.
    fn reference_expr(&self, i: usize, alias: &str) -> String {
        let r = &self.references[i];
        let fields: Vec<String> = r
            .key
            .iter()
            .map(|k| format!("{}, r{i}.{}", quote_literal(k), quote_ident(k)))
            .collect();
        format!(
            "case when {alias}.{} is null then null else jsonb_build_object({}) end",
            quote_ident(&r.column),
            fields.join(", ")
        )
    }

    /// The row as natural-key JSON, for the table aliased `alias` joined
    /// with [`SetDef::from_clause`].
    pub fn row_expr(&self, alias: &str) -> String {
        let mut pairs: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("{}, {alias}.{}", quote_literal(c), quote_ident(c)))
            .collect();
        pairs.extend((0..self.references.len()).map(|i| {
            format!(
                "{}, {}",
                quote_literal(&self.references[i].name),
                self.reference_expr(i, alias)
            )
        }));
        if pairs.is_empty() {
            return "'{}'::jsonb".into();
        }
        // jsonb_build_object takes at most 100 arguments.
        pairs
            .chunks(50)
            .map(|c| format!("jsonb_build_object({})", c.join(", ")))
            .collect::<Vec<_>>()
            .join(" || ")
    }

    /// The key as a JSON array, for the table aliased `alias`.
    pub fn key_expr(&self, alias: &str) -> String {
        let parts: Vec<String> = self
            .key
            .iter()
            .map(|p| match p {
                KeyPart::Column(c) => format!("to_jsonb({alias}.{})", quote_ident(c)),
                KeyPart::Reference(i) => self.reference_expr(*i, alias),
            })
            .collect();
        format!("jsonb_build_array({})", parts.join(", "))
    }

    /// The key of a row given as JSON (`json` is an SQL expression).
    pub fn key_of_json(&self, json: &str) -> String {
        let parts: Vec<String> = self
            .key
            .iter()
            .map(|p| {
                let name = match p {
                    KeyPart::Column(c) => c,
                    KeyPart::Reference(i) => &self.references[*i].name,
                };
                format!("{json}->{}", quote_literal(name))
            })
            .collect();
        format!("jsonb_build_array({})", parts.join(", "))
    }

    /// `FROM` the table aliased `alias`, joined with every referenced table.
    pub fn from_clause(&self, alias: &str) -> String {
        let mut s = format!("{} {alias}", self.table);
        for (i, r) in self.references.iter().enumerate() {
            s.push_str(&format!(
                " left join {} r{i} on r{i}.{} = {alias}.{}",
                r.table,
                quote_ident(&r.target),
                quote_ident(&r.column)
            ));
        }
        s
    }

    /// The key names as written in files.
    pub fn key_names(&self) -> Vec<String> {
        self.key
            .iter()
            .map(|p| match p {
                KeyPart::Column(c) => c.clone(),
                KeyPart::Reference(i) => self.references[*i].name.clone(),
            })
            .collect()
    }

    /// `expr` (a value of column `column`) in a form `IS DISTINCT FROM`
    /// can compare: json, xml and the geometric types have no equality.
    pub fn comparable(&self, column: &str, expr: &str) -> String {
        comparable_as(
            self.types.get(column).map(String::as_str).unwrap_or(""),
            expr,
        )
    }

    /// The table's columns read from the file row `json` (an SQL jsonb
    /// expression) as `jsonb_populate_record(null::table, json)` reads them,
    /// one cast per column, which costs a tenth of it; `None` when a column's
    /// type needs it (arrays, composites, domains, fixed-length strings).
    pub fn typed_columns(&self, json: &str) -> Option<Vec<String>> {
        self.typed_columns_with(&|c| format!("{json}->{}", quote_literal(c)), &|c| {
            format!("{json}->>{}", quote_literal(c))
        })
    }

    /// [`SetDef::typed_columns`] from other sources: `json_of(column)` is
    /// the field as jsonb, `text_of(column)` as `->>` gives it.
    pub fn typed_columns_with(
        &self,
        json_of: &dyn Fn(&str) -> String,
        text_of: &dyn Fn(&str) -> String,
    ) -> Option<Vec<String>> {
        self.file_columns()
            .into_iter()
            .map(|c| {
                let ty = self.types[c].as_str();
                let value = match ty {
                    // JSON null is SQL NULL for every column, as there.
                    "jsonb" => format!("nullif({}, 'null'::jsonb)", json_of(c)),
                    "json" => format!("nullif({}, 'null'::jsonb)::json", json_of(c)),
                    _ if !self.scalar.contains(c) => return None,
                    "text" => text_of(c),
                    // Without the length: an explicit cast would cut a long
                    // value short; the write rejects it instead.
                    _ if ty.starts_with("character varying") => {
                        format!("({})::character varying", text_of(c))
                    }
                    _ if ty.starts_with("character") || ty.starts_with("bit") => return None,
                    _ => format!("({})::{ty}", text_of(c)),
                };
                Some(format!("{value} as {}", quote_ident(c)))
            })
            .collect()
    }

    /// Every column of the table in name order: the typed row's columns.
    pub fn file_columns(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.types.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Whether the file row `row` (its JSON text) holds the fields the set
    /// writes: every column and reference of the set, and nothing that is
    /// not a column of the table. `Err` says what is wrong: a misspelt or
    /// missing field would otherwise be read as NULL and blank the column.
    pub fn check_fields(&self, row: &str) -> Result<(), String> {
        let fields: std::collections::BTreeMap<std::borrow::Cow<'_, str>, serde::de::IgnoredAny> =
            serde_json::from_str(row).map_err(|e| format!("not a JSON object ({e})"))?;
        let expected = self
            .columns
            .iter()
            .map(String::as_str)
            .chain(self.references.iter().map(|r| r.name.as_str()));
        let missing: Vec<&str> = expected.filter(|f| !fields.contains_key(*f)).collect();
        if !missing.is_empty() {
            return Err(format!(
                "no field {} (the set writes every one of its columns and references; a missing one would blank the column)",
                missing
                    .iter()
                    .map(|m| format!("{m:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let unknown: Vec<&str> = fields
            .keys()
            .map(|k| k.as_ref())
            .filter(|k| {
                !self.types.contains_key(*k) && !self.references.iter().any(|r| r.name == *k)
            })
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "the field{} {} {} not a column of {} nor a reference of the set (misspelt?)",
                if unknown.len() == 1 { "" } else { "s" },
                unknown
                    .iter()
                    .map(|m| format!("{m:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if unknown.len() == 1 { "is" } else { "are" },
                self.display
            ));
        }
        Ok(())
    }

    /// Tables this set's references point at.
    pub fn referenced_tables(&self) -> Vec<&str> {
        self.references.iter().map(|r| r.table.as_str()).collect()
    }
}

/// `expr` (a value of type `ty`) in a form that has equality and a hash:
/// json (and json arrays) as jsonb, xml and the geometric types as text.
pub(crate) fn comparable_as(ty: &str, expr: &str) -> String {
    let base = ty.trim_end_matches("[]");
    match base {
        "json" => format!("({expr})::jsonb{}", &ty[base.len()..]),
        "xml" | "point" | "line" | "lseg" | "box" | "path" | "polygon" | "circle" => {
            format!("({expr})::text")
        }
        _ => expr.to_string(),
    }
}
