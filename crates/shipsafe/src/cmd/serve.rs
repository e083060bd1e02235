//! `shipsafe serve`: the scheduler, heartbeat, dashboard and /metrics,
//! until SIGTERM or Ctrl-C.

use std::sync::Arc;

use shipsafe_config::ProcessEnv;
use shipsafe_protocol::ExitKind;
use shipsafe_serve as serve;

use super::Ctx;
use crate::output::Rendered;

pub async fn run(ctx: &Ctx, listen: Option<&str>, allow_actions: bool) -> anyhow::Result<Rendered> {
    let config = Arc::new(ctx.config()?);
    let opts = serve::options(&config, listen, allow_actions, &ProcessEnv)?;
    // SIGINT/SIGTERM stop the scheduler cleanly instead of killing the
    // process (a second one still does).
    serve::stop_gracefully_on_signals();
    let stop = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let log: Arc<dyn Fn(&str) + Send + Sync> = Arc::new(|line: &str| eprintln!("{line}"));
    let summary = serve::serve(
        config.clone(),
        Arc::new(ProcessEnv),
        ctx.cwd.clone(),
        opts,
        log,
        Box::pin(stop),
    )
    .await?;
    let text = format!(
        "serve stopped: {} run(s), {} tick(s) skipped{}\n",
        summary.runs,
        summary.skipped,
        if summary.abandoned.is_empty() {
            String::new()
        } else {
            format!("; abandoned: {}", summary.abandoned.join(", "))
        }
    );
    Rendered::new(&summary, text, ExitKind::Success)
}
