//! What a custom-format archive holds, read from its bytes as they go by.
//!
//! `pg_dump -Fc -Z0` writes a header, the table of contents, then one block
//! per table's data (the rows as `COPY` text, in length-prefixed chunks) and
//! blocks of large objects. [`ArchiveScanner`] follows that layout while the
//! dump streams into storage (and again while a backup is fetched for a
//! restore), so counting rows costs no extra pass: a table's rows are the
//! newlines of its data, a sequence's value is in its `SEQUENCE SET` entry,
//! large objects are counted in their blocks. A restore then compares what
//! it loaded with these numbers before it commits.
//!
//! The layout (pg_dump's `pg_backup_archiver.c` and `pg_backup_custom.c`):
//! integers are a sign byte and `intSize` little-endian bytes; strings are a
//! length integer (-1 for none) and the bytes. Archive versions 1.12 to 1.16
//! (PostgreSQL 11 to 18) are read; anything else is reported as not
//! understood, never guessed at.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Rows of one table as the archive holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    pub schema: String,
    pub table: String,
    /// `None` when the archive's data is compressed (not counted).
    pub rows: Option<u64>,
}

/// A sequence's position as the archive sets it (`setval(..., value, is_called)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceValue {
    pub schema: String,
    pub sequence: String,
    pub value: i64,
    pub is_called: bool,
}

/// A schema-qualified name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectName {
    pub schema: String,
    pub name: String,
}

/// An object of the database itself rather than of a schema: it survives
/// dropping every schema, so a restore must replace it explicitly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DatabaseObject {
    /// `EVENT TRIGGER`, `PUBLICATION`, `SUBSCRIPTION`, `DEFAULT ACL`,
    /// `FOREIGN DATA WRAPPER`, `SERVER`
    pub kind: String,
    pub name: String,
}

/// What an archive holds, beyond its schema.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveContents {
    /// Archive format version, e.g. `1.14`.
    pub format: String,
    pub tables: Vec<TableRows>,
    #[serde(default)]
    pub sequences: Vec<SequenceValue>,
    #[serde(default)]
    pub large_objects: u64,
    /// Materialized views the archive populates (`REFRESH` entries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub materialized_views: Vec<ObjectName>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub database_objects: Vec<DatabaseObject>,
    /// Roles named as owners in the table of contents.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub owners: BTreeSet<String>,
    /// Extensions the archive creates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
    /// Whether the archive creates the `public` schema itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub creates_public: bool,
    /// The encoding of the archive's text (`SET client_encoding`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub encoding: String,
    /// The archive's schemas and their owners (`public` included).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub schemas: std::collections::BTreeMap<String, String>,
    /// Privileges granted by roles other than the owner (grant chains):
    /// pg_dump replays them with `SET SESSION AUTHORIZATION`, which only a
    /// superuser may use.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub session_authorization: bool,
    /// Which roles own objects in which schema, as (schema, owner): a
    /// restoring role that is not a superuser can only give an object to a
    /// role that may create in its schema.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub owned_in: BTreeSet<(String, String)>,
}

/// Entries whose owner pg_dump sets with `ALTER … OWNER TO`.
const OWNED: &[&str] = &[
    "TABLE",
    "VIEW",
    "MATERIALIZED VIEW",
    "SEQUENCE",
    "FOREIGN TABLE",
    "FUNCTION",
    "PROCEDURE",
    "AGGREGATE",
    "TYPE",
    "DOMAIN",
    "COLLATION",
    "CONVERSION",
    "OPERATOR",
    "OPERATOR CLASS",
    "OPERATOR FAMILY",
    "TEXT SEARCH CONFIGURATION",
    "TEXT SEARCH DICTIONARY",
    "STATISTICS",
];

impl ArchiveContents {
    /// Read from the archive's bytes (not pieced together from its listing
    /// when they could not be read).
    pub fn was_read(&self) -> bool {
        self.format.starts_with("1.")
    }

    /// Reads a whole archive file.
    pub fn read_file(path: &std::path::Path) -> std::io::Result<Result<Self, String>> {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        let mut scanner = ArchiveScanner::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            scanner.feed(&buf[..n]);
        }
        Ok(scanner.finish())
    }
}

/// Bytes kept of the end of a table's data (the end-of-data line and the
/// blank lines after it must fit).
const TAIL: usize = 64;

/// Custom-format block types.
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Header and table of contents, buffered.
    Toc,
    /// Between data blocks: the block type byte.
    BlockType,
    /// The dump id after a block type.
    BlockId {
        blobs: bool,
    },
    /// A data chunk's length (0 ends the table's block).
    DataLen {
        table: Option<usize>,
    },
    /// A large object's oid (0 ends the block).
    BlobOid,
    /// A large object chunk's length (0 ends the object).
    BlobLen,
    /// Chunk bytes still to go by; newlines are rows when `table` is set.
    Body {
        remaining: u64,
        table: Option<usize>,
        blob: bool,
    },
    Failed,
}

/// Reads an archive pushed to it in pieces; see the module comment.
#[derive(Debug)]
pub struct ArchiveScanner {
    phase: Phase,
    toc_buf: Vec<u8>,
    toc: Option<TocProgress>,
    int_size: usize,
    int_buf: Vec<u8>,
    contents: ArchiveContents,
    /// dump id → index into `contents.tables`
    data_ids: std::collections::HashMap<i64, usize>,
    compressed: bool,
    error: Option<String>,
    /// The last bytes of the current table's data and how long it is: the
    /// block ends with pg_dump's end-of-data line `\.` (and blank lines),
    /// which is not a row.
    tail: Vec<u8>,
    block_len: u64,
}

#[derive(Debug)]
struct TocProgress {
    version: (u8, u8),
    offset_size: usize,
    entries_left: i64,
    /// Where the next entry starts in `toc_buf`.
    pos: usize,
}

impl Default for ArchiveScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl ArchiveScanner {
    pub fn new() -> Self {
        Self {
            phase: Phase::Toc,
            toc_buf: Vec::new(),
            toc: None,
            int_size: 4,
            int_buf: Vec::with_capacity(9),
            contents: ArchiveContents::default(),
            data_ids: std::collections::HashMap::new(),
            compressed: false,
            error: None,
            tail: Vec::with_capacity(16),
            block_len: 0,
        }
    }

    fn fail(&mut self, why: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(why.into());
        }
        self.phase = Phase::Failed;
        self.toc_buf = Vec::new();
    }

    /// Takes the next piece of the archive.
    pub fn feed(&mut self, data: &[u8]) {
        let mut pos = 0;
        while pos < data.len() {
            match self.phase {
                Phase::Failed => return,
                Phase::Toc => {
                    self.toc_buf.extend_from_slice(&data[pos..]);
                    pos = data.len();
                    match self.read_toc() {
                        Ok(None) => {}
                        Ok(Some(end)) => {
                            let rest = self.toc_buf.split_off(end);
                            self.toc_buf = Vec::new();
                            self.phase = Phase::BlockType;
                            if self.compressed {
                                // Row counts need the plain COPY text.
                                for t in &mut self.contents.tables {
                                    t.rows = None;
                                }
                                self.phase = Phase::Failed;
                                return;
                            }
                            self.feed(&rest);
                            return;
                        }
                        Err(e) => {
                            self.fail(e);
                            return;
                        }
                    }
                }
                Phase::Body {
                    remaining,
                    table,
                    blob,
                } => {
                    let n = (remaining as usize).min(data.len() - pos);
                    let piece = &data[pos..pos + n];
                    if let Some(t) = table {
                        let rows = memchr::memchr_iter(b'\n', piece).count() as u64;
                        if let Some(r) = self.contents.tables[t].rows.as_mut() {
                            *r += rows;
                        }
                        self.block_len += n as u64;
                        self.tail
                            .extend_from_slice(&piece[piece.len().saturating_sub(TAIL)..]);
                        let extra = self.tail.len().saturating_sub(TAIL);
                        self.tail.drain(..extra);
                    }
                    pos += n;
                    let left = remaining - n as u64;
                    self.phase = if left > 0 {
                        Phase::Body {
                            remaining: left,
                            table,
                            blob,
                        }
                    } else if blob {
                        Phase::BlobLen
                    } else {
                        Phase::DataLen { table }
                    };
                }
                Phase::BlockType => {
                    let b = data[pos];
                    pos += 1;
                    match b {
                        BLK_DATA => self.phase = Phase::BlockId { blobs: false },
                        BLK_BLOBS => self.phase = Phase::BlockId { blobs: true },
                        other => {
                            self.fail(format!("unknown data block type {other}"));
                            return;
                        }
                    }
                }
                Phase::BlockId { .. } | Phase::DataLen { .. } | Phase::BlobOid | Phase::BlobLen => {
                    let need = 1 + self.int_size;
                    let take = (need - self.int_buf.len()).min(data.len() - pos);
                    self.int_buf.extend_from_slice(&data[pos..pos + take]);
                    pos += take;
                    if self.int_buf.len() == need {
                        let v = decode_int(&self.int_buf);
                        self.int_buf.clear();
                        if let Err(e) = self.after_int(v) {
                            self.fail(e);
                            return;
                        }
                    }
                }
            }
        }
    }

    fn after_int(&mut self, v: i64) -> Result<(), String> {
        self.phase = match self.phase {
            Phase::BlockId { blobs: true } => Phase::BlobOid,
            Phase::BlockId { blobs: false } => {
                let table = self.data_ids.get(&v).copied();
                if let Some(t) = table {
                    self.contents.tables[t].rows = Some(0);
                }
                self.tail.clear();
                self.block_len = 0;
                Phase::DataLen { table }
            }
            Phase::DataLen { table } => match v {
                0 => {
                    if let Some(t) = table
                        && let Some(r) = self.contents.tables[t].rows.as_mut()
                    {
                        *r -= end_marker_lines(&self.tail, self.block_len).min(*r);
                    }
                    Phase::BlockType
                }
                n if n > 0 => Phase::Body {
                    remaining: n as u64,
                    table,
                    blob: false,
                },
                n => return Err(format!("negative chunk length {n}")),
            },
            Phase::BlobOid => match v {
                0 => Phase::BlockType,
                _ => {
                    self.contents.large_objects += 1;
                    Phase::BlobLen
                }
            },
            Phase::BlobLen => match v {
                0 => Phase::BlobOid,
                n if n > 0 => Phase::Body {
                    remaining: n as u64,
                    table: None,
                    blob: true,
                },
                n => return Err(format!("negative chunk length {n}")),
            },
            other => return Err(format!("unexpected integer in {other:?}")),
        };
        Ok(())
    }

    /// The contents, or why they could not be read. An archive that ends
    /// in the middle of a block is an error: its rows were not all seen.
    pub fn finish(mut self) -> Result<ArchiveContents, String> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        match self.phase {
            Phase::BlockType => {}
            Phase::Failed if self.compressed => {}
            Phase::Toc => return Err("the archive ends inside its table of contents".into()),
            _ => return Err("the archive ends inside a data block".into()),
        }
        for t in &self.contents.tables {
            if t.rows.is_none() && !self.compressed {
                return Err(format!(
                    "the archive has no data block for {}.{}",
                    t.schema, t.table
                ));
            }
        }
        Ok(self.contents)
    }

    /// Parses the header once, then as many whole entries as are buffered.
    /// `Ok(Some(end))`: the table of contents ends at `end`.
    fn read_toc(&mut self) -> Result<Option<usize>, String> {
        if self.toc.is_none() {
            let mut r = Reader::new(&self.toc_buf, 4);
            match read_header(&mut r) {
                Ok(h) => {
                    self.int_size = h.int_size;
                    self.compressed = h.compressed;
                    self.contents.format = format!("{}.{}", h.version.0, h.version.1);
                    self.toc = Some(TocProgress {
                        version: h.version,
                        offset_size: h.offset_size,
                        entries_left: h.entries,
                        pos: r.pos,
                    });
                }
                Err(Short::More) => return Ok(None),
                Err(Short::Bad(e)) => return Err(e),
            }
        }
        loop {
            let Some(p) = self.toc.as_mut() else {
                return Ok(None);
            };
            if p.entries_left == 0 {
                return Ok(Some(p.pos));
            }
            let mut r = Reader::new(&self.toc_buf, self.int_size);
            r.pos = p.pos;
            let entry = match read_entry(&mut r, p.version, p.offset_size) {
                Ok(e) => e,
                Err(Short::More) => return Ok(None),
                Err(Short::Bad(e)) => return Err(e),
            };
            p.pos = r.pos;
            p.entries_left -= 1;
            self.take_entry(entry)?;
        }
    }

    fn take_entry(&mut self, e: Entry) -> Result<(), String> {
        if let Some(o) = &e.owner
            && !o.is_empty()
            && !matches!(e.desc.as_str(), "EXTENSION" | "COMMENT" | "ACL")
        {
            self.contents.owners.insert(o.clone());
        }
        let schema = e.namespace.clone().unwrap_or_default();
        if let (Some(ns), Some(owner)) = (&e.namespace, &e.owner)
            && !owner.is_empty()
            && OWNED.contains(&e.desc.as_str())
        {
            self.contents.owned_in.insert((ns.clone(), owner.clone()));
        }
        if e.desc == "SCHEMA" {
            self.contents
                .schemas
                .insert(e.tag.clone(), e.owner.clone().unwrap_or_default());
        }
        match e.desc.as_str() {
            "TABLE DATA" if e.had_dumper => {
                self.data_ids.insert(e.dump_id, self.contents.tables.len());
                self.contents.tables.push(TableRows {
                    schema,
                    table: e.tag,
                    rows: None,
                });
            }
            "SEQUENCE SET" => {
                let defn = e.defn.unwrap_or_default();
                let (value, is_called) = parse_setval(&defn)
                    .ok_or_else(|| format!("unreadable SEQUENCE SET entry: {defn}"))?;
                self.contents.sequences.push(SequenceValue {
                    schema,
                    sequence: e.tag,
                    value,
                    is_called,
                });
            }
            "MATERIALIZED VIEW DATA" => self.contents.materialized_views.push(ObjectName {
                schema,
                name: e.tag,
            }),
            "EXTENSION" => self.contents.extensions.push(e.tag),
            "ACL"
                if e.defn
                    .as_deref()
                    .is_some_and(|d| d.contains("SET SESSION AUTHORIZATION")) =>
            {
                self.contents.session_authorization = true;
            }
            // SET client_encoding = 'UTF8';
            "ENCODING" => {
                self.contents.encoding = e
                    .defn
                    .as_deref()
                    .and_then(|d| d.split('\'').nth(1))
                    .unwrap_or_default()
                    .to_string()
            }
            // pg_dump writes `public` as already there (owner, comment and
            // privileges adjusted); only a dump that creates it says so.
            "SCHEMA" if e.tag == "public" => {
                self.contents.creates_public = e
                    .defn
                    .as_deref()
                    .is_some_and(|d| d.trim_start().starts_with("CREATE SCHEMA"))
            }
            "EVENT TRIGGER"
            | "PUBLICATION"
            | "SUBSCRIPTION"
            | "FOREIGN DATA WRAPPER"
            | "SERVER" => self.contents.database_objects.push(DatabaseObject {
                kind: e.desc,
                name: e.tag,
            }),
            "DEFAULT ACL" if e.namespace.is_none() => {
                self.contents.database_objects.push(DatabaseObject {
                    kind: e.desc,
                    name: e.tag,
                })
            }
            _ => {}
        }
        Ok(())
    }
}

/// Newlines at the end of a table's data that belong to the end-of-data
/// line `\.` and the blank lines pg_dump writes after it. `tail` is the
/// end of the data, `block_len` all of it.
fn end_marker_lines(tail: &[u8], block_len: u64) -> u64 {
    let blank = tail.iter().rev().take_while(|b| **b == b'\n').count();
    let body = &tail[..tail.len() - blank];
    if blank == 0 || !body.ends_with(b"\\.") {
        return 0;
    }
    let at_line_start = match body.len() {
        2 => block_len == blank as u64 + 2,
        n => body[n - 3] == b'\n',
    };
    if at_line_start { blank as u64 } else { 0 }
}

fn decode_int(b: &[u8]) -> i64 {
    let mut v: i64 = 0;
    for (i, byte) in b[1..].iter().enumerate() {
        v |= (*byte as i64) << (8 * i);
    }
    if b[0] != 0 { -v } else { v }
}

/// `SELECT pg_catalog.setval('name', 42, true);` → (42, true). Read from
/// the end: the name before it is a quoted literal that may hold anything.
fn parse_setval(defn: &str) -> Option<(i64, bool)> {
    let s = defn.trim_end().strip_suffix(");")?;
    let (rest, called) = s.rsplit_once(',')?;
    let is_called = match called.trim() {
        "true" => true,
        "false" => false,
        _ => return None,
    };
    let (_, value) = rest.rsplit_once(',')?;
    Some((value.trim().parse().ok()?, is_called))
}

enum Short {
    More,
    Bad(String),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    int_size: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], int_size: usize) -> Self {
        Self {
            buf,
            pos: 0,
            int_size,
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Short> {
        if self.buf.len() < self.pos + n {
            return Err(Short::More);
        }
        let b = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    fn byte(&mut self) -> Result<u8, Short> {
        Ok(self.bytes(1)?[0])
    }

    fn int(&mut self) -> Result<i64, Short> {
        let n = self.int_size;
        Ok(decode_int(self.bytes(1 + n)?))
    }

    fn string(&mut self) -> Result<Option<String>, Short> {
        let len = self.int()?;
        if len < 0 {
            return Ok(None);
        }
        let b = self.bytes(len as usize)?;
        String::from_utf8(b.to_vec())
            .map(Some)
            .map_err(|_| Short::Bad("a table of contents entry is not valid UTF-8".into()))
    }

    /// Skips a string without copying it.
    fn skip_string(&mut self) -> Result<(), Short> {
        let len = self.int()?;
        if len > 0 {
            self.bytes(len as usize)?;
        }
        Ok(())
    }
}

struct Header {
    version: (u8, u8),
    int_size: usize,
    offset_size: usize,
    compressed: bool,
    entries: i64,
}

fn read_header(r: &mut Reader<'_>) -> Result<Header, Short> {
    if r.bytes(5)? != b"PGDMP" {
        return Err(Short::Bad("not a pg_dump custom-format archive".into()));
    }
    let (major, minor, _rev) = (r.byte()?, r.byte()?, r.byte()?);
    if major != 1 || !(12..=16).contains(&minor) {
        return Err(Short::Bad(format!(
            "archive format {major}.{minor} is not one shipsafe reads (1.12 to 1.16)"
        )));
    }
    let int_size = r.byte()? as usize;
    let offset_size = r.byte()? as usize;
    if !(1..=8).contains(&int_size) || !(1..=8).contains(&offset_size) {
        return Err(Short::Bad("implausible integer sizes in the header".into()));
    }
    r.int_size = int_size;
    if r.byte()? != 1 {
        return Err(Short::Bad("not a custom-format archive".into()));
    }
    let compressed = if minor >= 15 {
        r.byte()? != 0
    } else {
        r.int()? != 0
    };
    for _ in 0..7 {
        r.int()?; // creation time
    }
    r.skip_string()?; // database name
    r.skip_string()?; // server version
    r.skip_string()?; // pg_dump version
    let entries = r.int()?;
    if entries < 0 {
        return Err(Short::Bad("negative table of contents size".into()));
    }
    Ok(Header {
        version: (major, minor),
        int_size,
        offset_size,
        compressed,
        entries,
    })
}

struct Entry {
    dump_id: i64,
    had_dumper: bool,
    tag: String,
    desc: String,
    defn: Option<String>,
    namespace: Option<String>,
    owner: Option<String>,
}

fn read_entry(r: &mut Reader<'_>, version: (u8, u8), offset_size: usize) -> Result<Entry, Short> {
    let dump_id = r.int()?;
    let had_dumper = r.int()? != 0;
    r.skip_string()?; // catalog table oid
    r.skip_string()?; // oid
    let tag = r.string()?.unwrap_or_default();
    let desc = r.string()?.unwrap_or_default();
    r.int()?; // section
    // Only the definitions that are read are copied.
    let defn = if matches!(
        desc.as_str(),
        "SEQUENCE SET" | "SCHEMA" | "ENCODING" | "ACL"
    ) {
        r.string()?
    } else {
        r.skip_string()?;
        None
    };
    r.skip_string()?; // drop statement
    r.skip_string()?; // copy statement
    let namespace = r.string()?;
    r.skip_string()?; // tablespace
    if version.1 >= 14 {
        r.skip_string()?; // table access method
    }
    if version.1 >= 16 {
        r.int()?; // relkind
    }
    let owner = r.string()?;
    r.skip_string()?; // "false": tables WITH OIDS
    // Dependencies: strings, ended by a null one.
    loop {
        let len = r.int()?;
        if len < 0 {
            break;
        }
        r.bytes(len as usize)?;
    }
    r.byte()?; // data offset flag
    r.bytes(offset_size)?; // data offset
    Ok(Entry {
        dump_id,
        had_dumper,
        tag,
        desc,
        defn,
        namespace,
        owner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setval_is_read_from_the_end() {
        assert_eq!(
            parse_setval("SELECT pg_catalog.setval('public.s', 42, true);\n"),
            Some((42, true))
        );
        assert_eq!(
            parse_setval("SELECT pg_catalog.setval('public.\"a, 1, true\"', -7, false);\n"),
            Some((-7, false))
        );
        assert_eq!(parse_setval("SELECT 1;"), None);
    }

    #[test]
    fn the_end_of_data_line_is_not_a_row() {
        assert_eq!(end_marker_lines(b"1\n\\.\n\n\n", 7), 3);
        assert_eq!(end_marker_lines(b"\\.\n\n\n", 5), 3, "an empty table");
        assert_eq!(end_marker_lines(b"1\n2\n", 4), 0);
        // A row whose last value ends in a backslash-dot is escaped (`\\.`),
        // and one ending in `x\.` is not at a line start.
        assert_eq!(end_marker_lines(b"a\tx\\.\n", 6), 0);
        // The tail lost the byte before the marker: only the block's start
        // counts as a line start then.
        assert_eq!(end_marker_lines(b"\\.\n", 9), 0);
    }

    #[test]
    fn integers_are_sign_and_magnitude() {
        assert_eq!(decode_int(&[0, 0x2a, 0, 0, 0]), 42);
        assert_eq!(decode_int(&[1, 1, 0, 0, 0]), -1);
        assert_eq!(decode_int(&[0, 0, 1, 0, 0]), 256);
    }

    #[test]
    fn garbage_is_reported_not_guessed() {
        let mut s = ArchiveScanner::new();
        s.feed(b"NOTPGDMP and more bytes than a header needs to be rejected");
        assert!(s.finish().unwrap_err().contains("not a pg_dump"));
        let s = ArchiveScanner::new();
        assert!(s.finish().is_err(), "an empty archive is not readable");
    }
}
