//! `data/<set>.json`: a header and one row per line, sorted by natural key,
//! so a change to one row is a one-line diff in version control.

use std::path::Path;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::DataError;

/// A data file. Rows stay as the exact JSON text that was written, so
/// numbers keep every digit on their way back into the database; they are
/// kept as places in the file's text, not copied one by one.
#[derive(Debug)]
pub struct DataFile {
    pub set: String,
    pub table: String,
    pub key: Vec<String>,
    /// BLAKE3 of the whole file as read (hex).
    pub digest: String,
    text: String,
    rows: Vec<std::ops::Range<usize>>,
}

/// The file as JSON, its rows borrowed from the text.
#[derive(Deserialize)]
struct Parsed<'a> {
    set: String,
    table: String,
    key: Vec<String>,
    #[serde(borrow)]
    rows: Vec<&'a RawValue>,
}

impl DataFile {
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let err = |message: String| DataError::File {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(format!(
                "cannot read it ({e}); write it with `shipsafe data export`"
            ))
        })?;
        let parsed: Parsed = serde_json::from_str(&text)
            .map_err(|e| err(format!("not a shipsafe data file: {e}")))?;
        if let Some(i) = parsed.rows.iter().position(|r| !r.get().starts_with('{')) {
            return Err(err(format!("row {} is not a JSON object", i + 1)));
        }
        let base = text.as_ptr() as usize;
        let rows = parsed
            .rows
            .iter()
            .map(|r| {
                let start = r.get().as_ptr() as usize - base;
                start..start + r.get().len()
            })
            .collect();
        let (set, table, key) = (parsed.set, parsed.table, parsed.key);
        Ok(Self {
            set,
            table,
            key,
            // One update over the whole text lets BLAKE3 hash many chunks at once.
            digest: blake3::hash(text.as_bytes()).to_hex().to_string(),
            text,
            rows,
        })
    }

    /// The rows' JSON texts, in file order.
    pub fn rows(&self) -> Vec<&str> {
        self.rows.iter().map(|r| &self.text[r.clone()]).collect()
    }

    /// Writes the file atomically (a temporary file renamed into place).
    pub fn write(
        path: &Path,
        set: &str,
        table: &str,
        key: &[String],
        rows: &[String],
    ) -> Result<(), DataError> {
        let err = |e: std::io::Error| DataError::File {
            path: path.to_path_buf(),
            message: format!("cannot write it: {e}"),
        };
        let mut out = String::with_capacity(rows.iter().map(|r| r.len() + 6).sum::<usize>() + 256);
        out.push_str("{\n");
        out.push_str(&format!("  \"set\": {},\n", serde_json::Value::from(set)));
        out.push_str(&format!(
            "  \"table\": {},\n",
            serde_json::Value::from(table)
        ));
        out.push_str(&format!(
            "  \"key\": {},\n",
            serde_json::Value::from(key.to_vec())
        ));
        if rows.is_empty() {
            out.push_str("  \"rows\": []\n}\n");
        } else {
            out.push_str("  \"rows\": [\n");
            for (i, r) in rows.iter().enumerate() {
                out.push_str("    ");
                out.push_str(r);
                out.push_str(if i + 1 < rows.len() { ",\n" } else { "\n" });
            }
            out.push_str("  ]\n}\n");
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, out).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

/// A line for `COPY ... FROM STDIN` (text format) holding `json`.
pub(crate) fn copy_line(json: &str, out: &mut Vec<u8>) {
    copy_escaped(json, out);
    out.push(b'\n');
}

/// `s` escaped for a field of a `COPY` text line.
pub(crate) fn copy_escaped(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    let mut from = 0;
    for (i, b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            _ => continue,
        };
        out.extend_from_slice(&bytes[from..i]);
        out.extend_from_slice(escape);
        from = i + 1;
    }
    out.extend_from_slice(&bytes[from..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_row_text_and_order() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("data/tools.json");
        let rows = vec![
            r#"{"name": "A", "price": 10.500000000000000001}"#.to_string(),
            r#"{"name": "B\\C\n", "price": 2}"#.to_string(),
        ];
        DataFile::write(&p, "tools", "public.tools", &["name".into()], &rows)
            .unwrap_or_else(|e| panic!("{e}"));
        let f = DataFile::read(&p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.set, "tools");
        let back = f.rows();
        assert_eq!(back, rows);
        let mut line = Vec::new();
        copy_line(back[1], &mut line);
        assert_eq!(line, b"{\"name\": \"B\\\\\\\\C\\\\n\", \"price\": 2}\n");
    }

    #[test]
    fn a_broken_file_names_itself() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("x.json");
        std::fs::write(&p, "{\"set\": 1}").unwrap_or_else(|e| panic!("{e}"));
        let e = DataFile::read(&p).unwrap_err().to_string();
        assert!(e.contains("x.json: not a shipsafe data file"), "{e}");
    }
}
