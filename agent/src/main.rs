//! `nasfleet-agent`: parses flags and hands over to the library (join or run).

use anyhow::Context;
use clap::{Parser, Subcommand};
use nasfleet_agent::config::{AgentConfig, RunSettings};
use nasfleet_agent::join::{JoinOptions, join};
use nasfleet_agent::link::{self, LinkError};
use nasfleet_agent::state_dir::StateDir;
use nasfleet_agent::{EXIT_REFUSED, ssh, zfs};
use nasfleet_common::daemon::{LogFormat, init_logging, shutdown_on_signals};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "nasfleet-agent",
    version,
    about = "nasfleet agent for one NAS host"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll this host with a join token from `nasfleet token create`.
    Join {
        /// Controller URL, e.g. https://controller.example:7443
        #[arg(long)]
        controller: String,
        #[arg(long)]
        token: String,
        /// CA fingerprint printed with the token (sha256:...).
        #[arg(long)]
        ca_fingerprint: String,
        /// Name of this system in the fleet.
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "/var/lib/nasfleet-agent")]
        state_dir: PathBuf,
    },
    /// Connect to the controller and serve it until stopped.
    Run {
        #[arg(long, default_value = "/var/lib/nasfleet-agent")]
        state_dir: PathBuf,
        /// Config file (see deploy/agent.toml); flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// A pool this system owns (repeatable; default: every pool).
        #[arg(long = "pool")]
        pools: Vec<String>,
        /// HOST:PORT where other systems reach this host's sshd.
        #[arg(long)]
        ssh_address: Option<String>,
        /// An sshd host public key file to report (repeatable).
        #[arg(long = "ssh-host-key")]
        ssh_host_keys: Vec<PathBuf>,
        /// How often the full inventory is re-sent (e.g. 5m).
        #[arg(long)]
        inventory_interval: Option<String>,
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Exit 0 when this host can do its part (enrolled, certificate in
    /// force, controller SERVING, zfs answering), else 1 with what failed.
    Check {
        #[arg(long, default_value = "/var/lib/nasfleet-agent")]
        state_dir: PathBuf,
    },
    /// sshd's forced command for a replication key (written by the agent
    /// into authorized_keys, not run by hand): runs the replication
    /// commands in SSH_ORIGINAL_COMMAND that `source` may run here.
    SshGate {
        /// The system whose key this is.
        #[arg(long)]
        source: String,
        #[arg(long, default_value = "/var/lib/nasfleet-agent")]
        state_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nasfleet-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // The gate is a short synchronous filter in front of zfs: no runtime.
    if let Command::SshGate { source, state_dir } = &cli.command {
        let original = std::env::var("SSH_ORIGINAL_COMMAND").ok();
        let status = ssh::gate::serve(state_dir, source, original.as_deref());
        return Ok(ExitCode::from(u8::try_from(status).unwrap_or(1)));
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    match cli.command {
        Command::Join {
            controller,
            token,
            ca_fingerprint,
            name,
            state_dir,
        } => {
            let options = JoinOptions {
                controller,
                token,
                ca_fingerprint,
                name,
                state_dir,
            };
            let enrollment = runtime
                .block_on(join(&options))
                .context("enrollment failed")?;
            println!(
                "Enrolled as system '{}' with {}; credentials stored in {}",
                enrollment.name,
                enrollment.controller,
                options.state_dir.display()
            );
            println!(
                "Start the agent with: nasfleet-agent run --state-dir {}",
                options.state_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            state_dir,
            config,
            pools,
            ssh_address,
            ssh_host_keys,
            inventory_interval,
            log_format,
        } => {
            let file = match &config {
                Some(path) => AgentConfig::load(path)?,
                None => AgentConfig::default(),
            };
            init_logging(log_format.or(file.log_format).unwrap_or_default());
            let settings = RunSettings::build(
                state_dir,
                file,
                pools,
                ssh_address,
                ssh_host_keys,
                inventory_interval,
            )?;
            runtime.block_on(async {
                let shutdown = shutdown_on_signals().context("installing signal handlers")?;
                let zfs = zfs::probe_dialect().await;
                tracing::info!(dialect = ?zfs.dialect, version = %zfs.version, "zfs probed");
                match link::run(settings, zfs, shutdown).await {
                    Ok(()) => {
                        tracing::info!("agent stopped");
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e @ LinkError::Refused(_)) => {
                        tracing::error!(error = %e, "giving up");
                        eprintln!("nasfleet-agent: error: {e}");
                        Ok(ExitCode::from(EXIT_REFUSED))
                    }
                    Err(e) => Err(e.into()),
                }
            })
        }
        // Served above, before any runtime exists.
        Command::SshGate { .. } => Ok(ExitCode::SUCCESS),
        Command::Check { state_dir } => {
            match runtime.block_on(nasfleet_agent::check::check(&StateDir::new(state_dir))) {
                Ok(lines) => {
                    for line in lines {
                        println!("{line}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(lines) => anyhow::bail!("unhealthy:\n  {}", lines.join("\n  ")),
            }
        }
    }
}
