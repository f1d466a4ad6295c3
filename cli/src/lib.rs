//! The `nasfleet` command line: flag definitions and dispatch to one module per command group.

pub mod commands;
pub mod credentials;
pub mod output;

use clap::{Parser, Subcommand};
use output::OutputFormat;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "nasfleet",
    version,
    about = "Manage a fleet of ZFS NAS systems"
)]
pub struct Cli {
    /// CLI credentials file (default: $NASFLEET_CONFIG, then ~/.config/nasfleet/config.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Output format of read commands.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Systems (NAS hosts) of the fleet.
    #[command(subcommand)]
    System(SystemCommand),
    /// Join tokens for enrolling new systems.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
pub enum SystemCommand {
    /// Every system with its status.
    List,
    /// One system in detail: inventory, datasets, services.
    Show {
        name: String,
        /// Ask the agent for a fresh inventory first.
        #[arg(long)]
        refresh: bool,
    },
    /// The services of a system, with SSH state and host keys.
    Services { name: String },
    /// Remove a system and revoke its certificate.
    Remove {
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Mint a single-use join token.
    Create {
        /// How long the token stays valid (e.g. 30m, 1h, 2d).
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
}

/// Runs one parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let channel = credentials::connect(cli.config.as_deref()).await?;
    let output = cli.output;
    match cli.command {
        Command::System(SystemCommand::List) => commands::system::list(channel, output).await,
        Command::System(SystemCommand::Show { name, refresh }) => {
            commands::system::show(channel, &name, refresh, output).await
        }
        Command::System(SystemCommand::Services { name }) => {
            commands::system::services(channel, &name, output).await
        }
        Command::System(SystemCommand::Remove { name, yes }) => {
            commands::system::remove(channel, &name, yes).await
        }
        Command::Token(TokenCommand::Create { ttl }) => {
            commands::token::create(channel, &ttl, output).await
        }
    }
}
