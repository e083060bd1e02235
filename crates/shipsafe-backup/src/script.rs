//! Splitting pg_restore's script into statements the way psql does.
//!
//! The restore replays pg_restore's SQL on shipsafe's own connection, inside
//! one transaction. To keep that transaction whole it must know exactly
//! where each statement ends and which ones control transactions (pg_restore
//! wraps large objects in `BEGIN; … COMMIT;`), and to stream table data it
//! must know which statement is a `COPY … FROM stdin` whose rows follow.
//! Text patterns cannot tell: a table may be named `x;\nCOPY t FROM stdin`,
//! and function bodies hold anything. So this is a lexer with psql's rules
//! (`psqlscan.l`): strings (standard, `E''` with backslashes, `U&''`),
//! quoted identifiers, dollar quotes, nested comments, parentheses, and
//! the end of a `CREATE FUNCTION … BEGIN ATOMIC … END` body (psql counts
//! BEGIN/CASE/END after `CREATE [OR REPLACE] FUNCTION|PROCEDURE`; here a
//! BEGIN counts only when ATOMIC follows, since pg_dump writes a function
//! named `begin` unquoted and psql's count then runs past its end).
//! A backslash outside a literal at the start of a statement is a psql
//! meta-command line (`\restrict`); anywhere else it is an error.

/// What a complete statement is, as far as the replay cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `COPY … FROM stdin`: its rows follow on the next lines, up to `\.`.
    CopyFromStdin,
    /// `BEGIN`, `START TRANSACTION`, `COMMIT`, `END`: what pg_restore writes
    /// around large objects. Inside the restore's own transaction they are
    /// not sent.
    Transaction,
    /// Any other transaction control (`ROLLBACK`, `SAVEPOINT`, `PREPARE
    /// TRANSACTION`, ...): never sent, the restore stops.
    ForeignTransaction,
    /// `REFRESH MATERIALIZED VIEW`: may fail where pg_restore would carry on.
    Refresh,
    /// `SET name …` / `RESET name` (lower case): some change how the server
    /// reads what follows, which it does only for later queries.
    Setting(String),
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Statement {
    /// From its first token to its `;`, inclusive.
    pub text: String,
    pub kind: Kind,
    /// Script line where it starts (1-based).
    pub line: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    Statement(Statement),
    /// A psql meta-command line, without its newline.
    Meta {
        text: String,
        line: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Normal,
    /// `'…'`; `backslash`: backslashes escape (E'' or standard strings off).
    Quote {
        backslash: bool,
    },
    Ident,
    Dollar(Vec<u8>),
    Block(u32),
}

/// Splits a script fed line by line; see the module comment.
#[derive(Debug)]
pub(crate) struct Splitter {
    state: State,
    std_strings: bool,
    /// Text of the statement so far, from its first token.
    stmt: Vec<u8>,
    started: bool,
    stmt_line: u64,
    line_no: u64,
    paren: u32,
    begin_depth: u32,
    /// The first four identifiers, lowercased (for the BEGIN ATOMIC rule
    /// and for telling what the statement is).
    words: Vec<String>,
    word_count: usize,
    /// The last two identifiers, and whether anything but whitespace and
    /// comments came after the last one.
    last_words: [String; 2],
    after_last_word: bool,
    /// A routine's BEGIN was just read: ATOMIC next opens its body.
    begin_pending: bool,
}

impl Default for Splitter {
    fn default() -> Self {
        Self::new()
    }
}

fn ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn ident_cont(b: u8) -> bool {
    ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// `$tag$` at the start of `s`: its length.
fn dollar_delimiter(s: &[u8]) -> Option<usize> {
    if s.first() != Some(&b'$') {
        return None;
    }
    let mut i = 1;
    if i < s.len() && ident_start(s[i]) {
        i += 1;
        while i < s.len() && (ident_start(s[i]) || s[i].is_ascii_digit()) {
            i += 1;
        }
    }
    (i < s.len() && s[i] == b'$').then_some(i + 1)
}

impl Splitter {
    pub(crate) fn new() -> Self {
        Self {
            state: State::Normal,
            std_strings: true,
            stmt: Vec::new(),
            started: false,
            stmt_line: 0,
            line_no: 0,
            paren: 0,
            begin_depth: 0,
            words: Vec::new(),
            word_count: 0,
            last_words: [String::new(), String::new()],
            after_last_word: false,
            begin_pending: false,
        }
    }

    /// Takes one line (with its newline, if it has one) and appends what it
    /// completes to `out`. After a `COPY … FROM stdin` the rest of the line
    /// must be blank: its rows start on the next line, which the caller
    /// reads itself.
    pub(crate) fn push_line(&mut self, line: &[u8], out: &mut Vec<Item>) -> Result<(), String> {
        self.line_no += 1;
        let mut i = 0;
        let mut seg = 0; // where this line's part of the statement starts
        while i < line.len() {
            let b = line[i];
            match &mut self.state {
                State::Quote { backslash } => {
                    if *backslash && b == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b == b'\'' {
                        if line.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        self.state = State::Normal;
                    }
                    i += 1;
                }
                State::Ident => {
                    if b == b'"' {
                        if line.get(i + 1) == Some(&b'"') {
                            i += 2;
                            continue;
                        }
                        self.state = State::Normal;
                    }
                    i += 1;
                }
                State::Dollar(tag) => match memchr::memmem::find(&line[i..], tag) {
                    Some(at) => {
                        i += at + tag.len();
                        self.state = State::Normal;
                    }
                    None => i = line.len(),
                },
                State::Block(depth) => {
                    if b == b'*' && line.get(i + 1) == Some(&b'/') {
                        *depth -= 1;
                        i += 2;
                        if *depth == 0 {
                            self.state = State::Normal;
                        }
                    } else if b == b'/' && line.get(i + 1) == Some(&b'*') {
                        *depth += 1;
                        i += 2;
                    } else {
                        i += 1;
                    }
                }
                State::Normal => {
                    if b.is_ascii_whitespace() {
                        i += 1;
                        continue;
                    }
                    if b == b'-' && line.get(i + 1) == Some(&b'-') {
                        break; // comment to the end of the line
                    }
                    if b == b'/' && line.get(i + 1) == Some(&b'*') {
                        self.state = State::Block(1);
                        i += 2;
                        continue;
                    }
                    if !self.started {
                        if b == b'\\' {
                            let text = String::from_utf8_lossy(&line[i..])
                                .trim_end_matches(['\n', '\r'])
                                .to_string();
                            out.push(Item::Meta {
                                text,
                                line: self.line_no,
                            });
                            return Ok(());
                        }
                        self.started = true;
                        self.stmt_line = self.line_no;
                        seg = i;
                    }
                    if b == b';' && self.paren == 0 && self.begin_depth == 0 {
                        self.stmt.extend_from_slice(&line[seg..=i]);
                        i += 1;
                        let stmt = self.complete()?;
                        let copy = stmt.kind == Kind::CopyFromStdin;
                        out.push(Item::Statement(stmt));
                        if copy {
                            if line[i..].iter().any(|c| !c.is_ascii_whitespace()) {
                                return Err(format!(
                                    "line {}: text after COPY … FROM stdin on the same line",
                                    self.line_no
                                ));
                            }
                            return Ok(());
                        }
                        seg = i;
                        continue;
                    }
                    self.after_last_word = true;
                    if !ident_start(b) {
                        self.begin_pending = false;
                    }
                    match b {
                        b'\'' => {
                            self.state = State::Quote {
                                backslash: !self.std_strings,
                            };
                            i += 1;
                        }
                        b'"' => {
                            self.state = State::Ident;
                            i += 1;
                        }
                        b'(' => {
                            self.paren += 1;
                            i += 1;
                        }
                        b')' => {
                            self.paren = self.paren.saturating_sub(1);
                            i += 1;
                        }
                        b'\\' => {
                            return Err(format!(
                                "line {}: a backslash outside any literal inside a statement",
                                self.line_no
                            ));
                        }
                        b'$' => {
                            if let Some(n) = dollar_delimiter(&line[i..]) {
                                self.state = State::Dollar(line[i..i + n].to_vec());
                                i += n;
                            } else {
                                // `$1` and the like
                                i += 1;
                                while i < line.len() && line[i].is_ascii_digit() {
                                    i += 1;
                                }
                            }
                        }
                        b'0'..=b'9' => {
                            while i < line.len()
                                && (line[i].is_ascii_alphanumeric()
                                    || line[i] == b'_'
                                    || line[i] == b'.')
                            {
                                i += 1;
                            }
                        }
                        _ if ident_start(b) => {
                            let start = i;
                            while i < line.len() && ident_cont(line[i]) {
                                i += 1;
                            }
                            let word = &line[start..i];
                            let next = line.get(i).copied();
                            if next == Some(b'\'') && (word == b"e" || word == b"E") {
                                // E'...': backslash escapes
                                self.state = State::Quote { backslash: true };
                                i += 1;
                            } else if (word == b"u" || word == b"U")
                                && next == Some(b'&')
                                && matches!(line.get(i + 1), Some(b'\'') | Some(b'"'))
                            {
                                self.state = if line[i + 1] == b'\'' {
                                    State::Quote { backslash: false }
                                } else {
                                    State::Ident
                                };
                                i += 2;
                            } else {
                                self.word(word);
                            }
                        }
                        _ => i += 1,
                    }
                }
            }
        }
        if self.started {
            self.stmt.extend_from_slice(&line[seg..]);
        }
        Ok(())
    }

    /// An unquoted identifier or key word.
    fn word(&mut self, word: &[u8]) {
        let lower = String::from_utf8_lossy(word).to_ascii_lowercase();
        if self.word_count < 4 {
            self.words.push(lower.clone());
        }
        self.word_count += 1;
        let w = &self.words;
        let routine = |s: &str| s == "function" || s == "procedure";
        let creating_routine = w.first().is_some_and(|s| s == "create")
            && (w.get(1).is_some_and(|s| routine(s))
                || (w.get(1).is_some_and(|s| s == "or")
                    && w.get(2).is_some_and(|s| s == "replace")
                    && w.get(3).is_some_and(|s| routine(s))));
        let pending = std::mem::take(&mut self.begin_pending);
        if creating_routine && self.paren == 0 {
            match lower.as_str() {
                "begin" if self.begin_depth == 0 => self.begin_pending = true,
                "atomic" if pending => self.begin_depth += 1,
                "case" if self.begin_depth >= 1 => self.begin_depth += 1,
                "end" if self.begin_depth > 0 => self.begin_depth -= 1,
                _ => {}
            }
        }
        self.last_words.swap(0, 1);
        self.last_words[1] = lower;
        self.after_last_word = false;
    }

    fn complete(&mut self) -> Result<Statement, String> {
        let text = String::from_utf8(std::mem::take(&mut self.stmt))
            .map_err(|_| format!("line {}: the statement is not valid UTF-8", self.stmt_line))?;
        let words = std::mem::take(&mut self.words);
        let first = words.first().map(String::as_str).unwrap_or("");
        let second = words.get(1).map(String::as_str).unwrap_or("");
        let kind = match first {
            "copy"
                if self.last_words[0] == "from"
                    && self.last_words[1] == "stdin"
                    && !self.after_last_word =>
            {
                Kind::CopyFromStdin
            }
            "begin" | "commit" | "end" => match second {
                "prepared" => Kind::ForeignTransaction,
                _ => Kind::Transaction,
            },
            "start" if second == "transaction" => Kind::Transaction,
            "rollback" | "abort" | "savepoint" | "release" => Kind::ForeignTransaction,
            "prepare" if second == "transaction" => Kind::ForeignTransaction,
            "refresh" if second == "materialized" => Kind::Refresh,
            "set" | "reset" => {
                self.track_setting(&text);
                let name = match second {
                    "session" | "local" => words.get(2).cloned().unwrap_or_default(),
                    other => other.to_string(),
                };
                Kind::Setting(name)
            }
            _ => Kind::Other,
        };
        let stmt = Statement {
            text,
            kind,
            line: self.stmt_line,
        };
        self.started = false;
        self.paren = 0;
        self.begin_depth = 0;
        self.words.clear();
        self.word_count = 0;
        self.last_words = [String::new(), String::new()];
        self.after_last_word = false;
        self.begin_pending = false;
        Ok(stmt)
    }

    /// Follows `SET standard_conforming_strings`, which changes how `'…'`
    /// strings are read (pg_dump sets it at the top of every script).
    fn track_setting(&mut self, text: &str) {
        let t = text.to_ascii_lowercase();
        let words: Vec<&str> = t
            .trim_end_matches(';')
            .split(|c: char| c.is_whitespace() || c == '=' || c == '\'')
            .filter(|w| !w.is_empty())
            .collect();
        let rest: &[&str] = match words.as_slice() {
            ["set", "session" | "local", rest @ ..] | ["set", rest @ ..] => rest,
            ["reset", "standard_conforming_strings"] | ["reset", "all"] => {
                self.std_strings = true;
                return;
            }
            _ => return,
        };
        match rest {
            ["standard_conforming_strings", "to", v] | ["standard_conforming_strings", v] => {
                match *v {
                    "on" | "true" | "yes" | "1" | "default" => self.std_strings = true,
                    "off" | "false" | "no" | "0" => self.std_strings = false,
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// At the end of the script: it must not end inside a statement or a
    /// literal.
    pub(crate) fn finish(&self) -> Result<(), String> {
        if self.started || self.state != State::Normal {
            return Err(format!(
                "the restore script ends inside a statement (started at line {})",
                self.stmt_line
            ));
        }
        Ok(())
    }
}

/// The table a `COPY schema.table … FROM stdin` fills, as pg_dump names it
/// (each part a plain lower-case name or double-quoted).
pub(crate) fn copy_target(text: &str) -> Option<(String, String)> {
    let rest = text.strip_prefix("COPY ")?;
    let mut parts = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_alphanumeric() || c == '_' || c == '$' {
                    part.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            if part.is_empty() {
                return None;
            }
        }
        parts.push(part);
        if chars.peek() == Some(&'.') {
            chars.next();
        } else {
            break;
        }
    }
    match (chars.next(), parts.as_slice()) {
        (Some(' '), [schema, table]) => Some((schema.clone(), table.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_targets_are_read_with_quoting() {
        assert_eq!(
            copy_target("COPY public.t (id) FROM stdin;"),
            Some(("public".into(), "t".into()))
        );
        assert_eq!(
            copy_target("COPY \"My \"\"s\".\"x;\nCOPY y FROM stdin\" (a) FROM stdin;"),
            Some(("My \"s".into(), "x;\nCOPY y FROM stdin".into()))
        );
        assert_eq!(
            copy_target("COPY public.empty  FROM stdin;"),
            Some(("public".into(), "empty".into()))
        );
        assert_eq!(copy_target("COPY t (a) FROM stdin;"), None);
    }

    fn split(script: &str) -> Vec<Item> {
        let mut s = Splitter::new();
        let mut out = Vec::new();
        for line in script.split_inclusive('\n') {
            s.push_line(line.as_bytes(), &mut out).unwrap();
        }
        s.finish().unwrap();
        out
    }

    fn statements(script: &str) -> Vec<(String, Kind)> {
        split(script)
            .into_iter()
            .filter_map(|i| match i {
                Item::Statement(s) => Some((s.text, s.kind)),
                Item::Meta { .. } => None,
            })
            .collect()
    }

    #[test]
    fn statements_end_only_at_top_level_semicolons() {
        let got = statements(
            "-- comment; not a statement\n\
             SET a = 1; SET b = 'x;y';\n\
             CREATE TABLE \"x;\nCOPY t FROM stdin\" (\"a\"\"b;\" int);\n\
             COMMENT ON TABLE t IS E'it\\'s; COPY t FROM stdin;\\n';\n\
             CREATE FUNCTION f() RETURNS text AS $body$ select 'a;'; $x$ ; $body$ LANGUAGE sql;\n\
             SELECT $$;$$, $1, a$b$c /* ; /* nested ; */ ; */ FROM t;\n",
        );
        let texts: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "SET a = 1;",
                "SET b = 'x;y';",
                "CREATE TABLE \"x;\nCOPY t FROM stdin\" (\"a\"\"b;\" int);",
                "COMMENT ON TABLE t IS E'it\\'s; COPY t FROM stdin;\\n';",
                "CREATE FUNCTION f() RETURNS text AS $body$ select 'a;'; $x$ ; $body$ LANGUAGE sql;",
                "SELECT $$;$$, $1, a$b$c /* ; /* nested ; */ ; */ FROM t;",
            ]
        );
        assert_eq!(got[0].1, Kind::Setting("a".into()));
        assert!(got[2..].iter().all(|(_, k)| *k == Kind::Other));
    }

    #[test]
    fn begin_atomic_bodies_keep_their_semicolons() {
        let got = statements(
            "CREATE FUNCTION public.fa() RETURNS integer\n    LANGUAGE sql\n    BEGIN ATOMIC\n SELECT 1;\n SELECT CASE WHEN true THEN 2 END;\nEND;\n\
             CREATE OR REPLACE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (1); END;\n\
             BEGIN;\n",
        );
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].0.ends_with("2 END;\nEND;"));
        assert!(got[1].0.starts_with("CREATE OR REPLACE PROCEDURE"));
        assert_eq!(got[2], ("BEGIN;".into(), Kind::Transaction));
    }

    #[test]
    fn a_routine_named_begin_is_not_a_body() {
        let got = statements(
            "CREATE FUNCTION public.begin() RETURNS integer\n    LANGUAGE sql\n    AS $$select 1$$;\n\
             CREATE FUNCTION atomic(begin int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT begin; END;\n\
             SELECT 1;\n",
        );
        let texts: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(texts.len(), 3, "{texts:?}");
        assert!(texts[1].ends_with("SELECT begin; END;"));
    }

    #[test]
    fn transaction_control_is_recognised_by_its_key_words() {
        let kinds: Vec<Kind> = statements(
            "BEGIN;\nCOMMIT;\nend;\nSTART TRANSACTION;\nROLLBACK;\nSAVEPOINT s;\nRELEASE s;\n\
             PREPARE TRANSACTION 'x';\nCOMMIT PREPARED 'x';\nabort;\nPREPARE q AS SELECT 1;\n\
             REFRESH MATERIALIZED VIEW public.mv;\nSELECT 'BEGIN;';\n",
        )
        .into_iter()
        .map(|(_, k)| k)
        .collect();
        use Kind::*;
        assert_eq!(
            kinds,
            vec![
                Transaction,
                Transaction,
                Transaction,
                Transaction,
                ForeignTransaction,
                ForeignTransaction,
                ForeignTransaction,
                ForeignTransaction,
                ForeignTransaction,
                ForeignTransaction,
                Other,
                Refresh,
                Other
            ]
        );
    }

    #[test]
    fn copy_from_stdin_stops_the_line_and_needs_stdin_last() {
        let mut s = Splitter::new();
        let mut out = Vec::new();
        s.push_line(b"COPY public.\"t\nx\" (id, \"we\n", &mut out)
            .unwrap();
        assert!(out.is_empty());
        s.push_line(b"ird\") FROM stdin;\n", &mut out).unwrap();
        match &out[0] {
            Item::Statement(st) => {
                assert_eq!(st.kind, Kind::CopyFromStdin);
                assert_eq!(st.line, 1);
                assert_eq!(
                    st.text,
                    "COPY public.\"t\nx\" (id, \"we\nird\") FROM stdin;"
                );
            }
            other => panic!("{other:?}"),
        }
        let kinds: Vec<Kind> =
            statements("COPY t TO stdout;\nCOPY t FROM stdin WITH (format csv);\n")
                .into_iter()
                .map(|(_, k)| k)
                .collect();
        assert_eq!(kinds, vec![Kind::Other, Kind::Other]);
        let mut s = Splitter::new();
        let err = s
            .push_line(b"COPY t FROM stdin; SELECT 1;\n", &mut Vec::new())
            .unwrap_err();
        assert!(err.contains("after COPY"), "{err}");
    }

    #[test]
    fn meta_commands_only_at_statement_starts() {
        let items = split("\\restrict abc\nSELECT 1;\n\\unrestrict abc\n");
        assert_eq!(
            items[0],
            Item::Meta {
                text: "\\restrict abc".into(),
                line: 1
            }
        );
        assert!(matches!(items[2], Item::Meta { line: 3, .. }));
        let mut s = Splitter::new();
        assert!(
            s.push_line(b"SELECT 1 \\g\n", &mut Vec::new())
                .unwrap_err()
                .contains("backslash")
        );
    }

    #[test]
    fn standard_conforming_strings_off_makes_backslashes_escapes() {
        let got = statements(
            "SET standard_conforming_strings = off;\nSELECT 'a\\';b';\nSET standard_conforming_strings TO 'on';\nSELECT 'c\\';\n",
        );
        let texts: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "SET standard_conforming_strings = off;",
                "SELECT 'a\\';b';",
                "SET standard_conforming_strings TO 'on';",
                "SELECT 'c\\';"
            ]
        );
    }

    #[test]
    fn an_unfinished_script_is_an_error() {
        let mut s = Splitter::new();
        s.push_line(b"SELECT '\n", &mut Vec::new()).unwrap();
        assert!(s.finish().is_err());
        let mut s = Splitter::new();
        s.push_line(b"SELECT 1\n", &mut Vec::new()).unwrap();
        assert!(s.finish().is_err());
    }

    /// Scripts generated from statements with hostile names and values,
    /// split here and by PostgreSQL's own parser: the same statements.
    #[test]
    fn splits_as_the_postgresql_parser_does() {
        let mut rng = Lcg(0x5eed);
        for round in 0..1500 {
            let n = 1 + rng.below(7);
            let script: String = (0..n).map(|_| statement(&mut rng)).collect();
            let ours: Vec<String> = statements(&script)
                .into_iter()
                .map(|(t, _)| deparsed(&t))
                .collect();
            let theirs: Vec<String> = pg_query::split_with_parser(&script)
                .unwrap_or_else(|e| panic!("round {round}: {e}\n{script}"))
                .into_iter()
                .map(deparsed)
                .collect();
            assert_eq!(ours, theirs, "round {round}:\n{script}");
        }
    }

    fn deparsed(stmt: &str) -> String {
        pg_query::parse(stmt)
            .and_then(|p| p.deparse())
            .unwrap_or_else(|e| panic!("{e}: {stmt:?}"))
    }

    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) as usize) % n
        }
    }

    const NASTY: &[&str] = &[
        ";",
        "'",
        "\"",
        "$",
        "$$",
        "\\",
        "\n",
        "--",
        "/*",
        "*/",
        "(",
        ")",
        "BEGIN",
        "END",
        "CASE",
        "COPY t FROM stdin;",
        "\\.",
        "\\restrict k",
        "é",
        "a",
        " ",
        "\t",
        "$x$",
        "E'",
    ];

    fn text(rng: &mut Lcg) -> String {
        (0..rng.below(6))
            .map(|_| NASTY[rng.below(NASTY.len())])
            .collect()
    }

    fn ident(rng: &mut Lcg) -> String {
        format!("\"x{}\"", text(rng).replace('"', "\"\""))
    }

    fn literal(rng: &mut Lcg) -> String {
        let t = text(rng);
        match rng.below(3) {
            0 => format!("'{}'", t.replace('\'', "''")),
            1 => format!("E'{}'", t.replace('\\', "\\\\").replace('\'', "\\'")),
            _ => {
                let tag = ["", "q", "body"]
                    .into_iter()
                    .find(|g| !t.contains(&format!("${g}")))
                    .unwrap_or("zz9");
                format!("${tag}${t}${tag}$")
            }
        }
    }

    fn statement(rng: &mut Lcg) -> String {
        let (a, b, l) = (ident(rng), ident(rng), literal(rng));
        let sep = if rng.below(2) == 0 { "\n" } else { " " };
        match rng.below(10) {
            0 => format!("SELECT {l} AS {a};{sep}"),
            1 => format!("CREATE TABLE {a}.{b} ({a} int, c text DEFAULT {l});{sep}"),
            2 => format!("COMMENT ON TABLE {a} IS {l};{sep}"),
            3 => format!("CREATE FUNCTION {a}() RETURNS text LANGUAGE sql AS {l};{sep}"),
            4 => format!(
                "CREATE FUNCTION {a}(a int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n SELECT a;\n SELECT CASE WHEN a > 0 THEN {l}::int ELSE 2 END;\nEND;{sep}"
            ),
            5 => format!(
                "CREATE OR REPLACE PROCEDURE {a}() LANGUAGE sql BEGIN ATOMIC INSERT INTO {b} VALUES ({l}); END;{sep}"
            ),
            6 => format!(
                "/* {} */ SELECT 1 -- {}\n;{sep}",
                text(rng).replace("*/", "").replace("/*", ""),
                text(rng).replace('\n', "")
            ),
            7 => format!(
                "CREATE RULE r AS ON INSERT TO {a} DO ALSO (INSERT INTO {b} VALUES ({l}); NOTIFY c);{sep}"
            ),
            8 => format!(
                "CREATE FUNCTION {a}.begin(atomic int) RETURNS int LANGUAGE sql AS {l};{sep}CREATE PROCEDURE {b}.atomic() LANGUAGE sql BEGIN ATOMIC SELECT 1 AS begin; END;{sep}"
            ),
            _ => format!("SELECT ({l}, (1))::text, $1;{sep}"),
        }
    }
}
