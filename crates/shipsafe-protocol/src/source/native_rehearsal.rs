//! Native migrations rehearsed on a clone: applied statement by statement
//! with their locks, rewrites and row losses measured, verify.sql and the
//! checks run, then the round trip (down in reverse, the schema compared
//! with the start, up again).

use std::sync::Arc;
use std::time::Instant;

use shipsafe_config::{Config, DbUrl};
use shipsafe_migrate::measure::RowCache;
use shipsafe_migrate::{ApplyOptions, Migration, apply};
use shipsafe_pg::{connect, run_checks, schema_description, schema_diff};

use crate::progress::Progress;
use crate::rehearsal::{RehearsalReport, RoundTrip};

pub(crate) async fn rehearse(
    config: &Config,
    clone: &DbUrl,
    pending: &[Migration],
    report: &mut RehearsalReport,
    progress: &Arc<dyn Progress>,
) -> Result<(), String> {
    let pg = |what: &str, e: shipsafe_pg::PgError| format!("{what}: {e}");
    let client = connect(clone)
        .await
        .map_err(|e| pg("cannot connect to the clone", e))?;
    let sampler = connect(clone)
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
    // `config` holds the rehearsed environment's checks only
    // (steps::rehearse::on_clone scoped it).
    report.checks = run_checks(&client, &config.file().checks, false).await;
    report.timings.verify_ms = t.elapsed().as_millis() as u64;
    let failed: Vec<String> = crate::checks::check_failures(&report.checks);
    if !failed.is_empty() {
        return Err(format!(
            "on the clone after the change: {}",
            failed.join("; ")
        ));
    }

    // Round trip: down in reverse, compare, up again.
    let t = Instant::now();
    let schema_after = schema_description(&client).await.map_err(describe)?;
    report.created = crate::rehearsal::created(&schema_before, &schema_after);
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
