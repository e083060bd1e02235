//! The team's tool rehearsed on a clone: its statements are not visible, so
//! the schema is compared before and after, the checks run, and the way
//! back (when there is one) must give the schema and the tool's history
//! back exactly.

use std::sync::Arc;
use std::time::Instant;

use shipsafe_config::{Config, DbUrl};
use shipsafe_pg::{connect, run_checks, schema_description, schema_diff};

use super::config::External;
use super::history::{go_back, state};
use super::process::{ToolRun, run_tool};
use super::watch::{Reached, Watch};
use crate::progress::Progress;
use crate::rehearsal::{RehearsalReport, RoundTrip};
use crate::source::interface::Pending;

/// External mode: the team's tool pointed at the clone. Its statements are
/// not visible, so the rehearsal compares the schema before and after, runs
/// the checks, and proves `down` (when configured) gives the schema back.
/// The tool cannot reach `target` (a network namespace), or where it could,
/// the target is watched ([`super::watch`]).
pub(crate) async fn rehearse(
    config: &Config,
    ext: &External,
    target: &DbUrl,
    clone: &DbUrl,
    pending: &Pending,
    report: &mut RehearsalReport,
    progress: &Arc<dyn Progress>,
) -> Result<(), String> {
    // The target is watched whatever else holds: its sessions named, ended
    // when seen, and the target compared after every tool command.
    let name = format!("shipsafe-rehearsal-{}", std::process::id());
    let mut watch = Some(Watch::start(config, ext, target, &name).await?);
    let mut prepared = External {
        app_name: Some(name.clone()),
        ..ext.clone()
    };
    let watched = format!(
        "the tool ran with PGAPPNAME={name}: such sessions on the target were ended at once, and the target's schema and history were compared after every tool command"
    );
    match isolation_for(clone) {
        Ok(hide) => {
            prepared.isolated = true;
            if let Some(w) = watch.as_mut() {
                w.isolated = true;
            }
            prepared.hide_sockets = hide;
            report.tool_isolation = Some(format!(
                "network namespace: only the clone's Unix socket is reachable (no TCP; the other PostgreSQL sockets of this machine are hidden); {watched}"
            ));
        }
        Err(why) => {
            progress.stage(&format!(
                "the tool is not isolated from the network ({why}): watching the target"
            ));
            report.tool_isolation = Some(format!("none ({why}); {watched}"));
        }
    }
    let ran = on_clone(
        config,
        &prepared,
        clone,
        pending,
        report,
        progress,
        watch.as_ref(),
    )
    .await;
    if let Some(w) = watch {
        let ended = w.finish().await;
        if ended > 0
            && let Some(i) = report.tool_isolation.as_mut()
        {
            i.push_str(&format!(
                "; {ended} session(s) of the tool on the target were ended"
            ));
        }
    }
    ran
}

#[allow(clippy::too_many_arguments)]
async fn on_clone(
    config: &Config,
    ext: &External,
    clone: &DbUrl,
    pending: &Pending,
    report: &mut RehearsalReport,
    progress: &Arc<dyn Progress>,
    watch: Option<&Watch>,
) -> Result<(), String> {
    let client = connect(clone)
        .await
        .map_err(|e| format!("cannot connect to the clone: {e}"))?;
    let describe = |e: tokio_postgres::Error| {
        format!(
            "cannot read the clone's schema: {}",
            shipsafe_pg::describe(&e)
        )
    };
    let tool = |r: ToolRun| -> Result<ToolRun, String> {
        if r.ok() {
            Ok(r)
        } else {
            Err(format!(
                "`{}` failed on the clone ({}): {}",
                r.command,
                r.exit_code
                    .map_or_else(|| "no exit code".to_string(), |c| format!("exit {c}")),
                r.output
            ))
        }
    };
    let run = |cmd: String| async move {
        run_tool(config, &cmd, clone, ext)
            .await
            .map_err(|e| e.to_string())
    };
    // After every tool command, before the next: the target as it was.
    let target_as_before = |command: String| async move {
        let Some(w) = watch else { return Ok(()) };
        w.check(config, ext, &command).await
    };
    let stop = |report: &mut RehearsalReport, reached: Reached| match reached {
        Reached::Changed(why) => {
            report.target_changed = true;
            why
        }
        Reached::Connected(why) => why,
    };
    let before = schema_description(&client).await.map_err(describe)?;
    let tool_before = state(config, ext, clone).await.map_err(|e| e.to_string())?;
    progress.stage(&format!("rehearsing `{}` on the clone", ext.up));
    let t = Instant::now();
    let up = run(ext.up.clone()).await;
    if let Ok(r) = &up {
        report.tool_output.push(r.clone());
    }
    if let Err(reached) = target_as_before(ext.up.clone()).await {
        return Err(stop(report, reached));
    }
    tool(up?)?;
    report.timings.apply_ms = t.elapsed().as_millis() as u64;
    let after = schema_description(&client).await.map_err(describe)?;
    let tool_after = state(config, ext, clone).await.ok();
    // Nothing shipsafe can see moved on the clone: the tool went elsewhere
    // (a preset's history always moves), or its change is data only.
    let clone_unchanged =
        pending.any() && after == before && tool_after.as_ref() == Some(&tool_before);
    if clone_unchanged && ext.reads_history() {
        return Err(format!(
            "`{}` succeeded, but the clone's {} history did not move and its schema is unchanged: the tool applied the pending revisions to another database. Does the app read its database URL from .env or its settings instead of {}?",
            ext.up,
            ext.tool.as_str(),
            ext.url_env
        ));
    }
    report.schema_changes = Some(schema_diff(&before, &after));
    report.created = crate::rehearsal::created(&before, &after);
    let t = Instant::now();
    // `config` holds the rehearsed environment's checks only
    // (steps::rehearse::on_clone scoped it).
    report.checks = run_checks(&client, &config.file().checks, false).await;
    report.timings.verify_ms = t.elapsed().as_millis() as u64;
    let failed = crate::checks::check_failures(&report.checks);
    if !failed.is_empty() {
        return Err(format!(
            "on the clone after the change: {}",
            failed.join("; ")
        ));
    }
    if !ext.has_down() {
        report.round_trip = RoundTrip {
            status: "irreversible",
            detail: "no way back with the tool (no preset, no [migrations] down): a failed deploy is undone by restoring the pre-deploy backup".into(),
            differences: None,
        };
        return Ok(());
    }
    if let Some(t) = pending.tool.as_ref().filter(|t| !t.empty_down.is_empty()) {
        report.round_trip = RoundTrip {
            status: "irreversible",
            detail: format!(
                "revision(s) {} may not be undone by the tool (a downgrade() is empty, or the offline downgrade SQL could not be printed to tell): going back with the tool would move its history and keep their change, so a failed deploy or a rollback restores the pre-deploy backup",
                t.empty_down.join(", ")
            ),
            differences: None,
        };
        return Ok(());
    }
    let down = ext.down_label().unwrap_or_default();
    let t = Instant::now();
    let (runs, went) = go_back(config, ext, clone, &tool_before).await;
    report.tool_output.extend(runs);
    if let Err(reached) = target_as_before(down.clone()).await {
        return Err(stop(report, reached));
    }
    if let Err(e) = went {
        let e = format!("going back on the clone failed: {e}");
        report.round_trip = RoundTrip {
            status: "failed",
            detail: e.clone(),
            differences: None,
        };
        return Err(e);
    }
    let back = schema_description(&client).await.map_err(describe)?;
    let mut diff = schema_diff(&before, &back);
    // The tool's own history table appears with the first run and stays.
    diff.extra.retain(|l| !is_tool_bookkeeping(l));
    if !diff.is_empty() {
        report.round_trip = RoundTrip {
            status: "failed",
            detail: format!(
                "after `{down}` the schema differs from before `{}`: {}",
                ext.up,
                diff.summary(8)
            ),
            differences: Some(diff),
        };
        return Err(report.round_trip.detail.clone());
    }
    let tool_back = state(config, ext, clone).await.map_err(|e| e.to_string())?;
    if tool_back != tool_before {
        let e = format!(
            "after `{down}` the tool records {:?}, not {:?} as before `{}`",
            tool_back.render(ext.tool),
            tool_before.render(ext.tool),
            ext.up
        );
        report.round_trip = RoundTrip {
            status: "failed",
            detail: e.clone(),
            differences: None,
        };
        return Err(e);
    }
    let again = run(ext.up.clone()).await;
    if let Ok(r) = &again {
        report.tool_output.push(r.clone());
    }
    if let Err(reached) = target_as_before(ext.up.clone()).await {
        return Err(stop(report, reached));
    }
    tool(again?)?;
    report.timings.round_trip_ms = t.elapsed().as_millis() as u64;
    report.round_trip = if clone_unchanged {
        RoundTrip {
            status: "unproven",
            detail: format!(
                "`{}` changed nothing shipsafe can see on the clone (schema and recorded state as before), so going back and up again proved nothing: a failed deploy is undone by restoring the pre-deploy backup",
                ext.up
            ),
            differences: None,
        }
    } else {
        RoundTrip {
            status: "proven",
            detail: format!(
                "`{down}` restored the schema exactly and `{}` applied again",
                ext.up
            ),
            differences: None,
        }
    };
    Ok(())
}

/// Whether the tool can be kept off the network for a rehearsal on
/// `clone`: only a clone reached through a Unix socket stays reachable.
/// Returns the other PostgreSQL sockets of this machine, to hide.
fn isolation_for(clone: &DbUrl) -> Result<Vec<std::path::PathBuf>, String> {
    let info = clone
        .conninfo()
        .map_err(|_| "the clone's URL cannot be read".to_string())?;
    if info.hosts.is_empty() || !info.hosts.iter().all(|h| h.starts_with('/')) {
        return Err("the clone is reached over TCP (an env: or command: clone)".into());
    }
    super::isolation::available()?;
    let keep: Vec<std::path::PathBuf> = info.hosts.iter().map(std::path::PathBuf::from).collect();
    Ok(super::isolation::other_sockets(&keep))
}

/// History tables of common migration tools, which their down command
/// leaves in place.
const TOOL_TABLES: &[&str] = &[
    "alembic_version",
    "flyway_schema_history",
    "_prisma_migrations",
    "schema_migrations",
    "ar_internal_metadata",
    "django_migrations",
    "knex_migrations",
    "knex_migrations_lock",
    "SequelizeMeta",
    "__diesel_schema_migrations",
    "_sqlx_migrations",
    "goose_db_version",
    "migrations",
];

fn is_tool_bookkeeping(line: &str) -> bool {
    TOOL_TABLES.iter().any(|t| {
        line.split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|word| {
                word == *t
                    || word
                        .strip_prefix(t)
                        .is_some_and(|r| r == "_pkc" || r == "_pkey" || r == "_id_seq")
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_tool_history_tables_are_recognised() {
        assert!(is_tool_bookkeeping(
            "relation public.alembic_version kind=r"
        ));
        assert!(is_tool_bookkeeping(
            "index public.alembic_version_pkc CREATE UNIQUE INDEX alembic_version_pkc ON public.alembic_version USING btree (version_num)"
        ));
        assert!(is_tool_bookkeeping(
            "relation public.django_migrations_id_seq kind=S"
        ));
        assert!(!is_tool_bookkeeping("relation public.accounts kind=r"));
        assert!(!is_tool_bookkeeping(
            "relation public.accounts_id_seq kind=S"
        ));
        assert!(!is_tool_bookkeeping(
            "column public.users.alembic_versioned text"
        ));
    }
}
