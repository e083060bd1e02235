//! `shipsafe runbook ENV`: a disaster-recovery runbook written from facts
//! (backup catalog, restore drills, audit log, config), not from memory.
//! Its first line records when it was generated, so `readiness` can tell a
//! current runbook from one older than the last drill.

use std::path::{Path, PathBuf};

use serde::Serialize;
use shipsafe_config::{Config, VarSource, mask_secrets};
use shipsafe_state::StateStore;

use shipsafe_protocol::CoreError;

const MARKER: &str = "<!-- shipsafe-runbook";

/// `<state_dir>/runbooks/<env>.md`.
pub fn default_path(config: &Config, env: &str) -> PathBuf {
    config
        .state_dir()
        .join("runbooks")
        .join(format!("{env}.md"))
}

/// When the runbook in `text` was generated, from its first line.
pub fn generated_at(text: &str) -> Option<String> {
    let first = text.lines().next()?;
    let rest = first.strip_prefix(MARKER)?;
    rest.split_whitespace()
        .find_map(|w| w.strip_prefix("generated_at="))
        .map(str::to_string)
}

#[derive(Debug, Clone, Serialize)]
pub struct RunbookReport {
    pub env: String,
    pub path: String,
    pub generated_at: String,
    /// The newest backup proven by a restore, which the runbook restores.
    pub backup_id: Option<String>,
    pub restore_seconds: Option<f64>,
    /// Who ran the last restore drill, from the audit log.
    pub last_drill_by: Option<String>,
    #[serde(skip)]
    pub text: String,
}

pub fn runbook<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    env: &'a str,
    output: Option<&'a Path>,
) -> shipsafe_protocol::Task<'a, Result<RunbookReport, CoreError>> {
    Box::pin(async move {
        let environment = config.environment(env)?;
        let generated = shipsafe_state::now_rfc3339();
        let backups = shipsafe_protocol::store::list(config, vars, Some(env)).await?;
        let storage = shipsafe_protocol::store::storage_spec(config, vars)?;
        let newest = backups.iter().find(|m| m.is_complete());
        let proven = backups
            .iter()
            .filter(|m| m.is_complete())
            .filter_map(|m| m.last_good_verification().map(|v| (m, v)))
            .max_by(|a, b| a.1.at.cmp(&b.1.at));
        let drill = StateStore::open_existing(config.state_dir())?
            .map(|s| s.audit_entries(Some(env), None))
            .transpose()?
            .unwrap_or_default()
            .into_iter()
            .find(|e| e.command == "backup verify");
        let url = config
            .database_url(env, vars)
            .map(|u| u.masked())
            .unwrap_or_else(|e| format!("(not resolvable here: {e})"));
        let file = config.file();
        let mut t = format!(
            "{MARKER} env={env} generated_at={generated} -->\n\
         # Disaster recovery: {} / {env}\n\n\
         Generated {generated} by `shipsafe runbook {env}` from the backup catalog, the restore drills, the audit log and shipsafe.toml. \
         Generate it again after every restore drill (`shipsafe readiness {env}` says when it is stale). Keep a copy outside this machine.\n\n\
         ## Facts\n\n\
         - Database: `{}` (protection: {})\n\
         - Backups are stored at: `{}`\n",
            config.project_name(),
            mask_secrets(&url),
            environment.protection().as_str(),
            mask_secrets(&storage.url),
        );
        match newest {
        Some(m) => t.push_str(&format!(
            "- Newest complete backup: `{}`, taken {} ({} bytes compressed, checksum `{}`), archive `{}`\n",
            m.id,
            m.created_at,
            m.size_bytes,
            m.checksum,
            mask_secrets(&m.location)
        )),
        None => t.push_str("- Newest complete backup: **none** — take one now: `shipsafe backup create ENV`\n".replace("ENV", env).as_str()),
    }
        match proven {
        Some((m, v)) => t.push_str(&format!(
            "- Newest backup proven by a restore: `{}` — restored and checked {}: the restore took **{:.1} s** (measured RTO), {} checks passed\n",
            m.id, v.at, v.restore_seconds, v.checks_passed
        )),
        None => t.push_str("- Newest backup proven by a restore: **none** — no backup of this environment was ever restored; run `shipsafe backup verify ID`\n"),
    }
        match &drill {
            Some(d) => t.push_str(&format!(
                "- Last restore drill: {} by {} ({})\n",
                d.at,
                d.actor.short(),
                d.outcome
            )),
            None => t.push_str("- Last restore drill: none recorded in the audit log\n"),
        }
        let r = file.backups.retention;
        t.push_str(&format!(
            "- Retention: keep_last {}, keep_daily {}, keep_monthly {}\n",
            r.keep_last, r.keep_daily, r.keep_monthly
        ));
        let id = proven
            .map(|(m, _)| m.id.clone())
            .or_else(|| newest.map(|m| m.id.clone()))
            .unwrap_or_else(|| "BACKUP_ID".into());
        let confirm = if environment.protection() == shipsafe_config::Protection::Protected {
            format!(" --confirm {env}")
        } else {
            String::new()
        };
        t.push_str(&format!(
        "\n## When the database is lost or its data is wrong\n\n\
         1. Stop the writes: put the app in maintenance mode or scale its web and worker processes to zero.\n\
         2. Pick the backup: `shipsafe backup list {env}` — the newest verified one is `{id}`.\n\
         3. If there is time, prove it first: `shipsafe backup verify {id}`{}.\n\
         4. Restore: `shipsafe backup restore {id} --to {env}{confirm}` — shipsafe takes a safety backup of what is there now, restores in one transaction and commits only if the checks pass. If the database itself is gone, create an empty one with the same name and owner first.\n\
         5. Prove the result: `shipsafe verify {env}` (the checks below and the smoke tests).\n\
         6. Reopen the app. `shipsafe log --env {env}` shows what was done, by whom.\n",
        proven
            .map(|(_, v)| format!(" (the last drill took {:.1} s)", v.restore_seconds))
            .unwrap_or_default()
    ));
        let chosen = proven.map(|(m, _)| m).or(newest);
        t.push_str(&manual_restore(config, env, chosen, &storage));
        if let Some(m) = chosen {
            if !m.roles.is_empty() {
                t.push_str(&format!(
                "\nRoles the dump references (create them first to keep grants, or add `--no-privileges` to restore without them): {}\n",
                m.roles.join(", ")
            ));
            }
            if !m.extensions.is_empty() {
                t.push_str(&format!(
                    "\nExtensions it needs: {}\n",
                    m.extensions.join(", ")
                ));
            }
        }
        t.push_str("\n## Checks that prove a restore\n\n");
        let checks = config.checks_for(env);
        if checks.is_empty() {
            t.push_str("None configured: add [[checks]] to shipsafe.toml; until then a restore is proven only by pg_restore finishing.\n");
        } else {
            for c in &checks {
                t.push_str(&format!(
                    "- **{}**: `{}`\n",
                    c.name,
                    c.sql.replace('`', "'")
                ));
            }
        }
        if !file.smoke.is_empty() {
            t.push_str("\nSmoke tests against the app: ");
            t.push_str(
                &file
                    .smoke
                    .iter()
                    .map(|s| format!("{} {} {}", s.name, s.method, s.path))
                    .collect::<Vec<_>>()
                    .join("; "),
            );
            t.push('\n');
        }
        let text = mask_secrets(&t);
        let path = output
            .map(Path::to_path_buf)
            .unwrap_or_else(|| default_path(config, env));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| CoreError::io(format!("cannot create {}", dir.display()), e))?;
        }
        // Written whole or not at all: a half runbook is worse than none.
        let tmp = path.with_extension("md.tmp");
        std::fs::write(&tmp, text.as_bytes())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                CoreError::io(format!("cannot write {}", path.display()), e)
            })?;
        Ok(RunbookReport {
            env: env.to_string(),
            path: path.display().to_string(),
            generated_at: generated,
            backup_id: proven.map(|(m, _)| m.id.clone()),
            restore_seconds: proven.map(|(_, v)| v.restore_seconds),
            last_drill_by: drill.map(|d| d.actor.short()),
            text,
        })
    })
}

/// The "Without shipsafe" section: a shell block that restores backup `m`
/// with nothing but `zstd`, `pg_restore` and, for S3, `curl`. It is run as
/// written by the tests, so every command in it must work on a plain
/// machine: a storage URL is never handed to a program that reads files.
fn manual_restore(
    config: &Config,
    env: &str,
    m: Option<&shipsafe_backup::Manifest>,
    storage: &shipsafe_backup::StorageSpec,
) -> String {
    let id = m.map_or("BACKUP_ID", |m| m.id.as_str());
    let file = format!("{id}{}", shipsafe_backup::store::ARCHIVE_SUFFIX);
    let location = m.map_or_else(|| format!("{}/{file}", storage.url), |m| m.location.clone());
    let target = target_url(config, env);
    let raw = config
        .environment(env)
        .map(|e| e.config.database_url.get_ref().raw().to_string())
        .unwrap_or_default();
    let mut t = String::from(
        "\n## Without shipsafe\n\n\
         Each archive is a `pg_dump -Fc` archive compressed with zstd, next to a JSON manifest with its checksum. \
         These commands need only `zstd` and `pg_restore` of the server's major version (or newer)",
    );
    let fetch = if let Some(path) = location.strip_prefix("file://") {
        t.push_str(". Run them where the backup folder is, or copy the archive there first.\n\n");
        format!("zstd -dc {} > restore.dump\n", sh_quote(path))
    } else if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let region = storage.s3_region.as_deref().unwrap_or("us-east-1");
        let url = match &storage.s3_endpoint {
            Some(e) => format!("{}/{bucket}/{}", e.trim_end_matches('/'), url_path(key)),
            None => format!(
                "https://{bucket}.s3.{region}.amazonaws.com/{}",
                url_path(key)
            ),
        };
        t.push_str(&format!(
            ", and `curl` 7.86 or newer, which signs the download itself (AWS Signature V4) with the credentials in \
             `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN` when set): no AWS CLI or SDK. \
             Where the AWS CLI is installed, `aws s3 cp{} {} {}` downloads the same file.\n\n",
            storage
                .s3_endpoint
                .as_ref()
                .map(|e| format!(" --endpoint-url {}", sh_quote(e)))
                .unwrap_or_default(),
            sh_quote(&location),
            sh_quote(&file),
        ));
        format!(
            "curl --fail --silent --show-error --aws-sigv4 'aws:amz:{region}:s3' \\\n  \
             --user \"$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY\" \\\n  \
             ${{AWS_SESSION_TOKEN:+-H \"x-amz-security-token: $AWS_SESSION_TOKEN\"}} \\\n  \
             -o {} {}\n\
             zstd -dc {} > restore.dump\n",
            sh_quote(&file),
            sh_quote(&url),
            sh_quote(&file)
        )
    } else {
        t.push_str(".\n\n");
        format!("zstd -dc {} > restore.dump\n", sh_quote(&location))
    };
    t.push_str(&format!(
        "```sh\n\
         set -eu\n\
         {fetch}\
         pg_restore --clean --if-exists --no-owner --single-transaction --exit-on-error \\\n  \
         --dbname {target} restore.dump\n\
         ```\n\n\
         `--dbname` reads the URL from where shipsafe does (`database_url = \"{raw}\"` in `[environments.{env}]`). \
         If the database itself is gone, create an empty one first (`createdb`). `--clean --if-exists` replaces what the database holds; \
         `--single-transaction` leaves it as it was if anything fails. \
         `b3sum` of the archive, where installed, prints the `checksum` of its manifest (`{id}.json`).\n"
    ));
    t
}

/// The environment's database URL as the shell writes it: its `${VAR}`
/// references become the shell's own expansions (`"$STAGING_DATABASE_URL"`),
/// so the command reads the variable the environment names, never a value.
fn target_url(config: &Config, env: &str) -> String {
    use shipsafe_config::template::Part;
    let Ok(e) = config.environment(env) else {
        return "\"$DATABASE_URL\"".into();
    };
    let mut out = String::from("\"");
    for part in e.config.database_url.get_ref().parts() {
        match part {
            Part::Var(v) => out.push_str(&format!("${{{v}}}")),
            Part::Literal(s) => {
                for c in s.chars() {
                    if matches!(c, '"' | '\\' | '$' | '`') {
                        out.push('\\');
                    }
                    out.push(c);
                }
            }
        }
    }
    out.push('"');
    // `"${NAME}"` alone reads as `"$NAME"`.
    match out.strip_prefix("\"${").and_then(|r| r.strip_suffix("}\"")) {
        Some(name) if !name.contains(['$', '{', '}']) => format!("\"${name}\""),
        _ => out,
    }
}

/// `s` quoted for `sh`.
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=+@%".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// An object key as a URL path: every byte but unreserved ones and `/`
/// percent-encoded (S3 signs the encoded path).
fn url_path(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
