//! A file row split into the plain-text fields the server needs, so that it
//! types columns from text instead of parsing every row as `jsonb` first
//! (the parse alone was a third of an import's time).
//!
//! Each field is the text `row->>'field'` would give, so the typing that
//! follows is the one the `jsonb` route does. A value only the server's
//! JSON reading renders exactly (a number with an exponent, an object or an
//! array where text is expected, a NUL character) makes [`Layout::line`]
//! refuse the row, and the caller sends the whole file the `jsonb` way.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::file::copy_escaped as escaped;
use crate::set::SetDef;

/// The `COPY` columns of one set: the row's number, each table column, and
/// for each reference whether it is given and its key's fields. The row's
/// JSON itself is sent only for the rows a report shows.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Table columns in [`SetDef::file_columns`] order; `true` for json
    /// and jsonb columns, whose field travels as JSON text.
    columns: Vec<(String, bool)>,
    /// Each reference's name in the row and its key's columns.
    references: Vec<(String, Vec<String>)>,
    /// The row's fields to pick: the columns, then the references.
    names: Vec<String>,
}

/// Reference key types compared as text, as [`Layout`] sends them.
/// `character(n)` is not one: its type compares without trailing blanks,
/// which text keeps ('ab   ' is 'ab' as `character(5)`, not as text).
pub(crate) fn text_like(ty: &str) -> bool {
    ty == "text" || ty == "citext" || ty == "name" || ty.starts_with("character varying")
}

impl Layout {
    /// The layout of `def`'s rows, or `None` when a column or a reference's
    /// key has a type only `jsonb_populate_record` reads (arrays,
    /// composites, domains), or is a reference key of JSON type.
    pub fn of(def: &SetDef) -> Option<Self> {
        // Every column read by a cast (the expressions themselves are not needed here).
        def.typed_columns_with(&|c| c.to_string(), &|c| c.to_string())?;
        let columns = def
            .file_columns()
            .into_iter()
            .map(|c| {
                let json = matches!(def.types[c].as_str(), "json" | "jsonb");
                (c.to_string(), json)
            })
            .collect();
        let mut references = Vec::new();
        for r in &def.references {
            let plain = r
                .key_types
                .iter()
                .zip(&r.key_scalar)
                .all(|(ty, scalar)| *scalar && ty != "json" && ty != "jsonb");
            if !plain {
                return None;
            }
            references.push((r.name.clone(), r.key.clone()));
        }
        Some(Self::new(columns, references))
    }

    fn new(columns: Vec<(String, bool)>, references: Vec<(String, Vec<String>)>) -> Self {
        let names = columns
            .iter()
            .map(|(c, _)| c.clone())
            .chain(references.iter().map(|(r, _)| r.clone()))
            .collect();
        Self {
            columns,
            references,
            names,
        }
    }

    /// The temporary table's column list: `n` (the row's number), `c0…`
    /// (columns), then per reference `h<i>` (given: present and not null)
    /// and `p<i>_<k>` (its key's fields).
    pub fn table_columns(&self) -> String {
        let mut cols = vec!["n int".to_string()];
        cols.extend((0..self.columns.len()).map(|j| format!("c{j} text")));
        for (i, (_, key)) in self.references.iter().enumerate() {
            cols.push(format!("h{i} boolean"));
            cols.extend((0..key.len()).map(|k| format!("p{i}_{k} text")));
        }
        cols.join(", ")
    }

    /// The `COPY` column for table column `column`.
    pub fn column(&self, column: &str) -> Option<String> {
        self.columns
            .iter()
            .position(|(c, _)| c == column)
            .map(|j| format!("c{j}"))
    }

    /// Appends row number `n`, `row`, as one `COPY` text line to `out`;
    /// `false` (and `out` as it was) when the row holds a value only the
    /// server's JSON reading renders exactly, or is not an object.
    pub fn line(&self, n: usize, row: &str, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        if self.write(n, row, out).is_none() {
            out.truncate(start);
            return false;
        }
        true
    }

    fn write(&self, n: usize, row: &str, out: &mut Vec<u8>) -> Option<()> {
        let fields = pick(row, &self.names)?;
        out.extend_from_slice(n.to_string().as_bytes());
        for ((_, json), value) in self.columns.iter().zip(&fields) {
            out.push(b'\t');
            match value {
                None => out.extend_from_slice(b"\\N"),
                Some(v) if *json => escaped(v.get(), out),
                Some(v) => text(v.get(), out)?,
            }
        }
        for ((_, key), value) in self.references.iter().zip(&fields[self.columns.len()..]) {
            // `->>` of a field of anything but an object is NULL.
            let value = value.map(|v| v.get());
            let given = value.is_some_and(|v| v != "null");
            out.extend_from_slice(if given { b"\tt" } else { b"\tf" });
            let inner = match value {
                Some(v) if v.starts_with('{') => Some(pick(v, key)?),
                _ => None,
            };
            for n in 0..key.len() {
                out.push(b'\t');
                match inner.as_ref().and_then(|m| m[n]) {
                    None => out.extend_from_slice(b"\\N"),
                    Some(v) => text(v.get(), out)?,
                }
            }
        }
        out.push(b'\n');
        Some(())
    }
}

/// The values of the fields `names` of the JSON object `json` (the last
/// one where a name repeats, as jsonb keeps it), without copying them.
fn pick<'a>(json: &'a str, names: &[String]) -> Option<Vec<Option<&'a RawValue>>> {
    let mut de = serde_json::Deserializer::from_str(json);
    let found = Picker(names).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(found)
}

struct Picker<'n>(&'n [String]);

impl<'de> DeserializeSeed<'de> for Picker<'_> {
    type Value = Vec<Option<&'de RawValue>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Picker<'_> {
    type Value = Vec<Option<&'de RawValue>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = vec![None; self.0.len()];
        while let Some(Name(name)) = map.next_key()? {
            let value: &'de RawValue = map.next_value()?;
            // A reference may share its name with a column: both get it.
            for (slot, n) in found.iter_mut().zip(self.0) {
                if *n == name {
                    *slot = Some(value);
                }
            }
        }
        Ok(found)
    }
}

/// A field name, borrowed from the row unless it has escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// `value` (JSON text) as `->>` renders it, escaped for `COPY`; `None`
/// for what only the server renders exactly.
fn text(value: &str, out: &mut Vec<u8>) -> Option<()> {
    match value.as_bytes().first()? {
        b'"' => {
            // Without a backslash the text is the value as it is (JSON
            // allows no raw control characters in a string).
            if !value.contains('\\') {
                out.extend_from_slice(&value.as_bytes()[1..value.len() - 1]);
                return Some(());
            }
            let s: String = serde_json::from_str(value).ok()?;
            // jsonb refuses \u0000, which text cannot hold.
            if s.contains('\0') {
                return None;
            }
            escaped(&s, out);
        }
        b'n' => out.extend_from_slice(b"\\N"),
        b't' | b'f' => out.extend_from_slice(value.as_bytes()),
        b'-' | b'0'..=b'9' => {
            // jsonb keeps a number as numeric, whose text has no exponent
            // and no minus before a zero.
            if value.contains(['e', 'E']) {
                return None;
            }
            let zero = value.bytes().all(|b| matches!(b, b'-' | b'0' | b'.'));
            out.extend_from_slice(
                value
                    .strip_prefix('-')
                    .filter(|_| zero)
                    .unwrap_or(value)
                    .as_bytes(),
            );
        }
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(value: &str) -> Option<String> {
        let mut out = Vec::new();
        text(value, &mut out).map(|()| String::from_utf8(out).unwrap_or_default())
    }

    #[test]
    fn values_read_as_the_server_reads_them_or_not_at_all() {
        assert_eq!(one(r#""a\tb\\c\u00e9""#).as_deref(), Some("a\\tb\\\\cé"));
        assert_eq!(one("null").as_deref(), Some("\\N"));
        assert_eq!(one("true").as_deref(), Some("true"));
        assert_eq!(one("-0.00").as_deref(), Some("0.00"));
        assert_eq!(one("-0.5").as_deref(), Some("-0.5"));
        assert_eq!(one("10.500").as_deref(), Some("10.500"));
        assert_eq!(one("1e3"), None);
        assert_eq!(one(r#""a\u0000""#), None);
        assert_eq!(one("{\"a\": 1}"), None);
        assert_eq!(one("[1]"), None);
    }
}
