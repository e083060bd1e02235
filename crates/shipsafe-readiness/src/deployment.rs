//! Deployment safety: the protocol is configured and was followed, pending
//! migrations are clean and reversible, the history is consistent, and
//! nothing migrates behind shipsafe's back.

use shipsafe_config::Protection;
use shipsafe_migrate::{MigrateError, Migration, history, source::Layout};
use shipsafe_pg::health;
use shipsafe_state::StateStore;

use super::model::{Category, Def, Evidence, Item, Level};
use crate::facts::{Facts, probe_unknown, some_of};
use shipsafe_protocol::repo;

const PROTECTED: Def = Def {
    id: "env-protected",
    category: Category::DeploymentSafety,
    level: Level::Bronze,
    title: "Changes need a backup, a rehearsal and a confirmation",
};
const VERIFICATION: Def = Def {
    id: "verification-configured",
    category: Category::DeploymentSafety,
    level: Level::Bronze,
    title: "[[checks]] and [[smoke]] tests are configured",
};
const LAST_DEPLOY: Def = Def {
    id: "last-deploy-rehearsed",
    category: Category::DeploymentSafety,
    level: Level::Silver,
    title: "The last deploy was rehearsed and its round trip proven",
};
const LINT: Def = Def {
    id: "pending-migrations-lint",
    category: Category::DeploymentSafety,
    level: Level::Bronze,
    title: "Pending migrations lint clean",
};
const REVERSIBLE: Def = Def {
    id: "migrations-reversible",
    category: Category::DeploymentSafety,
    level: Level::Silver,
    title: "Every migration has a down or is marked irreversible",
};
const DRIFT: Def = Def {
    id: "no-drift",
    category: Category::DeploymentSafety,
    level: Level::Bronze,
    title: "Applied migrations match their files",
};
const HISTORY: Def = Def {
    id: "history-complete",
    category: Category::DeploymentSafety,
    level: Level::Bronze,
    title: "No migration is half-applied",
};
const BOOT: Def = Def {
    id: "no-migrate-on-boot",
    category: Category::DeploymentSafety,
    level: Level::Silver,
    title: "The app does not migrate when it starts",
};

pub(super) const DEFS: &[Def] = &[
    PROTECTED,
    VERIFICATION,
    LAST_DEPLOY,
    LINT,
    REVERSIBLE,
    DRIFT,
    HISTORY,
    BOOT,
];

pub(super) async fn items(f: &Facts<'_>) -> Vec<Item> {
    let mut out = vec![protected(f), verification(f), last_deploy(f)];
    out.extend(migrations(f).await);
    out.push(boot(f));
    out
}

fn protected(f: &Facts<'_>) -> Item {
    let evidence = Evidence::new(
        "config",
        format!(
            "environments.{}.protection = {}",
            f.env,
            f.protection.as_str()
        ),
    )
    .value(serde_json::json!({ "protection": f.protection.as_str() }));
    let fix = format!(
        "set protection = \"protected\" under [environments.{}]",
        f.env
    );
    match f.protection {
        Protection::Protected => PROTECTED.pass(evidence),
        // Backups are mandatory; rehearsal and confirmation are not.
        Protection::Guarded => PROTECTED.warn(evidence, fix),
        Protection::Open => PROTECTED.fail(evidence, fix),
    }
}

fn verification(f: &Facts<'_>) -> Item {
    let file = f.config.file();
    let app_url = f
        .config
        .environment(f.env)
        .is_ok_and(|e| e.config.app_url.is_some());
    let checks = f.config.checks_for(f.env);
    let value = serde_json::json!({
        "checks": checks.iter().map(|c| &c.name).collect::<Vec<_>>(),
        "smoke": file.smoke.iter().map(|s| &s.name).collect::<Vec<_>>(),
        "app_url": app_url,
    });
    let mut missing = Vec::new();
    if checks.is_empty() {
        missing.push(format!(
            "no [[checks]] for {} (SQL invariants run after every change)",
            f.env
        ));
    }
    if file.smoke.is_empty() {
        missing.push("no [[smoke]] tests (HTTP requests to the app)".to_string());
    } else if !app_url {
        missing.push(format!(
            "environments.{}.app_url is not set, so [[smoke]] cannot run",
            f.env
        ));
    }
    let summary = if missing.is_empty() {
        format!(
            "{} checks and {} smoke tests run after every change",
            checks.len(),
            file.smoke.len()
        )
    } else {
        missing.join("; ")
    };
    VERIFICATION.judge(
        missing.is_empty(),
        Evidence::new("config", summary).value(value),
        "add [[checks]] (e.g. name = \"every user has a tenant\", sql = \"select count(*) from users where tenant_id is null\", expect = 0) and a [[smoke]] health request with app_url",
    )
}

fn last_deploy(f: &Facts<'_>) -> Item {
    let fix = format!(
        "deploy with a rehearsal: shipsafe deploy {} (protected environments always rehearse; elsewhere add --rehearse)",
        f.env
    );
    let state = f.config.state_dir();
    let runs = match StateStore::open_existing(state) {
        Ok(Some(store)) => store.runs_of(Some(f.env), &["deploy"], None),
        Ok(None) => Ok(Vec::new()),
        Err(e) => Err(e),
    };
    let runs = match runs {
        Ok(r) => r,
        Err(e) => {
            return LAST_DEPLOY.unknown(
                "run history",
                format!("run history unreadable: {e}"),
                None,
            );
        }
    };
    let Some(run) = runs
        .iter()
        .find(|r| r.command == "deploy" && r.outcome != "running")
    else {
        return LAST_DEPLOY.unknown(
            "run history",
            format!(
                "no finished deploy to {} is recorded in {}",
                f.env,
                state.display()
            ),
            Some(fix),
        );
    };
    let rehearsal = &run.report["rehearsal"];
    let round_trip = rehearsal["round_trip"]["status"]
        .as_str()
        .unwrap_or("not_run");
    let value = serde_json::json!({
        "run_id": run.run_id, "started_at": run.started_at, "outcome": run.outcome,
        "rehearsed": !rehearsal.is_null(), "verdict": rehearsal["verdict"],
        "round_trip": round_trip,
    });
    let nothing_applied = run.report["applied"]
        .as_array()
        .is_some_and(|a| a.is_empty())
        && run.report["tool_output"]
            .as_array()
            .is_none_or(|a| a.is_empty());
    let head = format!(
        "deploy {} ({}, {})",
        run.run_id, run.started_at, run.outcome
    );
    if rehearsal.is_null() {
        if nothing_applied && run.outcome == "deployed" {
            return LAST_DEPLOY.pass(
                Evidence::new(
                    "run history",
                    format!("{head}: nothing was pending, nothing to rehearse"),
                )
                .value(value),
            );
        }
        return LAST_DEPLOY.fail(
            Evidence::new(
                "run history",
                format!("{head} was not rehearsed on a clone"),
            )
            .value(value),
            fix,
        );
    }
    let summary = format!(
        "{head}: rehearsed on {} (verdict {}), round trip {round_trip}",
        rehearsal["clone"].as_str().unwrap_or("a clone"),
        rehearsal["verdict"].as_str().unwrap_or("-"),
    );
    let evidence = Evidence::new("run history", summary).value(value);
    match round_trip {
        "proven" => LAST_DEPLOY.pass(evidence),
        // Deliberately one-way: rollback restores the backup instead.
        "irreversible" => LAST_DEPLOY.warn(
            evidence,
            "a migration has no down.sql: rollback will restore the pre-deploy backup (discarding later writes)",
        ),
        _ => LAST_DEPLOY.fail(evidence, fix),
    }
}

/// Lint, reversibility, drift and half-applied history.
/// The team's tool: a way back configured, and (alembic, Flask-Migrate)
/// no revision whose `downgrade()` is empty: going back over one moves the
/// tool's history and leaves its change in place.
async fn reversible_external(
    f: &Facts<'_>,
    ext: &shipsafe_protocol::source::tool::config::External,
) -> Item {
    let fix = "set [migrations] tool to the preset of your tool, or [migrations] down to its downgrade command";
    let Some(way_back) = ext.down_label() else {
        return REVERSIBLE.fail(
            Evidence::new(
                "config",
                "no preset knows the way back and [migrations] down is not set: the tool's changes cannot be undone by shipsafe",
            ),
            fix,
        );
    };
    let configured = format!(
        "[migrations] tool = {:?}, way back: {way_back}",
        ext.tool.as_str()
    );
    if !shipsafe_protocol::empty_down::applies(ext) {
        return REVERSIBLE.pass(Evidence::new("config", configured));
    }
    // Every revision, from the newest back to base: the offline SQL only
    // prints, nothing connects.
    match shipsafe_protocol::empty_down::empty_downs(f.config, ext, f.url, &Default::default())
        .await
    {
        Ok(found) => {
            let empty: Vec<&str> = found
                .revisions
                .iter()
                .filter(|(_, e)| *e)
                .map(|(id, _)| id.as_str())
                .collect();
            let evidence = Evidence::new(
                "repository",
                format!(
                    "{configured}; `{}` prints {} of {} revisions' downgrades empty",
                    found.command,
                    empty.len(),
                    found.revisions.len()
                ),
            )
            .value(serde_json::json!({ "empty_down": empty }));
            if empty.is_empty() {
                REVERSIBLE.pass(evidence)
            } else {
                REVERSIBLE.fail(
                    evidence,
                    format!(
                        "write the downgrade() of revision{} {} (or accept that only a backup undoes {}; going back with the tool leaves the change in place)",
                        if empty.len() == 1 { "" } else { "s" },
                        empty.join(", "),
                        if empty.len() == 1 { "it" } else { "them" }
                    ),
                )
            }
        }
        Err(why) => REVERSIBLE.unknown(
            "repository",
            format!(
                "{configured}; whether every downgrade() does something could not be read: {why}"
            ),
            None,
        ),
    }
}

async fn migrations(f: &Facts<'_>) -> Vec<Item> {
    if let Some(ext) = shipsafe_protocol::source::tool::config::external(f.config) {
        let why = "migrations run by the team's own tool ([migrations] up): shipsafe reads SQL files and its own history only";
        let reversible = reversible_external(f, &ext).await;
        return vec![
            lint_external(f, &ext).await,
            reversible,
            DRIFT.unknown("repository", why, None),
            prisma_or_unknown(f, why).await,
        ];
    }
    let all = match shipsafe_protocol::source::native::discover(f.config) {
        Ok(m) => m,
        Err(e) => {
            let why = format!("migrations could not be read: {e}");
            return [LINT, REVERSIBLE, DRIFT, HISTORY]
                .iter()
                .map(|d| d.unknown("repository", why.clone(), None))
                .collect();
        }
    };
    let mut out = Vec::new();
    let reversible = reversible(&all);
    let db = match &f.db {
        Ok(db) => db,
        Err(why) => {
            return vec![
                f.unreachable(&LINT, why),
                reversible,
                f.unreachable(&DRIFT, why),
                f.unreachable(&HISTORY, why),
            ];
        }
    };
    let applied = match history::applied(&db.client).await {
        Ok(a) => a,
        Err(e) => {
            let why = format!("shipsafe.migrations could not be read: {e}");
            return vec![
                LINT.unknown("database", why.clone(), None),
                reversible,
                DRIFT.unknown("database", why.clone(), None),
                HISTORY.unknown("database", why, None),
            ];
        }
    };
    let dirty: Vec<String> = applied
        .iter()
        .filter(|a| a.dirty)
        .map(|a| a.version.clone())
        .collect();
    let (lint, drift) = match history::plan(&all, applied) {
        Ok(plan) => (lint(f, &plan.pending, db).await, DRIFT.pass(
            Evidence::new(
                "database",
                format!(
                    "{} applied migrations in shipsafe.migrations match their files' checksums",
                    plan.applied.len()
                ),
            )
            .value(serde_json::json!({ "applied": plan.applied.len(), "pending": plan.pending.len() })),
        )),
        Err(e @ (MigrateError::Drift { .. } | MigrateError::Missing { .. })) => (
            LINT.unknown("database", format!("pending migrations are not known while the history disagrees with the files: {e}"), None),
            DRIFT.fail(
                Evidence::new("database", e.to_string()),
                "restore the migration file as it was applied (git history), or write a new migration for the change",
            ),
        ),
        Err(e) => (
            LINT.unknown("database", e.to_string(), None),
            DRIFT.unknown("database", e.to_string(), None),
        ),
    };
    out.push(lint);
    out.push(reversible);
    out.push(drift);
    let history = if dirty.is_empty() {
        match prisma(db).await {
            Some(item) => item,
            None => HISTORY.pass(Evidence::new(
                "database",
                "no migration in shipsafe.migrations is marked as stopped part-way",
            )),
        }
    } else {
        HISTORY.fail(
            Evidence::new(
                "database",
                format!("half-applied (dirty) in shipsafe.migrations: {}", dirty.join(", ")),
            )
            .value(serde_json::json!({ "dirty": dirty })),
            "check the database by hand, finish or undo the change, then delete its row from shipsafe.migrations",
        )
    };
    out.push(history);
    out
}

fn reversible(all: &[Migration]) -> Item {
    let one_way: Vec<&Migration> = all.iter().filter(|m| m.layout != Layout::Native).collect();
    if !one_way.is_empty() {
        return REVERSIBLE.warn(
            Evidence::new(
                "repository",
                format!(
                    "{} migrations in a layout without down scripts ({:?}): a rollback restores the pre-deploy backup",
                    one_way.len(),
                    one_way[0].layout
                ),
            ),
            "prefer the native layout (up.sql + down.sql) for changes that must be undone without losing later writes",
        );
    }
    let missing: Vec<String> = all
        .iter()
        .filter(|m| m.down.is_none() && !m.irreversible())
        .map(Migration::label)
        .collect();
    let marked = all.iter().filter(|m| m.irreversible()).count();
    REVERSIBLE.judge(
        missing.is_empty(),
        Evidence::new(
            "repository",
            if missing.is_empty() {
                format!(
                    "{} migrations: every one has down.sql or is marked irreversible ({marked} marked)",
                    all.len()
                )
            } else {
                format!(
                    "no down.sql and not marked irreversible: {}",
                    some_of(&missing, 5)
                )
            },
        )
        .value(serde_json::json!({ "missing_down": missing, "irreversible": marked })),
        "write down.sql for each, or mark up.sql with `-- shipsafe:irreversible` when there is deliberately no way back",
    )
}

async fn lint(f: &Facts<'_>, pending: &[&Migration], db: &crate::facts::Db) -> Item {
    if pending.is_empty() {
        return LINT.pass(Evidence::new("database", "no pending migrations"));
    }
    let mut report = match shipsafe_protocol::lint::lint_migrations(pending, f.config.root()) {
        Ok(r) => r,
        Err(e) => return LINT.unknown("repository", format!("lint failed: {e}"), None),
    };
    shipsafe_protocol::lint::weigh(&mut report, &db.client, &f.config.file().lint).await;
    let labels: Vec<String> = pending.iter().map(|m| m.label()).collect();
    judge_lint(f, &report, &labels, false)
}

/// A preset's pending revisions, linted in the SQL the tool prints for
/// them. Offline SQL may differ from what runs, so errors warn (as in
/// `plan`); the rehearsal measures.
async fn lint_external(f: &Facts<'_>, ext: &shipsafe_protocol::source::External) -> Item {
    let pending =
        match shipsafe_protocol::source::tool::history::pending(f.config, ext, f.url).await {
            Ok(p) => p,
            Err(e) => {
                return LINT.unknown(
                    "repository",
                    format!("the tool could not list pending migrations: {e}"),
                    None,
                );
            }
        };
    if !pending.any {
        return LINT.pass(Evidence::new(
            "database",
            format!("{} lists no pending migrations", ext.tool.as_str()),
        ));
    }
    let files =
        match shipsafe_protocol::source::tool::history::pending_sql(f.config, ext, f.url, &pending)
            .await
        {
            Ok(files) if !files.is_empty() => files,
            Ok(_) => {
                return LINT.unknown(
                    "repository",
                    "the tool printed no SQL for its pending migrations",
                    None,
                );
            }
            Err(why) => return LINT.unknown("repository", format!("not linted: {why}"), None),
        };
    let mut report = match shipsafe_protocol::lint::LintReport::batch(&files) {
        Ok(r) => r,
        Err(e) => return LINT.unknown("repository", format!("lint failed: {e}"), None),
    };
    if let Ok(db) = &f.db {
        shipsafe_protocol::lint::weigh(&mut report, &db.client, &f.config.file().lint).await;
    }
    let labels: Vec<String> = pending
        .revisions
        .iter()
        .flatten()
        .map(|r| r.id.clone())
        .collect();
    judge_lint(f, &report, &labels, true)
}

fn judge_lint(
    f: &Facts<'_>,
    report: &shipsafe_protocol::lint::LintReport,
    labels: &[String],
    offline: bool,
) -> Item {
    let pending = labels;
    let blocking: Vec<String> = report
        .blocking()
        .iter()
        .map(|x| format!("{}:{} {}", x.file, x.line, x.rule))
        .collect();
    let warnings: Vec<String> = report
        .findings
        .iter()
        .filter(|x| x.severity == shipsafe_lint::Severity::Warning && !x.suppressed)
        .map(|x| format!("{}:{} {}", x.file, x.line, x.rule))
        .collect();
    let value = serde_json::json!({ "pending": labels, "errors": blocking, "warnings": warnings });
    let fix = format!("shipsafe lint --env {}", f.env);
    if !blocking.is_empty() && offline {
        LINT.warn(
            Evidence::new(
                "repository",
                format!(
                    "{} lint errors in the SQL the tool prints for {} pending migrations (offline rendering; the rehearsal measures what runs): {}",
                    blocking.len(),
                    pending.len(),
                    some_of(&blocking, 3)
                ),
            )
            .value(value),
            fix,
        )
    } else if !blocking.is_empty() {
        LINT.fail(
            Evidence::new(
                "repository",
                format!(
                    "{} lint errors in {} pending migrations: {}",
                    blocking.len(),
                    pending.len(),
                    some_of(&blocking, 3)
                ),
            )
            .value(value),
            fix,
        )
    } else if !warnings.is_empty() {
        LINT.warn(
            Evidence::new(
                "repository",
                format!(
                    "{} lint warnings in {} pending migrations: {}",
                    warnings.len(),
                    pending.len(),
                    some_of(&warnings, 3)
                ),
            )
            .value(value),
            fix,
        )
    } else {
        LINT.pass(
            Evidence::new(
                "repository",
                format!(
                    "{} pending migrations lint clean: {}",
                    pending.len(),
                    some_of(labels, 3)
                ),
            )
            .value(value),
        )
    }
}

/// Prisma's own history: an unfinished row is a half-applied migration.
async fn prisma(db: &crate::facts::Db) -> Option<Item> {
    match health::prisma_history(&db.client).await {
        Ok(None) => None,
        Ok(Some(rows)) => {
            let unfinished: Vec<String> = rows
                .iter()
                .filter(|r| r.unfinished)
                .map(|r| r.migration.clone())
                .collect();
            let rolled_back: Vec<String> = rows
                .iter()
                .filter(|r| r.rolled_back)
                .map(|r| r.migration.clone())
                .collect();
            let value = serde_json::json!({ "unfinished": unfinished, "rolled_back": rolled_back, "rows": rows.len() });
            Some(if unfinished.is_empty() {
                HISTORY.pass(
                    Evidence::sql(
                        health::PRISMA_HISTORY_SQL,
                        format!(
                            "_prisma_migrations: {} rows, none unfinished ({} marked rolled back)",
                            rows.len(),
                            rolled_back.len()
                        ),
                    )
                    .value(value),
                )
            } else {
                HISTORY.fail(
                    Evidence::sql(
                        health::PRISMA_HISTORY_SQL,
                        format!(
                            "_prisma_migrations: started and never finished: {}",
                            some_of(&unfinished, 5)
                        ),
                    )
                    .value(value),
                    "inspect the database, then `prisma migrate resolve --rolled-back <name>` (or --applied) for each",
                )
            })
        }
        Err(e) => Some(probe_unknown(&HISTORY, db, health::PRISMA_HISTORY_SQL, e)),
    }
}

async fn prisma_or_unknown(f: &Facts<'_>, why: &str) -> Item {
    match f.db(&HISTORY) {
        Ok(db) => match prisma(db).await {
            Some(item) => item,
            None => HISTORY.unknown("database", why, None),
        },
        Err(item) => *item,
    }
}

fn boot(f: &Facts<'_>) -> Item {
    let hits = repo::migrate_on_boot(f.config.root());
    let shown: Vec<String> = hits.iter().map(repo::Hit::display).collect();
    BOOT.judge(
        hits.is_empty(),
        Evidence::new(
            "repository",
            if hits.is_empty() {
                "no Procfile, Dockerfile CMD/ENTRYPOINT, compose command, start script or package.json start script runs a migration".to_string()
            } else {
                format!(
                    "migrates on every start, bypassing backup, rehearsal and rollback: {}",
                    some_of(&shown, 5)
                )
            },
        )
        .value(&hits),
        format!(
            "remove the migration from the start command and deploy schema changes with `shipsafe deploy {}`",
            f.env
        ),
    )
}
