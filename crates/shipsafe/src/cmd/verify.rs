use anyhow::Context as _;
use shipsafe_config::ProcessEnv;
use shipsafe_protocol::ExitKind;
use shipsafe_protocol::commands::verify;

use super::Ctx;

use crate::output::{Rendered, table};

pub async fn run(ctx: &Ctx, env: &str) -> anyhow::Result<Rendered> {
    let config = ctx.config()?;
    let r = verify::verify(&config, &ProcessEnv, env)
        .await
        .with_context(|| format!("verify {env}"))?;
    let mut rows: Vec<Vec<String>> = r
        .checks
        .iter()
        .map(|c| {
            vec![
                crate::output::check_status(c).into(),
                "check".into(),
                c.name.clone(),
                crate::output::check_detail(c),
            ]
        })
        .collect();
    rows.extend(r.smoke.iter().map(|s| {
        vec![
            if s.ok { "ok".into() } else { "FAIL".into() },
            "smoke".into(),
            s.name.clone(),
            s.error.clone().unwrap_or_else(|| {
                format!(
                    "{} {} → {}",
                    s.method,
                    s.path,
                    s.status.map_or("-".into(), |x| x.to_string())
                )
            }),
        ]
    }));
    let mut text = if rows.is_empty() {
        "Nothing to verify: no [[checks]] or [[smoke]] configured.\n".to_string()
    } else {
        table(&["RESULT", "KIND", "NAME", "DETAIL"], &rows)
    };
    if let Some(why) = &r.smoke_skipped {
        text.push_str(&format!("smoke tests not run: {why}\n"));
    }
    let exit = if r.ok {
        ExitKind::Success
    } else {
        ExitKind::Problems
    };
    Rendered::new(&r, text, exit)
}
