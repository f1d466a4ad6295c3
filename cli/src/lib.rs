//! The `nasfleet` command line: the global flags, the command groups, and running the one asked for; each group (one module in [`commands`]) owns its flags, its pre-check and its run.

// First, so that `outln!` is in scope in every module after it.
#[macro_use]
pub mod output;
pub mod commands;
pub mod context;
pub mod credentials;
pub mod failure;

use clap::{Parser, Subcommand};
use commands::alert::AlertCommand;
use commands::audit::AuditCommand;
use commands::dataset::DatasetCommand;
use commands::login::LoginArgs;
use commands::notify::NotifyCommand;
use commands::replication::ReplicationCommand;
use commands::rsync::RsyncCommand;
use commands::run::RunCommand;
use commands::snapshot::SnapshotCommand;
use commands::snapshot_task::SnapshotTaskCommand;
use commands::ssh_connection::SshConnectionCommand;
use commands::system::SystemCommand;
use commands::token::TokenCommand;
use commands::ui::UiArgs;
use commands::user::UserCommand;
use context::Context;
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
    /// The fleet's people: roles (admin, operator, viewer) and the systems they see.
    #[command(subcommand)]
    User(UserCommand),
    /// Sign in on this machine with a token from `nasfleet user create`.
    Login(LoginArgs),
    /// The audit log: every change and every refused call.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print a one-time sign-in link to the web console for this CLI's user.
    Ui(UiArgs),
    /// Alerts: systems offline, pools unhealthy or full, failed runs, stale protection.
    #[command(subcommand)]
    Alert(AlertCommand),
    /// Notification channels: webhooks and mail told of every alert raised or cleared.
    #[command(subcommand)]
    Notify(NotifyCommand),
}

impl Command {
    /// Hands the command to its group, which checks its flags, connects and does the work.
    async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        match self {
            Command::System(command) => command.run(ctx).await,
            Command::Token(command) => command.run(ctx).await,
            Command::SnapshotTask(command) => command.run(ctx).await,
            Command::Run(command) => command.run(ctx).await,
            Command::Snapshot(command) => command.run(ctx).await,
            Command::Dataset(command) => command.run(ctx).await,
            Command::Replication(command) => command.run(ctx).await,
            Command::SshConnection(command) => command.run(ctx).await,
            Command::Rsync(command) => command.run(ctx).await,
            Command::User(command) => command.run(ctx).await,
            Command::Login(args) => args.run(ctx.config_flag(), ctx.output).await,
            Command::Audit(command) => command.run(ctx).await,
            Command::Ui(args) => args.run(ctx).await,
            Command::Alert(command) => command.run(ctx).await,
            Command::Notify(command) => command.run(ctx).await,
        }
    }
}

/// Runs one parsed command. A failure that this client's certificate
/// causes is explained as such.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Context::new(cli.config, cli.output);
    match cli.command.run(&ctx).await {
        Ok(()) => Ok(()),
        Err(e) => Err(ctx.explain(e).await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use commands::task::LifecycleCommand;
    use failure::Exit;

    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(argv: &[&str]) -> Cli {
        Cli::try_parse_from(argv.iter()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs a command line as `main` does, with a credentials file that
    /// does not exist: the exit status and the message.
    async fn outcome(argv: &[&str]) -> (Exit, String) {
        let missing = std::env::temp_dir().join("nasfleet-test-no-such-dir/config.toml");
        let mut argv = argv.to_vec();
        argv.extend_from_slice(&["--config", missing.to_str().unwrap_or_default()]);
        match run(parse(&argv)).await {
            Ok(()) => panic!("{argv:?} succeeded without credentials"),
            Err(e) => (failure::exit_for(&e), failure::message(&e)),
        }
    }

    /// What the pre-check refused, with exit status 2, before any
    /// credentials were looked for.
    async fn refused(argv: &[&str]) -> String {
        let (exit, message) = outcome(argv).await;
        assert_eq!(exit, Exit::Invalid, "{argv:?}: {message}");
        message
    }

    /// The pre-check let the command line through: it got as far as reading
    /// the credentials.
    async fn accepted(argv: &[&str]) {
        let (exit, message) = outcome(argv).await;
        assert_eq!(exit, Exit::Failure, "{argv:?}: {message}");
        assert!(
            message.starts_with("cannot read the CLI config"),
            "{argv:?}: {message}"
        );
    }

    #[tokio::test]
    async fn bad_flags_fail_before_connecting() {
        let err = refused(&[
            "nasfleet",
            "snapshot-task",
            "create",
            "--system",
            "nas1",
            "--dataset",
            "tank/data",
            "--exclude",
            "tmp",
        ])
        .await;
        assert!(err.starts_with("exclude: Excluding datasets"), "{err}");
        let err = refused(&[
            "nasfleet",
            "snapshot-task",
            "edit",
            "3",
            "--cron",
            "61 * * * *",
        ])
        .await;
        assert!(err.starts_with("cron: "), "{err}");
        let err = refused(&[
            "nasfleet",
            "snapshot",
            "create",
            "nas1",
            "tank",
            "--naming-schema",
            "x",
        ])
        .await;
        assert!(err.starts_with("naming_schema: "), "{err}");
        accepted(&["nasfleet", "run", "list"]).await;
        accepted(&["nasfleet", "snapshot", "create", "nas1", "tank"]).await;
        let err = refused(&["nasfleet", "token", "create", "--ttl", "0s"]).await;
        assert!(err.starts_with("--ttl: "), "{err}");
        accepted(&["nasfleet", "token", "create"]).await;
        let err = refused(&[
            "nasfleet",
            "replication",
            "create",
            "offsite",
            "--source",
            "nas1",
            "--target",
            "nas2:backup",
        ])
        .await;
        assert_eq!(
            err,
            "source: expected SYSTEM:DATASET[,DATASET...], got \"nas1\""
        );
        let err = refused(&["nasfleet", "replication", "edit", "offsite"]).await;
        assert!(err.starts_with("nothing to change"), "{err}");
        let err = refused(&["nasfleet", "ssh-connection", "create", "nas1", "a/b"]).await;
        assert!(err.starts_with("target: system 'a/b'"), "{err}");
        let err = refused(&["nasfleet", "ssh-connection", "delete", "x_", "nas2"]).await;
        assert!(err.starts_with("source: system 'x_'"), "{err}");
        accepted(&["nasfleet", "ssh-connection", "list"]).await;
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

    #[tokio::test]
    async fn rsync_flags_fail_before_connecting() {
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
        let err = refused(&create).await;
        assert_eq!(err, "remote_host: Remote host is required");
        let mut argv = create.to_vec();
        argv.extend_from_slice(&["--remote-host", "backup", "--mode", "ssh"]);
        let err = refused(&argv).await;
        assert_eq!(err, "remote_path: Remote path is required in SSH mode");
        argv.extend_from_slice(&["--remote-path", "/srv", "--aux", "--exclude=*.tmp"]);
        accepted(&argv).await;
        let err = refused(&["nasfleet", "rsync", "edit", "5"]).await;
        assert!(err.starts_with("nothing to change"), "{err}");
        let cli = parse(&["nasfleet", "rsync", "run", "5", "--watch"]);
        assert!(matches!(
            cli.command,
            Command::Rsync(RsyncCommand::Lifecycle(LifecycleCommand::Run {
                watch: true,
                ..
            }))
        ));
        accepted(&["nasfleet", "rsync", "run", "5", "--watch"]).await;
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
