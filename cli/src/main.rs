//! `nasfleet`: parses flags, runs the command, prints the error chain and exits with the status its failure calls for.

use clap::Parser;
use nasfleet_cli::failure::{self, Exit};
use nasfleet_cli::{Cli, run};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    // clap exits 2 on usage errors itself, which is `Exit::Invalid`.
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(cli)));
    let Err(error) = result else {
        return ExitCode::SUCCESS;
    };
    let exit = failure::exit_for(&error);
    if exit != Exit::Success {
        // Nothing is left to tell when stderr is gone too.
        let _ = writeln!(
            std::io::stderr(),
            "nasfleet: error: {}",
            failure::message(&error)
        );
    }
    ExitCode::from(exit.code())
}
