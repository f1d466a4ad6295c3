//! `nasfleet rsync create|list|show|edit|delete|run|enable|disable`: rsync tasks with TrueNAS's fields, defaults and wording.
//!
//! The CLI checks only what needs neither the controller nor the task's host
//! (remote host given, module or path for the mode, remote path length,
//! auxiliary words), worded as the controller words them; the controller
//! checks everything again, the rest on the task's system through its agent.
//! Auxiliary parameters are data: each `--aux` value is one rsync argument,
//! passed on as typed, never split or handed to a shell, and only options
//! on the shared allow-list ([`nasfleet_common::rsync_aux`]) are accepted.

use super::schedule_args::{ScheduleArgs, edited_stale_after};
use super::status_error;
use super::task::{
    self, RSYNC, TaskJson, last_run_text, next_run_text, rsync_direction_word, rsync_mode_word,
    schedule_text, task_schedule, task_status,
};
use crate::context::Context;
use crate::output::{OutputFormat, Table, cell, human_time, print_json, yes_no};
use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use nasfleet_common::schedule::Schedule;
use nasfleet_proto::v1::fleet_client::FleetClient;
use nasfleet_proto::v1::task_spec::Kind;
use nasfleet_proto::v1::{
    RsyncDirection, RsyncMode, RsyncTaskSpec, Task, TaskSpec, UpdateTaskRequest,
};
use tonic::transport::Channel;

use nasfleet_common::rsync_rules::{self, default_port, effective_port};
/// The agent's messages and limits, from the one home of the rules, so a
/// script sees the same text whichever side refused.
pub use nasfleet_common::rsync_rules::{
    MAX_REMOTE_PATH, PORT_OUT_OF_RANGE, REMOTE_HOST_REQUIRED, REMOTE_MODULE_REQUIRED,
    REMOTE_PATH_REQUIRED, REMOTE_PATH_TOO_LONG,
};
/// What `rsync list` prints when there is nothing to list.
pub const NO_TASKS: &str = "No Rsync Tasks configured";

/// Width of the labels of `show`.
const LABEL: usize = 31;

#[derive(Subcommand)]
pub enum RsyncCommand {
    /// Create an rsync task (hourly at minute 00, module mode unless told otherwise).
    Create(CreateArgs),
    /// Every rsync task.
    List,
    /// One rsync task with all its fields.
    Show {
        /// Task id or name.
        task: String,
    },
    /// Change some fields of a task; the others stay.
    Edit(EditArgs),
    #[command(flatten)]
    Lifecycle(task::LifecycleCommand),
}

/// Which way the files go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Direction {
    /// From PATH on the system to the remote host.
    Push,
    /// From the remote host into PATH on the system.
    Pull,
}

impl From<Direction> for RsyncDirection {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Push => RsyncDirection::Push,
            Direction::Pull => RsyncDirection::Pull,
        }
    }
}

/// How the remote host is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// An rsync daemon module (rsync://HOST:PORT/MODULE).
    Module,
    /// rsync over SSH to a path on the remote host.
    Ssh,
}

impl From<Mode> for RsyncMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Module => RsyncMode::Module,
            Mode::Ssh => RsyncMode::Ssh,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// The system the task runs on.
    #[arg(long)]
    pub system: String,
    /// The path on the system to copy from (push) or into (pull), e.g. /mnt/tank/data.
    #[arg(long)]
    pub path: String,
    /// The local user rsync runs as (in SSH mode also the remote login unless --remote-host says USER@HOST).
    #[arg(long)]
    pub user: String,
    /// push: the system's path to the remote host; pull: the remote host into the path.
    #[arg(long, value_enum, ignore_case = true)]
    pub direction: Direction,
    /// HOST or USER@HOST (required).
    #[arg(long, value_name = "[USER@]HOST")]
    pub remote_host: Option<String>,
    /// module: an rsync daemon module; ssh: rsync over SSH.
    #[arg(long, value_enum, ignore_case = true, default_value_t = Mode::Module)]
    pub mode: Mode,
    /// The rsync daemon module (module mode).
    #[arg(long, value_name = "NAME")]
    pub remote_module: Option<String>,
    /// Port of the remote sshd or rsync daemon [default: 22 for ssh, 873 for module].
    #[arg(long, value_name = "N")]
    pub remote_port: Option<u32>,
    /// Path on the remote host (required in ssh mode; below the module in module mode).
    #[arg(long, value_name = "PATH")]
    pub remote_path: Option<String>,
    /// Check the remote path before saving, and create it if it does not exist.
    #[arg(long)]
    pub validate_remote_path: bool,
    /// What the task is for; it also becomes the task's name.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    /// Copy only the path itself, not its subdirectories.
    #[arg(long)]
    pub no_recursive: bool,
    /// Do not preserve modification times.
    #[arg(long)]
    pub no_times: bool,
    /// Do not compress data in transit.
    #[arg(long)]
    pub no_compress: bool,
    /// Archive mode (rsync -a: recursive, links, permissions, times, groups, owner, devices).
    #[arg(long)]
    pub archive: bool,
    /// Delete files at the destination that the source does not have.
    #[arg(long)]
    pub delete: bool,
    /// Suppress non-error messages.
    #[arg(long)]
    pub quiet: bool,
    /// Preserve permissions.
    #[arg(long)]
    pub preserve_permissions: bool,
    /// Preserve extended attributes.
    #[arg(long)]
    pub preserve_xattrs: bool,
    /// Update files one by one instead of putting them all in place at the end.
    #[arg(long)]
    pub no_delay_updates: bool,
    /// One extra rsync option, value in the same word (e.g. --aux --exclude=*.tmp); repeatable.
    /// Allowed: flags such as -H -A -X -S -c -x -n -v --numeric-ids --partial --inplace
    /// --delete-excluded --backup, and --exclude= --include= --bwlimit= --chmod= --chown=
    /// --info= --compress-level= --timeout= --contimeout= --max-size= --min-size= --suffix=.
    /// Options that run programs, name files or follow links are refused.
    #[arg(long = "aux", value_name = "ARG", allow_hyphen_values = true)]
    pub aux: Vec<String>,
    /// Create the task switched off.
    #[arg(long)]
    pub disabled: bool,
}

#[derive(Debug, Clone, Args)]
pub struct EditArgs {
    /// Task id or name.
    pub task: String,
    /// Move the task to another system.
    #[arg(long)]
    pub system: Option<String>,
    /// The path on the system.
    #[arg(long)]
    pub path: Option<String>,
    /// The local user rsync runs as.
    #[arg(long)]
    pub user: Option<String>,
    /// push or pull.
    #[arg(long, value_enum, ignore_case = true)]
    pub direction: Option<Direction>,
    /// HOST or USER@HOST.
    #[arg(long, value_name = "[USER@]HOST")]
    pub remote_host: Option<String>,
    /// module or ssh; the port follows the mode unless it was set to another one.
    #[arg(long, value_enum, ignore_case = true)]
    pub mode: Option<Mode>,
    /// The rsync daemon module.
    #[arg(long, value_name = "NAME")]
    pub remote_module: Option<String>,
    /// Port of the remote sshd or rsync daemon.
    #[arg(long, value_name = "N")]
    pub remote_port: Option<u32>,
    /// Path on the remote host ("" clears it).
    #[arg(long, value_name = "PATH")]
    pub remote_path: Option<String>,
    /// Check the remote path before saving, and create it if it does not exist.
    #[arg(long, conflicts_with = "no_validate_remote_path")]
    pub validate_remote_path: bool,
    /// Do not check the remote path.
    #[arg(long)]
    pub no_validate_remote_path: bool,
    /// What the task is for ("" clears it).
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    /// Copy subdirectories too.
    #[arg(long, conflicts_with = "no_recursive")]
    pub recursive: bool,
    /// Copy only the path itself.
    #[arg(long)]
    pub no_recursive: bool,
    /// Preserve modification times.
    #[arg(long, conflicts_with = "no_times")]
    pub times: bool,
    /// Do not preserve modification times.
    #[arg(long)]
    pub no_times: bool,
    /// Compress data in transit.
    #[arg(long, conflicts_with = "no_compress")]
    pub compress: bool,
    /// Do not compress data in transit.
    #[arg(long)]
    pub no_compress: bool,
    /// Archive mode (rsync -a).
    #[arg(long, conflicts_with = "no_archive")]
    pub archive: bool,
    /// No archive mode.
    #[arg(long)]
    pub no_archive: bool,
    /// Delete files at the destination that the source does not have.
    #[arg(long, conflicts_with = "no_delete")]
    pub delete: bool,
    /// Keep files at the destination that the source does not have.
    #[arg(long)]
    pub no_delete: bool,
    /// Suppress non-error messages.
    #[arg(long, conflicts_with = "no_quiet")]
    pub quiet: bool,
    /// Print rsync's usual messages.
    #[arg(long)]
    pub no_quiet: bool,
    /// Preserve permissions.
    #[arg(long, conflicts_with = "no_preserve_permissions")]
    pub preserve_permissions: bool,
    /// Do not preserve permissions.
    #[arg(long)]
    pub no_preserve_permissions: bool,
    /// Preserve extended attributes.
    #[arg(long, conflicts_with = "no_preserve_xattrs")]
    pub preserve_xattrs: bool,
    /// Do not preserve extended attributes.
    #[arg(long)]
    pub no_preserve_xattrs: bool,
    /// Put updated files in place together at the end.
    #[arg(long, conflicts_with = "no_delay_updates")]
    pub delay_updates: bool,
    /// Update files one by one.
    #[arg(long)]
    pub no_delay_updates: bool,
    /// Replace all extra rsync options; one option per --aux, value in the same word
    /// (e.g. --aux --exclude=*.tmp); the allow-list of `rsync create --help` applies; repeatable.
    #[arg(
        long = "aux",
        value_name = "ARG",
        allow_hyphen_values = true,
        conflicts_with = "clear_aux"
    )]
    pub aux: Vec<String>,
    /// Remove all extra rsync arguments.
    #[arg(long)]
    pub clear_aux: bool,
    /// Switch the task on.
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Switch the task off.
    #[arg(long)]
    pub disable: bool,
}

/// The changes `edit` was asked for, apart from the schedule. `None` keeps
/// the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RsyncEdit {
    /// `--stale-after`, as given.
    pub stale_after: Option<String>,
    pub system: Option<String>,
    pub path: Option<String>,
    pub user: Option<String>,
    pub direction: Option<RsyncDirection>,
    pub remote_host: Option<String>,
    pub mode: Option<RsyncMode>,
    pub remote_module: Option<String>,
    pub remote_port: Option<u32>,
    pub remote_path: Option<String>,
    pub validate_remote_path: Option<bool>,
    pub description: Option<String>,
    pub recursive: Option<bool>,
    pub times: Option<bool>,
    pub compress: Option<bool>,
    pub archive: Option<bool>,
    pub delete: Option<bool>,
    pub quiet: Option<bool>,
    pub preserve_permissions: Option<bool>,
    pub preserve_xattrs: Option<bool>,
    pub delay_updates: Option<bool>,
    /// `Some(vec![])` empties the list; `None` keeps it.
    pub auxiliary: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

/// `--x` / `--no-x` to a change: `Some(true)`, `Some(false)` or none.
fn switch(on: bool, off: bool) -> Option<bool> {
    match (on, off) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

fn trimmed(value: &Option<String>) -> Option<String> {
    value.as_deref().map(|v| v.trim().to_owned())
}

impl From<&EditArgs> for RsyncEdit {
    fn from(a: &EditArgs) -> Self {
        RsyncEdit {
            stale_after: a.schedule.stale_after.clone(),
            system: trimmed(&a.system),
            path: a.path.clone(),
            user: trimmed(&a.user),
            direction: a.direction.map(RsyncDirection::from),
            remote_host: trimmed(&a.remote_host),
            mode: a.mode.map(RsyncMode::from),
            remote_module: trimmed(&a.remote_module),
            remote_port: a.remote_port,
            remote_path: a.remote_path.clone(),
            validate_remote_path: switch(a.validate_remote_path, a.no_validate_remote_path),
            description: a.description.clone(),
            recursive: switch(a.recursive, a.no_recursive),
            times: switch(a.times, a.no_times),
            compress: switch(a.compress, a.no_compress),
            archive: switch(a.archive, a.no_archive),
            delete: switch(a.delete, a.no_delete),
            quiet: switch(a.quiet, a.no_quiet),
            preserve_permissions: switch(a.preserve_permissions, a.no_preserve_permissions),
            preserve_xattrs: switch(a.preserve_xattrs, a.no_preserve_xattrs),
            delay_updates: switch(a.delay_updates, a.no_delay_updates),
            auxiliary: if a.clear_aux {
                Some(Vec::new())
            } else if a.aux.is_empty() {
                None
            } else {
                Some(a.aux.clone())
            },
            enabled: switch(a.enable, a.disable),
        }
    }
}

impl RsyncEdit {
    /// The checks the given values allow without the current spec; the
    /// merged spec is checked as a whole by [`merge_edit`].
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(host) = &self.remote_host {
            rsync_rules::check_remote_host_given(host)?;
        }
        if let Some(path) = &self.remote_path {
            check_remote_path_length(path)?;
        }
        check_port(self.remote_port)?;
        if let Some(words) = &self.auxiliary {
            check_auxiliary(words)?;
        }
        Ok(())
    }
}

fn check_remote_path_length(path: &str) -> anyhow::Result<()> {
    rsync_rules::check_remote_path_length(path)?;
    Ok(())
}

/// A port given on the command line must be a real one; 0 on the wire
/// means "the mode's default", which leaving the flag out already says.
fn check_port(port: Option<u32>) -> anyhow::Result<()> {
    if let Some(port) = port {
        rsync_rules::check_chosen_port(port)?;
    }
    Ok(())
}

/// Each auxiliary parameter is one rsync option from the allow-list,
/// value included (`--exclude=*.tmp`); the rules live in
/// [`nasfleet_common::rsync_aux`], shared with the controller and the agent.
pub fn check_auxiliary(words: &[String]) -> anyhow::Result<()> {
    nasfleet_common::rsync_aux::check_auxiliary(words)?;
    Ok(())
}

/// The local checks of a whole spec, first broken rule first, in the
/// agent's order and wording ([`nasfleet_common::rsync_rules`]). The host
/// and module are judged trimmed, as the CLI sends them.
pub fn check_spec(spec: &RsyncTaskSpec) -> anyhow::Result<()> {
    rsync_rules::check_remote_host_given(spec.remote_host.trim())?;
    rsync_rules::check_given_for_mode(spec.mode(), spec.remote_module.trim(), &spec.remote_path)?;
    rsync_rules::check_remote_path_length(&spec.remote_path)?;
    rsync_rules::check_port(spec.remote_port)?;
    check_auxiliary(&spec.auxiliary)
}

/// The spec `create` sends, with TrueNAS's defaults and the effective port
/// filled in, checked as far as the CLI can.
pub fn create_spec(args: &CreateArgs) -> anyhow::Result<TaskSpec> {
    let schedule = args.schedule.resolve_or(Schedule::hourly())?;
    check_port(args.remote_port)?;
    let mode = RsyncMode::from(args.mode);
    let mut rsync = RsyncTaskSpec {
        system: args.system.trim().to_owned(),
        path: args.path.clone(),
        user: args.user.trim().to_owned(),
        direction: 0,
        description: args.description.clone().unwrap_or_default(),
        remote_host: trimmed(&args.remote_host).unwrap_or_default(),
        mode: 0,
        remote_module: trimmed(&args.remote_module).unwrap_or_default(),
        remote_port: args.remote_port.unwrap_or_else(|| default_port(mode)),
        remote_path: args.remote_path.clone().unwrap_or_default(),
        validate_remote_path: args.validate_remote_path,
        recursive: !args.no_recursive,
        times: !args.no_times,
        compress: !args.no_compress,
        archive: args.archive,
        delete: args.delete,
        quiet: args.quiet,
        preserve_permissions: args.preserve_permissions,
        preserve_xattrs: args.preserve_xattrs,
        delay_updates: !args.no_delay_updates,
        auxiliary: args.aux.clone(),
    };
    rsync.set_direction(args.direction.into());
    rsync.set_mode(mode);
    check_spec(&rsync)?;
    Ok(TaskSpec {
        schedule: schedule.expression().to_owned(),
        enabled: !args.disabled,
        stale_after: args.schedule.stale_after_or_default()?,
        kind: Some(Kind::Rsync(rsync)),
    })
}

/// Refuses an `edit` without any change and checks the given values, before
/// any connection.
pub fn edit_precheck(args: &EditArgs) -> anyhow::Result<RsyncEdit> {
    args.schedule.resolve(Schedule::hourly())?;
    let edit = RsyncEdit::from(args);
    if edit == RsyncEdit::default() && !args.schedule.given() {
        bail!("nothing to change: pass at least one flag to edit");
    }
    edit.check()?;
    Ok(edit)
}

/// The complete spec `edit` sends: the current one with the requested
/// changes, checked again as a whole (a switch to SSH mode needs a remote
/// path). `schedule` is the new cron expression, if one was asked for.
pub fn merge_edit(
    current: &TaskSpec,
    edit: &RsyncEdit,
    schedule: Option<String>,
) -> anyhow::Result<TaskSpec> {
    if *edit == RsyncEdit::default() && schedule.is_none() {
        bail!("nothing to change: pass at least one flag to edit");
    }
    edit.check()?;
    let Some(Kind::Rsync(rsync)) = &current.kind else {
        bail!("the task's current spec is not an rsync task");
    };
    let mut r = rsync.clone();
    let set = |field: &mut String, value: &Option<String>| {
        if let Some(v) = value {
            field.clone_from(v);
        }
    };
    set(&mut r.system, &edit.system);
    set(&mut r.path, &edit.path);
    set(&mut r.user, &edit.user);
    set(&mut r.remote_host, &edit.remote_host);
    set(&mut r.remote_module, &edit.remote_module);
    set(&mut r.remote_path, &edit.remote_path);
    set(&mut r.description, &edit.description);
    if let Some(direction) = edit.direction {
        r.set_direction(direction);
    }
    if let Some(mode) = edit.mode {
        // A port left at the old mode's default follows the mode; a port
        // someone chose stays.
        let old_default = default_port(r.mode());
        if r.remote_port == 0 || r.remote_port == old_default {
            r.remote_port = default_port(mode);
        }
        r.set_mode(mode);
    }
    if let Some(port) = edit.remote_port {
        r.remote_port = port;
    }
    let flags = [
        (&mut r.validate_remote_path, edit.validate_remote_path),
        (&mut r.recursive, edit.recursive),
        (&mut r.times, edit.times),
        (&mut r.compress, edit.compress),
        (&mut r.archive, edit.archive),
        (&mut r.delete, edit.delete),
        (&mut r.quiet, edit.quiet),
        (&mut r.preserve_permissions, edit.preserve_permissions),
        (&mut r.preserve_xattrs, edit.preserve_xattrs),
        (&mut r.delay_updates, edit.delay_updates),
    ];
    for (field, value) in flags {
        if let Some(v) = value {
            *field = v;
        }
    }
    if let Some(words) = &edit.auxiliary {
        r.auxiliary.clone_from(words);
    }
    check_spec(&r)?;
    Ok(TaskSpec {
        schedule: schedule.unwrap_or_else(|| current.schedule.clone()),
        enabled: edit.enabled.unwrap_or(current.enabled),
        stale_after: edited_stale_after(edit.stale_after.as_deref(), current)?,
        kind: Some(Kind::Rsync(r)),
    })
}

fn rsync_spec(task: &Task) -> RsyncTaskSpec {
    match task.spec.as_ref().and_then(|s| s.kind.as_ref()) {
        Some(Kind::Rsync(r)) => r.clone(),
        _ => RsyncTaskSpec::default(),
    }
}

/// The remote end for a table cell: `HOST::MODULE[/PATH]` (rsync's daemon
/// notation) or `HOST:PATH` (SSH).
pub fn remote_text(r: &RsyncTaskSpec) -> String {
    match r.mode() {
        RsyncMode::Ssh => format!("{}:{}", r.remote_host, r.remote_path),
        RsyncMode::Module | RsyncMode::Unspecified => {
            let path = r.remote_path.trim_start_matches('/');
            if path.is_empty() {
                format!("{}::{}", r.remote_host, r.remote_module)
            } else {
                format!("{}::{}/{path}", r.remote_host, r.remote_module)
            }
        }
    }
}

/// One auxiliary word as a person reads it: bare when it is plainly one
/// word, else single-quoted (shell style), so word boundaries show.
fn word_text(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=.,/:+@%*".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn auxiliary_text(words: &[String]) -> String {
    if words.is_empty() {
        "-".into()
    } else {
        words
            .iter()
            .map(|w| word_text(w))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn list_table(tasks: &[Task]) -> String {
    let mut table = Table::new(&[
        "ID",
        "SYSTEM",
        "PATH",
        "DIRECTION",
        "REMOTE",
        "MODE",
        "SCHEDULE",
        "ENABLED",
        "STATUS",
        "LAST RUN",
    ]);
    for t in tasks {
        let r = rsync_spec(t);
        let schedule = if t.schedule_description.is_empty() {
            task_schedule(t).to_owned()
        } else {
            cell(&t.schedule_description, 40)
        };
        table.row(vec![
            t.id.to_string(),
            r.system.clone(),
            cell(&r.path, 50),
            rsync_direction_word(r.direction()).to_owned(),
            cell(&remote_text(&r), 50),
            rsync_mode_word(r.mode()).to_owned(),
            schedule,
            yes_no(t.spec.as_ref().is_some_and(|s| s.enabled)),
            task_status(t).to_owned(),
            if t.last_run_unix_ms > 0 {
                human_time(t.last_run_unix_ms)
            } else {
                "never".into()
            },
        ]);
    }
    table.render()
}

fn detail_text(t: &Task) -> String {
    let r = rsync_spec(t);
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    let mut fields: Vec<(&str, String)> = vec![
        ("ID", t.id.to_string()),
        ("Name", t.name.clone()),
        ("System", r.system.clone()),
        ("Path", r.path.clone()),
        ("User", r.user.clone()),
        ("Direction", rsync_direction_word(r.direction()).to_owned()),
        ("Description", or_dash(&r.description)),
        ("Remote host", r.remote_host.clone()),
        ("Mode", rsync_mode_word(r.mode()).to_owned()),
        ("Remote module", or_dash(&r.remote_module)),
        ("Remote port", effective_port(&r).to_string()),
        ("Remote path", or_dash(&r.remote_path)),
        ("Validate remote path", yes_no(r.validate_remote_path)),
        ("Recursive", yes_no(r.recursive)),
        ("Times", yes_no(r.times)),
        ("Compress", yes_no(r.compress)),
        ("Archive", yes_no(r.archive)),
        ("Delete", yes_no(r.delete)),
        ("Quiet", yes_no(r.quiet)),
        ("Preserve permissions", yes_no(r.preserve_permissions)),
        ("Preserve extended attributes", yes_no(r.preserve_xattrs)),
        ("Delay updates", yes_no(r.delay_updates)),
        ("Auxiliary parameters", auxiliary_text(&r.auxiliary)),
        ("Schedule", schedule_text(t)),
        ("Stale after", task::stale_after_text(t)),
        (
            "Enabled",
            yes_no(t.spec.as_ref().is_some_and(|s| s.enabled)),
        ),
        ("Status", task_status(t).to_owned()),
    ];
    if !t.last_error.is_empty() {
        fields.push(("Last error", t.last_error.clone()));
    }
    fields.push(("Next run", next_run_text(t)));
    fields.push(("Last run", last_run_text(t)));
    if t.created_unix_ms > 0 {
        fields.push(("Created", human_time(t.created_unix_ms)));
    }
    fields
        .iter()
        .map(|(label, value)| format!("{:<LABEL$}{value}", format!("{label}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

pub async fn create(
    channel: Channel,
    args: &CreateArgs,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let spec = create_spec(args)?;
    task::create(channel, spec, output, |t| {
        format!("Created rsync task ID {}: {}", t.id, t.name)
    })
    .await
}

pub async fn list(channel: Channel, output: OutputFormat) -> anyhow::Result<()> {
    task::list(channel, RSYNC, output, NO_TASKS, list_table).await
}

pub async fn show(channel: Channel, id: &str, output: OutputFormat) -> anyhow::Result<()> {
    let task = task::get(channel, id, RSYNC).await?;
    match output {
        OutputFormat::Json => print_json(&TaskJson::from(&task)),
        OutputFormat::Table => {
            outln!("{}", detail_text(&task))?;
            Ok(())
        }
    }
}

pub async fn edit(channel: Channel, args: &EditArgs, output: OutputFormat) -> anyhow::Result<()> {
    let edit = edit_precheck(args)?;
    let current = task::get(channel.clone(), &args.task, RSYNC).await?;
    let Some(spec) = current.spec.as_ref() else {
        bail!("the controller sent task {} without its spec", current.id);
    };
    // The current schedule is only the fallback for parts the flags leave
    // open; an expression this CLI cannot read must not block other edits.
    let default = Schedule::parse(task_schedule(&current)).unwrap_or_else(|_| Schedule::hourly());
    let schedule = args
        .schedule
        .resolve(default)?
        .map(|s| s.expression().to_owned());
    let merged = merge_edit(spec, &edit, schedule)?;
    let updated = FleetClient::new(channel)
        .update_task(UpdateTaskRequest {
            task: current.id.to_string(),
            spec: Some(merged),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    match output {
        OutputFormat::Json => print_json(&TaskJson::from(&updated)),
        OutputFormat::Table => {
            outln!("Updated rsync task {}.\n", updated.id)?;
            outln!("{}", detail_text(&updated))?;
            Ok(())
        }
    }
}

impl RsyncCommand {
    /// Refuses flags that are wrong whatever the controller or the task's
    /// host hold; what `edit` makes of the current task is checked once it
    /// is fetched.
    pub fn precheck(&self) -> anyhow::Result<()> {
        match self {
            RsyncCommand::Create(args) => create_spec(args).map(drop),
            RsyncCommand::Edit(args) => edit_precheck(args).map(drop),
            _ => Ok(()),
        }
    }

    /// Runs one `rsync` subcommand.
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let channel = ctx.connect_after(self.precheck()).await?;
        let output = ctx.output;
        match self {
            RsyncCommand::Create(args) => create(channel, &args, output).await,
            RsyncCommand::List => list(channel, output).await,
            RsyncCommand::Show { task } => show(channel, &task, output).await,
            RsyncCommand::Edit(args) => edit(channel, &args, output).await,
            RsyncCommand::Lifecycle(command) => command.execute(channel, RSYNC, output).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::task::{SNAPSHOT, expect_kind};
    use clap::Parser;
    use clap::error::ErrorKind;
    use serde_json::json;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: RsyncCommand,
    }

    fn parse(argv: &[&str]) -> Result<RsyncCommand, clap::Error> {
        Cli::try_parse_from(["rsync"].iter().chain(argv.iter())).map(|c| c.command)
    }

    const BASE: [&str; 12] = [
        "create",
        "--system",
        "nas1",
        "--path",
        "/mnt/tank/data",
        "--user",
        "root",
        "--direction",
        "push",
        "--remote-host",
        "backup.example",
        "--remote-module=backup",
    ];

    fn create_args(extra: &[&str]) -> CreateArgs {
        let mut argv = BASE.to_vec();
        argv.extend_from_slice(extra);
        match parse(&argv) {
            Ok(RsyncCommand::Create(args)) => args,
            Ok(_) => panic!("not create"),
            Err(e) => panic!("{e}"),
        }
    }

    fn create_err(argv: &[&str]) -> String {
        let args = match parse(argv) {
            Ok(RsyncCommand::Create(args)) => args,
            Ok(_) => panic!("not create"),
            Err(e) => panic!("{e}"),
        };
        create_spec(&args).unwrap_err().to_string()
    }

    fn edit_args(flags: &[&str]) -> EditArgs {
        let mut argv = vec!["edit", "5"];
        argv.extend_from_slice(flags);
        match parse(&argv) {
            Ok(RsyncCommand::Edit(args)) => args,
            Ok(_) => panic!("not edit"),
            Err(e) => panic!("{e}"),
        }
    }

    fn rsync_of(spec: &TaskSpec) -> &RsyncTaskSpec {
        match &spec.kind {
            Some(Kind::Rsync(r)) => r,
            _ => panic!("no rsync spec"),
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn rsync_task() -> Task {
        let spec = create_spec(&create_args(&[])).unwrap_or_default();
        Task {
            id: 5,
            kind: nasfleet_proto::v1::TaskKind::Rsync.into(),
            name: "nas1:/mnt/tank/data -> backup.example".into(),
            spec: Some(spec),
            schedule: "0 * * * *".into(),
            schedule_description: "every hour".into(),
            status: 0,
            last_error: String::new(),
            next_run_unix_ms: 1_700_000_000_000,
            last_run_id: 0,
            last_run_unix_ms: 0,
            created_unix_ms: 1_699_000_000_000,
        }
    }

    #[test]
    fn create_defaults_are_truenas_defaults() {
        let spec = create_spec(&create_args(&[])).unwrap();
        assert_eq!(spec.schedule, "0 * * * *");
        assert!(spec.enabled);
        let r = rsync_of(&spec);
        assert_eq!(r.system, "nas1");
        assert_eq!(r.path, "/mnt/tank/data");
        assert_eq!(r.user, "root");
        assert_eq!(r.direction(), RsyncDirection::Push);
        assert_eq!(r.remote_host, "backup.example");
        assert_eq!(r.mode(), RsyncMode::Module);
        assert_eq!(r.remote_module, "backup");
        assert_eq!(r.remote_port, 873);
        assert_eq!(r.remote_path, "");
        assert!(!r.validate_remote_path);
        assert!(r.recursive && r.times && r.compress && r.delay_updates);
        assert!(!r.archive && !r.delete && !r.quiet);
        assert!(!r.preserve_permissions && !r.preserve_xattrs);
        assert!(r.auxiliary.is_empty());
        assert_eq!(r.description, "");
    }

    #[test]
    fn create_flags_map_to_fields() {
        let argv = [
            "create",
            "--system",
            " nas1 ",
            "--path",
            "/mnt/tank/data",
            "--user",
            "root",
            "--direction",
            "PULL",
            "--mode",
            "ssh",
            "--remote-host",
            "bob@backup.example",
            "--remote-path",
            "/srv/backup",
            "--remote-port",
            "2222",
            "--validate-remote-path",
            "--description",
            "nightly copy",
            "--schedule",
            "daily",
            "--no-recursive",
            "--no-times",
            "--no-compress",
            "--archive",
            "--delete",
            "--quiet",
            "--preserve-permissions",
            "--preserve-xattrs",
            "--no-delay-updates",
            "--disabled",
        ];
        let Ok(RsyncCommand::Create(args)) = parse(&argv) else {
            panic!("not create");
        };
        let spec = create_spec(&args).unwrap();
        assert_eq!(spec.schedule, "0 0 * * *");
        assert!(!spec.enabled);
        let r = rsync_of(&spec);
        assert_eq!(r.system, "nas1");
        assert_eq!(r.direction(), RsyncDirection::Pull);
        assert_eq!(r.mode(), RsyncMode::Ssh);
        assert_eq!(r.remote_host, "bob@backup.example");
        assert_eq!(r.remote_path, "/srv/backup");
        assert_eq!(r.remote_port, 2222);
        assert!(r.validate_remote_path);
        assert_eq!(r.description, "nightly copy");
        assert!(!r.recursive && !r.times && !r.compress && !r.delay_updates);
        assert!(r.archive && r.delete && r.quiet);
        assert!(r.preserve_permissions && r.preserve_xattrs);
    }

    #[test]
    fn ssh_mode_defaults_to_port_22() {
        let spec = create_spec(&create_args(&["--mode", "ssh", "--remote-path", "/srv"])).unwrap();
        assert_eq!(rsync_of(&spec).remote_port, 22);
    }

    #[test]
    fn aux_words_are_kept_verbatim() {
        let hostile = [
            "--exclude=*.tmp",
            "--exclude=$(touch /tmp/pwned)",
            "--exclude=; rm -rf /",
            "--bwlimit=1000",
            "--include=it's \"quoted\"",
            "-v",
        ];
        let mut flags = Vec::new();
        for word in hostile {
            flags.push("--aux");
            flags.push(word);
        }
        let spec = create_spec(&create_args(&flags)).unwrap();
        assert_eq!(rsync_of(&spec).auxiliary, strings(&hostile));
        // The same through edit, and in JSON.
        let edit = RsyncEdit::from(&edit_args(&flags));
        assert_eq!(edit.auxiliary, Some(strings(&hostile)));
        let merged = merge_edit(
            rsync_task().spec.as_ref().unwrap_or(&TaskSpec::default()),
            &edit,
            None,
        )
        .unwrap();
        let mut task = rsync_task();
        task.spec = Some(merged);
        let value = serde_json::to_value(TaskJson::from(&task)).unwrap();
        assert_eq!(value["auxiliary"], json!(hostile));
    }

    #[test]
    fn local_checks_use_the_controllers_words() {
        let no_host = [
            "create",
            "--system",
            "nas1",
            "--path",
            "/mnt/tank/data",
            "--user",
            "root",
            "--direction",
            "push",
            "--remote-module",
            "backup",
        ];
        assert_eq!(create_err(&no_host), REMOTE_HOST_REQUIRED);
        let mut blank_host = no_host.to_vec();
        blank_host.extend_from_slice(&["--remote-host", "  "]);
        assert_eq!(create_err(&blank_host), REMOTE_HOST_REQUIRED);
        let no_module = &BASE[..BASE.len() - 1];
        assert_eq!(create_err(no_module), REMOTE_MODULE_REQUIRED);
        let mut ssh = no_module.to_vec();
        ssh.extend_from_slice(&["--mode", "ssh"]);
        assert_eq!(create_err(&ssh), REMOTE_PATH_REQUIRED);
        let long = format!("/{}", "a".repeat(255));
        let mut too_long = BASE.to_vec();
        too_long.extend_from_slice(&["--remote-path", &long]);
        assert_eq!(create_err(&too_long), REMOTE_PATH_TOO_LONG);
        let ok = "a".repeat(255);
        assert!(create_spec(&create_args(&["--remote-path", &ok])).is_ok());
        for bad in [
            "",
            "--a\n--b",
            "x\r",
            "-ave/some/script.sh",
            "--files-from=/etc/hostname",
            "$(touch /tmp/pwned)",
        ] {
            let mut argv = BASE.to_vec();
            argv.extend_from_slice(&["--aux", bad]);
            let err = create_err(&argv);
            assert!(err.starts_with("auxiliary: "), "{err}");
            // edit refuses it before asking the controller for the task.
            let edit = RsyncEdit::from(&edit_args(&["--aux", bad]));
            let err = edit.check().unwrap_err().to_string();
            assert!(err.starts_with("auxiliary: "), "{err}");
        }
        for port in ["0", "65536"] {
            let mut argv = BASE.to_vec();
            argv.extend_from_slice(&["--remote-port", port]);
            assert_eq!(create_err(&argv), PORT_OUT_OF_RANGE);
        }
        let kind = parse(&["create", "--system", "nas1"])
            .err()
            .map(|e| e.kind());
        assert_eq!(kind, Some(ErrorKind::MissingRequiredArgument));
    }

    #[test]
    fn edit_merges_into_the_current_spec() {
        let current = rsync_task().spec.unwrap_or_default();
        let edit = RsyncEdit::from(&edit_args(&[
            "--delete",
            "--no-compress",
            "--description",
            "offsite",
            "--disable",
        ]));
        let merged = merge_edit(&current, &edit, Some("0 3 * * *".into())).unwrap();
        assert_eq!(merged.schedule, "0 3 * * *");
        assert!(!merged.enabled);
        let r = rsync_of(&merged);
        assert!(r.delete);
        assert!(!r.compress);
        assert_eq!(r.description, "offsite");
        // Untouched fields stay.
        let before = rsync_of(&current);
        assert_eq!(r.system, before.system);
        assert_eq!(r.remote_host, before.remote_host);
        assert_eq!(r.remote_module, before.remote_module);
        assert_eq!(r.remote_port, 873);
        assert!(r.recursive && r.times && r.delay_updates);
        // No schedule flag keeps the schedule.
        let merged = merge_edit(&current, &edit, None).unwrap();
        assert_eq!(merged.schedule, "0 * * * *");
    }

    #[test]
    fn edit_inverse_flags() {
        let current = rsync_task().spec.unwrap_or_default();
        let merged = merge_edit(
            &current,
            &RsyncEdit::from(&edit_args(&[
                "--no-recursive",
                "--no-times",
                "--archive",
                "--quiet",
                "--preserve-permissions",
                "--preserve-xattrs",
                "--no-delay-updates",
                "--validate-remote-path",
            ])),
            None,
        )
        .unwrap();
        let r = rsync_of(&merged);
        assert!(!r.recursive && !r.times && !r.delay_updates);
        assert!(r.archive && r.quiet && r.preserve_permissions && r.preserve_xattrs);
        assert!(r.validate_remote_path);
        let back = merge_edit(
            &merged,
            &RsyncEdit::from(&edit_args(&[
                "--recursive",
                "--times",
                "--no-archive",
                "--no-quiet",
                "--no-preserve-permissions",
                "--no-preserve-xattrs",
                "--delay-updates",
                "--no-validate-remote-path",
                "--compress",
                "--no-delete",
            ])),
            None,
        )
        .unwrap();
        assert_eq!(back, current);
    }

    #[test]
    fn edit_mode_switch_moves_a_default_port_only() {
        let current = rsync_task().spec.unwrap_or_default();
        let edit = RsyncEdit::from(&edit_args(&["--mode", "ssh", "--remote-path", "/srv"]));
        let merged = merge_edit(&current, &edit, None).unwrap();
        assert_eq!(rsync_of(&merged).mode(), RsyncMode::Ssh);
        assert_eq!(rsync_of(&merged).remote_port, 22);
        let edit = RsyncEdit::from(&edit_args(&[
            "--mode",
            "ssh",
            "--remote-path",
            "/srv",
            "--remote-port",
            "2200",
        ]));
        assert_eq!(
            rsync_of(&merge_edit(&current, &edit, None).unwrap()).remote_port,
            2200
        );
        let mut custom = current.clone();
        if let Some(Kind::Rsync(r)) = custom.kind.as_mut() {
            r.remote_port = 8873;
        }
        let merged = merge_edit(
            &custom,
            &RsyncEdit::from(&edit_args(&["--mode", "ssh", "--remote-path", "/srv"])),
            None,
        )
        .unwrap();
        assert_eq!(rsync_of(&merged).remote_port, 8873);
        // Switching to SSH without a remote path is refused before sending.
        let err = merge_edit(
            &current,
            &RsyncEdit::from(&edit_args(&["--mode", "ssh"])),
            None,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), REMOTE_PATH_REQUIRED);
    }

    #[test]
    fn edit_aux_replaces_or_clears() {
        let mut current = rsync_task().spec.unwrap_or_default();
        if let Some(Kind::Rsync(r)) = current.kind.as_mut() {
            r.auxiliary = strings(&["-v", "--stats"]);
        }
        let merged = merge_edit(
            &current,
            &RsyncEdit::from(&edit_args(&["--aux", "--exclude=*.tmp"])),
            None,
        )
        .unwrap();
        assert_eq!(rsync_of(&merged).auxiliary, strings(&["--exclude=*.tmp"]));
        let merged = merge_edit(
            &current,
            &RsyncEdit::from(&edit_args(&["--clear-aux"])),
            None,
        )
        .unwrap();
        assert!(rsync_of(&merged).auxiliary.is_empty());
        let merged =
            merge_edit(&current, &RsyncEdit::from(&edit_args(&["--quiet"])), None).unwrap();
        assert_eq!(rsync_of(&merged).auxiliary, strings(&["-v", "--stats"]));
    }

    #[test]
    fn edit_prechecks() {
        let err = edit_precheck(&edit_args(&[])).unwrap_err().to_string();
        assert!(err.starts_with("nothing to change"), "{err}");
        assert!(edit_precheck(&edit_args(&["--schedule", "daily"])).is_ok());
        let err = edit_precheck(&edit_args(&["--cron", "61 * * * *"]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cron: "), "{err}");
        let err = edit_precheck(&edit_args(&["--remote-host", ""]))
            .unwrap_err()
            .to_string();
        assert_eq!(err, REMOTE_HOST_REQUIRED);
        let long = "p".repeat(256);
        let err = edit_precheck(&edit_args(&["--remote-path", &long]))
            .unwrap_err()
            .to_string();
        assert_eq!(err, REMOTE_PATH_TOO_LONG);
        let err = edit_precheck(&edit_args(&["--aux", ""]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("auxiliary: "), "{err}");
    }

    #[test]
    fn edit_flags_conflict() {
        for flags in [
            &["--recursive", "--no-recursive"][..],
            &["--times", "--no-times"],
            &["--compress", "--no-compress"],
            &["--archive", "--no-archive"],
            &["--delete", "--no-delete"],
            &["--quiet", "--no-quiet"],
            &["--preserve-permissions", "--no-preserve-permissions"],
            &["--preserve-xattrs", "--no-preserve-xattrs"],
            &["--delay-updates", "--no-delay-updates"],
            &["--validate-remote-path", "--no-validate-remote-path"],
            &["--enable", "--disable"],
            &["--aux", "-v", "--clear-aux"],
        ] {
            let mut argv = vec!["edit", "5"];
            argv.extend_from_slice(flags);
            let kind = parse(&argv).err().map(|e| e.kind());
            assert_eq!(kind, Some(ErrorKind::ArgumentConflict), "{flags:?}");
        }
    }

    #[test]
    fn json_shape() {
        let mut task = rsync_task();
        task.set_status(nasfleet_proto::v1::RunState::Failed);
        task.last_error = "[EACCES] Unable to connect to port 873 on 127.0.0.3".into();
        task.last_run_id = 9;
        task.last_run_unix_ms = 1_700_000_100_000;
        if let Some(Kind::Rsync(r)) = task.spec.as_mut().and_then(|s| s.kind.as_mut()) {
            r.remote_port = 0;
        }
        let value = serde_json::to_value(TaskJson::from(&task)).unwrap();
        assert_eq!(
            value,
            json!({
                "id": 5,
                "name": "nas1:/mnt/tank/data -> backup.example",
                "kind": "rsync",
                "system": "nas1",
                "path": "/mnt/tank/data",
                "user": "root",
                "direction": "PUSH",
                "description": "",
                "remote_host": "backup.example",
                "mode": "MODULE",
                "remote_module": "backup",
                "remote_port": 873,
                "remote_path": "",
                "validate_remote_path": false,
                "recursive": true,
                "times": true,
                "compress": true,
                "archive": false,
                "delete": false,
                "quiet": false,
                "preserve_permissions": false,
                "preserve_xattrs": false,
                "delay_updates": true,
                "auxiliary": [],
                "schedule": "0 * * * *",
                "schedule_description": "every hour",
                "stale_after": null,
                "enabled": true,
                "status": "FAILED",
                "last_error": "[EACCES] Unable to connect to port 873 on 127.0.0.3",
                "next_run": "2023-11-14T22:13:20Z",
                "last_run_id": 9,
                "last_run": "2023-11-14T22:15:00Z",
                "created": "2023-11-03T08:26:40Z",
            })
        );
        // A pending task has no error, and SSH mode's port is 22.
        let mut task = rsync_task();
        if let Some(Kind::Rsync(r)) = task.spec.as_mut().and_then(|s| s.kind.as_mut()) {
            r.set_mode(RsyncMode::Ssh);
            r.remote_port = 0;
        }
        let value = serde_json::to_value(TaskJson::from(&task)).unwrap();
        assert_eq!(value["status"], "PENDING");
        assert_eq!(value["last_error"], json!(null));
        assert_eq!(value["mode"], "SSH");
        assert_eq!(value["remote_port"], 22);
    }

    #[test]
    fn table_and_show_text() {
        let mut task = rsync_task();
        if let Some(Kind::Rsync(r)) = task.spec.as_mut().and_then(|s| s.kind.as_mut()) {
            r.auxiliary = strings(&["--exclude=*.tmp", "$(touch /tmp/pwned)"]);
        }
        let table = list_table(std::slice::from_ref(&task));
        let mut lines = table.lines();
        let header = lines.next().unwrap_or_default();
        let columns: Vec<&str> = header.split_whitespace().collect();
        assert_eq!(
            columns,
            [
                "ID",
                "SYSTEM",
                "PATH",
                "DIRECTION",
                "REMOTE",
                "MODE",
                "SCHEDULE",
                "ENABLED",
                "STATUS",
                "LAST",
                "RUN"
            ]
        );
        let row = lines.next().unwrap_or_default();
        for part in [
            "5",
            "nas1",
            "/mnt/tank/data",
            "PUSH",
            "backup.example::backup",
            "MODULE",
            "every hour",
            "PENDING",
            "never",
        ] {
            assert!(row.contains(part), "{part} in {row}");
        }
        let text = detail_text(&task);
        assert!(
            text.contains("Remote port:                   873"),
            "{text}"
        );
        assert!(
            text.contains("Auxiliary parameters:          --exclude=*.tmp '$(touch /tmp/pwned)'"),
            "{text}"
        );
        assert!(
            text.contains("Last run:                      never"),
            "{text}"
        );
    }

    #[test]
    fn remote_text_by_mode() {
        let mut r = RsyncTaskSpec {
            remote_host: "bob@h".into(),
            remote_module: "m".into(),
            remote_path: "/sub/dir".into(),
            ..Default::default()
        };
        r.set_mode(RsyncMode::Module);
        assert_eq!(remote_text(&r), "bob@h::m/sub/dir");
        r.set_mode(RsyncMode::Ssh);
        assert_eq!(remote_text(&r), "bob@h:/sub/dir");
    }

    #[test]
    fn other_commands_say_what_an_rsync_task_is() {
        let err = expect_kind(&rsync_task(), SNAPSHOT)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "task 5 (nas1:/mnt/tank/data -> backup.example) is an rsync task, \
             not a snapshot task; see `nasfleet rsync show 5`"
        );
        assert!(expect_kind(&rsync_task(), RSYNC).is_ok());
    }
}
