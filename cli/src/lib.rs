//! The `nasfleet` command line: flag definitions and dispatch to one module per command group.

// First, so that `outln!` is in scope in every module after it.
#[macro_use]
pub mod output;
pub mod commands;
pub mod credentials;
pub mod failure;

use clap::{Parser, Subcommand};
use commands::replication::ReplicationCommand;
use commands::rsync::RsyncCommand;
use commands::snapshot_task::{CreateArgs, EditArgs};
use commands::ssh_connection::SshConnectionCommand;
use commands::task::SNAPSHOT;
use output::OutputFormat;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "nasfleet",
    version,
    about = "Manage a fleet of ZFS NAS systems",
    after_help = failure::EXIT_STATUS_HELP
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
    /// Periodic snapshot tasks.
    #[command(subcommand, name = "snapshot-task")]
    SnapshotTask(SnapshotTaskCommand),
    /// Runs of tasks: history, live progress, cancellation.
    #[command(subcommand)]
    Run(RunCommand),
    /// One-time snapshots and the snapshots of a system.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Datasets of a system.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// ZFS replication tasks: datasets of one or more systems into a target.
    #[command(subcommand)]
    Replication(ReplicationCommand),
    /// SSH trust between systems, which replication between them needs.
    #[command(subcommand, name = "ssh-connection")]
    SshConnection(SshConnectionCommand),
    /// Rsync tasks: a path of a system copied to or from a remote host on a schedule.
    #[command(subcommand)]
    Rsync(RsyncCommand),
}

#[derive(Subcommand)]
pub enum SnapshotTaskCommand {
    /// Create a periodic snapshot task (hourly, 2 weeks lifetime unless told otherwise).
    Create(CreateArgs),
    /// Every periodic snapshot task.
    List,
    /// One periodic snapshot task.
    Show {
        /// Task id or name.
        task: String,
    },
    /// Change some fields of a task; the others stay.
    Edit(EditArgs),
    #[command(flatten)]
    Lifecycle(commands::task::LifecycleCommand),
}

#[derive(Subcommand)]
pub enum RunCommand {
    /// Recent runs, newest first.
    List {
        /// Only runs of this task (id or name).
        #[arg(long)]
        task: Option<String>,
        /// How many runs (default: the controller's, 20).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// One run with its steps and log.
    Show { id: u64 },
    /// Follow a run live until it ends; exits non-zero unless it succeeded.
    Watch { id: u64 },
    /// Ask the controller to cancel a run.
    Cancel { id: u64 },
}

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot now.
    Create {
        system: String,
        dataset: String,
        /// Snapshot the descendants too, atomically.
        #[arg(long)]
        recursive: bool,
        /// strftime-style name pattern [default: manual-%Y-%m-%d_%H-%M].
        #[arg(long, value_name = "SCHEMA")]
        naming_schema: Option<String>,
    },
    /// The snapshots of a system, or of one dataset.
    List {
        system: String,
        dataset: Option<String>,
        /// With DATASET: its descendants' snapshots too.
        #[arg(long)]
        recursive: bool,
        /// Ask the agent for a fresh inventory first.
        #[arg(long)]
        refresh: bool,
    },
}

#[derive(Subcommand)]
pub enum DatasetCommand {
    /// The datasets of a system with their snapshots and snapshot tasks.
    List {
        system: String,
        /// Ask the agent for a fresh inventory first.
        #[arg(long)]
        refresh: bool,
    },
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
    /// Remove a system no task uses: revoke its certificate, end its SSH connections.
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
    precheck(&cli.command).map_err(|e| anyhow::Error::new(failure::InvalidInput(e)))?;
    let credentials = credentials::Credentials::load(cli.config.as_deref()).await?;
    let channel = match credentials.connect().await {
        Ok(channel) => channel,
        Err(e) => return Err(credentials.explain(e, false).await),
    };
    match dispatch(channel, cli.command, cli.output).await {
        Ok(()) => Ok(()),
        Err(e) => Err(credentials.explain(e, true).await),
    }
}

async fn dispatch(
    channel: tonic::transport::Channel,
    command: Command,
    output: OutputFormat,
) -> anyhow::Result<()> {
    match command {
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
        Command::SnapshotTask(command) => snapshot_task(channel, command, output).await,
        Command::Run(command) => run_command(channel, command, output).await,
        Command::Snapshot(SnapshotCommand::Create {
            system,
            dataset,
            recursive,
            naming_schema,
        }) => {
            commands::snapshot::create(
                channel,
                &system,
                &dataset,
                recursive,
                naming_schema.as_deref(),
                output,
            )
            .await
        }
        Command::Snapshot(SnapshotCommand::List {
            system,
            dataset,
            recursive,
            refresh,
        }) => {
            commands::snapshot::list(
                channel,
                &system,
                dataset.as_deref(),
                recursive,
                refresh,
                output,
            )
            .await
        }
        Command::Dataset(DatasetCommand::List { system, refresh }) => {
            commands::dataset::list(channel, &system, refresh, output).await
        }
        Command::Replication(command) => {
            commands::replication::dispatch(channel, command, output).await
        }
        Command::SshConnection(command) => {
            commands::ssh_connection::dispatch(channel, command, output).await
        }
        Command::Rsync(command) => commands::rsync::dispatch(channel, command, output).await,
    }
}

/// Refuses flags that are wrong whatever the controller holds before any
/// credentials are read or connections opened, so a typo fails fast and the
/// same way on every machine. The controller checks everything again.
pub fn precheck(command: &Command) -> anyhow::Result<()> {
    use commands::schedule_args::ScheduleArgs;
    use commands::snapshot::check_schema;
    use nasfleet_common::schedule::Schedule;
    let schedule = |args: &ScheduleArgs| args.resolve(Schedule::hourly()).map(drop);
    match command {
        Command::SnapshotTask(SnapshotTaskCommand::Create(args)) => {
            commands::snapshot_task::create_spec(args).map(drop)
        }
        Command::SnapshotTask(SnapshotTaskCommand::Edit(args)) => {
            schedule(&args.schedule)?;
            args.naming_schema
                .as_deref()
                .map(check_schema)
                .transpose()?;
            Ok(())
        }
        Command::Snapshot(SnapshotCommand::Create {
            naming_schema: Some(schema),
            ..
        }) => check_schema(schema).map(drop),
        Command::Replication(ReplicationCommand::Create(args)) => {
            commands::replication::create_spec(args).map(drop)
        }
        Command::Replication(ReplicationCommand::Edit(args)) => {
            commands::replication::edit_request(args).map(drop)
        }
        Command::SshConnection(
            SshConnectionCommand::Create { source, target }
            | SshConnectionCommand::Delete { source, target, .. },
        ) => commands::ssh_connection::check_pair(source, target),
        Command::Rsync(RsyncCommand::Create(args)) => commands::rsync::create_spec(args).map(drop),
        Command::Rsync(RsyncCommand::Edit(args)) => commands::rsync::edit_precheck(args).map(drop),
        Command::Token(TokenCommand::Create { ttl }) => {
            Ok(nasfleet_common::duration::parse_duration("--ttl", ttl).map(drop)?)
        }
        _ => Ok(()),
    }
}

async fn snapshot_task(
    channel: tonic::transport::Channel,
    command: SnapshotTaskCommand,
    output: OutputFormat,
) -> anyhow::Result<()> {
    use commands::snapshot_task;
    match command {
        SnapshotTaskCommand::Create(args) => snapshot_task::create(channel, &args, output).await,
        SnapshotTaskCommand::List => snapshot_task::list(channel, output).await,
        SnapshotTaskCommand::Show { task } => snapshot_task::show(channel, &task, output).await,
        SnapshotTaskCommand::Edit(args) => snapshot_task::edit(channel, &args, output).await,
        SnapshotTaskCommand::Lifecycle(command) => command.execute(channel, SNAPSHOT, output).await,
    }
}

async fn run_command(
    channel: tonic::transport::Channel,
    command: RunCommand,
    output: OutputFormat,
) -> anyhow::Result<()> {
    use commands::run;
    match command {
        RunCommand::List { task, limit } => {
            run::list(channel, task.as_deref(), limit, output).await
        }
        RunCommand::Show { id } => run::show(channel, id, output).await,
        RunCommand::Watch { id } => run::watch_run(channel, id, output).await,
        RunCommand::Cancel { id } => run::cancel(channel, id, output).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use commands::task::LifecycleCommand;

    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_flags_fail_before_connecting() {
        let parse =
            |argv: &[&str]| Cli::try_parse_from(argv.iter()).unwrap_or_else(|e| panic!("{e}"));
        let cli = parse(&[
            "nasfleet",
            "snapshot-task",
            "create",
            "--system",
            "nas1",
            "--dataset",
            "tank/data",
            "--exclude",
            "tmp",
        ]);
        let err = precheck(&cli.command).unwrap_err().to_string();
        assert!(err.starts_with("exclude: Excluding datasets"), "{err}");
        let cli = parse(&[
            "nasfleet",
            "snapshot-task",
            "edit",
            "3",
            "--cron",
            "61 * * * *",
        ]);
        let err = precheck(&cli.command).unwrap_err().to_string();
        assert!(err.starts_with("cron: "), "{err}");
        let cli = parse(&[
            "nasfleet",
            "snapshot",
            "create",
            "nas1",
            "tank",
            "--naming-schema",
            "x",
        ]);
        assert!(precheck(&cli.command).is_err());
        let cli = parse(&["nasfleet", "run", "list"]);
        assert!(precheck(&cli.command).is_ok());
        let cli = parse(&["nasfleet", "token", "create", "--ttl", "0s"]);
        let err = precheck(&cli.command).unwrap_err().to_string();
        assert!(err.starts_with("--ttl: "), "{err}");
        let cli = parse(&[
            "nasfleet",
            "replication",
            "create",
            "offsite",
            "--source",
            "nas1",
            "--target",
            "nas2:backup",
        ]);
        let err = precheck(&cli.command).unwrap_err().to_string();
        assert_eq!(
            err,
            "source: expected SYSTEM:DATASET[,DATASET...], got \"nas1\""
        );
        let cli = parse(&["nasfleet", "replication", "edit", "offsite"]);
        let err = precheck(&cli.command).unwrap_err().to_string();
        assert!(err.starts_with("nothing to change"), "{err}");
        let cli = parse(&["nasfleet", "ssh-connection", "create", "nas1", "a/b"]);
        let err = precheck(&cli.command).unwrap_err().to_string();
        assert!(err.starts_with("target: system 'a/b'"), "{err}");
    }

    #[test]
    fn new_command_groups_parse() {
        let cli = Cli::try_parse_from(["nasfleet", "replication", "run", "offsite", "--watch"]);
        assert!(matches!(
            cli.map(|c| c.command),
            Ok(Command::Replication(ReplicationCommand::Lifecycle(
                LifecycleCommand::Run { watch: true, .. }
            )))
        ));
        let cli = Cli::try_parse_from([
            "nasfleet",
            "-o",
            "json",
            "ssh-connection",
            "delete",
            "nas1",
            "nas2",
            "--yes",
        ]);
        assert!(matches!(
            cli.map(|c| c.command),
            Ok(Command::SshConnection(SshConnectionCommand::Delete {
                yes: true,
                ..
            }))
        ));
    }

    #[test]
    fn rsync_flags_fail_before_connecting() {
        let parse =
            |argv: &[&str]| Cli::try_parse_from(argv.iter()).unwrap_or_else(|e| panic!("{e}"));
        let create = [
            "nasfleet",
            "-o",
            "json",
            "rsync",
            "create",
            "--system",
            "nas1",
            "--path",
            "/mnt/tank/data",
            "--user",
            "root",
            "--direction",
            "push",
        ];
        let err = precheck(&parse(&create).command).unwrap_err().to_string();
        assert_eq!(err, "remote_host: Remote host is required");
        let mut argv = create.to_vec();
        argv.extend_from_slice(&["--remote-host", "backup", "--mode", "ssh"]);
        let err = precheck(&parse(&argv).command).unwrap_err().to_string();
        assert_eq!(err, "remote_path: Remote path is required in SSH mode");
        argv.extend_from_slice(&["--remote-path", "/srv", "--aux", "--exclude=*.tmp"]);
        assert!(precheck(&parse(&argv).command).is_ok());
        let cli = parse(&["nasfleet", "rsync", "edit", "5"]);
        let err = precheck(&cli.command).unwrap_err().to_string();
        assert!(err.starts_with("nothing to change"), "{err}");
        let cli = parse(&["nasfleet", "rsync", "run", "5", "--watch"]);
        assert!(matches!(
            cli.command,
            Command::Rsync(RsyncCommand::Lifecycle(LifecycleCommand::Run {
                watch: true,
                ..
            }))
        ));
        assert!(precheck(&cli.command).is_ok());
    }

    #[test]
    fn snapshot_task_is_one_word() {
        let cli = Cli::try_parse_from([
            "nasfleet",
            "-o",
            "json",
            "snapshot-task",
            "run",
            "7",
            "--watch",
        ]);
        assert!(matches!(
            cli.map(|c| c.command),
            Ok(Command::SnapshotTask(SnapshotTaskCommand::Lifecycle(
                LifecycleCommand::Run { watch: true, .. }
            )))
        ));
    }
}
