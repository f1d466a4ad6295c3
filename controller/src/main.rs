//! `nasfleet-controller`: parses flags and hands over to the library (init or run).

use anyhow::Context;
use clap::{Parser, Subcommand};
use nasfleet_common::daemon::{LogFormat, init_logging, shutdown_on_signals};
use nasfleet_common::duration::parse_duration;
use nasfleet_controller::config::{ControllerConfig, DataDir};
use nasfleet_controller::init::{InitOptions, init};
use nasfleet_controller::server;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "nasfleet-controller",
    version,
    about = "nasfleet fleet controller"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new data dir: CA, server certificate, first admin, config files.
    Init {
        #[arg(long)]
        data_dir: PathBuf,
        /// Address to serve on.
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: SocketAddr,
        /// DNS name clients use to reach this controller (default: host name).
        #[arg(long)]
        name: Option<String>,
        /// User name of the first administrator.
        #[arg(long, default_value = "admin")]
        admin: String,
    },
    /// Exit 0 when the controller of the data dir serves (gRPC health,
    /// console and metrics listeners), else 1 with what failed.
    Check {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Serve the fleet.
    Run {
        #[arg(long)]
        data_dir: PathBuf,
        /// Override `listen` from controller.toml.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Override `web_listen` from controller.toml (the web console's
        /// address); the console's URL becomes https://ADDR.
        #[arg(long)]
        web_listen: Option<SocketAddr>,
        /// Override `metrics_listen` from controller.toml (loopback only).
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// Override `alert_interval` from controller.toml (e.g. 30s).
        #[arg(long)]
        alert_interval: Option<String>,
        /// Override `offline_grace` from controller.toml (e.g. 5m).
        #[arg(long)]
        offline_grace: Option<String>,
        /// Override `heartbeat_interval` from controller.toml (e.g. 10s).
        #[arg(long)]
        heartbeat_interval: Option<String>,
        /// Override `log_format` from controller.toml.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nasfleet-controller: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Init {
            data_dir,
            listen,
            name,
            admin,
        } => {
            let summary = init(&InitOptions {
                data_dir: data_dir.clone(),
                listen,
                name,
                admin,
            })
            .with_context(|| format!("initialising {}", data_dir.display()))?;
            println!("Initialised controller data dir {}", data_dir.display());
            println!("  controller URL:  {}", summary.url);
            println!("  CA fingerprint:  {}", summary.ca_fingerprint);
            println!("  CLI config:      {}", summary.cli_config.display());
            println!(
                "Start it with: nasfleet-controller run --data-dir {}",
                data_dir.display()
            );
            Ok(())
        }
        Command::Check { data_dir } => {
            let dir = DataDir::new(data_dir);
            let config = ControllerConfig::load(&dir.config())?;
            let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            match runtime.block_on(nasfleet_controller::check::check(&dir, &config)) {
                Ok(lines) => {
                    for line in lines {
                        println!("{line}");
                    }
                    Ok(())
                }
                Err(lines) => anyhow::bail!("unhealthy:\n  {}", lines.join("\n  ")),
            }
        }
        Command::Run {
            data_dir,
            listen,
            web_listen,
            metrics_listen,
            alert_interval,
            offline_grace,
            heartbeat_interval,
            log_format,
        } => {
            let dir = DataDir::new(data_dir);
            let mut config = ControllerConfig::load(&dir.config())?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            if let Some(web_listen) = web_listen {
                // The console's URL follows the address given here.
                config.web_listen = Some(web_listen);
                config.web_url = None;
            }
            if let Some(addr) = metrics_listen {
                nasfleet_controller::config::check_metrics_listen(addr, config.metrics_tls)
                    .map_err(anyhow::Error::msg)?;
                config.metrics_listen = Some(addr);
            }
            if let Some(interval) = alert_interval {
                config.alert_interval = interval;
            }
            if let Some(grace) = offline_grace {
                config.offline_grace = grace;
            }
            config.alerts().map_err(anyhow::Error::msg)?;
            if let Some(interval) = heartbeat_interval {
                parse_duration("--heartbeat-interval", &interval)?;
                config.heartbeat_interval = interval;
            }
            init_logging(log_format.unwrap_or(config.log_format));
            let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            runtime.block_on(async {
                let shutdown = shutdown_on_signals().context("installing signal handlers")?;
                let listener = server::bind(config.listen).await?;
                server::serve(&dir, &config, listener, shutdown).await?;
                Ok(())
            })
        }
    }
}
