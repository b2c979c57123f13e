//! `ottoscaler-bench`: see the crate docs of [`bench`] and `bench/README.md`.

use std::process::ExitCode;

use bench::args::{Args, USAGE};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let program = argv.first().map_or("ottoscaler-bench", String::as_str);
    if argv.get(1).map(String::as_str) == Some(bench::ceiling::PACED_COMMAND) {
        return ceiling_process(&argv[2..]);
    }
    let args = match Args::parse(program, argv.get(1..).unwrap_or(&[])) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("ottoscaler-bench: {err:#}");
            return ExitCode::from(2);
        }
    };
    // Two workers: the machine this is meant for has two cores, and kubesim and the
    // bare kube-rs client of B2 share this runtime.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("ottoscaler-bench: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ottoscaler-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// B1's bare kube-rs client as a process of its own (see `bench::ceiling::paced_process`), on a
/// runtime like a bare `#[tokio::main]` program's.
fn ceiling_process(args: &[String]) -> ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(bench::ceiling::paced_main(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "ottoscaler-bench {}: {err:#}",
                bench::ceiling::PACED_COMMAND
            );
            ExitCode::FAILURE
        }
    }
}
