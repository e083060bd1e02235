//! `shipsafe init`: a starter `shipsafe.toml` that fits the project's
//! migration tool, and a `.gitignore` entry for the state folder.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::CoreError;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Detected {
    /// `migrations/<version>_<name>/up.sql`
    Native,
    /// `prisma/migrations/<ts>_<name>/migration.sql`
    Prisma,
    /// `V<version>__<name>.sql`
    Flyway,
    /// `alembic.ini` (external mode).
    Alembic,
    /// Flask-Migrate: alembic inside `migrations/` (external mode).
    FlaskMigrate,
    /// `manage.py` (external mode).
    Django,
    /// `bin/rails` (external mode).
    Rails,
    /// Nothing found: native layout, to be created with `shipsafe new`.
    None,
}

#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    pub tool: Detected,
    /// Folder holding the migrations, relative to the project.
    pub dir: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    pub config: String,
    pub migrations: Detection,
    pub gitignore: String,
    pub gitignore_updated: bool,
}

const FLYWAY_DIRS: &[&str] = &[
    "migrations",
    "db/migration",
    "src/main/resources/db/migration",
    "sql",
    "flyway/sql",
];

fn has_flyway_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.filter_map(Result::ok).any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".sql")
                && name
                    .strip_prefix('V')
                    .and_then(|r| r.split_once("__"))
                    .is_some_and(|(v, _)| {
                        !v.is_empty()
                            && v.chars()
                                .all(|c| c.is_ascii_digit() || c == '.' || c == '_')
                    })
        })
    })
}

fn has_native_layout(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.filter_map(Result::ok)
            .any(|e| e.path().join("up.sql").is_file())
    })
}

/// Looks at the project folder to guess its migration tool.
pub fn detect(root: &Path) -> Detection {
    let found = |tool, dir: &str| Detection {
        tool,
        dir: Some(dir.to_string()),
    };
    if root.join("migrations/alembic.ini").is_file()
        || (root.join("migrations/env.py").is_file() && root.join("migrations/versions").is_dir())
    {
        return found(Detected::FlaskMigrate, "migrations");
    }
    if root.join("alembic.ini").is_file() {
        return Detection {
            tool: Detected::Alembic,
            dir: None,
        };
    }
    if root.join("manage.py").is_file() {
        return Detection {
            tool: Detected::Django,
            dir: None,
        };
    }
    if root.join("bin/rails").is_file() {
        return Detection {
            tool: Detected::Rails,
            dir: None,
        };
    }
    if root.join("prisma/migrations").is_dir() || root.join("prisma/schema.prisma").is_file() {
        return found(Detected::Prisma, "prisma/migrations");
    }
    if has_native_layout(&root.join("migrations")) {
        return found(Detected::Native, "migrations");
    }
    for d in FLYWAY_DIRS {
        if has_flyway_files(&root.join(d)) {
            return found(Detected::Flyway, d);
        }
    }
    Detection {
        tool: Detected::None,
        dir: None,
    }
}

fn migrations_section(d: &Detection) -> String {
    let dir = d.dir.as_deref().unwrap_or("migrations");
    match d.tool {
        Detected::Native | Detected::None => format!(
            "[migrations]\n\
             dir = \"{dir}\"                    # <version>_<name>/{{up,down,verify}}.sql; create with `shipsafe new NAME`\n\
             format = \"native\"\n"
        ),
        Detected::Prisma => format!(
            "[migrations]\n\
             # Prisma found: shipsafe reads {dir}/*/migration.sql and applies it.\n\
             tool = \"prisma\"\n\
             dir = \"{dir}\"\n\
             format = \"prisma\"\n"
        ),
        Detected::Flyway => format!("[migrations]\ndir = \"{dir}\"\nformat = \"flyway\"\n"),
        Detected::Alembic => preset(
            "alembic.ini found",
            "alembic",
            "the variable your env.py reads",
        ),
        Detected::FlaskMigrate => preset(
            "Flask-Migrate (migrations/alembic.ini) found",
            "flask-migrate",
            "the variable your app config reads",
        ),
        Detected::Django => preset(
            "manage.py found",
            "django",
            "the variable your settings.py reads",
        ),
        Detected::Rails => preset(
            "bin/rails found",
            "rails",
            "Rails reads DATABASE_URL itself",
        ),
    }
}

/// The `[migrations]` section of a preset (docs/adopt/<tool>.md).
fn preset(found: &str, tool: &str, url_note: &str) -> String {
    format!(
        "[migrations]\n\
         # {found}: shipsafe drives {tool} (external mode), lists its pending\n\
         # migrations and rolls back to the exact revision recorded before a deploy.\n\
         # See docs/adopt/{tool}.md.\n\
         tool = \"{tool}\"\n\
         # {url_note}: shipsafe sets it to the environment's URL for the tool's\n\
         # own commands only (never the URL variables of [environments]).\n\
         url_env = \"{APP_URL_VAR}\"\n"
    )
}

/// The variable `init` points production at: one of its own, never the
/// variable the app reads ([`APP_URL_VAR`]), so no local command of the app
/// reaches production.
pub const PRODUCTION_URL_VAR: &str = "PRODUCTION_DATABASE_URL";

/// The variable apps read their database URL from (Flask, Django, Rails,
/// Prisma, Heroku and most PaaS): the team's tool gets the target there.
pub const APP_URL_VAR: &str = "DATABASE_URL";

/// The variables the starter config reads, as a person exports them.
pub fn next_steps() -> String {
    format!(
        "Next: export LOCAL_DATABASE_URL, and {PRODUCTION_URL_VAR} for production (not {APP_URL_VAR}: that is the variable your app reads, so every local command of the app would run against production), then run `shipsafe status`.\n"
    )
}

/// The starter configuration for a project.
pub fn starter_config(project: &str, d: &Detection) -> String {
    let project = project.replace(['"', '\\'], "");
    format!(
        r#"# shipsafe configuration: see docs/configuration.md for every key.
# Secrets never go in this file: reference them as ${{VARIABLE}}.

[project]
name = "{project}"
state_dir = ".shipsafe"                 # run history and audit log (keep it out of git)

[environments.local]
database_url = "${{LOCAL_DATABASE_URL}}"
protection = "open"                     # open | guarded | protected

# [environments.staging]
# database_url = "${{STAGING_DATABASE_URL}}"
# app_url = "https://staging.example.com"
# protection = "guarded"

# Production has a variable of its own: DATABASE_URL is what the app itself
# reads, so with production there every local command of the app (a
# migration, a shell, a seed script) would run against production.
[environments.production]
database_url = "${{{PRODUCTION_URL_VAR}}}"
protection = "protected"
# app_url = "https://app.example.com"
# window = "Sat 22:00-02:00 Europe/Berlin"
# git_branch = "main"

{migrations}lock_timeout = "3s"
statement_timeout = "30min"
lock_retries = 5

[backups]
storage = "file://.shipsafe/backups"
compression_level = 1                   # zstd, multithreaded
retention = {{ keep_last = 10, keep_daily = 30, keep_monthly = 12 }}

[rehearsal]
clone = "scratch"

# [[checks]]
# name = "at least one active admin"
# sql = "select count(*) from users where role = 'admin' and is_active"
# expect = ">= 1"
"#,
        migrations = migrations_section(d)
    )
}

/// Writes `shipsafe.toml` and the `.gitignore` entry in `root`. An existing
/// config is never overwritten unless `force` is set.
pub fn init(root: &Path, force: bool) -> Result<InitReport, CoreError> {
    let config_path = root.join(shipsafe_config::load::FILE_NAME);
    if config_path.exists() && !force {
        return Err(CoreError::Usage(format!(
            "{} already exists; shipsafe init never overwrites it (pass --force to replace it)",
            config_path.display()
        )));
    }
    let detection = detect(root);
    let project = root
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "my-app".into());
    let text = starter_config(&project, &detection);
    write_atomic(&config_path, &text)?;
    let gitignore = root.join(".gitignore");
    let gitignore_updated = ensure_ignored(&gitignore, ".shipsafe/")?;
    Ok(InitReport {
        config: config_path.display().to_string(),
        migrations: detection,
        gitignore: gitignore.display().to_string(),
        gitignore_updated,
    })
}

fn write_atomic(path: &Path, text: &str) -> Result<(), CoreError> {
    let tmp: PathBuf = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text)
        .map_err(|e| CoreError::io(format!("cannot write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| CoreError::io(format!("cannot write {}", path.display()), e))
}

/// Adds `entry` to a .gitignore unless a line already covers it.
fn ensure_ignored(gitignore: &Path, entry: &str) -> Result<bool, CoreError> {
    let existing = match std::fs::read_to_string(gitignore) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(CoreError::io(
                format!("cannot read {}", gitignore.display()),
                e,
            ));
        }
    };
    let bare = entry.trim_end_matches('/');
    if existing
        .lines()
        .map(str::trim)
        .any(|l| l == entry || l == bare || l == format!("/{entry}") || l == format!("/{bare}"))
    {
        return Ok(false);
    }
    let mut text = existing;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("# shipsafe state (run history, audit log, local backups)\n");
    text.push_str(entry);
    text.push('\n');
    std::fs::write(gitignore, text)
        .map_err(|e| CoreError::io(format!("cannot write {}", gitignore.display()), e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, "").unwrap();
    }

    #[test]
    fn detects_each_layout() {
        let cases: &[(&[&str], Detected, Option<&str>)] = &[
            (
                &["migrations/20260101000000_init/up.sql"],
                Detected::Native,
                Some("migrations"),
            ),
            (
                &["prisma/migrations/20260101_init/migration.sql"],
                Detected::Prisma,
                Some("prisma/migrations"),
            ),
            (&["alembic.ini", "alembic/env.py"], Detected::Alembic, None),
            (
                &["migrations/alembic.ini", "migrations/env.py"],
                Detected::FlaskMigrate,
                Some("migrations"),
            ),
            (&["manage.py", "shop/models.py"], Detected::Django, None),
            (&["bin/rails", "db/migrate/.keep"], Detected::Rails, None),
            (
                &["prisma/schema.prisma"],
                Detected::Prisma,
                Some("prisma/migrations"),
            ),
            (
                &["db/migration/V1__init.sql", "db/migration/V1.1__more.sql"],
                Detected::Flyway,
                Some("db/migration"),
            ),
            (
                &["migrations/V2__x.sql"],
                Detected::Flyway,
                Some("migrations"),
            ),
            (&["README.md"], Detected::None, None),
        ];
        for (files, tool, dir) in cases {
            let d = tempfile::tempdir().unwrap();
            for f in *files {
                touch(d.path(), f);
            }
            let got = detect(d.path());
            assert_eq!(&got.tool, tool, "{files:?}");
            assert_eq!(got.dir.as_deref(), *dir, "{files:?}");
        }
    }

    #[test]
    fn every_starter_config_parses_strictly_with_its_preset() {
        use shipsafe_config::MigrationTool as T;
        for (tool, dir, preset, external) in [
            (Detected::Native, Some("migrations"), None, false),
            (
                Detected::Prisma,
                Some("prisma/migrations"),
                Some(T::Prisma),
                false,
            ),
            (Detected::Flyway, Some("db/migration"), None, false),
            (Detected::Alembic, None, Some(T::Alembic), true),
            (
                Detected::FlaskMigrate,
                Some("migrations"),
                Some(T::FlaskMigrate),
                true,
            ),
            (Detected::Django, None, Some(T::Django), true),
            (Detected::Rails, None, Some(T::Rails), true),
            (Detected::None, None, None, false),
        ] {
            let d = Detection {
                tool: tool.clone(),
                dir: dir.map(str::to_string),
            };
            let text = starter_config("demo \"quoted\"", &d);
            let parsed = shipsafe_config::Config::parse(Path::new("shipsafe.toml"), &text);
            let config = parsed.unwrap_or_else(|e| panic!("{tool:?}: {e}\n{text}"));
            let m = &config.file().migrations;
            assert_eq!(m.tool, preset, "{tool:?}\n{text}");
            assert_eq!(m.is_external(), external, "{tool:?}");
            let production = config.environment("production").unwrap();
            let vars = production.config.database_url.get_ref().variables();
            assert_eq!(vars, [PRODUCTION_URL_VAR], "{tool:?}");
            assert_ne!(
                vars[0], m.url_env,
                "{tool:?}: production is not the app's variable"
            );
        }
    }

    #[test]
    fn gitignore_entry_is_added_once() {
        let d = tempfile::tempdir().unwrap();
        let gi = d.path().join(".gitignore");
        fs::write(&gi, "target").unwrap();
        assert!(ensure_ignored(&gi, ".shipsafe/").unwrap());
        assert!(!ensure_ignored(&gi, ".shipsafe/").unwrap());
        let text = fs::read_to_string(&gi).unwrap();
        assert!(text.starts_with("target\n"));
        assert_eq!(text.matches(".shipsafe/").count(), 1);
    }
}
