//! Where migrations come from: the native layout
//! (`<version>_<name>/{up,down,verify}.sql`), Prisma
//! (`<ts>_<name>/migration.sql`) and Flyway (`V<version>__<name>.sql`).
//! Prisma and Flyway migrations have no down.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use shipsafe_config::MigrationFormat;

use crate::error::MigrateError;
use crate::script::Script;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Native,
    Prisma,
    Flyway,
}

#[derive(Debug, Clone)]
pub struct Migration {
    pub version: String,
    pub name: String,
    pub layout: Layout,
    pub up: Script,
    pub down: Option<Script>,
    pub verify: Option<Script>,
}

impl Migration {
    /// `-- shipsafe:irreversible` in up.sql: there is deliberately no way back.
    pub fn irreversible(&self) -> bool {
        self.up.has_marker("irreversible")
    }

    /// Runs statement by statement outside a transaction: marked
    /// `-- shipsafe:no-transaction`, or containing a statement that cannot
    /// run in one (`CREATE INDEX CONCURRENTLY`, `VACUUM`, ...).
    pub fn no_transaction(&self) -> bool {
        self.up.has_marker("no-transaction")
            || self.up.statements().iter().any(|s| s.needs_autocommit())
    }

    pub fn checksum(&self) -> String {
        self.up.checksum()
    }

    pub fn label(&self) -> String {
        format!("{}_{}", self.version, self.name)
    }
}

/// Orders versions numerically part by part (`1.10` after `1.9`,
/// `20260201120000` after `20260101000000`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |v: &str| -> Vec<u128> {
        v.split(['.', '_'])
            .map(|p| p.parse::<u128>().unwrap_or(0))
            .collect()
    };
    let (pa, pb) = (parts(a), parts(b));
    for i in 0..pa.len().max(pb.len()) {
        let x = pa.get(i).copied().unwrap_or(0);
        let y = pb.get(i).copied().unwrap_or(0);
        if x != y {
            return x.cmp(&y);
        }
    }
    a.cmp(b)
}

fn read(path: &Path) -> Result<Script, MigrateError> {
    Script::read(path).map_err(|source| MigrateError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn optional(path: PathBuf) -> Result<Option<Script>, MigrateError> {
    if path.is_file() {
        read(&path).map(Some)
    } else {
        Ok(None)
    }
}

fn layout_err(path: &Path, message: impl Into<String>) -> MigrateError {
    MigrateError::Layout {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Splits `20260201120000_customer_code` into version and name.
fn version_and_name(dir_name: &str) -> Option<(String, String)> {
    let (v, n) = dir_name.split_once('_')?;
    (!v.is_empty() && v.chars().all(|c| c.is_ascii_digit())).then(|| (v.to_string(), n.to_string()))
}

/// Which layout a folder holds, judged from its contents.
pub fn detect(dir: &Path) -> Option<Layout> {
    let rd = std::fs::read_dir(dir).ok()?;
    let mut found = None;
    for e in rd.flatten() {
        let p = e.path();
        if p.join("up.sql").is_file() {
            return Some(Layout::Native);
        }
        if p.join("migration.sql").is_file() {
            found = Some(Layout::Prisma);
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if found.is_none() && name.starts_with('V') && name.contains("__") && name.ends_with(".sql")
        {
            found = Some(Layout::Flyway);
        }
    }
    found
}

/// Reads every migration in `dir`, sorted by version. A missing folder
/// holds no migrations.
pub fn discover(dir: &Path, format: MigrationFormat) -> Result<Vec<Migration>, MigrateError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let layout = match format {
        MigrationFormat::Native => Layout::Native,
        MigrationFormat::Prisma => Layout::Prisma,
        MigrationFormat::Flyway => Layout::Flyway,
        MigrationFormat::Auto => match detect(dir) {
            Some(l) => l,
            None => return Ok(Vec::new()),
        },
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| MigrateError::Read {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let mut out = Vec::new();
    for p in entries {
        let file_name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if file_name.starts_with('.') {
            continue;
        }
        match layout {
            Layout::Native | Layout::Prisma if p.is_dir() => {
                let Some((version, name)) = version_and_name(&file_name) else {
                    return Err(layout_err(
                        &p,
                        "migration folders are named <version>_<name> with a numeric version, e.g. 20260201120000_customer_code (create one with `shipsafe new NAME`)",
                    ));
                };
                let up_name = if layout == Layout::Native {
                    "up.sql"
                } else {
                    "migration.sql"
                };
                let up = p.join(up_name);
                if !up.is_file() {
                    return Err(layout_err(&p, format!("has no {up_name}")));
                }
                let (down, verify) = if layout == Layout::Native {
                    (
                        optional(p.join("down.sql"))?,
                        optional(p.join("verify.sql"))?,
                    )
                } else {
                    (None, None)
                };
                out.push(Migration {
                    version,
                    name,
                    layout,
                    up: read(&up)?,
                    down,
                    verify,
                });
            }
            Layout::Flyway if p.is_file() && file_name.ends_with(".sql") => {
                let Some(rest) = file_name.strip_prefix('V') else {
                    continue; // R__ repeatable and U undo scripts are not versioned migrations
                };
                let Some((version, name)) = rest.trim_end_matches(".sql").split_once("__") else {
                    return Err(layout_err(
                        &p,
                        "Flyway files are named V<version>__<name>.sql",
                    ));
                };
                out.push(Migration {
                    version: version.replace('_', "."),
                    name: name.to_string(),
                    layout,
                    up: read(&p)?,
                    down: None,
                    verify: None,
                });
            }
            _ => {}
        }
    }
    out.sort_by(|a, b| compare_versions(&a.version, &b.version));
    for w in out.windows(2) {
        if compare_versions(&w[0].version, &w[1].version) == Ordering::Equal {
            return Err(layout_err(
                dir,
                format!(
                    "two migrations share version {}: {} and {}",
                    w[0].version, w[0].name, w[1].name
                ),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn reads_native_prisma_and_flyway_layouts() {
        let d = tempfile::tempdir().unwrap();
        put(d.path(), "n/20260201120000_b/up.sql", "select 2;");
        put(d.path(), "n/20260101000000_a/up.sql", "select 1;");
        put(d.path(), "n/20260101000000_a/down.sql", "select -1;");
        put(d.path(), "n/20260101000000_a/verify.sql", "select true;");
        let n = discover(&d.path().join("n"), MigrationFormat::Auto).unwrap();
        assert_eq!(
            n.iter().map(|m| m.version.as_str()).collect::<Vec<_>>(),
            ["20260101000000", "20260201120000"]
        );
        assert!(n[0].down.is_some() && n[0].verify.is_some() && n[1].down.is_none());

        put(
            d.path(),
            "p/20260105_init/migration.sql",
            "create table t (id int);",
        );
        let p = discover(&d.path().join("p"), MigrationFormat::Auto).unwrap();
        assert_eq!((p[0].layout, p[0].name.as_str()), (Layout::Prisma, "init"));

        put(d.path(), "f/V1__init.sql", "select 1;");
        put(d.path(), "f/V1.10__later.sql", "select 3;");
        put(d.path(), "f/V1.9__middle.sql", "select 2;");
        put(d.path(), "f/R__views.sql", "select 0;");
        let f = discover(&d.path().join("f"), MigrationFormat::Auto).unwrap();
        assert_eq!(
            f.iter().map(|m| m.version.as_str()).collect::<Vec<_>>(),
            ["1", "1.9", "1.10"]
        );
    }

    #[test]
    fn layout_mistakes_name_the_folder() {
        let d = tempfile::tempdir().unwrap();
        put(d.path(), "m/20260101000000_a/up.sql", "select 1;");
        put(d.path(), "m/20260101000000_b/up.sql", "select 1;");
        let e = discover(&d.path().join("m"), MigrationFormat::Native)
            .unwrap_err()
            .to_string();
        assert!(e.contains("share version 20260101000000"), "{e}");
        put(d.path(), "x/20260101000000_a/up.sql", "select 1;");
        put(d.path(), "x/notes/up.sql", "select 1;");
        let e = discover(&d.path().join("x"), MigrationFormat::Native)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x/notes") && e.contains("<version>_<name>"),
            "{e}"
        );
    }

    #[test]
    fn markers_and_autocommit_detection() {
        let d = tempfile::tempdir().unwrap();
        put(
            d.path(),
            "m/1_a/up.sql",
            "-- shipsafe:irreversible\ndrop table x;",
        );
        put(
            d.path(),
            "m/2_b/up.sql",
            "create index concurrently i on t (x);",
        );
        put(
            d.path(),
            "m/3_c/up.sql",
            "-- shipsafe:no-transaction\nselect 1;",
        );
        put(
            d.path(),
            "m/4_d/up.sql",
            "create index i on t (x); -- shipsafe:no-transaction is only a marker on its own line",
        );
        let m = discover(&d.path().join("m"), MigrationFormat::Native).unwrap();
        assert!(m[0].irreversible() && !m[0].no_transaction());
        assert!(m[1].no_transaction() && m[2].no_transaction() && !m[3].no_transaction());
    }
}
