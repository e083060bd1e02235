//! What the repository itself shows: start-up commands that migrate on
//! boot (they bypass backup, rehearsal and rollback), and secrets written
//! into tracked files or into shipsafe.toml.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// A line of a file that matched, with why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Hit {
    /// Relative to the project folder.
    pub file: String,
    pub line: usize,
    pub what: String,
}

impl Hit {
    pub fn display(&self) -> String {
        format!("{}:{} ({})", self.file, self.line, self.what)
    }
}

/// Commands that apply migrations.
const MIGRATE_COMMANDS: &[&str] = &[
    "prisma migrate deploy",
    "prisma db push",
    "alembic upgrade",
    "flask db upgrade",
    "db upgrade",
    "manage.py migrate",
    "django-admin migrate",
    "rails db:migrate",
    "rake db:migrate",
    "db:migrate",
    "knex migrate:latest",
    "sequelize db:migrate",
    "typeorm migration:run",
    "goose up",
    "migrate up",
    "npm run migrate",
    "yarn migrate",
    "shipsafe migrate",
];

/// Files where a command runs each time the app starts.
fn is_start_file(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let lower = name.to_ascii_lowercase();
    lower == "procfile"
        || lower.starts_with("dockerfile")
        || lower.ends_with(".dockerfile")
        || lower == "docker-compose.yml"
        || lower == "docker-compose.yaml"
        || lower == "compose.yml"
        || lower == "compose.yaml"
        || lower == "package.json"
        || lower == "fly.toml"
        || lower == "render.yaml"
        || lower == "app.json"
        || lower == "railway.json"
        || lower == "railway.toml"
        || lower == "nixpacks.toml"
        || ((lower.contains("entrypoint") || lower.contains("start") || lower.contains("boot"))
            && (lower.ends_with(".sh") || !lower.contains('.')))
}

/// Start-up files (Procfile, Dockerfile CMD/ENTRYPOINT, compose command,
/// package.json start scripts, entrypoint scripts) that run a migration.
pub fn migrate_on_boot(root: &Path) -> Vec<Hit> {
    let mut hits = Vec::new();
    for rel in files(root) {
        if !is_start_file(&rel) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(root.join(&rel)) else {
            continue;
        };
        let lower_name = rel.to_ascii_lowercase();
        let is_package = lower_name.ends_with("package.json");
        for (i, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.starts_with('#') || l.starts_with("//") {
                continue;
            }
            // package.json: only the scripts that run when the app starts.
            if is_package
                && ![
                    "\"start\"",
                    "\"prestart\"",
                    "\"start:prod\"",
                    "\"postinstall\"",
                ]
                .iter()
                .any(|k| l.starts_with(k))
            {
                continue;
            }
            // Dockerfile: RUN happens at build time, against no database.
            if lower_name.contains("dockerfile")
                && !(l.starts_with("CMD") || l.starts_with("ENTRYPOINT"))
            {
                continue;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(cmd) = MIGRATE_COMMANDS.iter().find(|c| lower.contains(*c)) {
                hits.push(Hit {
                    file: rel.clone(),
                    line: i + 1,
                    what: format!("runs `{cmd}`"),
                });
            }
        }
    }
    hits
}

/// Tracked files that hold a secret: private keys, cloud keys, database
/// URLs with a password, committed `.env` files with values.
pub fn committed_secrets(root: &Path) -> Vec<Hit> {
    let mut hits = Vec::new();
    for rel in files(root) {
        let name = rel.rsplit('/').next().unwrap_or(&rel).to_ascii_lowercase();
        if name == "shipsafe.toml" {
            // Its own item, with the config's meaning of each key.
            continue;
        }
        let path = root.join(&rel);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.len() > 1 << 20 {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let dotenv = name == ".env" || (name.starts_with(".env.") && !name.ends_with("example"));
        for (i, line) in text.lines().enumerate() {
            if let Some(what) = secret_in_line(line, dotenv) {
                hits.push(Hit {
                    file: rel.clone(),
                    line: i + 1,
                    what,
                });
            }
        }
    }
    hits
}

/// Why `line` holds a secret, if it does. The secret itself is never
/// returned.
fn secret_in_line(line: &str, dotenv: bool) -> Option<String> {
    if line.contains("-----BEGIN") && line.contains("PRIVATE KEY-----") {
        return Some("a private key".into());
    }
    if let Some(i) = line.find("AKIA")
        && line[i..].len() >= 20
        && line[i + 4..i + 20]
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return Some("an AWS access key id".into());
    }
    for scheme in [
        "postgres://",
        "postgresql://",
        "mysql://",
        "redis://",
        "amqp://",
    ] {
        if let Some(i) = line.find(scheme) {
            let rest = &line[i + scheme.len()..];
            let authority = rest.split(['/', '"', '\'', ' ', '`']).next().unwrap_or("");
            if let Some((userinfo, _)) = authority.rsplit_once('@')
                && let Some((_, pw)) = userinfo.split_once(':')
                && !pw.is_empty()
                && !is_placeholder(pw)
            {
                return Some(format!("a {scheme} URL with a password"));
            }
        }
    }
    if dotenv {
        let l = line.trim();
        if let Some((key, value)) = l.split_once('=')
            && !l.starts_with('#')
        {
            let key = key
                .trim()
                .trim_start_matches("export ")
                .to_ascii_uppercase();
            let value = value.trim().trim_matches(['"', '\'']);
            if is_secret_key(&key) && !value.is_empty() && !is_placeholder(value) {
                return Some(format!("{key} in a committed .env file"));
            }
        }
    }
    None
}

/// A key name that holds a secret.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "private_key",
        "access_key",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// `${VAR}`, `$VAR`, `<...>`, `***`, `changeme`-style template values.
fn is_placeholder(v: &str) -> bool {
    let v = v.trim();
    v.starts_with('$')
        || v.starts_with('<')
        || v.starts_with("{{")
        || v.chars().all(|c| c == '*' || c == 'x' || c == 'X')
        || v.starts_with("%(")
}

/// Files of the project: git's tracked files when it is a git work tree,
/// else every file below `root` (skipping dependencies and build output).
fn files(root: &Path) -> Vec<String> {
    if let Ok(out) = std::process::Command::new("git")
        .args(["ls-files", "-z", "--cached", "--", "."])
        .current_dir(root)
        .stderr(std::process::Stdio::null())
        .output()
        && out.status.success()
    {
        return out
            .stdout
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
    }
    let mut out = Vec::new();
    walk(root, root, 0, &mut out);
    out.sort();
    out
}

fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<String>) {
    if depth > 6 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path: PathBuf = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            if matches!(
                name.as_str(),
                ".git"
                    | "node_modules"
                    | "target"
                    | ".venv"
                    | "venv"
                    | "__pycache__"
                    | ".shipsafe"
                    | "vendor"
            ) {
                continue;
            }
            walk(root, &path, depth + 1, out);
        } else if ft.is_file()
            && let Ok(rel) = path.strip_prefix(root)
        {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_files_that_migrate_are_found_and_build_steps_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let w = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        w(
            "Procfile",
            "release: echo hi\nweb: flask db upgrade && gunicorn app:app\n",
        );
        w(
            "Dockerfile",
            "FROM node:20\nRUN npx prisma migrate deploy\nCMD npx prisma migrate deploy && node server.js\n",
        );
        w(
            "package.json",
            "{\n  \"scripts\": {\n    \"migrate\": \"prisma migrate deploy\",\n    \"start\": \"prisma migrate deploy && node dist/main.js\"\n  }\n}\n",
        );
        w("README.md", "run alembic upgrade head by hand\n");
        let hits = migrate_on_boot(dir.path());
        let shown: Vec<String> = hits.iter().map(Hit::display).collect();
        assert_eq!(
            shown,
            [
                "Dockerfile:3 (runs `prisma migrate deploy`)",
                "Procfile:2 (runs `flask db upgrade`)",
                "package.json:4 (runs `prisma migrate deploy`)",
            ],
            "{shown:?}"
        );
    }

    #[test]
    fn secrets_are_named_never_shown() {
        assert_eq!(
            secret_in_line("DATABASE_URL=postgres://app:hunter2@db/prod", false).as_deref(),
            Some("a postgres:// URL with a password")
        );
        assert_eq!(
            secret_in_line("url = postgres://app:${PW}@db/prod", false),
            None
        );
        assert_eq!(secret_in_line("url = postgres://app@db/prod", false), None);
        assert_eq!(
            secret_in_line("API_TOKEN=abc123", true).as_deref(),
            Some("API_TOKEN in a committed .env file")
        );
        assert_eq!(secret_in_line("API_TOKEN=", true), None);
        assert_eq!(secret_in_line("API_TOKEN=abc123", false), None);
        assert!(
            secret_in_line("key = AKIAIOSFODNN7EXAMPLE", false)
                .unwrap()
                .contains("AWS")
        );
    }
}
