//! SQL scripts: splitting into statements (quotes, dollar quotes, comments
//! and `BEGIN ATOMIC` bodies respected), positions, and the statements that
//! cannot run inside a transaction block.

use std::path::{Path, PathBuf};

/// One SQL file of a migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub path: PathBuf,
    pub text: String,
}

impl Script {
    pub fn read(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            text: std::fs::read_to_string(path)?,
        })
    }

    /// `blake3:<hex>` of the file's bytes.
    pub fn checksum(&self) -> String {
        format!("blake3:{}", blake3::hash(self.text.as_bytes()).to_hex())
    }

    /// True when a line says `-- shipsafe:<marker>`.
    pub fn has_marker(&self, marker: &str) -> bool {
        let want = format!("shipsafe:{marker}");
        self.text.lines().any(|l| {
            l.trim_start()
                .strip_prefix("--")
                .is_some_and(|rest| rest.split_whitespace().next() == Some(want.as_str()))
        })
    }

    pub fn statements(&self) -> Vec<Statement> {
        split(&self.text)
    }

    /// `path:line:col` of a byte offset.
    pub fn location(&self, byte: usize) -> String {
        let (line, col) = line_col(&self.text, byte);
        format!("{}:{line}:{col}", self.path.display())
    }
}

/// A statement and where it starts in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The statement text, without the terminating `;`.
    pub sql: String,
    /// Byte offset of the first character of the statement in the file.
    pub start: usize,
}

impl Statement {
    /// The first words, upper-cased, comments skipped.
    pub fn words(&self, n: usize) -> Vec<String> {
        words(&self.sql, n)
    }

    /// Statements PostgreSQL refuses inside a transaction block.
    pub fn needs_autocommit(&self) -> bool {
        let w = self.words(8);
        let w: Vec<&str> = w.iter().map(String::as_str).collect();
        let has = |x: &str| w.contains(&x);
        match w.as_slice() {
            ["CREATE", "INDEX", "CONCURRENTLY", ..]
            | ["CREATE", "UNIQUE", "INDEX", "CONCURRENTLY", ..]
            | ["DROP", "INDEX", "CONCURRENTLY", ..]
            | ["VACUUM", ..]
            | ["CREATE", "DATABASE", ..]
            | ["DROP", "DATABASE", ..]
            | ["ALTER", "SYSTEM", ..]
            | ["CREATE", "TABLESPACE", ..]
            | ["DROP", "TABLESPACE", ..]
            | ["CLUSTER"] => true,
            ["REINDEX", ..] => has("CONCURRENTLY"),
            ["ALTER", "TABLE", ..] => {
                has("DETACH") && self.sql.to_ascii_uppercase().contains("CONCURRENTLY")
            }
            _ => false,
        }
    }

    /// `BEGIN`, `COMMIT`, ...: the script manages transactions itself.
    pub fn is_transaction_control(&self) -> bool {
        let w = self.words(2);
        matches!(
            w.first().map(String::as_str),
            Some("BEGIN" | "COMMIT" | "ROLLBACK" | "END" | "START" | "ABORT")
        ) && !(w.first().map(String::as_str) == Some("START")
            && w.get(1).map(String::as_str) != Some("TRANSACTION"))
    }
}

/// Upper-cased leading words of `sql` (identifiers and keywords), skipping
/// comments.
pub fn words(sql: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() && out.len() < n {
        if b[i..].starts_with(b"--") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i = skip_block_comment(b, i);
        } else if b[i].is_ascii_alphabetic() || b[i] == b'_' {
            let s = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(sql[s..i].to_ascii_uppercase());
        } else if b[i] == b'(' || b[i] == b'\'' || b[i] == b'"' {
            break;
        } else {
            i += 1;
        }
    }
    out
}

fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0;
    while i < b.len() {
        if b[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if b[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    i
}

/// A dollar-quote tag starting at `i` (`$$` or `$tag$`), if any.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if j < b.len() && (b[j].is_ascii_digit()) {
        return None; // $1: a parameter, not a tag
    }
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
        j += 1;
    }
    (j < b.len() && b[j] == b'$').then_some(j + 1 - i)
}

/// Splits a script into statements at top-level semicolons.
pub fn split(text: &str) -> Vec<Statement> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut start: Option<usize> = None;
    // Inside `BEGIN ATOMIC ... END`: nesting of BEGIN/CASE ... END.
    let mut atomic_depth = 0usize;
    let mut last_word = String::new();
    let push = |out: &mut Vec<Statement>, s: usize, e: usize| {
        let sql = text[s..e].trim_end().to_string();
        if !sql.is_empty() {
            out.push(Statement { sql, start: s });
        }
    };
    while i < b.len() {
        let c = b[i];
        if b[i..].starts_with(b"--") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if b[i..].starts_with(b"/*") {
            i = skip_block_comment(b, i);
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let s = *start.get_or_insert(i);
        let _ = s;
        match c {
            b'\'' => {
                // E'...' strings allow backslash escapes.
                let escapes = i > 0
                    && (b[i - 1] == b'E' || b[i - 1] == b'e')
                    && (i < 2 || !(b[i - 2].is_ascii_alphanumeric() || b[i - 2] == b'_'));
                i += 1;
                while i < b.len() {
                    if escapes && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == b'\'' {
                        if i + 1 < b.len() && b[i + 1] == b'\'' {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += 1;
                }
                i += 1;
            }
            b'$' => match dollar_tag(b, i) {
                Some(len) => {
                    let tag = &text[i..i + len];
                    i += len;
                    match text[i..].find(tag) {
                        Some(end) => i += end + len,
                        None => i = b.len(),
                    }
                }
                None => i += 1,
            },
            b';' if atomic_depth == 0 => {
                if let Some(s) = start.take() {
                    push(&mut out, s, i);
                }
                last_word.clear();
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let ws = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let w = text[ws..i].to_ascii_uppercase();
                if atomic_depth == 0 {
                    if last_word == "BEGIN" && w == "ATOMIC" {
                        atomic_depth = 1;
                    }
                } else if w == "BEGIN" || w == "CASE" {
                    atomic_depth += 1;
                } else if w == "END" {
                    atomic_depth -= 1;
                }
                last_word = w;
            }
            _ => i += 1,
        }
    }
    if let Some(s) = start {
        push(&mut out, s, b.len());
    }
    out
}

/// 1-based line and column (characters) of a byte offset.
pub fn line_col(text: &str, byte: usize) -> (usize, usize) {
    let byte = byte.min(text.len());
    let before = &text[..byte];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..byte].chars().count() + 1)
}

/// Byte offset of the 1-based character position PostgreSQL reports.
pub fn byte_of_char(text: &str, char_pos: usize) -> usize {
    text.char_indices()
        .nth(char_pos.saturating_sub(1))
        .map_or(text.len(), |(b, _)| b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqls(text: &str) -> Vec<String> {
        split(text).into_iter().map(|s| s.sql).collect()
    }

    #[test]
    fn splits_at_top_level_semicolons_only() {
        let text = "create table a (x text default ';');\n\
                    -- a comment; with a semicolon\n\
                    insert into a values ('it''s; fine'), (E'a\\';b');\n\
                    /* block; /* nested; */ */ select \"we;ird\" from a;\n\
                    select 1";
        assert_eq!(
            sqls(text),
            [
                "create table a (x text default ';')",
                "insert into a values ('it''s; fine'), (E'a\\';b')",
                "select \"we;ird\" from a",
                "select 1"
            ]
        );
    }

    #[test]
    fn dollar_quotes_and_do_blocks_stay_whole() {
        let text = "CREATE OR REPLACE FUNCTION f() RETURNS trigger AS $$\nBEGIN\n  NEW.x := 1;\n  RETURN NEW;\nEND;\n$$ LANGUAGE plpgsql;\nDO $body$ BEGIN PERFORM 1; END $body$;\nselect $1;";
        let s = sqls(text);
        assert_eq!(s.len(), 3, "{s:?}");
        assert!(s[0].ends_with("LANGUAGE plpgsql"));
        assert!(s[1].starts_with("DO $body$"));
    }

    #[test]
    fn begin_atomic_bodies_stay_whole() {
        let text = "create function f(a int) returns int language sql begin atomic select case when a > 0 then 1 else 2 end; select 3; end;\nselect 4;";
        let s = sqls(text);
        assert_eq!(s.len(), 2, "{s:?}");
        assert!(s[0].ends_with("select 3; end"));
    }

    #[test]
    fn statement_starts_point_at_the_first_token() {
        let text = "-- header\n\n  create table t (id int);\n  select 1;";
        let st = split(text);
        assert_eq!(line_col(text, st[0].start), (3, 3));
        assert_eq!(line_col(text, st[1].start), (4, 3));
    }

    #[test]
    fn autocommit_statements_are_recognised() {
        let yes = [
            "create index concurrently i on t (x)",
            "CREATE UNIQUE INDEX CONCURRENTLY i ON t (x)",
            "drop index concurrently if exists i",
            "reindex index concurrently i",
            "vacuum analyze t",
            "-- note\nvacuum",
        ];
        let no = [
            "create index i on t (x)",
            "alter type r add value 'x'",
            "select 'vacuum'",
        ];
        for s in yes {
            assert!(split(s)[0].needs_autocommit(), "{s}");
        }
        for s in no {
            assert!(!split(s)[0].needs_autocommit(), "{s}");
        }
    }

    #[test]
    fn transaction_control_is_recognised() {
        for s in [
            "begin",
            "BEGIN TRANSACTION",
            "commit",
            "start transaction",
            "rollback",
        ] {
            assert!(split(s)[0].is_transaction_control(), "{s}");
        }
        assert!(!split("start_thing()")[0].is_transaction_control());
    }

    #[test]
    fn character_positions_map_to_bytes() {
        let t = "é;x";
        assert_eq!(byte_of_char(t, 1), 0);
        assert_eq!(byte_of_char(t, 2), 2);
    }
}
