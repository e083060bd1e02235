//! The `shipsafe` binary: parses the command line, runs the command, prints
//! the result, and maps the outcome to an exit code.

mod cli;
mod cmd;
mod output;
mod ui;

use std::process::ExitCode;

use clap::Parser as _;
use clap::error::ErrorKind;
use shipsafe_protocol::ExitKind;

use crate::cli::{Cli, Command, Format, LogAction};
use crate::cmd::Ctx;
use crate::output::{Rendered, error_message, exit_kind, print_error, print_result};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    init_tracing(cli.quiet, cli.verbose);
    // A file-size limit must surface as a write error (and a clean, failed
    // backup), not kill the process mid-write.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGXFSZ,
            nix::sys::signal::SigHandler::SigIgn,
        )
    };
    // Backups, state and reports are for their owner only.
    shipsafe_protocol::files::private_umask();
    let format = cli.format;
    let quiet = cli.quiet;
    match run(cli) {
        Ok(r) => {
            print_result(format, quiet, &r);
            ExitCode::from(r.exit.code())
        }
        Err(err) => {
            let kind = exit_kind(&err);
            print_error(format, kind, &error_message(&err));
            ExitCode::from(kind.code())
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Rendered> {
    if matches!(cli.format, Format::Md | Format::Html)
        && !matches!(cli.command, Command::Readiness { .. })
    {
        return Err(shipsafe_protocol::CoreError::Usage(
            "--format md and --format html are for `readiness`; other commands print text or json"
                .into(),
        )
        .into());
    }
    let ctx = Ctx::from_cli(&cli)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Init { force } => cmd::init::run(&ctx, force),
        Command::Demo => runtime.block_on(cmd::demo::run(&ctx)),
        Command::Status { env } => runtime.block_on(cmd::status::run(&ctx, env.as_deref())),
        Command::Log(args) => match args.action {
            Some(LogAction::Verify) => runtime.block_on(cmd::log::verify(&ctx)),
            None => cmd::log::show(&ctx, args.env.as_deref(), args.limit),
        },
        Command::Backup(action) => runtime.block_on(cmd::backup::run(&ctx, action)),
        Command::New { name } => cmd::migrate::new(&ctx, &name),
        Command::Rollback { env, run, confirm } => {
            runtime.block_on(cmd::migrate::rollback(&ctx, &env, run.as_deref(), confirm))
        }
        Command::Verify { env } => runtime.block_on(cmd::verify::run(&ctx, &env)),
        Command::Lint { paths, env } => {
            runtime.block_on(cmd::lint::run(&ctx, &paths, env.as_deref()))
        }
        Command::Plan { env } => runtime.block_on(cmd::migrate::plan(&ctx, &env)),
        Command::Data(action) => runtime.block_on(cmd::data::run(&ctx, action)),
        Command::Wipe {
            env,
            keep,
            keep_table,
            reset_sequences,
            dry_run,
            confirm,
        } => runtime.block_on(cmd::data::wipe(
            &ctx,
            &env,
            &keep,
            &keep_table,
            reset_sequences,
            dry_run,
            confirm,
        )),
        Command::Clone {
            from,
            to,
            mask,
            confirm,
        } => runtime.block_on(cmd::data::clone(&ctx, &from, &to, mask, confirm)),
        Command::Readiness {
            env,
            markdown,
            since,
            min_level,
        } => runtime.block_on(cmd::readiness::run(
            &ctx,
            &env,
            cmd::readiness::Flags {
                format: cli.format,
                markdown,
                since,
                min_level,
            },
        )),
        Command::Serve {
            listen,
            allow_actions,
        } => runtime.block_on(cmd::serve::run(&ctx, listen.as_deref(), allow_actions)),
        Command::Runbook { env, output } => {
            runtime.block_on(cmd::readiness::runbook(&ctx, &env, output.as_deref()))
        }
        Command::Rehearse { env } => runtime.block_on(cmd::migrate::rehearse(&ctx, &env)),
        Command::Deploy {
            env,
            confirm,
            r#override,
            rehearse,
            accept_risk,
        } => runtime.block_on(cmd::migrate::deploy(
            &ctx,
            &env,
            cmd::migrate::DeployFlags {
                confirm,
                override_reason: r#override,
                rehearse,
                accept_risk,
            },
        )),
    }
}

/// Help and version go to stdout with exit 0; anything else is a usage
/// error (64), as JSON too when JSON output was asked for.
fn usage_error(e: &clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ => {
            let wants_json = {
                let args: Vec<String> = std::env::args().collect();
                args.windows(2)
                    .any(|w| w[0] == "--format" && w[1] == "json")
                    || args.iter().any(|a| a == "--format=json")
            };
            if wants_json {
                let first = e.to_string();
                let first = first
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ");
                print_error(Format::Json, ExitKind::Usage, first);
            } else {
                let _ = e.print();
            }
            ExitCode::from(ExitKind::Usage.code())
        }
    }
}

fn init_tracing(quiet: bool, verbose: u8) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    // -v/-vv raise shipsafe's own messages only. The database driver logs
    // every statement with its parameters at debug level: row data and the
    // masking key. It stays at warn unless SHIPSAFE_LOG names it explicitly.
    let ours = [
        "shipsafe",
        "shipsafe_protocol",
        "shipsafe_pg",
        "shipsafe_backup",
        "shipsafe_migrate",
        "shipsafe_data",
        "shipsafe_state",
        "shipsafe_config",
        "shipsafe_lint",
    ];
    let default = format!("warn,{}", ours.map(|c| format!("{c}={level}")).join(","));
    let spec = match std::env::var("SHIPSAFE_LOG") {
        Ok(s) if s.contains("tokio_postgres") => s,
        Ok(s) if !s.is_empty() => format!("{s},tokio_postgres=warn"),
        _ => default,
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}
