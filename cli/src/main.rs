//! `nasfleet`: parses flags, runs the command, prints the error chain and exits non-zero on failure.

use clap::Parser;
use nasfleet_cli::{Cli, run};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nasfleet: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
