use shipsafe_protocol::ExitKind;
use shipsafe_protocol::commands::init::{Detected, init};

use super::Ctx;
use crate::output::Rendered;

pub fn run(ctx: &Ctx, force: bool) -> anyhow::Result<Rendered> {
    let report = init(&ctx.cwd, force)?;
    let tool = match report.migrations.tool {
        Detected::Native => "native migrations",
        Detected::Prisma => "Prisma migrations",
        Detected::Flyway => "Flyway migrations",
        Detected::Alembic => "alembic (external mode)",
        Detected::FlaskMigrate => "Flask-Migrate (external mode)",
        Detected::Django => "Django (external mode)",
        Detected::Rails => "Rails (external mode)",
        Detected::None => "no migrations yet (native layout; create one with `shipsafe new NAME`)",
    };
    let mut text = format!("Wrote {} ({tool}", report.config);
    if let Some(d) = &report.migrations.dir {
        text.push_str(&format!(" in {d}/"));
    }
    text.push_str(")\n");
    if report.gitignore_updated {
        text.push_str(&format!("Added .shipsafe/ to {}\n", report.gitignore));
    }
    text.push_str(&shipsafe_protocol::commands::init::next_steps());
    // The state folder is created by the first command that records something.
    if let Ok(config) = ctx.config() {
        shipsafe_protocol::audit::record(
            config.state_dir(),
            &ctx.cwd,
            "init",
            None,
            "ok",
            serde_json::json!({ "config": report.config, "migrations": report.migrations }),
        )?;
    }
    Rendered::new(&report, text, ExitKind::Success)
}
