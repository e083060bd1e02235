//! What the rules share: reading ALTER TABLE commands, column definitions,
//! constraints and type names out of the parse tree, and making a hit.

use pg_query::NodeEnum;
use pg_query::protobuf::{
    AlterTableCmd, AlterTableStmt, ColumnDef, Constraint, RangeVar, TypeName,
};

use crate::rule::Hit;

pub(crate) fn hit(message: String, help: &str) -> Option<Hit> {
    Some(Hit {
        message,
        help: help.to_string(),
    })
}

pub(crate) fn table_name(r: Option<&RangeVar>) -> String {
    r.map(|r| {
        if r.schemaname.is_empty() {
            r.relname.clone()
        } else {
            format!("{}.{}", r.schemaname, r.relname)
        }
    })
    .unwrap_or_default()
}

/// ALTER TABLE on a table that existed before this migration: the table and
/// its commands.
pub(crate) fn alter_existing<'a>(
    stmt: &'a NodeEnum,
    ctx: &crate::context::Context,
) -> Option<(String, Vec<&'a AlterTableCmd>)> {
    let NodeEnum::AlterTableStmt(AlterTableStmt { relation, cmds, .. }) = stmt else {
        return None;
    };
    let r = relation.as_ref()?;
    if ctx.is_new_table(&r.relname) {
        return None;
    }
    let cmds = cmds
        .iter()
        .filter_map(|c| match &c.node {
            Some(NodeEnum::AlterTableCmd(c)) => Some(&**c),
            _ => None,
        })
        .collect();
    Some((table_name(Some(r)), cmds))
}

pub(crate) fn column_def(cmd: &AlterTableCmd) -> Option<&ColumnDef> {
    match cmd.def.as_ref().and_then(|d| d.node.as_ref()) {
        Some(NodeEnum::ColumnDef(c)) => Some(&**c),
        _ => None,
    }
}

pub(crate) fn constraint(cmd: &AlterTableCmd) -> Option<&Constraint> {
    match cmd.def.as_ref().and_then(|d| d.node.as_ref()) {
        Some(NodeEnum::Constraint(c)) => Some(&**c),
        _ => None,
    }
}

pub(crate) fn column_constraints(c: &ColumnDef) -> impl Iterator<Item = &Constraint> {
    c.constraints.iter().filter_map(|n| match &n.node {
        Some(NodeEnum::Constraint(c)) => Some(&**c),
        _ => None,
    })
}

/// The type's own name, lower-cased, without `pg_catalog.`: `int4`,
/// `varchar`, `timestamp`, `serial`.
pub(crate) fn type_name(t: Option<&TypeName>) -> String {
    t.and_then(|t| {
        t.names.iter().rev().find_map(|n| match &n.node {
            Some(NodeEnum::String(s)) => Some(s.sval.to_ascii_lowercase()),
            _ => None,
        })
    })
    .unwrap_or_default()
}

/// Column definitions a statement adds: CREATE TABLE columns and
/// ALTER TABLE ... ADD COLUMN.
pub(crate) fn added_columns(stmt: &NodeEnum) -> Vec<&ColumnDef> {
    match stmt {
        NodeEnum::CreateStmt(c) => c
            .table_elts
            .iter()
            .filter_map(|n| match &n.node {
                Some(NodeEnum::ColumnDef(c)) => Some(&**c),
                _ => None,
            })
            .collect(),
        NodeEnum::AlterTableStmt(a) => a
            .cmds
            .iter()
            .filter_map(|n| match &n.node {
                Some(NodeEnum::AlterTableCmd(c)) => column_def(c),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}
