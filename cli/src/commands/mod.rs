//! One module per command group of `nasfleet` (and `login`), each owning its flags (a clap `Subcommand`), its pre-check and its `run`, plus what several groups share: `task` (every task kind's JSON and lifecycle commands), `schedule_args`, and the replication task's `replication_spec` and `replication_file`.
//!
//! A group's `run` checks its flags in pure code first, then asks the
//! [`crate::context::Context`] for a connection, then does the work; so a
//! mistyped flag fails the same way with or without credentials.

pub mod alert;
pub mod audit;
pub mod dataset;
pub mod login;
pub mod notify;
pub mod replication;
pub mod replication_estimate;
pub mod replication_file;
pub mod replication_spec;
pub mod rsync;
pub mod run;
pub mod schedule_args;
pub mod snapshot;
pub mod snapshot_task;
pub mod ssh_connection;
pub mod system;
pub mod task;
pub mod token;
pub mod ui;
pub mod user;

/// Turns a gRPC status into an error whose text is the controller's reason
/// and whose code decides the exit status.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::Error::new(crate::failure::StatusError(status))
}

/// Asks a yes/no question on the terminal; without a terminal the answer is no.
pub async fn confirm(question: String) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, IsTerminal, Write};
        if !std::io::stdin().is_terminal() {
            return Ok(false);
        }
        eprint!("{question} [y/N] ");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
    })
    .await?
}

/// A secret from the first line of `file` (named by `flag` in errors), or
/// of standard input without one: never from a flag, which `ps` and shell
/// history would show.
pub async fn read_secret_line(
    file: Option<&std::path::Path>,
    flag: &str,
) -> anyhow::Result<String> {
    use anyhow::Context as _;
    use tokio::io::AsyncBufReadExt;
    let text = match file {
        Some(path) => tokio::fs::read_to_string(path)
            .await
            .with_context(|| format!("reading {flag} {}", path.display()))?,
        None => {
            let mut line = String::new();
            tokio::io::BufReader::new(tokio::io::stdin())
                .read_line(&mut line)
                .await
                .context("reading the secret from standard input")?;
            line
        }
    };
    Ok(text.lines().next().unwrap_or_default().to_owned())
}
