//! The `ottoscaler` binary: parses the command line and hands over to the library.
//! See the crate docs of `ottoscaler` for how the pieces fit.

use std::process::ExitCode;

use clap::Parser;
use ottoscaler::cli::{self, Cli, Command};
use ottoscaler::telemetry;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.subcommand() {
        Command::CheckConfig => cli::check_config(&cli),
        Command::SendEvent(args) => {
            actix::System::new().block_on(cli::send_event_command(&cli, &args))
        }
        Command::Run => run(&cli),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// `ottoscaler run`: an invalid configuration, pod template or `LOG_FORMAT` stops it
/// before anything starts (the same checks as `check-config`).
fn run(cli: &Cli) -> i32 {
    let prepared = match cli::prepare(cli.config.as_deref(), std::env::vars()) {
        Ok(prepared) => prepared,
        Err(message) => {
            eprintln!("{message}");
            return 1;
        }
    };
    telemetry::init(prepared.log_format);
    for unknown in &prepared.unknown_variables {
        tracing::warn!(variable = %unknown.name, closest = unknown.closest.as_deref(), "{unknown}");
    }
    let traces = match telemetry::traces::init(&prepared.settings.telemetry) {
        Ok(traces) => traces,
        Err(message) => {
            eprintln!("{message}");
            return 1;
        }
    };
    let kubeconfig = cli.kubeconfig.clone();
    let code = match actix::System::new().block_on(ottoscaler::app::run(
        prepared.settings,
        kubeconfig.as_deref(),
    )) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "ottoscaler failed");
            eprintln!("error: {e:#}");
            1
        }
    };
    // The spans of the last events, flushed within telemetry.shutdown_timeout.
    if let Some(traces) = traces {
        traces.shutdown();
    }
    code
}
