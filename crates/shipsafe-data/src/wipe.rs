//! Deleting every row except the kept ones and, transitively, the rows they
//! reference, in foreign-key order, in the caller's transaction.
//!
//! Kept rows are collected by `ctid` in temporary tables (stable inside
//! the transaction): first the rows the predicates match and whole kept
//! tables, then, until nothing is added, the parents of kept rows along
//! every foreign key (self-references and cycles included). Tables are then
//! emptied of everything else, children before parents; tables in a cycle
//! are emptied in one statement, so foreign keys checked at the end of a
//! statement are satisfied, and deferrable ones are deferred.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use shipsafe_pg::quote_ident;
use tokio_postgres::Client;

use crate::error::DataError;

#[derive(Debug, Clone, Default)]
pub struct WipeRequest {
    /// (table, SQL predicate): rows to keep.
    pub keep: Vec<(String, String)>,
    /// Tables kept whole.
    pub keep_tables: Vec<String>,
    pub reset_sequences: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableCount {
    pub table: String,
    pub before: i64,
    pub after: i64,
    /// Why rows stay: `kept whole`, `--keep`, `referenced by kept rows`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept_because: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SequenceReset {
    pub sequence: String,
    pub column: String,
    /// The value the next `nextval` returns.
    pub next_value: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WipeReport {
    pub tables: Vec<TableCount>,
    pub deleted_rows: i64,
    pub sequences: Vec<SequenceReset>,
}

#[derive(Debug, Clone)]
struct Table {
    oid: i64,
    quoted: String,
    display: String,
}

#[derive(Debug, Clone)]
struct ForeignKey {
    name: String,
    child: i64,
    parent: i64,
    child_cols: Vec<String>,
    parent_cols: Vec<String>,
    deferrable: bool,
    restrict: bool,
}

fn db(what: &str) -> impl Fn(tokio_postgres::Error) -> DataError + '_ {
    move |e| DataError::db(what.to_string(), &e)
}

async fn tables(client: &Client) -> Result<Vec<Table>, DataError> {
    Ok(client
        .query(
            "select c.oid::int8, format('%I.%I', n.nspname, c.relname), n.nspname || '.' || c.relname \
               from pg_class c join pg_namespace n on n.oid = c.relnamespace \
              where c.relkind in ('r', 'p') and not c.relispartition \
                and n.nspname not in ('pg_catalog', 'information_schema', 'shipsafe') \
                and n.nspname not like 'pg\\_%' order by 3",
            &[],
        )
        .await
        .map_err(db("listing tables"))?
        .iter()
        .map(|r| Table {
            oid: r.get(0),
            quoted: r.get(1),
            display: r.get(2),
        })
        .collect())
}

async fn foreign_keys(client: &Client) -> Result<Vec<ForeignKey>, DataError> {
    Ok(client
        .query(
            "select co.conname::text, co.conrelid::int8, co.confrelid::int8, \
                    array(select a.attname::text from unnest(co.conkey) with ordinality k(n, i) \
                          join pg_attribute a on a.attrelid = co.conrelid and a.attnum = k.n order by k.i), \
                    array(select a.attname::text from unnest(co.confkey) with ordinality k(n, i) \
                          join pg_attribute a on a.attrelid = co.confrelid and a.attnum = k.n order by k.i), \
                    co.condeferrable, co.confdeltype = 'r' \
               from pg_constraint co where co.contype = 'f' and co.conparentid = 0",
            &[],
        )
        .await
        .map_err(db("listing foreign keys"))?
        .iter()
        .map(|r| ForeignKey {
            name: r.get(0),
            child: r.get(1),
            parent: r.get(2),
            child_cols: r.get(3),
            parent_cols: r.get(4),
            deferrable: r.get(5),
            restrict: r.get(6),
        })
        .collect())
}

async fn resolve(client: &Client, all: &[Table], name: &str) -> Result<i64, DataError> {
    let oid: Option<i64> = client
        .query_one("select to_regclass($1)::oid::int8", &[&name])
        .await
        .map_err(|e| {
            DataError::Invalid(format!(
                "{name:?} is not a table name: {}",
                shipsafe_pg::describe(&e)
            ))
        })?
        .get(0);
    match oid {
        Some(o) if all.iter().any(|t| t.oid == o) => Ok(o),
        _ => Err(DataError::Invalid(format!(
            "there is no table {name:?} in this database"
        ))),
    }
}

async fn row_count(client: &Client, t: &Table) -> Result<i64, DataError> {
    client
        .query_one(&format!("select count(*) from {}", t.quoted), &[])
        .await
        .map(|r| r.get(0))
        .map_err(|e| DataError::db(format!("counting {}", t.display), &e))
}

/// Strongly connected components of the child → parent graph, children
/// before parents (Tarjan's algorithm yields them in that order).
fn delete_order(tables: &[i64], fks: &[ForeignKey]) -> Vec<Vec<i64>> {
    struct State<'a> {
        edges: BTreeMap<i64, Vec<i64>>,
        index: BTreeMap<i64, usize>,
        low: BTreeMap<i64, usize>,
        on_stack: BTreeSet<i64>,
        stack: Vec<i64>,
        next: usize,
        out: Vec<Vec<i64>>,
        _p: std::marker::PhantomData<&'a ()>,
    }
    fn visit(s: &mut State<'_>, v: i64) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(&v).cloned().unwrap_or_default() {
            if !s.index.contains_key(&w) {
                visit(s, w);
                let lw = s.low[&w];
                let lv = s.low[&v];
                s.low.insert(v, lv.min(lw));
            } else if s.on_stack.contains(&w) {
                let iw = s.index[&w];
                let lv = s.low[&v];
                s.low.insert(v, lv.min(iw));
            }
        }
        if s.low[&v] == s.index[&v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                comp.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(comp);
        }
    }
    // Edges parent → child: Tarjan emits a component after everything it
    // reaches, i.e. children first.
    let mut edges: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for fk in fks {
        if tables.contains(&fk.child) && tables.contains(&fk.parent) {
            edges.entry(fk.parent).or_default().push(fk.child);
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        on_stack: BTreeSet::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
        _p: std::marker::PhantomData,
    };
    for &t in tables {
        if !s.index.contains_key(&t) {
            visit(&mut s, t);
        }
    }
    s.out
}

/// Wipes the database `client` is connected to, in the caller's
/// transaction. Nothing is committed here.
pub async fn wipe(client: &Client, req: &WipeRequest) -> Result<WipeReport, DataError> {
    let all = tables(client).await?;
    let fks = foreign_keys(client).await?;
    let by_oid: BTreeMap<i64, &Table> = all.iter().map(|t| (t.oid, t)).collect();
    let mut whole: BTreeSet<i64> = BTreeSet::new();
    let mut because: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for name in &req.keep_tables {
        let oid = resolve(client, &all, name).await?;
        whole.insert(oid);
        because.entry(oid).or_default().insert("kept whole".into());
    }
    let mut before = BTreeMap::new();
    for t in &all {
        before.insert(t.oid, row_count(client, t).await?);
    }
    client
        .batch_execute("set constraints all deferred")
        .await
        .map_err(db("deferring constraints"))?;
    let keep_table = |oid: i64| format!("pg_temp.ss_keep_{oid}");
    for t in &all {
        if !whole.contains(&t.oid) {
            client
                .batch_execute(&format!(
                    "drop table if exists {k}; create temp table {k} (tid tid primary key) on commit drop",
                    k = keep_table(t.oid)
                ))
                .await
                .map_err(db("preparing the wipe"))?;
        }
    }
    for (name, predicate) in &req.keep {
        let oid = resolve(client, &all, name).await?;
        because
            .entry(oid)
            .or_default()
            .insert(format!("--keep {name}:{predicate}"));
        if whole.contains(&oid) {
            continue;
        }
        client
            .execute(
                &format!(
                    "insert into {} select ctid from {} where ({predicate}) on conflict do nothing",
                    keep_table(oid),
                    by_oid[&oid].quoted
                ),
                &[],
            )
            .await
            .map_err(|e| {
                DataError::Invalid(format!(
                    "--keep {name}:{predicate}: {}",
                    shipsafe_pg::describe(&e)
                ))
            })?;
    }
    // Parents of kept rows, until nothing changes.
    loop {
        let mut added = 0;
        for fk in &fks {
            if whole.contains(&fk.parent)
                || !by_oid.contains_key(&fk.parent)
                || !by_oid.contains_key(&fk.child)
            {
                continue;
            }
            let child = by_oid[&fk.child];
            let source = if whole.contains(&fk.child) {
                format!("{} c", child.quoted)
            } else {
                format!(
                    "{} c join {} kc on kc.tid = c.ctid",
                    child.quoted,
                    keep_table(fk.child)
                )
            };
            let on: Vec<String> = fk
                .child_cols
                .iter()
                .zip(&fk.parent_cols)
                .map(|(c, p)| format!("c.{} = p.{}", quote_ident(c), quote_ident(p)))
                .collect();
            let n = client
                .execute(
                    &format!(
                        "insert into {k} select distinct p.ctid from {parent} p join {source} on {on} on conflict do nothing",
                        k = keep_table(fk.parent),
                        parent = by_oid[&fk.parent].quoted,
                        on = on.join(" and ")
                    ),
                    &[],
                )
                .await
                .map_err(|e| DataError::db(format!("following foreign key {}", fk.name), &e))?;
            if n > 0 {
                because
                    .entry(fk.parent)
                    .or_default()
                    .insert(format!("referenced by kept rows of {}", child.display));
                added += n;
            }
        }
        if added == 0 {
            break;
        }
    }

    // Delete, children first; a cycle in one statement.
    let oids: Vec<i64> = all.iter().map(|t| t.oid).collect();
    for component in delete_order(&oids, &fks) {
        let targets: Vec<i64> = component
            .iter()
            .copied()
            .filter(|o| !whole.contains(o))
            .collect();
        if targets.is_empty() {
            continue;
        }
        let cyclic = component.len() > 1
            || fks
                .iter()
                .any(|f| f.child == component[0] && f.parent == component[0]);
        if cyclic
            && let Some(fk) = fks.iter().find(|f| {
                component.contains(&f.child)
                    && component.contains(&f.parent)
                    && f.restrict
                    && !f.deferrable
            })
        {
            let names: Vec<&str> = component
                .iter()
                .map(|o| by_oid[o].display.as_str())
                .collect();
            return Err(DataError::Invalid(format!(
                "the tables {} reference each other and foreign key {} is ON DELETE RESTRICT, so their rows cannot be deleted in any order; make it DEFERRABLE or NO ACTION, or keep one of the tables whole with --keep-table",
                names.join(", "),
                fk.name
            )));
        }
        let deletes: Vec<String> = targets
            .iter()
            .map(|o| {
                format!(
                    "delete from {} t where not exists (select 1 from {} k where k.tid = t.ctid)",
                    by_oid[o].quoted,
                    keep_table(*o)
                )
            })
            .collect();
        let sql = if deletes.len() == 1 {
            deletes[0].clone()
        } else {
            let ctes: Vec<String> = deletes
                .iter()
                .enumerate()
                .map(|(i, d)| format!("d{i} as ({d} returning 1)"))
                .collect();
            format!("with {} select 1", ctes.join(", "))
        };
        client.batch_execute(&sql).await.map_err(|e| {
            let names: Vec<&str> = targets.iter().map(|o| by_oid[o].display.as_str()).collect();
            DataError::db(format!("deleting from {}", names.join(", ")), &e)
        })?;
    }
    client
        .batch_execute("set constraints all immediate")
        .await
        .map_err(db("checking deferred constraints"))?;

    let mut report = WipeReport::default();
    for t in &all {
        let after = row_count(client, t).await?;
        let b = before[&t.oid];
        report.deleted_rows += b - after;
        report.tables.push(TableCount {
            table: t.display.clone(),
            before: b,
            after,
            kept_because: if after > 0 {
                because
                    .remove(&t.oid)
                    .map(|s| s.into_iter().collect())
                    .unwrap_or_default()
            } else {
                Vec::new()
            },
        });
    }
    if req.reset_sequences {
        report.sequences = reset_sequences(client).await?;
    }
    Ok(report)
}

/// Every sequence owned by a column (serial, identity) restarts just above
/// the column's largest value, or at its start when the table is empty.
pub async fn reset_sequences(client: &Client) -> Result<Vec<SequenceReset>, DataError> {
    let owned = client
        .query(
            "select format('%I.%I', sn.nspname, s.relname), format('%I.%I', tn.nspname, t.relname), a.attname::text, \
                    sq.seqstart, sq.seqincrement > 0 \
               from pg_depend d \
               join pg_class s on s.oid = d.objid and s.relkind = 'S' \
               join pg_namespace sn on sn.oid = s.relnamespace \
               join pg_sequence sq on sq.seqrelid = s.oid \
               join pg_class t on t.oid = d.refobjid \
               join pg_namespace tn on tn.oid = t.relnamespace \
               join pg_attribute a on a.attrelid = t.oid and a.attnum = d.refobjsubid \
              where d.classid = 'pg_class'::regclass and d.refclassid = 'pg_class'::regclass \
                and d.deptype in ('a', 'i') and tn.nspname not in ('pg_catalog', 'information_schema', 'shipsafe') \
              order by 1",
            &[],
        )
        .await
        .map_err(db("listing sequences"))?;
    let mut out = Vec::new();
    for r in owned {
        let (seq, table, column): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let start: i64 = r.get(3);
        let ascending: bool = r.get(4);
        if !ascending {
            continue;
        }
        // ALTER SEQUENCE RESTART, not setval: setval is not transactional,
        // so a dry run or a wipe its checks roll back would leave the
        // sequence moved and the next insert hitting a duplicate key.
        let next: i64 = client
            .query_one(
                &format!(
                    "select coalesce(max({c})::int8 + 1, {start}) from {table}",
                    c = quote_ident(&column)
                ),
                &[],
            )
            .await
            .map_err(|e| DataError::db(format!("resetting {seq}"), &e))?
            .get(0);
        client
            .batch_execute(&format!("alter sequence {seq} restart with {next}"))
            .await
            .map_err(|e| DataError::db(format!("resetting {seq}"), &e))?;
        out.push(SequenceReset {
            sequence: seq,
            column: format!("{table}.{column}"),
            next_value: next,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fk(child: i64, parent: i64) -> ForeignKey {
        ForeignKey {
            name: format!("{child}_{parent}"),
            child,
            parent,
            child_cols: vec![],
            parent_cols: vec![],
            deferrable: false,
            restrict: false,
        }
    }

    #[test]
    fn children_come_before_parents_and_cycles_stay_together() {
        // 1 ← 2 ← 3, 4 ↔ 5, 5 → 1, 6 alone, 2 → 2 (self).
        let fks = [fk(2, 1), fk(3, 2), fk(4, 5), fk(5, 4), fk(5, 1), fk(2, 2)];
        let order = delete_order(&[1, 2, 3, 4, 5, 6], &fks);
        let pos = |t: i64| {
            order
                .iter()
                .position(|c| c.contains(&t))
                .unwrap_or(usize::MAX)
        };
        assert!(pos(3) < pos(2) && pos(2) < pos(1));
        assert!(pos(5) < pos(1));
        assert_eq!(pos(4), pos(5), "a cycle is one component");
        assert_eq!(order.iter().map(Vec::len).sum::<usize>(), 6);
    }
}
