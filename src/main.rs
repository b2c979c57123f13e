//! The `ottoscaler` binary: parses the command line and hands over to the library.
//! See the crate docs of `ottoscaler` for how the pieces fit.

use std::process::ExitCode;

use clap::Parser;
use ottoscaler::cli::{self, Cli, Command};
use ottoscaler::settings::Settings;
use ottoscaler::telemetry::{self, LogFormat};

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

/// `ottoscaler run`: an invalid configuration stops it before anything starts.
fn run(cli: &Cli) -> i32 {
    telemetry::init(LogFormat::from_env());
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let kubeconfig = cli.kubeconfig.clone();
    match actix::System::new().block_on(ottoscaler::app::run(settings, kubeconfig.as_deref())) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "ottoscaler failed");
            eprintln!("error: {e:#}");
            1
        }
    }
}
