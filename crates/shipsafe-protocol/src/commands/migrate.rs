//! `shipsafe new` and `shipsafe plan`.

use serde::Serialize;
use shipsafe_config::{Config, MigrationFormat, VarSource};

use crate::error::CoreError;
use crate::source::{PendingMigration, Source};

#[derive(Debug, Clone, Serialize)]
pub struct NewReport {
    pub dir: String,
    pub files: Vec<String>,
}

/// `shipsafe new NAME`: `migrations/<UTC timestamp>_<name>/{up,down,verify}.sql`.
pub fn new_migration(config: &Config, name: &str) -> Result<NewReport, CoreError> {
    let m = &config.file().migrations;
    if m.is_external() || matches!(m.format, MigrationFormat::Prisma | MigrationFormat::Flyway) {
        return Err(CoreError::Usage(
            "this project's migrations are written with its own tool (see [migrations] in shipsafe.toml); `shipsafe new` writes native migrations".into(),
        ));
    }
    let slug: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect::<String>()
        .split('_')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("_");
    if slug.is_empty() {
        return Err(CoreError::Usage(format!(
            "{name:?} is not a usable migration name: use letters, digits and _"
        )));
    }
    let version = jiff::Timestamp::now().strftime("%Y%m%d%H%M%S").to_string();
    let dir = crate::source::native::migrations_dir(config).join(format!("{version}_{slug}"));
    if dir.exists() {
        return Err(CoreError::Usage(format!(
            "{} already exists",
            dir.display()
        )));
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| CoreError::io(format!("cannot create {}", dir.display()), e))?;
    let files = [
        (
            "up.sql",
            format!(
                "-- {slug}: the change.\n-- Runs in one transaction with lock_timeout and statement_timeout set.\n-- Mark `-- shipsafe:no-transaction` for CREATE INDEX CONCURRENTLY and the like.\n\n"
            ),
        ),
        (
            "down.sql",
            format!(
                "-- {slug}: undoes up.sql exactly (rehearsals check the round trip).\n-- If there is no way back, delete this file and mark up.sql `-- shipsafe:irreversible`.\n\n"
            ),
        ),
        (
            "verify.sql",
            format!(
                "-- {slug}: proves the change did what it should. Runs in a transaction that\n-- is always rolled back, so it may insert test rows. Every query must return\n-- true in its first column (false, NULL or no row fails).\n\n"
            ),
        ),
    ];
    let mut written = Vec::new();
    for (file, text) in files {
        let p = dir.join(file);
        std::fs::write(&p, text)
            .map_err(|e| CoreError::io(format!("cannot write {}", p.display()), e))?;
        written.push(p.display().to_string());
    }
    Ok(NewReport {
        dir: dir.display().to_string(),
        files: written,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub env: String,
    pub protection: String,
    pub applied: usize,
    /// The team's tool: where its history stands (`base`, alembic heads,
    /// Django's latest per app, ...).
    pub tool_state: Option<String>,
    pub pending: Vec<PlannedMigration>,
    /// External mode: whether the team\'s tool says something is pending.
    pub external_pending: Option<bool>,
    /// External mode: the tool (`alembic`, ..., `command`).
    pub tool: Option<String>,
    /// What deploy would do first.
    pub backup_first: bool,
    /// Problems that would stop deploy.
    pub problems: Vec<String>,
    /// What deploy would not stop for but a person should know.
    pub warnings: Vec<String>,
    pub lint: Vec<shipsafe_lint::Finding>,
}

/// A pending migration as `plan` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedMigration {
    #[serde(flatten)]
    pub migration: PendingMigration,
    /// alembic / Flask-Migrate: `true` when the revision's `downgrade()`
    /// prints no statement in the tool's offline SQL (it is empty, so going
    /// back with the tool would not undo it: it is `irreversible`); `false`
    /// when it prints some; `null` when not known (other sources).
    pub empty_down: Option<bool>,
}

/// `shipsafe plan ENV`: what deploy would do. Changes nothing.
pub fn plan<'a>(
    config: &'a Config,
    vars: &'a dyn VarSource,
    env: &'a str,
) -> crate::Task<'a, Result<PlanReport, CoreError>> {
    Box::pin(async move {
        let protection = config.environment(env)?.protection();
        let mut warnings = boot_warnings(config);
        let source = Source::of(config);
        let url = config.database_url(env, vars)?;
        let client =
            crate::connection::open(config, env, &url, crate::connection::Access::Read).await?;
        let planned = source.plan(config, &url, &client, protection).await?;
        warnings.extend(planned.warnings);
        let (empty_down, empty_down_from) = (planned.empty_down, planned.empty_down_from);
        let mut pending: Vec<PlannedMigration> = planned
            .pending
            .into_iter()
            .map(|migration| PlannedMigration {
                migration,
                empty_down: None,
            })
            .collect();
        if let (Some(ext), Some(from)) = (source.tool(), empty_down_from) {
            mark_empty_downs(ext, &empty_down, from, &mut pending, &mut warnings);
        }
        Ok(PlanReport {
            lint: planned.lint,
            env: env.to_string(),
            protection: protection.as_str().into(),
            applied: planned.applied,
            tool_state: planned.tool_state,
            pending,
            external_pending: planned.external_pending,
            tool: planned.tool,
            backup_first: protection != shipsafe_config::Protection::Open,
            problems: planned.problems,
            warnings,
        })
    })
}

/// Marks the tool's pending revisions whose downgrade is empty (`empty`,
/// read by `from`: the tool's offline downgrade command, or why it could
/// not run) as irreversible, with a warning naming each.
fn mark_empty_downs(
    ext: &crate::source::External,
    empty: &[String],
    from: Result<String, String>,
    pending: &mut [PlannedMigration],
    warnings: &mut Vec<String>,
) {
    let command = match from {
        Ok(command) => command,
        Err(why) => {
            warnings.push(format!(
                "cannot tell whether the pending revisions can be undone by {}: {why}; each is treated as irreversible (only the pre-deploy backup undoes them)",
                ext.tool.as_str()
            ));
            for p in pending.iter_mut() {
                p.migration.irreversible = true;
            }
            return;
        }
    };
    for p in pending.iter_mut() {
        let m = &mut p.migration;
        let is_empty = empty.contains(&m.version);
        p.empty_down = Some(is_empty);
        if is_empty {
            m.irreversible = true;
            warnings.push(format!(
                "revision {} ({}) has an empty downgrade(): `{command}` prints no statement for it, so going back with {} would only move alembic_version and leave its change in place; it is irreversible, and only the pre-deploy backup undoes it",
                m.version,
                m.name,
                ext.tool.as_str()
            ));
        }
    }
}

/// Start-up files that migrate on every boot: those migrations bypass the
/// backup, the rehearsal and the rollback.
pub fn boot_warnings(config: &Config) -> Vec<String> {
    crate::repo::migrate_on_boot(config.root())
        .iter()
        .map(|h| {
            format!(
                "{} {}: the app migrates each time it starts, outside shipsafe (no backup, rehearsal or rollback); remove it and deploy with `shipsafe deploy`",
                h.display(),
                if h.file.to_ascii_lowercase().contains("procfile") {
                    "(release or web process)"
                } else {
                    "(start-up command)"
                }
            )
        })
        .collect()
}
