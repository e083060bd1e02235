//! Rehearsal (SPEC §6 step 4): a backup, a clone made from it, the pending
//! migrations applied and measured there, verify.sql and `[[checks]]` on
//! the clone, then down and a schema comparison with the start (the round
//! trip), then up again. The target is never touched.
//!
//! Clones come from `[rehearsal] clone`:
//! - `scratch`: a local cluster of the server's major version, restored
//!   from pg_dump's own output, written to a file beside the compressed
//!   backup as it streams; the cluster starts while the dump runs. A clean
//!   restore and passing checks mark the backup verified.
//! - `env:NAME`: the backup is restored into environment NAME (after a
//!   safety backup when NAME is guarded); NAME must not be protected.
//! - `command:SCRIPT`: the script's last output line is a connection URL
//!   (a Neon branch, a snapshot). An empty database gets the backup
//!   restored into it; one with tables is used as it is.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use shipsafe_backup::{Manifest, Verification};
use shipsafe_config::{CloneSource, Config, DbUrl, Protection, VarSource};
use shipsafe_migrate::measure::RowCache;
use shipsafe_migrate::{ApplyOptions, MeasuredMigration, Migration, VerifyReport, apply};
use shipsafe_pg::{
    CheckOutcome, SchemaDiff, ScratchCluster, ScratchOptions, connect, run_checks,
    schema_description, schema_diff, server_info,
};

use crate::error::CoreError;
use crate::progress::Progress;
use crate::runs::Run;

/// The rehearsal's judgement of the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Safe,
    /// Destructive, rewrites a table, or holds ACCESS EXCLUSIVE on a large
    /// table: deploy needs `--accept-risk`.
    NeedsAck,
    /// It failed on the clone.
    Blocked,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Safe => "safe",
            Self::NeedsAck => "needs_ack",
            Self::Blocked => "blocked",
        }
    }
}

/// Did down.sql give back the schema up.sql started from?
#[derive(Debug, Clone, Serialize)]
pub struct RoundTrip {
    /// `proven`, `failed`, `irreversible` (a migration has no down.sql) or
    /// `not_run` (the rehearsal stopped earlier).
    pub status: &'static str,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub differences: Option<SchemaDiff>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RehearsalTimings {
    /// Restoring the backup into the clone (or asking the clone command).
    pub clone_ms: u64,
    pub apply_ms: u64,
    pub verify_ms: u64,
    pub round_trip_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RehearsalReport {
    /// `scratch`, `env:NAME` or `command`.
    pub clone: String,
    pub backup_id: Option<String>,
    /// The clone was restored from the backup and the checks passed there.
    pub backup_verified: bool,
    pub verdict: Verdict,
    /// Why the verdict is not `safe`.
    pub reasons: Vec<String>,
    pub timings: RehearsalTimings,
    pub migrations: Vec<MeasuredMigration>,
    pub verified: Vec<VerifyReport>,
    pub checks: Vec<CheckOutcome>,
    pub round_trip: RoundTrip,
    /// The change destroys data (dropped columns or tables with values,
    /// deleted rows): down.sql cannot bring it back, so a rollback
    /// restores the backup instead.
    pub loses_data: bool,
    /// External mode: what the team's tool printed on the clone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_output: Vec<crate::commands::migrate::ToolRun>,
    /// External mode: objects the tool added (`extra`) and removed
    /// (`missing`) on the clone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_changes: Option<SchemaDiff>,
    /// The target's own schema changed while the change ran on the clone:
    /// the migration tool did not use the clone's URL.
    #[serde(default)]
    pub target_changed: bool,
    pub error: Option<String>,
}

impl RehearsalReport {
    fn new(clone: String, backup_id: Option<String>) -> Self {
        Self {
            clone,
            backup_id,
            backup_verified: false,
            verdict: Verdict::Blocked,
            reasons: Vec::new(),
            timings: RehearsalTimings::default(),
            migrations: Vec::new(),
            verified: Vec::new(),
            checks: Vec::new(),
            round_trip: RoundTrip {
                status: "not_run",
                detail: "the rehearsal stopped before it".into(),
                differences: None,
            },
            loses_data: false,
            tool_output: Vec::new(),
            schema_changes: None,
            target_changed: false,
            error: None,
        }
    }

    /// The rehearsal proved that the down migrations undo the change, and
    /// the change loses no data, so down is a faithful rollback.
    pub fn down_is_faithful(&self) -> bool {
        self.round_trip.status == "proven" && !self.loses_data
    }
}

/// A database to rehearse on, and what keeps it alive.
#[derive(Debug)]
pub struct CloneDb {
    pub url: DbUrl,
    pub label: String,
    cluster: Option<ScratchCluster>,
}

impl CloneDb {
    /// Stops a scratch cluster (other clones are left as they are).
    pub async fn dispose(self) {
        if let Some(c) = self.cluster {
            let _ = tokio::task::spawn_blocking(move || c.stop()).await;
        }
    }
}

/// What [`backup_for_clone`] hands to [`make_clone`].
#[derive(Debug)]
pub struct PendingClone {
    source: CloneSource,
    starting: Option<tokio::task::JoinHandle<Result<ScratchCluster, shipsafe_pg::PgError>>>,
    dump_dir: Option<shipsafe_pg::PrivateTemp>,
    roles: Vec<String>,
}

impl PendingClone {
    fn dump_path(&self) -> Option<std::path::PathBuf> {
        self.dump_dir.as_ref().map(|d| d.path().join("dump"))
    }
}

fn clone_label(source: &CloneSource) -> String {
    match source {
        CloneSource::Scratch => "scratch".into(),
        CloneSource::Env(e) => format!("env:{e}"),
        CloneSource::Command(_) => "command".into(),
    }
}

/// Step 3 for a rehearsed change: the backup (reason `reason`), and for a
/// scratch clone, the cluster started meanwhile and pg_dump's raw output
/// kept for the restore. Records the `backup` step in `run`.
pub async fn backup_for_clone(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    reason: &str,
    run: &mut Run,
    progress: &Arc<dyn Progress>,
) -> Result<(Manifest, PendingClone), CoreError> {
    let source = config.file().rehearsal.clone_source();
    if let CloneSource::Env(other) = &source {
        if other == env {
            return Err(CoreError::Usage(format!(
                "[rehearsal] clone = \"env:{other}\" names the environment being changed; a rehearsal needs a copy: use \"scratch\" or another environment"
            )));
        }
        if config.environment(other)?.protection() == Protection::Protected {
            return Err(CoreError::Blocked(format!(
                "[rehearsal] clone = \"env:{other}\": {other} is protected, and a rehearsal replaces the clone's data; use \"scratch\" or an open or guarded environment; nothing was changed"
            )));
        }
    }
    let mut pending = PendingClone {
        source: source.clone(),
        starting: None,
        dump_dir: None,
        roles: Vec::new(),
    };
    run.begin("backup");
    if source == CloneSource::Scratch {
        let url = config.database_url(env, vars)?;
        let client =
            crate::connection::open(config, env, &url, crate::connection::Access::Read).await?;
        let info = server_info(&client, &url).await?;
        pending.roles = client
            .query(
                "select rolname::text from pg_roles where rolname !~ '^pg_' order by 1",
                &[],
            )
            .await
            .map(|rows| rows.iter().map(|r| r.get(0)).collect())
            .unwrap_or_default();
        drop(client);
        let size = info.size_bytes.max(0) as u64;
        let dir = shipsafe_pg::PrivateTemp::new_in(&shipsafe_pg::scratch::temp_dir_for(size))?;
        pending.dump_dir = Some(dir);
        let opts = ScratchOptions {
            major: Some(info.major),
            size_hint: Some(size.saturating_mul(2)),
            ..Default::default()
        };
        pending.starting = Some(tokio::task::spawn_blocking(move || {
            ScratchCluster::start_with(&opts)
        }));
    }
    let tee = pending.dump_path();
    let result = crate::commands::backup::take_backup_teed(
        config,
        vars,
        env,
        reason,
        tee.as_deref(),
        progress,
    )
    .await;
    match result {
        Ok(m) => {
            run.end(
                "ok",
                serde_json::json!({ "backup_id": m.id, "size_bytes": m.size_bytes, "raw_bytes": m.raw_bytes }),
            );
            run.record.backup_id = Some(m.id.clone());
            Ok((m, pending))
        }
        Err(e) => {
            run.end("failed", serde_json::json!({ "error": e.to_string() }));
            if let Some(s) = pending.starting.take()
                && let Ok(Ok(c)) = s.await
            {
                let _ = tokio::task::spawn_blocking(move || c.stop()).await;
            }
            Err(e)
        }
    }
}

/// Makes the clone from the backup. For scratch and env clones a restore
/// that succeeds and whose checks pass is recorded in the backup's
/// manifest as a verification.
pub async fn make_clone(
    config: &Config,
    vars: &dyn VarSource,
    env: &str,
    manifest: &mut Manifest,
    mut pending: PendingClone,
    progress: &Arc<dyn Progress>,
) -> Result<(CloneDb, Vec<CheckOutcome>), CoreError> {
    let started = Instant::now();
    let label = clone_label(&pending.source);
    let (clone, restored, proof) = match pending.source.clone() {
        CloneSource::Scratch => {
            progress.stage("restoring the backup into a scratch clone");
            let starting = pending
                .starting
                .take()
                .ok_or_else(|| CoreError::Failed("the scratch cluster was not started".into()))?;
            let cluster = starting.await.map_err(|e| {
                CoreError::Failed(format!("scratch cluster start was interrupted: {e}"))
            })??;
            let dump = pending
                .dump_path()
                .ok_or_else(|| CoreError::Failed("no copy of the dump for the clone".into()))?;
            // Roles are cluster-wide: the source's roles are created too, so
            // owners and grants restore and migrations that grant to them work.
            let restored = crate::commands::backup::restore_into_scratch(
                &cluster,
                manifest,
                &dump,
                manifest.contents.as_ref(),
                crate::commands::backup::ScratchUse::Rehearsal,
                &pending.roles,
            )
            .await?;
            drop(pending.dump_dir.take());
            (
                CloneDb {
                    url: restored.url,
                    label: label.clone(),
                    cluster: Some(cluster),
                },
                true,
                Some(restored.proof),
            )
        }
        CloneSource::Env(other) => {
            let url = config.database_url(&other, vars)?;
            if config.environment(&other)?.protection() != Protection::Open {
                progress.stage(&format!(
                    "safety backup of {other} before it becomes the clone"
                ));
                crate::commands::backup::take_backup(config, vars, &other, "pre-restore", progress)
                    .await?;
            }
            progress.stage(&format!("restoring the backup into {other}"));
            let proof = restore_into(config, vars, manifest, &url).await?;
            (
                CloneDb {
                    url,
                    label: label.clone(),
                    cluster: None,
                },
                true,
                Some(proof),
            )
        }
        CloneSource::Command(script) => {
            progress.stage("asking the clone command for a database");
            let url = clone_from_command(config, &script, env, &manifest.id).await?;
            let client = connect(&url).await?;
            let empty: bool = client
                .query_one(
                    "select not exists (select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace \
                      where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_toast%' \
                        and c.relkind in ('r','p'))",
                    &[],
                )
                .await
                .map(|r| r.get(0))
                .map_err(|e| {
                    CoreError::Failed(format!(
                        "cannot read the clone: {}",
                        shipsafe_pg::describe(&e)
                    ))
                })?;
            drop(client);
            let proof = if empty {
                progress.stage("restoring the backup into the clone");
                Some(restore_into(config, vars, manifest, &url).await?)
            } else {
                None
            };
            (
                CloneDb {
                    url,
                    label: label.clone(),
                    cluster: None,
                },
                empty,
                proof,
            )
        }
    };
    let client = connect(&clone.url).await?;
    let checks = run_checks(&client, &config.file().checks, false).await;
    drop(client);
    if restored {
        let failed = checks.iter().filter(|c| !c.ok).count() as u32;
        let secs = started.elapsed().as_secs_f64();
        manifest.verifications.push(Verification {
            at: shipsafe_state::now_rfc3339(),
            ok: failed == 0,
            restore_seconds: (secs * 1000.0).round() / 1000.0,
            checks_passed: checks.len() as u32 - failed,
            checks_failed: failed,
            error: (failed > 0)
                .then(|| format!("{failed} check(s) failed on the rehearsal clone ({label})")),
            method: Some(format!("rehearsal clone ({label})")),
            proof,
        });
        let store = crate::commands::backup::open_store(config, vars)?;
        store.put_manifest(manifest).await?;
    }
    Ok((clone, checks))
}

async fn restore_into(
    config: &Config,
    vars: &dyn VarSource,
    manifest: &Manifest,
    url: &DbUrl,
) -> Result<shipsafe_backup::RestoreProof, CoreError> {
    let store = crate::commands::backup::open_store(config, vars)?;
    let report =
        crate::commands::backup::restore_into(config, &store, manifest, url, &[], &[]).await?;
    Ok(report.proof)
}

/// Runs the clone command; its last non-empty output line is the URL.
async fn clone_from_command(
    config: &Config,
    script: &str,
    env: &str,
    backup_id: &str,
) -> Result<DbUrl, CoreError> {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(crate::files::with_user_umask(script))
        .current_dir(config.root())
        .env("SHIPSAFE_ENV", env)
        .env("SHIPSAFE_BACKUP_ID", backup_id)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| CoreError::io(format!("cannot run the clone command `{script}`"), e))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(CoreError::Failed(format!(
            "the clone command `{script}` failed ({}): {}",
            out.status,
            shipsafe_config::mask_secrets(String::from_utf8_lossy(&out.stderr).trim())
        )));
    }
    let line = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if !(line.starts_with("postgres://") || line.starts_with("postgresql://")) {
        return Err(CoreError::Failed(format!(
            "the clone command `{script}` must print a postgres:// URL as its last line; it printed {:?}",
            shipsafe_config::mask_secrets(line)
        )));
    }
    Ok(DbUrl::new(line))
}

/// What a rehearsal applies on the clone.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// Pending native migrations, measured statement by statement.
    Native(&'a [Migration]),
    /// The team's own migration tool.
    External(&'a crate::commands::migrate::External),
}

/// `system identifier|server start time|database oid|database name` of a
/// connection: equal for two URLs only when they reach the same database.
/// The start time tells apart clusters copied from one template (scratch
/// clusters share their system identifier).
async fn database_identity(url: &DbUrl) -> Result<String, String> {
    let client = connect(url).await.map_err(|e| e.to_string())?;
    let rows = client
        .simple_query(
            "select concat_ws('|', \
                coalesce((select system_identifier::text from pg_control_system()), ''), \
                pg_postmaster_start_time()::text, \
                (select oid::text from pg_database where datname = current_database()), \
                current_database())",
        )
        .await
        .map_err(|e| shipsafe_pg::describe(&e))?;
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .ok_or_else(|| "the server returned no identity".to_string())
}

async fn target_fingerprint(url: &DbUrl) -> Result<String, String> {
    let client = connect(url).await.map_err(|e| e.to_string())?;
    shipsafe_pg::schema_fingerprint(&client)
        .await
        .map_err(|e| shipsafe_pg::describe(&e))
}

/// Applies, measures, verifies and round-trips the change on the clone,
/// then judges the result. Before anything the clone must be another
/// database than `target`; afterwards `target`'s schema must be as it was
/// (a tool that reads its URL from elsewhere would have changed it).
pub async fn rehearse_on(
    config: &Config,
    target: &DbUrl,
    clone: &CloneDb,
    change: Change<'_>,
    backup_id: Option<String>,
    backup_verified: bool,
    progress: &Arc<dyn Progress>,
) -> RehearsalReport {
    let mut report = RehearsalReport::new(clone.label.clone(), backup_id);
    report.backup_verified = backup_verified;
    let guard = async {
        let (t, c) = (
            database_identity(target).await?,
            database_identity(&clone.url).await?,
        );
        if t == c {
            return Err(format!(
                "the clone ({}) is the target database itself: nothing was run",
                clone.url.masked()
            ));
        }
        target_fingerprint(target).await
    };
    let result = match guard.await {
        Err(e) => Err(e),
        Ok(before) => {
            let ran = match change {
                Change::Native(pending) => {
                    rehearse_steps(config, clone, pending, &mut report, progress).await
                }
                Change::External(ext) => {
                    external_steps(config, ext, clone, &mut report, progress).await
                }
            };
            match target_fingerprint(target).await {
                Ok(after) if after == before => ran,
                Ok(_) => {
                    report.target_changed = true;
                    Err(match config.file().migrations.url_env.as_str() {
                        v if crate::commands::migrate::external(config).is_some() => format!(
                            "the target's schema changed during the rehearsal: the migration tool did not use the clone's URL in {v} (does it read .env or a config file?)"
                        ),
                        _ => "the target's schema changed during the rehearsal".to_string(),
                    })
                }
                Err(e) => Err(format!("cannot re-read the target's schema: {e}")),
            }
        }
    };
    if let Err(e) = result {
        report.error = Some(e);
    }
    let (verdict, reasons) = judge(&report, config.file().rehearsal.exclusive_lock_limit());
    report.verdict = verdict;
    report.reasons = reasons;
    report.loses_data = loses_data(&report);
    report
}

async fn rehearse_steps(
    config: &Config,
    clone: &CloneDb,
    pending: &[Migration],
    report: &mut RehearsalReport,
    progress: &Arc<dyn Progress>,
) -> Result<(), String> {
    let pg = |what: &str, e: shipsafe_pg::PgError| format!("{what}: {e}");
    let client = connect(&clone.url)
        .await
        .map_err(|e| pg("cannot connect to the clone", e))?;
    let sampler = connect(&clone.url)
        .await
        .map_err(|e| pg("cannot connect to the clone", e))?;
    let describe = |e: tokio_postgres::Error| {
        format!(
            "cannot read the clone's schema: {}",
            shipsafe_pg::describe(&e)
        )
    };
    let schema_before = schema_description(&client).await.map_err(describe)?;
    let m = &config.file().migrations;
    let opts = ApplyOptions {
        lock_timeout: m.lock_timeout.as_std(),
        statement_timeout: m.statement_timeout.as_std(),
        lock_retries: 0,
        applied_by: "rehearsal".into(),
        run_id: None,
    };

    // Up, measured.
    let t = Instant::now();
    let mut rows = RowCache::default();
    for mig in pending {
        progress.stage(&format!("rehearsing {}", mig.label()));
        let measured = shipsafe_migrate::up_measured(&client, &sampler, mig, &opts, &mut rows)
            .await
            .map_err(|e| format!("on the clone: {e}"))?;
        report.migrations.push(measured);
    }
    report.timings.apply_ms = t.elapsed().as_millis() as u64;

    // verify.sql and checks.
    let t = Instant::now();
    for mig in pending {
        if let Some(v) = apply::verify(&client, mig)
            .await
            .map_err(|e| format!("on the clone: {e}"))?
        {
            report.verified.push(v);
        }
    }
    report.checks = run_checks(&client, &config.file().checks, false).await;
    report.timings.verify_ms = t.elapsed().as_millis() as u64;
    let failed: Vec<String> = crate::commands::verify::check_failures(&report.checks);
    if !failed.is_empty() {
        return Err(format!(
            "on the clone after the change: {}",
            failed.join("; ")
        ));
    }

    // Round trip: down in reverse, compare, up again.
    let t = Instant::now();
    let schema_after = schema_description(&client).await.map_err(describe)?;
    if let Some(m) = pending.iter().find(|m| m.down.is_none()) {
        report.round_trip = RoundTrip {
            status: "irreversible",
            detail: format!(
                "{} has no down.sql: a failed deploy is undone by restoring the pre-deploy backup",
                m.label()
            ),
            differences: None,
        };
        report.timings.round_trip_ms = t.elapsed().as_millis() as u64;
        return Ok(());
    }
    progress.stage("round trip: down, compare, up");
    for mig in pending.iter().rev() {
        if let Err(e) = apply::down(&client, mig, &opts).await {
            report.round_trip = RoundTrip {
                status: "failed",
                detail: format!("down failed on the clone: {e}"),
                differences: None,
            };
            return Err(report.round_trip.detail.clone());
        }
    }
    let schema_down = schema_description(&client).await.map_err(describe)?;
    let diff = schema_diff(&schema_before, &schema_down);
    if !diff.is_empty() {
        report.round_trip = RoundTrip {
            status: "failed",
            detail: format!(
                "after down the schema differs from before up: {}",
                diff.summary(8)
            ),
            differences: Some(diff),
        };
        report.timings.round_trip_ms = t.elapsed().as_millis() as u64;
        return Err(report.round_trip.detail.clone());
    }
    for mig in pending {
        if let Err(e) = apply::up(&client, mig, &opts).await {
            report.round_trip = RoundTrip {
                status: "failed",
                detail: format!("up after down failed on the clone: {e}"),
                differences: None,
            };
            return Err(report.round_trip.detail.clone());
        }
    }
    let schema_again = schema_description(&client).await.map_err(describe)?;
    let diff = schema_diff(&schema_after, &schema_again);
    report.timings.round_trip_ms = t.elapsed().as_millis() as u64;
    if !diff.is_empty() {
        report.round_trip = RoundTrip {
            status: "failed",
            detail: format!(
                "up after down gives a different schema than the first up: {}",
                diff.summary(8)
            ),
            differences: Some(diff),
        };
        return Err(report.round_trip.detail.clone());
    }
    report.round_trip = RoundTrip {
        status: "proven",
        detail: format!(
            "down restored the schema exactly ({} objects) and up applied again",
            schema_before.len()
        ),
        differences: None,
    };
    Ok(())
}

/// External mode: the team's tool pointed at the clone. Its statements are
/// not visible, so the rehearsal compares the schema before and after, runs
/// the checks, and proves `down` (when configured) gives the schema back.
async fn external_steps(
    config: &Config,
    ext: &crate::commands::migrate::External,
    clone: &CloneDb,
    report: &mut RehearsalReport,
    progress: &Arc<dyn Progress>,
) -> Result<(), String> {
    use crate::commands::migrate::run_tool;
    let client = connect(&clone.url)
        .await
        .map_err(|e| format!("cannot connect to the clone: {e}"))?;
    let describe = |e: tokio_postgres::Error| {
        format!(
            "cannot read the clone's schema: {}",
            shipsafe_pg::describe(&e)
        )
    };
    let tool = |r: crate::commands::migrate::ToolRun| -> Result<crate::commands::migrate::ToolRun, String> {
        if r.ok() {
            Ok(r)
        } else {
            Err(format!(
                "`{}` failed on the clone (exit {:?}): {}",
                r.command, r.exit_code, r.output
            ))
        }
    };
    let run = |cmd: String| async move {
        run_tool(config, &cmd, &clone.url, ext)
            .await
            .map_err(|e| e.to_string())
    };
    let before = schema_description(&client).await.map_err(describe)?;
    let tool_before = crate::commands::external::state(config, ext, &clone.url)
        .await
        .map_err(|e| e.to_string())?;
    progress.stage(&format!("rehearsing `{}` on the clone", ext.up));
    let t = Instant::now();
    let up = run(ext.up.clone()).await?;
    report.tool_output.push(up.clone());
    tool(up)?;
    report.timings.apply_ms = t.elapsed().as_millis() as u64;
    let after = schema_description(&client).await.map_err(describe)?;
    report.schema_changes = Some(schema_diff(&before, &after));
    let t = Instant::now();
    report.checks = run_checks(&client, &config.file().checks, false).await;
    report.timings.verify_ms = t.elapsed().as_millis() as u64;
    let failed = crate::commands::verify::check_failures(&report.checks);
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
    let down = ext.down_label().unwrap_or_default();
    let t = Instant::now();
    let (runs, went) =
        crate::commands::external::go_back(config, ext, &clone.url, &tool_before).await;
    report.tool_output.extend(runs);
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
    let tool_back = crate::commands::external::state(config, ext, &clone.url)
        .await
        .map_err(|e| e.to_string())?;
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
    let again = run(ext.up.clone()).await?;
    report.tool_output.push(again.clone());
    tool(again)?;
    report.timings.round_trip_ms = t.elapsed().as_millis() as u64;
    report.round_trip = RoundTrip {
        status: "proven",
        detail: format!(
            "`{down}` restored the schema exactly and `{}` applied again",
            ext.up
        ),
        differences: None,
    };
    Ok(())
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

/// A size as people read it: MB from 1 MB up, else kB.
pub(crate) fn mib(bytes: i64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{} kB", (bytes + 1023) / 1024)
    }
}

fn loses_data(report: &RehearsalReport) -> bool {
    let statements = report.migrations.iter().flat_map(|m| &m.statements);
    let measured = statements.clone().any(|s| {
        s.dropped_columns
            .iter()
            .any(|c| c.non_null_values != Some(0))
            || s.dropped_tables.iter().any(|t| t.rows != Some(0))
            || s.rows.iter().any(|r| r.lost() > 0)
    });
    let external = report.schema_changes.as_ref().is_some_and(|d| {
        d.missing
            .iter()
            .any(|l| l.starts_with("column ") || l.starts_with("relation "))
    });
    measured || external
}

/// The verdict and its reasons, from the measurements.
pub fn judge(report: &RehearsalReport, exclusive_lock_limit: u64) -> (Verdict, Vec<String>) {
    if let Some(e) = &report.error {
        return (Verdict::Blocked, vec![e.clone()]);
    }
    let mut reasons = Vec::new();
    for m in &report.migrations {
        for s in &m.statements {
            let at = format!("{}_{} line {}", m.version, m.name, s.line);
            for c in &s.dropped_columns {
                match c.non_null_values {
                    Some(0) => {}
                    Some(n) => reasons.push(format!(
                        "{at}: drops column {}.{} with {n} non-null value(s)",
                        c.table, c.column
                    )),
                    None => reasons.push(format!(
                        "{at}: drops column {}.{} (values not countable outside a transaction)",
                        c.table, c.column
                    )),
                }
            }
            for t in &s.dropped_tables {
                match t.rows {
                    Some(0) => {}
                    Some(n) => {
                        reasons.push(format!("{at}: drops table {} with {n} row(s)", t.table))
                    }
                    None => reasons.push(format!("{at}: drops table {}", t.table)),
                }
            }
            for r in &s.rows {
                if r.lost() > 0 {
                    reasons.push(format!(
                        "{at}: removes {} row(s) from {} ({} → {})",
                        r.lost(),
                        r.table,
                        r.before.unwrap_or(0),
                        r.after
                    ));
                }
            }
            for w in &s.rewrites {
                if w.kind != "index" && w.bytes_before > 0 {
                    reasons.push(format!(
                        "{at}: rewrites {} {} ({})",
                        w.kind,
                        w.relation,
                        mib(w.bytes_before)
                    ));
                }
            }
            for l in &s.locks {
                if l.is_access_exclusive()
                    && l.existing
                    && l.kind == "table"
                    && l.relation_bytes as u64 > exclusive_lock_limit
                {
                    reasons.push(format!(
                        "{at}: holds ACCESS EXCLUSIVE on {} ({}) for {} ms, blocking every read and write",
                        l.relation,
                        mib(l.relation_bytes),
                        l.held_ms
                    ));
                } else if l.blocks_writes_only()
                    && l.existing
                    && l.kind == "table"
                    && l.relation_bytes as u64 > exclusive_lock_limit
                {
                    reasons.push(format!(
                        "{at}: holds {} on {} ({}) for {} ms, blocking every write",
                        l.mode,
                        l.relation,
                        mib(l.relation_bytes),
                        l.held_ms
                    ));
                }
            }
        }
    }
    if let Some(d) = &report.schema_changes {
        for gone in &d.missing {
            if gone.starts_with("column ") || gone.starts_with("relation ") {
                // The schema line of something the tool removed.
                reasons.push(format!(
                    "the migration tool removes {}",
                    gone.split(" kind=").next().unwrap_or(gone)
                ));
            }
        }
    }
    if reasons.is_empty() {
        (Verdict::Safe, reasons)
    } else {
        (Verdict::NeedsAck, reasons)
    }
}

/// `shipsafe rehearse ENV`: backup, clone, apply, measure, round trip,
/// report. The target is not changed.
pub async fn rehearse(
    config: &Config,
    vars: &dyn VarSource,
    cwd: &Path,
    env: &str,
    progress: &Arc<dyn Progress>,
) -> Result<(shipsafe_state::RunRecord, Option<CoreError>), CoreError> {
    config.environment(env)?;
    let mut run = Run::start("rehearse", Some(env));
    let finish = |run: Run, outcome: &str, report: &serde_json::Value, ids: Vec<String>| {
        let rec = run.finish(
            outcome,
            report,
            config.state_dir(),
            cwd,
            ids,
            serde_json::json!({}),
        )?;
        crate::runs::write_markdown(config.state_dir(), &rec)?;
        Ok::<_, CoreError>(rec)
    };
    run.begin("preflight");
    let ext = crate::commands::migrate::external(config);
    let (pending, nothing) = match &ext {
        // The team's tool decides what is pending (exit 0: nothing).
        Some(x) => {
            let url = config.database_url(env, vars)?;
            let p = crate::commands::external::pending(config, x, &url).await?;
            (Vec::new(), !p.any)
        }
        None => {
            let p = crate::commands::migrate::pending_for(config, vars, env).await?;
            let none = p.is_empty();
            (p, none)
        }
    };
    run.end(
        "ok",
        serde_json::json!({ "pending": pending.iter().map(Migration::label).collect::<Vec<_>>(),
                            "external": ext.is_some() }),
    );
    if nothing {
        let rec = finish(run, "nothing_to_do", &serde_json::json!({}), vec![])?;
        return Ok((rec, None));
    }
    let (mut manifest, pending_clone) =
        match backup_for_clone(config, vars, env, "pre-rehearsal", &mut run, progress).await {
            Ok(x) => x,
            Err(e) => {
                let rec = finish(
                    run,
                    "failed_nothing_changed",
                    &serde_json::json!({ "error": e.to_string() }),
                    vec![],
                )?;
                return Ok((rec, Some(e)));
            }
        };
    let ids = vec![manifest.id.clone()];
    run.begin("rehearse");
    let t = Instant::now();
    let made = make_clone(config, vars, env, &mut manifest, pending_clone, progress).await;
    let clone_ms = t.elapsed().as_millis() as u64;
    let (clone, _) = match made {
        Ok(c) => c,
        Err(e) => {
            run.end("failed", serde_json::json!({ "error": e.to_string() }));
            let rec = finish(
                run,
                "failed_nothing_changed",
                &serde_json::json!({ "error": e.to_string() }),
                ids,
            )?;
            return Ok((rec, Some(e)));
        }
    };
    let verified = manifest.is_verified();
    let target = config.database_url(env, vars)?;
    let mut report = rehearse_on(
        config,
        &target,
        &clone,
        match &ext {
            Some(x) => Change::External(x),
            None => Change::Native(&pending),
        },
        Some(manifest.id.clone()),
        verified,
        progress,
    )
    .await;
    report.timings.clone_ms = clone_ms;
    clone.dispose().await;
    run.end(
        if report.verdict == Verdict::Blocked {
            "failed"
        } else {
            "ok"
        },
        serde_json::json!({ "verdict": report.verdict, "round_trip": report.round_trip.status }),
    );
    let blocked = report.verdict == Verdict::Blocked;
    let error = blocked.then(|| {
        if report.target_changed {
            target_changed_error(env, &manifest.id, &report.reasons.join("; "))
        } else {
            CoreError::Problems(format!(
                "the rehearsal of {env} failed on the clone ({}); {env} was not touched",
                report.reasons.join("; ")
            ))
        }
    });
    let rec = finish(
        run,
        if blocked { "blocked" } else { "rehearsed" },
        &serde_json::json!({ "rehearsal": report }),
        ids,
    )?;
    Ok((rec, error))
}

/// Puts each lint finding next to what the rehearsal measured for its
/// statement (same migration folder, same line): "measured: rewrite of
/// public.orders (0.2 MB), AccessExclusiveLock on public.orders held 14 ms,
/// statement 12 ms". Findings the rehearsal did not reach are left alone.
pub fn confront(findings: &mut [shipsafe_lint::Finding], report: &RehearsalReport) {
    for f in findings.iter_mut().filter(|f| !f.suppressed) {
        let statement = report.migrations.iter().find_map(|m| {
            let folder = format!("{}_{}", m.version, m.name);
            f.file
                .contains(&folder)
                .then(|| m.statements.iter().find(|s| s.line == f.line))
                .flatten()
        });
        let Some(s) = statement else { continue };
        let mut parts: Vec<String> = s
            .rewrites
            .iter()
            .filter(|w| w.kind != "index")
            .map(|w| format!("rewrite of {} ({})", w.relation, mib(w.bytes_before)))
            .collect();
        parts.extend(
            s.locks
                .iter()
                .filter(|l| l.kind == "table" && l.existing)
                .map(|l| format!("{} on {} held {} ms", l.mode, l.relation, l.held_ms)),
        );
        parts.push(format!("statement {} ms", s.duration_ms));
        // The guess is confirmed when the verdict's reasons name this
        // statement (a rewrite or a long lock on a large table).
        let at = report
            .migrations
            .iter()
            .find(|m| f.file.contains(&format!("{}_{}", m.version, m.name)))
            .map(|m| format!("{}_{} line {}:", m.version, m.name, s.line));
        let confirmed = at.is_some_and(|a| report.reasons.iter().any(|r| r.starts_with(&a)));
        let measured = format!(
            "measured on the clone: {} ({})",
            parts.join(", "),
            if confirmed {
                "confirmed: the verdict asks for --accept-risk"
            } else {
                "refuted: nothing there needs acknowledging"
            }
        );
        f.evidence = Some(match f.evidence.take() {
            Some(e) => format!("{e}; {measured}"),
            None => measured,
        });
    }
}

/// The rehearsal changed the target itself: nothing of shipsafe's protocol
/// covered that change, so a person must look (exit 5).
pub(crate) fn target_changed_error(env: &str, backup_id: &str, reasons: &str) -> CoreError {
    CoreError::RollbackFailed(format!(
        "the rehearsal changed {env} itself instead of the clone ({reasons}); shipsafe stopped and changed nothing more. Backup {backup_id} holds {env} as it was before: check the schema, and restore it with `shipsafe backup restore {backup_id} --to {env}` if needed"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipsafe_migrate::measure::{
        DroppedColumn, LockTaken, MeasuredStatement, Rewrite, RowCount,
    };

    fn statement() -> MeasuredStatement {
        MeasuredStatement {
            line: 1,
            sql: "alter table t ...".into(),
            duration_ms: 5,
            locks_sampled: false,
            locks: vec![],
            rewrites: vec![],
            dropped_tables: vec![],
            dropped_columns: vec![],
            rows: vec![],
        }
    }

    fn report(s: MeasuredStatement) -> RehearsalReport {
        let mut r = RehearsalReport::new("scratch".into(), None);
        r.migrations.push(MeasuredMigration {
            version: "1".into(),
            name: "t".into(),
            transactional: true,
            duration_ms: 5,
            statements: vec![s],
        });
        r
    }

    fn lock(bytes: i64, mode: &str, existing: bool) -> LockTaken {
        LockTaken {
            relation: "public.t".into(),
            kind: "table",
            mode: mode.into(),
            held_ms: 40,
            relation_bytes: bytes,
            existing,
        }
    }

    #[test]
    fn exclusive_locks_count_only_on_large_existing_tables() {
        let limit = 10 << 20;
        let mut s = statement();
        s.locks = vec![lock(20 << 20, "AccessExclusiveLock", true)];
        let (v, reasons) = judge(&report(s.clone()), limit);
        assert_eq!(v, Verdict::NeedsAck);
        assert!(reasons[0].contains("ACCESS EXCLUSIVE on public.t (20.0 MB) for 40 ms"));
        s.locks = vec![lock(1 << 20, "AccessExclusiveLock", true)];
        assert_eq!(judge(&report(s.clone()), limit).0, Verdict::Safe);
        s.locks = vec![lock(20 << 20, "ShareUpdateExclusiveLock", true)];
        assert_eq!(judge(&report(s.clone()), limit).0, Verdict::Safe);
        s.locks = vec![lock(0, "AccessExclusiveLock", false)];
        assert_eq!(judge(&report(s), limit).0, Verdict::Safe);
    }

    #[test]
    fn data_loss_and_table_rewrites_need_acknowledging() {
        let mut s = statement();
        s.dropped_columns = vec![DroppedColumn {
            table: "public.t".into(),
            column: "c".into(),
            non_null_values: Some(0),
        }];
        let r = report(s.clone());
        assert_eq!(judge(&r, u64::MAX).0, Verdict::Safe, "an empty column");
        assert!(!loses_data(&r));
        s.dropped_columns[0].non_null_values = None;
        assert_eq!(judge(&report(s.clone()), u64::MAX).0, Verdict::NeedsAck);
        let mut s = statement();
        s.rows = vec![RowCount {
            table: "public.t".into(),
            before: Some(10),
            after: 4,
        }];
        let r = report(s);
        assert!(judge(&r, u64::MAX).1[0].contains("removes 6 row(s) from public.t"));
        assert!(loses_data(&r));
        let mut s = statement();
        let rewrite = |kind| Rewrite {
            relation: "public.t".into(),
            kind,
            bytes_before: 8192,
            bytes_after: 8192,
        };
        s.rewrites = vec![rewrite("index")];
        assert_eq!(judge(&report(s.clone()), u64::MAX).0, Verdict::Safe);
        s.rewrites = vec![rewrite("table")];
        assert_eq!(judge(&report(s), u64::MAX).0, Verdict::NeedsAck);
    }

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

    #[test]
    fn a_failure_on_the_clone_blocks() {
        let mut r = report(statement());
        r.error = Some("on the clone: boom".into());
        let (v, reasons) = judge(&r, 0);
        assert_eq!(v, Verdict::Blocked);
        assert_eq!(reasons, ["on the clone: boom"]);
    }
}
