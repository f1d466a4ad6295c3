//! `nasfleet replication create|list|show|edit|delete|run|enable|disable`: ZFS replication tasks from one or more source systems into one target, previewed by the controller and confirmed before they are saved.

use super::replication_estimate::{self, EstimateJson};
use super::replication_file;
use super::replication_spec::{
    ReplicationEdit, merge_edit, parse_bandwidth_limit, parse_source, parse_target, replication_of,
    sources_from_args,
};
use super::run::{PartJson, RunJson, parts_lines};
use super::schedule_args::ScheduleArgs;
use super::task::{self, REPLICATION, TaskJson, next_run_text, task_schedule, task_status};
use super::{confirm, status_error};
use crate::context::Context;
use crate::output::{OutputFormat, Table, cell, human_time, print_json, time_or_dash, yes_no};
use anyhow::bail;
use clap::{Args, Subcommand};
use nasfleet_common::replication_rules::check_spec;
use nasfleet_common::replication_summary::{
    bandwidth_text, indent, label, raw_text, replication_spec, route_lines, schedule_description,
    schema_lines, sources_text, summary_lines, target_text,
};
use nasfleet_common::schedule::Schedule;
use nasfleet_common::status::run_state_word;
use nasfleet_proto::v1::fleet_client::FleetClient;
use nasfleet_proto::v1::task_spec::Kind;
use nasfleet_proto::v1::{
    DatasetEstimate, ReplicationTaskSpec, Run, RunRef, RunState, Task, TaskSpec, UpdateTaskRequest,
};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::PathBuf;
use tonic::transport::Channel;

/// Refusal when nobody can confirm and `--yes` was not given.
/// What will be saved, for confirmation and `--dry-run`: the task as the
/// controller validated it (schedule description, next run).
pub fn summary_text(heading: &str, task: &Task) -> String {
    summary_lines(heading, task, &next_run_text(task)).join("\n")
}

pub const NOT_SAVED: &str = "not saved: confirm on a terminal or pass --yes";

#[derive(Subcommand)]
pub enum ReplicationCommand {
    /// Create a replication task (weekly, Sunday 00:00 unless told otherwise).
    Create(CreateArgs),
    /// Every replication task.
    List,
    /// One replication task with the state of each dataset in its latest
    /// run, and what a run now would send.
    Show {
        /// Task name (or id).
        task: String,
    },
    /// Change some fields of a task; the others stay.
    Edit(EditArgs),
    #[command(flatten)]
    Lifecycle(task::LifecycleCommand),
}

impl ReplicationCommand {
    /// Refuses flags (and task files) that are wrong whatever the controller
    /// holds; what `edit` makes of the current task is checked once it is
    /// fetched.
    pub fn precheck(&self) -> anyhow::Result<()> {
        match self {
            ReplicationCommand::Create(args) => create_spec(args).map(drop),
            ReplicationCommand::Edit(args) => edit_request(args).map(drop),
            _ => Ok(()),
        }
    }

    /// Runs one `replication` subcommand.
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let channel = ctx.connect_after(self.precheck()).await?;
        let output = ctx.output;
        match self {
            ReplicationCommand::Create(args) => create(channel, &args, output).await,
            ReplicationCommand::List => list(channel, output).await,
            ReplicationCommand::Show { task } => show(channel, &task, output).await,
            ReplicationCommand::Edit(args) => edit(channel, &args, output).await,
            ReplicationCommand::Lifecycle(command) => {
                command.execute(channel, REPLICATION, output).await
            }
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// The task's name, unique among replication tasks.
    #[arg(required_unless_present = "file")]
    pub name: Option<String>,
    /// Read the whole task from a TOML or JSON file (by extension; without one, by content).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Datasets of one system to replicate; repeatable.
    #[arg(long, value_name = "SYSTEM:DATASET[,DATASET...]")]
    pub source: Vec<String>,
    /// Where the sources land: SOURCE-SYSTEM/DATASET below this dataset.
    #[arg(long, value_name = "SYSTEM:DATASET")]
    pub target: Option<String>,
    /// Replicate the descendants of every source dataset too.
    #[arg(long)]
    pub recursive: bool,
    /// Snapshots to replicate, by name pattern; repeatable [default: auto-%Y-%m-%d_%H-%M].
    #[arg(long, value_name = "SCHEMA")]
    pub naming_schema: Vec<String>,
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    /// Snapshot every source dataset at the start of each run, and add periodic snapshot tasks for source datasets none covers yet.
    #[arg(long)]
    pub create_snapshot_task: bool,
    /// Let a run roll back and overwrite target datasets that changed or diverged.
    #[arg(long)]
    pub allow_overwrite: bool,
    /// Send encrypted datasets decrypted. By default they are sent raw (zfs send -w): the target stores ciphertext and never needs the key.
    #[arg(long)]
    pub no_raw: bool,
    /// Cap the rate each source sends at, bytes per second with a binary unit: 50M, 1.5G, 800K, 50MB/s; 0 or none: no cap [default: none].
    #[arg(long, value_name = "RATE")]
    pub bandwidth_limit: Option<String>,
    /// Create the task switched off.
    #[arg(long)]
    pub disabled: bool,
    #[command(flatten)]
    pub save: SaveArgs,
}

/// How a new or changed task is saved.
#[derive(Debug, Clone, Default, Args)]
pub struct SaveArgs {
    /// Check the task with the controller and print the summary; save nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Save without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Clone, Args)]
pub struct EditArgs {
    /// Task name (or id).
    pub task: String,
    /// Replace the whole task with the one in a TOML or JSON file.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Give the task a new name.
    #[arg(long, value_name = "NAME")]
    pub rename: Option<String>,
    /// Replace all sources; repeatable.
    #[arg(long, value_name = "SYSTEM:DATASET[,DATASET...]")]
    pub source: Vec<String>,
    /// New target.
    #[arg(long, value_name = "SYSTEM:DATASET")]
    pub target: Option<String>,
    /// Replicate the descendants of every source dataset too.
    #[arg(long, conflicts_with = "no_recursive")]
    pub recursive: bool,
    /// Replicate every source dataset alone.
    #[arg(long)]
    pub no_recursive: bool,
    /// Replace the naming schemas of every source; repeatable.
    #[arg(long, value_name = "SCHEMA")]
    pub naming_schema: Vec<String>,
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    /// Snapshot every source dataset at the start of each run.
    #[arg(long, conflicts_with = "no_create_snapshot_task")]
    pub create_snapshot_task: bool,
    /// Stop taking snapshots at the start of each run.
    #[arg(long)]
    pub no_create_snapshot_task: bool,
    /// Let a run roll back and overwrite target datasets that changed or diverged.
    #[arg(long, conflicts_with = "no_allow_overwrite")]
    pub allow_overwrite: bool,
    /// Never overwrite target datasets.
    #[arg(long)]
    pub no_allow_overwrite: bool,
    /// Send encrypted datasets raw (zfs send -w): the target stores ciphertext and never needs the key.
    #[arg(long, conflicts_with = "no_raw")]
    pub raw: bool,
    /// Send encrypted datasets decrypted.
    #[arg(long)]
    pub no_raw: bool,
    /// Cap the rate each source sends at, bytes per second with a binary unit: 50M, 1.5G, 800K, 50MB/s; 0 or none removes the cap.
    #[arg(long, value_name = "RATE")]
    pub bandwidth_limit: Option<String>,
    /// Switch the task on.
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Switch the task off.
    #[arg(long)]
    pub disable: bool,
    #[command(flatten)]
    pub save: SaveArgs,
}

/// Refuses flags next to `-f`: the file holds the whole task.
fn refuse_mix(given: &[&str]) -> anyhow::Result<()> {
    if given.is_empty() {
        return Ok(());
    }
    bail!(
        "-f/--file holds the whole task, so {} cannot be given with it; only --dry-run and --yes go with -f",
        given.join(", ")
    )
}

fn flag(on: bool, off: bool) -> Option<bool> {
    match (on, off) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

fn schedule_flags(s: &ScheduleArgs) -> Vec<&'static str> {
    [
        ("--schedule", s.schedule.is_some()),
        ("--cron", s.cron.is_some()),
        ("--period", s.period.is_some()),
        ("--day", s.day.is_some()),
        ("--at", s.at.is_some()),
        ("--stale-after", s.stale_after.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, given)| given.then_some(name))
    .collect()
}

impl CreateArgs {
    /// The task flags given besides `-f`.
    fn flags_given(&self) -> Vec<&'static str> {
        let mut given: Vec<&'static str> = [
            ("NAME", self.name.is_some()),
            ("--source", !self.source.is_empty()),
            ("--target", self.target.is_some()),
            ("--recursive", self.recursive),
            ("--naming-schema", !self.naming_schema.is_empty()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect();
        given.extend(schedule_flags(&self.schedule));
        given.extend(
            [
                ("--create-snapshot-task", self.create_snapshot_task),
                ("--allow-overwrite", self.allow_overwrite),
                ("--no-raw", self.no_raw),
                ("--bandwidth-limit", self.bandwidth_limit.is_some()),
                ("--disabled", self.disabled),
            ]
            .into_iter()
            .filter_map(|(name, given)| given.then_some(name)),
        );
        given
    }
}

impl EditArgs {
    /// The change flags given besides `-f`.
    fn flags_given(&self) -> Vec<&'static str> {
        let mut given: Vec<&'static str> = [
            ("--rename", self.rename.is_some()),
            ("--source", !self.source.is_empty()),
            ("--target", self.target.is_some()),
            ("--recursive", self.recursive),
            ("--no-recursive", self.no_recursive),
            ("--naming-schema", !self.naming_schema.is_empty()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect();
        given.extend(schedule_flags(&self.schedule));
        given.extend(
            [
                ("--create-snapshot-task", self.create_snapshot_task),
                ("--no-create-snapshot-task", self.no_create_snapshot_task),
                ("--allow-overwrite", self.allow_overwrite),
                ("--no-allow-overwrite", self.no_allow_overwrite),
                ("--raw", self.raw),
                ("--no-raw", self.no_raw),
                ("--bandwidth-limit", self.bandwidth_limit.is_some()),
                ("--enable", self.enable),
                ("--disable", self.disable),
            ]
            .into_iter()
            .filter_map(|(name, given)| given.then_some(name)),
        );
        given
    }
}

/// The spec `create` sends: from the file, or from the flags; checked as
/// far as the CLI can.
pub fn create_spec(args: &CreateArgs) -> anyhow::Result<TaskSpec> {
    if let Some(path) = &args.file {
        refuse_mix(&args.flags_given())?;
        return replication_file::read(path);
    }
    let sources = args
        .source
        .iter()
        .map(|s| parse_source(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let target = args.target.as_deref().map(parse_target).transpose()?;
    let bandwidth_limit = bandwidth_limit_flag(args.bandwidth_limit.as_deref())?;
    let schedule = args.schedule.resolve_or(Schedule::weekly())?;
    let (target_system, target_dataset) = target.map(|t| (t.system, t.dataset)).unwrap_or_default();
    let replication = ReplicationTaskSpec {
        name: args.name.as_deref().unwrap_or_default().trim().to_owned(),
        sources: sources_from_args(&sources, args.recursive, &args.naming_schema),
        target_system,
        target_dataset,
        allow_overwrite: args.allow_overwrite,
        no_raw: args.no_raw,
        bandwidth_limit: bandwidth_limit.unwrap_or(0),
        create_snapshot_task: args.create_snapshot_task,
    };
    check_spec(&replication)?;
    Ok(TaskSpec {
        schedule: schedule.expression().to_owned(),
        enabled: !args.disabled,
        stale_after: args.schedule.stale_after_or_default()?,
        kind: Some(Kind::Replication(replication)),
    })
}

/// `--bandwidth-limit RATE`, if given, in bytes per second.
fn bandwidth_limit_flag(text: Option<&str>) -> anyhow::Result<Option<u64>> {
    text.map(|t| parse_bandwidth_limit("--bandwidth-limit", t))
        .transpose()
}

/// What `edit` was asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum EditRequest {
    /// Replace the whole spec with a file's.
    File(TaskSpec),
    /// Merge flags into the current spec; the schedule is the new cron expression.
    Flags(ReplicationEdit, Option<String>),
}

/// Parses `edit`'s flags (or file) as far as that is possible without the
/// current task.
pub fn edit_request(args: &EditArgs) -> anyhow::Result<EditRequest> {
    if let Some(path) = &args.file {
        refuse_mix(&args.flags_given())?;
        return replication_file::read(path).map(EditRequest::File);
    }
    let sources = if args.source.is_empty() {
        None
    } else {
        Some(
            args.source
                .iter()
                .map(|s| parse_source(s))
                .collect::<anyhow::Result<Vec<_>>>()?,
        )
    };
    let schedule = args
        .schedule
        .resolve(Schedule::weekly())?
        .map(|s| s.expression().to_owned());
    let edit = ReplicationEdit {
        name: args.rename.clone(),
        sources,
        target: args.target.as_deref().map(parse_target).transpose()?,
        recursive: flag(args.recursive, args.no_recursive),
        naming_schemas: (!args.naming_schema.is_empty()).then(|| args.naming_schema.clone()),
        allow_overwrite: flag(args.allow_overwrite, args.no_allow_overwrite),
        raw: flag(args.raw, args.no_raw),
        bandwidth_limit: bandwidth_limit_flag(args.bandwidth_limit.as_deref())?,
        create_snapshot_task: flag(args.create_snapshot_task, args.no_create_snapshot_task),
        enabled: flag(args.enable, args.disable),
        stale_after: args.schedule.stale_after.clone(),
    };
    if edit == ReplicationEdit::default() && schedule.is_none() {
        bail!("nothing to change: pass at least one flag to edit");
    }
    Ok(EditRequest::Flags(edit, schedule))
}

fn list_table(tasks: &[Task]) -> String {
    let mut table = Table::new(&[
        "NAME", "SOURCES", "TARGET", "SCHEDULE", "NEXT RUN", "STATUS", "LAST RUN",
    ]);
    for t in tasks {
        let spec = replication_spec(t);
        table.row(vec![
            t.name.clone(),
            sources_text(&spec),
            target_text(&spec),
            cell(&schedule_description(t), 50),
            next_run_text(t),
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

/// One source dataset's state in the latest run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatasetStateJson {
    pub name: String,
    pub state: &'static str,
    pub detail: String,
}

/// The latest run in `replication show -o json`.
#[derive(Debug, Serialize)]
pub struct LastRunJson {
    #[serde(flatten)]
    pub run: RunJson,
    pub parts: Vec<PartJson>,
}

/// `replication show -o json`: the task plus its datasets' states and what
/// a run would send now.
#[derive(Debug, Serialize)]
pub struct ShowJson {
    #[serde(flatten)]
    pub task: TaskJson,
    pub datasets: Vec<DatasetStateJson>,
    pub last_run: Option<LastRunJson>,
    pub estimate: EstimateSection,
}

/// The state of each dataset in `run`: its steps, and for a source dataset
/// without a step (the run failed before it got there) the state of its
/// system's part, or `PENDING` while the run goes on.
pub fn dataset_states(spec: &ReplicationTaskSpec, run: &Run) -> Vec<DatasetStateJson> {
    let mut states: Vec<DatasetStateJson> = run
        .steps
        .iter()
        .map(|s| DatasetStateJson {
            name: s.name.clone(),
            state: run_state_word(s.state()),
            detail: s.detail.clone(),
        })
        .collect();
    for source in &spec.sources {
        let part = run.parts.iter().find(|p| p.system == source.system);
        let (state, reason) = match part {
            Some(p) => (p.state(), p.reason.as_str()),
            None => (run.state(), run.reason.as_str()),
        };
        let ended = matches!(
            state,
            RunState::Failed | RunState::Skipped | RunState::Missed
        );
        for dataset in &source.datasets {
            let label = format!("{}:{dataset}", source.system);
            let covered = run.steps.iter().any(|s| {
                s.name == label
                    || s.name
                        .strip_prefix(&label)
                        .is_some_and(|rest| rest.starts_with(' '))
            });
            if covered {
                continue;
            }
            states.push(DatasetStateJson {
                name: format!(
                    "{label} → {}",
                    nasfleet_common::names::replication_target_path(
                        &spec.target_dataset,
                        &source.system,
                        dataset
                    )
                ),
                state: if ended {
                    run_state_word(state)
                } else {
                    run_state_word(RunState::Pending)
                },
                detail: if ended {
                    reason.to_owned()
                } else {
                    String::new()
                },
            });
        }
    }
    states
}

fn last_run_text(task: &Task) -> String {
    match (task.last_run_id, task.last_run_unix_ms) {
        (0, _) => "never".into(),
        (id, ms) if ms > 0 => format!("run {id} at {}", human_time(ms)),
        (id, _) => format!("run {id}"),
    }
}

/// `replication show` for people. `run` is the latest run, if there is one
/// and it could be fetched; `run_error` why it could not.
pub fn detail_text(task: &Task, run: Option<&Run>, run_error: Option<&str>) -> String {
    let spec = replication_spec(task);
    let mut lines = vec![label("ID", task.id), label("Name", &task.name)];
    for (i, route) in route_lines(&spec).into_iter().enumerate() {
        lines.push(if i == 0 {
            label("Datasets", route)
        } else {
            indent(route)
        });
    }
    lines.push(label("Target", target_text(&spec)));
    lines.extend(schema_lines(&spec));
    lines.push(label("Snapshot first", yes_no(spec.create_snapshot_task)));
    lines.push(label("Allow overwrite", yes_no(spec.allow_overwrite)));
    lines.push(label("Raw sends", raw_text(&spec)));
    lines.push(label("Bandwidth limit", bandwidth_text(&spec)));
    lines.push(label("Schedule", schedule_description(task)));
    lines.push(label("Stale after", task::stale_after_text(task)));
    lines.push(label("Cron", task_schedule(task)));
    lines.push(label(
        "Enabled",
        yes_no(task.spec.as_ref().is_some_and(|s| s.enabled)),
    ));
    lines.push(label("Status", task_status(task)));
    if !task.last_error.is_empty() {
        lines.push(label("Last error", &task.last_error));
    }
    lines.push(label("Next run", next_run_text(task)));
    lines.push(label("Last run", last_run_text(task)));
    if task.created_unix_ms > 0 {
        lines.push(label("Created", human_time(task.created_unix_ms)));
    }
    if let Some(e) = run_error {
        lines.push(String::new());
        lines.push(format!(
            "Latest run {} is not available: {e}",
            task.last_run_id
        ));
    }
    if let Some(run) = run {
        lines.push(String::new());
        let mut head = format!(
            "Latest run {}: {}, started {}",
            run.id,
            run_state_word(run.state()),
            time_or_dash(run.started_unix_ms)
        );
        if run.finished_unix_ms > 0 {
            head.push_str(&format!(", finished {}", human_time(run.finished_unix_ms)));
        }
        lines.push(head);
        if !run.reason.is_empty() {
            lines.push(format!("  Reason: {}", run.reason));
        }
        if !run.parts.is_empty() {
            lines.extend(parts_lines(&run.parts));
        }
        let datasets = dataset_states(&spec, run);
        if !datasets.is_empty() {
            lines.push("Datasets:".into());
            let mut table = Table::new(&["DATASET", "STATE", "DETAIL"]);
            for d in &datasets {
                table.row(vec![d.name.clone(), d.state.into(), d.detail.clone()]);
            }
            lines.extend(table.render().lines().map(|l| format!("  {l}")));
        }
    }
    lines.join("\n")
}

/// What a run would send now, or why that is not known, for people.
fn estimate_text(estimate: &anyhow::Result<Vec<DatasetEstimate>>) -> Vec<String> {
    const HEADING: &str = "A run now would send:";
    match estimate {
        Ok(estimates) => replication_estimate::lines(HEADING, estimates),
        Err(e) => vec![format!("{HEADING} not known ({e})")],
    }
}

/// The estimate in `-o json`: the datasets, or why there are none.
#[derive(Debug, Serialize)]
pub struct EstimateSection {
    pub datasets: Vec<EstimateJson>,
    pub error: Option<String>,
}

fn estimate_json(estimate: &anyhow::Result<Vec<DatasetEstimate>>) -> EstimateSection {
    match estimate {
        Ok(estimates) => EstimateSection {
            datasets: estimates.iter().map(EstimateJson::from).collect(),
            error: None,
        },
        Err(e) => EstimateSection {
            datasets: Vec::new(),
            error: Some(e.to_string()),
        },
    }
}

/// `replication create|edit --dry-run -o json`: the task as it would be
/// saved and what a run would send now.
#[derive(Debug, Serialize)]
pub struct DryRunJson {
    #[serde(flatten)]
    pub task: TaskJson,
    pub estimate: EstimateSection,
}

/// The validated task, with our spec if the controller left it out.
fn preview_of(mut validated: Task, spec: &TaskSpec) -> Task {
    if validated.spec.is_none() {
        validated.spec = Some(spec.clone());
    }
    validated
}

/// Asks the controller to check `spec`, prints the summary (on stderr with
/// `-o json`, so stdout stays JSON) and gets the go-ahead. `Ok(None)`:
/// stop here without error (`--dry-run`, after printing).
async fn preview_and_confirm(
    channel: Channel,
    spec: &TaskSpec,
    heading: &str,
    current: Option<&Task>,
    save: &SaveArgs,
    output: OutputFormat,
) -> anyhow::Result<Option<Task>> {
    let request = UpdateTaskRequest {
        task: current.map(|t| t.id.to_string()).unwrap_or_default(),
        spec: Some(spec.clone()),
    };
    let preview = match FleetClient::new(channel.clone())
        .validate_task(request.clone())
        .await
    {
        Ok(validated) => preview_of(validated.into_inner(), spec),
        Err(status) => return Err(status_error(status)),
    };
    let summary = summary_text(heading, &preview);
    match output {
        OutputFormat::Table => outln!("{summary}")?,
        OutputFormat::Json => eprintln!("{summary}"),
    }
    if save.dry_run {
        // The spec is valid; an estimate that cannot be made says why
        // without failing the dry run.
        let estimate = replication_estimate::fetch(channel, request).await;
        match output {
            OutputFormat::Table => {
                outln!("")?;
                for line in estimate_text(&estimate) {
                    outln!("{line}")?;
                }
                outln!("\nDry run: nothing saved.")?;
            }
            OutputFormat::Json => print_json(&DryRunJson {
                task: TaskJson::from(&preview),
                estimate: estimate_json(&estimate),
            })?,
        }
        return Ok(None);
    }
    if !save.yes {
        if !std::io::stdin().is_terminal() {
            bail!(NOT_SAVED);
        }
        if !confirm("Save this replication task?".into()).await? {
            bail!("not saved");
        }
    }
    Ok(Some(preview))
}

pub async fn create(
    channel: Channel,
    args: &CreateArgs,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let spec = create_spec(args)?;
    let name = replication_of(&spec)
        .map(|r| r.name.clone())
        .unwrap_or_default();
    let heading = format!("New replication task {name}:");
    if preview_and_confirm(channel.clone(), &spec, &heading, None, &args.save, output)
        .await?
        .is_none()
    {
        return Ok(());
    }
    let created = FleetClient::new(channel)
        .create_task(spec)
        .await
        .map_err(status_error)?
        .into_inner();
    match output {
        OutputFormat::Json => print_json(&TaskJson::from(&created)),
        OutputFormat::Table => {
            outln!(
                "Created replication task {} ({}); next run: {}.",
                created.name,
                created.id,
                next_run_text(&created)
            )?;
            Ok(())
        }
    }
}

pub async fn list(channel: Channel, output: OutputFormat) -> anyhow::Result<()> {
    task::list(
        channel,
        REPLICATION,
        output,
        "No replication tasks configured",
        list_table,
    )
    .await
}

pub async fn show(channel: Channel, name: &str, output: OutputFormat) -> anyhow::Result<()> {
    let task = task::get(channel.clone(), name, REPLICATION).await?;
    let estimate = replication_estimate::fetch(
        channel.clone(),
        UpdateTaskRequest {
            task: task.id.to_string(),
            spec: None,
        },
    )
    .await;
    let (run, run_error) = if task.last_run_id == 0 {
        (None, None)
    } else {
        match FleetClient::new(channel)
            .get_run(RunRef {
                id: task.last_run_id,
            })
            .await
        {
            Ok(run) => (Some(run.into_inner()), None),
            Err(status) => (None, Some(status_error(status).to_string())),
        }
    };
    match output {
        OutputFormat::Json => {
            let spec = replication_spec(&task);
            print_json(&ShowJson {
                task: TaskJson::from(&task),
                datasets: run
                    .as_ref()
                    .map(|r| dataset_states(&spec, r))
                    .unwrap_or_default(),
                last_run: run.as_ref().map(|r| LastRunJson {
                    run: RunJson::from(r),
                    parts: r.parts.iter().map(PartJson::from).collect(),
                }),
                estimate: estimate_json(&estimate),
            })
        }
        OutputFormat::Table => {
            outln!("{}", detail_text(&task, run.as_ref(), run_error.as_deref()))?;
            outln!("")?;
            for line in estimate_text(&estimate) {
                outln!("{line}")?;
            }
            Ok(())
        }
    }
}

pub async fn edit(channel: Channel, args: &EditArgs, output: OutputFormat) -> anyhow::Result<()> {
    let request = edit_request(args)?;
    let current = task::get(channel.clone(), &args.task, REPLICATION).await?;
    let merged = match request {
        EditRequest::File(spec) => spec,
        EditRequest::Flags(edit, schedule) => {
            let Some(spec) = current.spec.as_ref() else {
                bail!("the controller sent task {} without its spec", current.id);
            };
            merge_edit(spec, &edit, schedule)?
        }
    };
    let heading = format!(
        "Replication task {} ({}) after the edit:",
        current.name, current.id
    );
    if preview_and_confirm(
        channel.clone(),
        &merged,
        &heading,
        Some(&current),
        &args.save,
        output,
    )
    .await?
    .is_none()
    {
        return Ok(());
    }
    let updated = FleetClient::new(channel)
        .update_task(UpdateTaskRequest {
            // By id: the name may be what changes.
            task: current.id.to_string(),
            spec: Some(merged),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    match output {
        OutputFormat::Json => print_json(&TaskJson::from(&updated)),
        OutputFormat::Table => {
            outln!(
                "Updated replication task {} ({}); next run: {}.",
                updated.name,
                updated.id,
                next_run_text(&updated)
            )?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::replication_spec::tests::{offsite, strings};
    use clap::Parser;
    use clap::error::ErrorKind;
    use nasfleet_common::replication_rules::ReplicationRuleError;
    use nasfleet_proto::v1::{RunPart, RunStep};
    use serde_json::json;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: ReplicationCommand,
    }

    fn parse(flags: &[&str]) -> ReplicationCommand {
        let argv = ["replication"].iter().chain(flags.iter());
        Cli::try_parse_from(argv)
            .map(|c| c.command)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn create_args(flags: &[&str]) -> CreateArgs {
        let mut argv = vec!["create"];
        argv.extend_from_slice(flags);
        match parse(&argv) {
            ReplicationCommand::Create(args) => args,
            _ => panic!("not create"),
        }
    }

    fn edit_args(flags: &[&str]) -> EditArgs {
        let mut argv = vec!["edit", "offsite"];
        argv.extend_from_slice(flags);
        match parse(&argv) {
            ReplicationCommand::Edit(args) => args,
            _ => panic!("not edit"),
        }
    }

    fn create_err(flags: &[&str]) -> String {
        create_spec(&create_args(flags)).unwrap_err().to_string()
    }

    fn task(spec: ReplicationTaskSpec) -> Task {
        Task {
            id: 5,
            kind: nasfleet_proto::v1::TaskKind::Replication.into(),
            name: spec.name.clone(),
            spec: Some(TaskSpec {
                stale_after: String::new(),
                schedule: "0 0 * * sun".into(),
                enabled: true,
                kind: Some(Kind::Replication(spec)),
            }),
            schedule: "0 0 * * sun".into(),
            schedule_description: "weekly (Sunday at 00:00)".into(),
            status: nasfleet_proto::v1::RunState::Failed.into(),
            last_error: "[EACCES] Unable to connect to port 22 on 127.0.0.3".into(),
            next_run_unix_ms: 1_700_000_000_000,
            last_run_id: 12,
            last_run_unix_ms: 1_699_999_000_000,
            created_unix_ms: 1_699_000_000_000,
        }
    }

    #[test]
    fn create_from_flags() {
        let spec = create_spec(&create_args(&[
            "offsite",
            "--source",
            "nas1:tank/a,tank/b",
            "--source",
            "nas3:pool",
            "--target",
            "nas2:backup",
            "--recursive",
            "--naming-schema",
            "auto-%Y-%m-%d_%H-%M",
            "--naming-schema",
            "hourly-%Y%m%d%H%M",
            "--allow-overwrite",
            "--disabled",
        ]))
        .unwrap();
        assert_eq!(spec.schedule, "0 0 * * sun");
        assert!(!spec.enabled);
        let r = replication_of(&spec).unwrap();
        assert_eq!(r.name, "offsite");
        assert_eq!(r.sources.len(), 2);
        // --recursive and --naming-schema apply to every source.
        for s in &r.sources {
            assert!(s.recursive);
            assert_eq!(
                s.naming_schemas,
                strings(&["auto-%Y-%m-%d_%H-%M", "hourly-%Y%m%d%H%M"])
            );
        }
        assert_eq!(r.sources[0].datasets, strings(&["tank/a", "tank/b"]));
        assert_eq!(target_text(r), "nas2:backup");
        assert!(r.allow_overwrite);
        assert!(!r.create_snapshot_task);
        let spec = create_spec(&create_args(&[
            "x",
            "--source",
            "nas1:tank",
            "--target",
            "nas2:b",
            "--period",
            "daily",
            "--at",
            "02:30",
            "--create-snapshot-task",
        ]))
        .unwrap();
        assert_eq!(spec.schedule, "30 2 * * *");
        assert!(spec.enabled);
        assert!(replication_of(&spec).unwrap().create_snapshot_task);
        assert!(
            replication_of(&spec).unwrap().sources[0]
                .naming_schemas
                .is_empty()
        );
    }

    #[test]
    fn create_takes_no_raw_and_a_bandwidth_limit() {
        let base = ["x", "--source", "nas1:tank", "--target", "nas2:b"];
        let spec = create_spec(&create_args(&base)).unwrap();
        let r = replication_of(&spec).unwrap();
        assert!(!r.no_raw);
        assert_eq!(r.bandwidth_limit, 0);
        let mut argv = base.to_vec();
        argv.extend(["--no-raw", "--bandwidth-limit", "1.5G"]);
        let spec = create_spec(&create_args(&argv)).unwrap();
        let r = replication_of(&spec).unwrap();
        assert!(r.no_raw);
        assert_eq!(r.bandwidth_limit, 1_610_612_736);
        for none in ["0", "none"] {
            let mut argv = base.to_vec();
            argv.extend(["--bandwidth-limit", none]);
            let spec = create_spec(&create_args(&argv)).unwrap();
            assert_eq!(replication_of(&spec).unwrap().bandwidth_limit, 0, "{none}");
        }
    }

    #[test]
    fn a_bad_bandwidth_limit_names_the_flag() {
        let base = ["x", "--source", "nas1:tank", "--target", "nas2:b"];
        let err = |rate: &str| {
            let mut argv = base.to_vec();
            argv.extend(["--bandwidth-limit", rate]);
            create_err(&argv)
        };
        assert!(
            err("fast").starts_with("--bandwidth-limit: 'fast' is not a rate; "),
            "{}",
            err("fast")
        );
        assert!(
            err("100").starts_with(
                "--bandwidth-limit: '100' (100 bytes per second) is out of range; the limit must be 0 (no limit) or from 64.0K/s (65536) to 1.0T/s"
            ),
            "{}",
            err("100")
        );
        let e = edit_request(&edit_args(&["--bandwidth-limit", "2T"]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--bandwidth-limit: '2T' "), "{e}");
        // A hostile value is echoed in part only.
        let e = err(&"x".repeat(100_000));
        assert!(e.contains("…(99900 more characters)"), "{e}");
        assert!(e.len() < 400, "{e}");
    }

    #[test]
    fn create_checks_locally() {
        assert_eq!(
            create_err(&["x", "--target", "nas2:b"]),
            ReplicationRuleError::NoSources.to_string()
        );
        assert_eq!(
            create_err(&["x", "--source", "nas1:tank"]),
            ReplicationRuleError::NoTarget.to_string()
        );
        assert_eq!(
            create_err(&["x", "--source", "tank", "--target", "nas2:b"]),
            "source: expected SYSTEM:DATASET[,DATASET...], got \"tank\""
        );
        assert!(
            create_err(&["x", "--source", "nas1:tank", "--target", "nas2:a,b"])
                .starts_with("target: expected exactly one dataset")
        );
        assert_eq!(
            create_err(&[
                "x",
                "--source",
                "nas1:tank/a",
                "--source",
                "nas1:tank/a",
                "--target",
                "nas2:backup"
            ]),
            "sources: nas1:tank/a and nas1:tank/a both land on backup/nas1/tank/a"
        );
        assert_eq!(
            create_err(&["x", "--source", "nas1:tank", "--target", "nas1:tank/backup"]),
            "target: the target dataset must not be inside source dataset nas1:tank"
        );
        assert!(
            create_err(&[
                "x",
                "--source",
                "nas1:tank",
                "--target",
                "nas2:b",
                "--naming-schema",
                "nope"
            ])
            .starts_with("naming_schema: ")
        );
        assert!(
            create_err(&[
                "x",
                "--source",
                "nas1:tank",
                "--target",
                "nas2:b",
                "--cron",
                "0 25 * * *"
            ])
            .starts_with("cron: ")
        );
    }

    #[test]
    fn create_needs_a_name_or_a_file() {
        let argv = ["replication", "create", "--source", "nas1:tank"];
        let kind = Cli::try_parse_from(argv).err().map(|e| e.kind());
        assert_eq!(kind, Some(ErrorKind::MissingRequiredArgument));
        let args = create_args(&["-f", "task.toml", "--dry-run", "--yes"]);
        assert!(args.flags_given().is_empty());
    }

    #[test]
    fn file_and_flags_do_not_mix() {
        let e = create_err(&["-f", "task.toml", "offsite", "--source", "nas1:x", "--yes"]);
        assert_eq!(
            e,
            "-f/--file holds the whole task, so NAME, --source cannot be given with it; only --dry-run and --yes go with -f"
        );
        let e = create_err(&["-f", "task.toml", "--schedule", "daily", "--disabled"]);
        assert!(
            e.contains("so --schedule, --disabled cannot be given"),
            "{e}"
        );
        let e = edit_request(&edit_args(&["-f", "t.toml", "--disable", "--no-recursive"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("so --no-recursive, --disable cannot be given"),
            "{e}"
        );
        let e = create_err(&["-f", "t.toml", "--no-raw", "--bandwidth-limit", "50M"]);
        assert!(
            e.contains("so --no-raw, --bandwidth-limit cannot be given"),
            "{e}"
        );
        let e = edit_request(&edit_args(&[
            "-f",
            "t.toml",
            "--raw",
            "--bandwidth-limit",
            "0",
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("so --raw, --bandwidth-limit cannot be given"),
            "{e}"
        );
    }

    #[test]
    fn edit_flags_parse() {
        let req = edit_request(&edit_args(&[
            "--source",
            "nas7:data",
            "--no-recursive",
            "--no-allow-overwrite",
            "--enable",
            "--schedule",
            "daily",
            "--rename",
            "vault",
        ]))
        .unwrap();
        let EditRequest::Flags(edit, schedule) = req else {
            panic!("not flags");
        };
        assert_eq!(schedule.as_deref(), Some("0 0 * * *"));
        assert_eq!(edit.recursive, Some(false));
        assert_eq!(edit.allow_overwrite, Some(false));
        assert_eq!(edit.enabled, Some(true));
        assert_eq!(edit.create_snapshot_task, None);
        assert_eq!(edit.raw, None);
        assert_eq!(edit.bandwidth_limit, None);
        assert_eq!(edit.name.as_deref(), Some("vault"));
        assert_eq!(edit.sources.map(|s| s.len()), Some(1));
        let e = edit_request(&edit_args(&[])).unwrap_err().to_string();
        assert!(e.starts_with("nothing to change"), "{e}");
        let e = edit_request(&edit_args(&["--target", "nas2"]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "target: expected SYSTEM:DATASET, got \"nas2\"");
        for flags in [
            &["--recursive", "--no-recursive"][..],
            &["--enable", "--disable"],
            &["--allow-overwrite", "--no-allow-overwrite"],
            &["--create-snapshot-task", "--no-create-snapshot-task"],
            &["--raw", "--no-raw"],
        ] {
            let mut argv = vec!["replication", "edit", "x"];
            argv.extend_from_slice(flags);
            let kind = Cli::try_parse_from(argv).err().map(|e| e.kind());
            assert_eq!(kind, Some(ErrorKind::ArgumentConflict), "{flags:?}");
        }
    }

    #[test]
    fn edit_flags_for_raw_sends_and_the_bandwidth_limit() {
        let flags = |argv: &[&str]| match edit_request(&edit_args(argv)).unwrap() {
            EditRequest::Flags(edit, _) => edit,
            EditRequest::File(_) => panic!("not flags"),
        };
        let edit = flags(&["--no-raw", "--bandwidth-limit", "50MB/s"]);
        assert_eq!(edit.raw, Some(false));
        assert_eq!(edit.bandwidth_limit, Some(50 << 20));
        let edit = flags(&["--raw"]);
        assert_eq!(edit.raw, Some(true));
        assert_eq!(edit.bandwidth_limit, None);
        // `none` (or 0) is a change: it removes the limit.
        for none in ["none", "0"] {
            let edit = flags(&["--bandwidth-limit", none]);
            assert_eq!(edit.bandwidth_limit, Some(0), "{none}");
            assert_eq!(edit.raw, None);
        }
        // Merged into the stored spec like --allow-overwrite.
        let mut stored = offsite();
        stored.bandwidth_limit = 1 << 30;
        stored.allow_overwrite = true;
        let current = TaskSpec {
            stale_after: String::new(),
            schedule: "0 0 * * sun".into(),
            enabled: true,
            kind: Some(Kind::Replication(stored)),
        };
        let merged = merge_edit(&current, &flags(&["--no-raw"]), None).unwrap();
        let r = replication_of(&merged).unwrap();
        assert!(r.no_raw);
        assert_eq!(r.bandwidth_limit, 1 << 30);
        assert!(r.allow_overwrite);
        let merged = merge_edit(&current, &flags(&["--bandwidth-limit", "none"]), None).unwrap();
        let r = replication_of(&merged).unwrap();
        assert!(!r.no_raw);
        assert_eq!(r.bandwidth_limit, 0);
    }

    #[test]
    fn summary_shows_where_each_dataset_lands() {
        let mut spec = offsite();
        spec.allow_overwrite = true;
        let text = summary_text("New replication task offsite:", &task(spec));
        let expected = "\
New replication task offsite:
Name:             offsite
Datasets:         nas1:tank/a  →  nas2:backup/nas1/tank/a (and children)
                  nas1:tank/b  →  nas2:backup/nas1/tank/b (and children)
                  nas3:pool    →  nas2:backup/nas3/pool
Naming schemas:   auto-%Y-%m-%d_%H-%M
Schedule:         weekly (Sunday at 00:00)
Next run:         ";
        assert!(text.starts_with(expected), "{text}");
        assert!(
            text.ends_with(
                "Allow overwrite:  yes (target datasets that changed or diverged are rolled back and overwritten)"
            ),
            "{text}"
        );
        assert!(!text.contains("Snapshot first"), "{text}");
        // Raw sends without a limit are the defaults, left out like the rest.
        assert!(!text.contains("Raw sends"), "{text}");
        assert!(!text.contains("Bandwidth limit"), "{text}");
    }

    #[test]
    fn summary_and_show_say_how_a_run_sends() {
        let mut spec = offsite();
        spec.no_raw = true;
        spec.bandwidth_limit = 50 << 20;
        let t = task(spec);
        for text in [summary_text("h", &t), detail_text(&t, None, None)] {
            assert!(
                text.contains(
                    "Raw sends:        no (--no-raw: encrypted datasets are sent decrypted)\nBandwidth limit:  50.0M/s"
                ),
                "{text}"
            );
        }
        let text = detail_text(&task(offsite()), None, None);
        assert!(
            text.contains("Allow overwrite:  no\nRaw sends:        yes\nBandwidth limit:  none\n"),
            "{text}"
        );
    }

    #[test]
    fn summary_lists_differing_schemas_per_source() {
        let mut spec = offsite();
        spec.sources[1].naming_schemas = strings(&["x-%s"]);
        spec.create_snapshot_task = true;
        let mut t = task(spec);
        if let Some(s) = t.spec.as_mut() {
            s.enabled = false;
        }
        let text = summary_text("h", &t);
        assert!(
            text.contains(
                "Naming schemas:   nas1:tank/a,tank/b: auto-%Y-%m-%d_%H-%M\n                  nas3:pool: x-%s"
            ),
            "{text}"
        );
        assert!(text.contains("Next run:         disabled"), "{text}");
        assert!(text.contains("Snapshot first:   yes"), "{text}");
        assert!(!text.contains("Allow overwrite"), "{text}");
    }

    #[test]
    fn list_row() {
        let table = list_table(&[task(offsite())]);
        let mut lines = table.lines();
        let header = lines.next().unwrap_or_default();
        assert!(header.starts_with("NAME     SOURCES"), "{header}");
        let row = lines.next().unwrap_or_default();
        assert!(
            row.starts_with(
                "offsite  nas1:tank/a,tank/b nas3:pool  nas2:backup  weekly (Sunday at 00:00)"
            ),
            "{row}"
        );
        assert!(row.contains("FAILED"), "{row}");
    }

    #[test]
    fn list_json_fields() {
        let value = serde_json::to_value(TaskJson::from(&task(offsite()))).unwrap();
        assert_eq!(value["name"], "offsite");
        assert_eq!(value["kind"], "replication");
        assert_eq!(value["status"], "FAILED");
        assert_eq!(
            value["last_error"],
            "[EACCES] Unable to connect to port 22 on 127.0.0.3"
        );
        assert_eq!(value["next_run"], "2023-11-14T22:13:20Z");
        assert_eq!(value["schedule"], "0 0 * * sun");
        assert_eq!(value["schedule_description"], "weekly (Sunday at 00:00)");
        assert_eq!(value["enabled"], true);
        assert_eq!(value["allow_overwrite"], false);
        assert_eq!(value["create_snapshot_task"], false);
        assert_eq!(value["no_raw"], false);
        assert_eq!(value["bandwidth_limit"], 0);
        assert_eq!(value["last_run_id"], 12);
        assert_eq!(value["id"], 5);
        assert_eq!(
            value["target"],
            json!({"system": "nas2", "dataset": "backup"})
        );
        assert_eq!(
            value["sources"][0],
            json!({
                "system": "nas1",
                "datasets": ["tank/a", "tank/b"],
                "recursive": true,
                "naming_schemas": ["auto-%Y-%m-%d_%H-%M"],
            })
        );
        // No snapshot-task fields on a replication task.
        assert!(value.get("dataset").is_none());
        let mut t = task(offsite());
        t.last_error.clear();
        let value = serde_json::to_value(TaskJson::from(&t)).unwrap();
        assert_eq!(value["last_error"], json!(null));
        let mut spec = offsite();
        spec.no_raw = true;
        spec.bandwidth_limit = 1_610_612_736;
        let value = serde_json::to_value(TaskJson::from(&task(spec))).unwrap();
        assert_eq!(value["no_raw"], true);
        // Bytes per second as a number, exact.
        assert_eq!(value["bandwidth_limit"], json!(1_610_612_736u64));
    }

    fn latest_run() -> Run {
        Run {
            id: 12,
            task_id: 5,
            task_name: "offsite".into(),
            trigger: nasfleet_proto::v1::RunTrigger::Scheduled.into(),
            state: RunState::Failed as i32,
            reason: "1 of 2 systems failed".into(),
            started_unix_ms: 1_699_999_000_000,
            finished_unix_ms: 1_699_999_060_000,
            steps: vec![
                RunStep {
                    name: "nas1:tank/a → backup/nas1/tank/a".into(),
                    state: RunState::Finished as i32,
                    detail: "incremental from auto-2023-11-07_00-00".into(),
                    bytes: 1024,
                },
                RunStep {
                    name: "nas1:tank/b → backup/nas1/tank/b".into(),
                    state: RunState::Finished as i32,
                    detail: String::new(),
                    bytes: 0,
                },
            ],
            parts: vec![
                RunPart {
                    system: "nas1".into(),
                    state: RunState::Finished as i32,
                    reason: String::new(),
                },
                RunPart {
                    system: "nas3".into(),
                    state: RunState::Failed as i32,
                    reason: "[EACCES] Unable to connect to port 22 on 127.0.0.3".into(),
                },
            ],
            ..Run::default()
        }
    }

    #[test]
    fn dataset_states_fill_in_datasets_without_steps() {
        let states = dataset_states(&offsite(), &latest_run());
        assert_eq!(states.len(), 3);
        assert_eq!(states[0].state, "FINISHED");
        assert_eq!(
            states[2],
            DatasetStateJson {
                name: "nas3:pool → backup/nas3/pool".into(),
                state: "FAILED",
                detail: "[EACCES] Unable to connect to port 22 on 127.0.0.3".into(),
            }
        );
        // While the run goes on, a dataset without a step is still to come.
        let mut run = latest_run();
        run.parts[1].state = RunState::Running as i32;
        let states = dataset_states(&offsite(), &run);
        assert_eq!(states[2].state, "PENDING");
        assert_eq!(states[2].detail, "");
    }

    #[test]
    fn show_text_has_failure_and_datasets() {
        let text = detail_text(&task(offsite()), Some(&latest_run()), None);
        assert!(text.contains("Target:           nas2:backup"), "{text}");
        assert!(
            text.contains("Last error:       [EACCES] Unable to connect"),
            "{text}"
        );
        assert!(text.contains("Latest run 12: FAILED"), "{text}");
        assert!(text.contains("  Reason: 1 of 2 systems failed"), "{text}");
        assert!(
            text.contains("  nas3    FAILED    [EACCES] Unable to connect"),
            "{text}"
        );
        assert!(
            text.contains(
                "  nas1:tank/a → backup/nas1/tank/a  FINISHED  incremental from auto-2023-11-07_00-00"
            ),
            "{text}"
        );
        assert!(
            text.contains("  nas3:pool → backup/nas3/pool      FAILED    [EACCES]"),
            "{text}"
        );
        let text = detail_text(
            &task(offsite()),
            None,
            Some("run 12 does not exist (NotFound)"),
        );
        assert!(
            text.contains("Latest run 12 is not available: run 12 does not exist"),
            "{text}"
        );
    }

    #[test]
    fn show_json_adds_datasets_last_run_and_estimate() {
        let run = latest_run();
        let spec = offsite();
        let value = serde_json::to_value(ShowJson {
            task: TaskJson::from(&task(spec.clone())),
            datasets: dataset_states(&spec, &run),
            last_run: Some(LastRunJson {
                run: RunJson::from(&run),
                parts: run.parts.iter().map(PartJson::from).collect(),
            }),
            estimate: estimate_json(&Err(anyhow::anyhow!("nas3: system is OFFLINE"))),
        })
        .unwrap();
        assert_eq!(value["name"], "offsite");
        assert_eq!(value["estimate"]["error"], "nas3: system is OFFLINE");
        assert_eq!(value["datasets"][2]["state"], "FAILED");
        assert_eq!(value["last_run"]["id"], 12);
        assert_eq!(value["last_run"]["state"], "FAILED");
        assert_eq!(value["last_run"]["parts"][1]["system"], "nas3");
    }
}
