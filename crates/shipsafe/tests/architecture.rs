//! The shape of the code, checked over the sources so it stays true:
//! - no circle of imports among the files of any crate (a file's module
//!   uses another's items: `crate::a::b`, `super::x`, `self::y`, a child
//!   module's name; `mod x;` declarations and `#[cfg(test)]` items do not
//!   count);
//! - in the protocol crate, no command uses another command, and no step
//!   uses a command;
//! - no file of the protocol crate is longer than [`MAX_LINES`], except
//!   those listed in [`LONG_FILES`] with the reason.
//!
//! Crate boundaries keep the rest (readiness, serve and demo above the
//! protocol; the engines below it): Cargo refuses a circle between crates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use proc_macro2::{Delimiter, TokenStream, TokenTree};

const MAX_LINES: usize = 700;

/// Protocol files allowed to be longer, and why.
const LONG_FILES: &[(&str, &str)] = &[];

type ModPath = Vec<String>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("the workspace folder")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("readable source folder") {
        let p = e.expect("directory entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`; `lib.rs`/`main.rs` the root.
fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).expect("file under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("file name");
    match last.as_str() {
        "mod.rs" => {}
        "lib.rs" | "main.rs" if parts.is_empty() => {}
        other => parts.push(other.trim_end_matches(".rs").to_string()),
    }
    parts
}

/// The file's tokens without `#[cfg(test)]` items.
fn tokens(text: &str, file: &Path) -> Vec<TokenTree> {
    let stream = TokenStream::from_str(text)
        .unwrap_or_else(|e| panic!("{} does not tokenize: {e}", file.display()));
    let all: Vec<TokenTree> = stream.into_iter().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < all.len() {
        let is_test_attr = matches!(&all[i], TokenTree::Punct(p) if p.as_char() == '#')
            && matches!(all.get(i + 1), Some(TokenTree::Group(g))
                if g.delimiter() == Delimiter::Bracket
                    && g.stream().to_string().replace(' ', "") == "cfg(test)");
        if is_test_attr {
            // Skip the attribute and the item up to its body (or `;`).
            i += 2;
            while i < all.len() {
                match &all[i] {
                    TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => break,
                    TokenTree::Punct(p) if p.as_char() == ';' => break,
                    _ => i += 1,
                }
            }
            i += 1;
            continue;
        }
        out.push(all[i].clone());
        i += 1;
    }
    out
}

fn is_path_sep(t: &[TokenTree], i: usize) -> bool {
    matches!((t.get(i), t.get(i + 1)), (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
        if a.as_char() == ':' && b.as_char() == ':')
}

/// Every path in `t` (use trees expanded), as its segments.
fn paths(t: &[TokenTree], out: &mut Vec<Vec<String>>) {
    let mut i = 0;
    while i < t.len() {
        match &t[i] {
            TokenTree::Group(g) => {
                let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                paths(&inner, out);
                i += 1;
            }
            TokenTree::Ident(id) => {
                // A path starts at an identifier not preceded by `::`.
                let preceded = i >= 2 && is_path_sep(t, i - 2);
                if preceded || !is_path_sep(t, i + 1) {
                    i += 1;
                    continue;
                }
                let mut segs = vec![id.to_string()];
                let mut j = i + 1;
                while is_path_sep(t, j) {
                    match t.get(j + 2) {
                        Some(TokenTree::Ident(next)) => {
                            segs.push(next.to_string());
                            j += 3;
                        }
                        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                            use_group(&segs, g.stream(), out);
                            j += 3;
                            break;
                        }
                        _ => break,
                    }
                }
                out.push(segs);
                i = j;
            }
            _ => i += 1,
        }
    }
}

/// `prefix::{a, b::c, d::{e}}`.
fn use_group(prefix: &[String], stream: TokenStream, out: &mut Vec<Vec<String>>) {
    let inner: Vec<TokenTree> = stream.into_iter().collect();
    for part in inner.split(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == ',')) {
        let mut found = Vec::new();
        paths(part, &mut found);
        if let Some(TokenTree::Ident(first)) = part.first()
            && (found.is_empty() || found[0].first() != Some(&first.to_string()))
        {
            found.insert(0, vec![first.to_string()]);
        }
        for p in found {
            let mut full = prefix.to_vec();
            full.extend(p);
            out.push(full);
        }
    }
}

/// The deepest module `path`, used from module `from`, names.
fn resolve(from: &ModPath, path: &[String], modules: &BTreeSet<ModPath>) -> Option<ModPath> {
    let (mut at, rest): (ModPath, &[String]) = match path.first()?.as_str() {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (from.clone(), &path[1..]),
        "super" => {
            let mut at = from.clone();
            let mut k = 0;
            while path.get(k).is_some_and(|s| s == "super") {
                at.pop()?;
                k += 1;
            }
            (at, &path[k..])
        }
        first => {
            let mut child = from.clone();
            child.push(first.to_string());
            if !modules.contains(&child) {
                return None;
            }
            (child, &path[1..])
        }
    };
    for seg in rest {
        let mut next = at.clone();
        next.push(seg.clone());
        if modules.contains(&next) {
            at = next;
        } else {
            break;
        }
    }
    Some(at)
}

struct Crate {
    name: String,
    files: BTreeMap<ModPath, PathBuf>,
    edges: BTreeMap<ModPath, BTreeSet<ModPath>>,
}

fn crates() -> Vec<Crate> {
    let mut out = Vec::new();
    let root = workspace().join("crates");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("crates folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("src").is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let src = dir.join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let by_module: BTreeMap<ModPath, PathBuf> = files
            .iter()
            .map(|f| (module_of(&src, f), f.clone()))
            .collect();
        let modules: BTreeSet<ModPath> = by_module.keys().cloned().collect();
        let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
        for (m, f) in &by_module {
            let text = std::fs::read_to_string(f).expect("readable source");
            let mut found = Vec::new();
            paths(&tokens(&text, f), &mut found);
            let targets = edges.entry(m.clone()).or_default();
            for p in found {
                if let Some(t) = resolve(m, &p, &modules)
                    && &t != m
                {
                    targets.insert(t);
                }
            }
        }
        out.push(Crate {
            name: dir
                .file_name()
                .expect("crate folder name")
                .to_string_lossy()
                .into_owned(),
            files: by_module,
            edges,
        });
    }
    out
}

/// Strongly connected components with more than one module (Tarjan).
fn circles(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    struct T<'a> {
        edges: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<&'a ModPath, usize>,
        low: BTreeMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        on: BTreeSet<&'a ModPath>,
        next: usize,
        out: Vec<Vec<ModPath>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a ModPath) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        if let Some(ws) = t.edges.get(v) {
            for w in ws {
                let Some((w, _)) = t.edges.get_key_value(w) else {
                    continue;
                };
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let l = t.low[v].min(t.low[w]);
                    t.low.insert(v, l);
                } else if t.on.contains(w) {
                    let l = t.low[v].min(t.index[w]);
                    t.low.insert(v, l);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.push(w.clone());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn show(c: &Crate, m: &ModPath) -> String {
    c.files[m]
        .strip_prefix(workspace())
        .unwrap_or(&c.files[m])
        .display()
        .to_string()
}

#[test]
fn no_crate_has_an_import_circle_among_its_files() {
    let mut problems = Vec::new();
    for c in crates() {
        for scc in circles(&c.edges) {
            let names: Vec<String> = scc.iter().map(|m| show(&c, m)).collect();
            problems.push(format!("{}: {}", c.name, names.join(" <-> ")));
        }
    }
    assert!(
        problems.is_empty(),
        "import circles:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn no_command_uses_another_command_and_no_step_uses_a_command() {
    let all = crates();
    let protocol = all
        .iter()
        .find(|c| c.name == "shipsafe-protocol")
        .expect("the protocol crate");
    let under = |m: &ModPath, top: &str| m.first().is_some_and(|s| s == top) && m.len() > 1;
    let mut problems = Vec::new();
    for (from, targets) in &protocol.edges {
        for to in targets {
            let command_to_command = under(from, "commands") && under(to, "commands");
            let step_to_command =
                under(from, "steps") && to.first().is_some_and(|s| s == "commands");
            if command_to_command || step_to_command {
                problems.push(format!(
                    "{} uses {}",
                    show(protocol, from),
                    show(protocol, to)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The rule is about something: there are commands and steps to check.
    assert!(
        protocol
            .files
            .keys()
            .filter(|m| under(m, "commands"))
            .count()
            >= 8
    );
    assert!(protocol.files.keys().filter(|m| under(m, "steps")).count() >= 8);
}

#[test]
fn protocol_files_stay_short() {
    let all = crates();
    let protocol = all
        .iter()
        .find(|c| c.name == "shipsafe-protocol")
        .expect("the protocol crate");
    let mut long = Vec::new();
    for (m, f) in &protocol.files {
        let lines = std::fs::read_to_string(f).expect("source").lines().count();
        let name = show(protocol, m);
        if lines > MAX_LINES && !LONG_FILES.iter().any(|(n, _)| name.ends_with(n)) {
            long.push(format!("{name}: {lines} lines"));
        }
    }
    assert!(
        long.is_empty(),
        "longer than {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checker_sees_circles_and_use_trees() {
    let modules: BTreeSet<ModPath> = [vec![], vec!["a".to_string()], vec!["a".into(), "b".into()]]
        .into_iter()
        .collect();
    let mut found = Vec::new();
    let text = "use crate::a::{b::{X, Y}, Z}; fn f() { super::q(); b::g(); } #[cfg(test)] mod tests { use crate::a::b; }";
    paths(&tokens(text, Path::new("x.rs")), &mut found);
    let from = vec!["a".to_string()];
    let resolved: BTreeSet<ModPath> = found
        .iter()
        .filter_map(|p| resolve(&from, p, &modules))
        .collect();
    assert!(
        resolved.contains(&vec!["a".to_string(), "b".to_string()]),
        "{found:?}"
    );
    assert!(
        resolved.contains(&vec![]),
        "super:: from a is the root: {found:?}"
    );
    let edges: BTreeMap<ModPath, BTreeSet<ModPath>> = [
        (
            vec!["a".to_string()],
            [vec!["b".to_string()]].into_iter().collect(),
        ),
        (
            vec!["b".to_string()],
            [vec!["a".to_string()]].into_iter().collect(),
        ),
        (
            vec!["c".to_string()],
            [vec!["a".to_string()]].into_iter().collect(),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        circles(&edges),
        vec![vec![vec!["a".to_string()], vec!["b".to_string()]]]
    );
}
