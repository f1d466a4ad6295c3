//! `nasfleet snapshot-task create|list|show|edit|delete|run|enable|disable`: periodic snapshot tasks.

use super::schedule_args::{ScheduleArgs, edited_stale_after};
use super::snapshot::check_schema;
use super::status_error;
use super::task::{
    self, LifecycleCommand, SNAPSHOT, TaskJson, last_run_text, next_run_text, schedule_text,
    task_schedule, task_status,
};
use crate::context::Context;
use crate::output::{OutputFormat, Table, cell, human_time, print_json, yes_no};
use anyhow::bail;
use clap::{Args, Subcommand};
use nasfleet_common::names::is_below;
use nasfleet_common::naming::DEFAULT_PERIODIC_SCHEMA;
use nasfleet_common::schedule::Schedule;
use nasfleet_proto::v1::fleet_client::FleetClient;
use nasfleet_proto::v1::task_spec::Kind;
use nasfleet_proto::v1::{SnapshotTaskSpec, Task, TaskSpec, UpdateTaskRequest};
use tonic::transport::Channel;

/// Retention of a new task unless `--lifetime` says otherwise.
pub const DEFAULT_LIFETIME: &str = "2w";

/// The messages match the controller's (and TrueNAS's), so a script sees the
/// same text whichever side refused.
pub const EXCLUDE_NOT_RECURSIVE: &str =
    "exclude: Excluding datasets is not necessary for non-recursive periodic snapshot tasks";
pub const EXCLUDE_NOT_DESCENDANT: &str =
    "exclude: Excluded dataset should be a child or other descendant of the selected dataset";

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
    Lifecycle(LifecycleCommand),
}

impl SnapshotTaskCommand {
    /// Refuses flags that are wrong whatever the controller holds. `edit`
    /// checks only the values given: what they make of the current task is
    /// known once it is fetched.
    pub fn precheck(&self) -> anyhow::Result<()> {
        match self {
            SnapshotTaskCommand::Create(args) => create_spec(args).map(drop),
            SnapshotTaskCommand::Edit(args) => {
                args.schedule.resolve(Schedule::hourly())?;
                args.naming_schema
                    .as_deref()
                    .map(check_schema)
                    .transpose()?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Runs one `snapshot-task` subcommand.
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let channel = ctx.connect_after(self.precheck()).await?;
        let output = ctx.output;
        match self {
            SnapshotTaskCommand::Create(args) => create(channel, &args, output).await,
            SnapshotTaskCommand::List => list(channel, output).await,
            SnapshotTaskCommand::Show { task } => show(channel, &task, output).await,
            SnapshotTaskCommand::Edit(args) => edit(channel, &args, output).await,
            SnapshotTaskCommand::Lifecycle(command) => {
                command.execute(channel, SNAPSHOT, output).await
            }
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// The system whose dataset is snapshotted.
    #[arg(long)]
    pub system: String,
    /// The dataset, e.g. tank/data.
    #[arg(long)]
    pub dataset: String,
    /// Snapshot the dataset's descendants too.
    #[arg(long)]
    pub recursive: bool,
    /// A descendant to leave out of a recursive snapshot, relative (child) or full (tank/data/child); repeatable.
    #[arg(long, value_name = "DATASET")]
    pub exclude: Vec<String>,
    /// strftime-style snapshot name pattern [default: auto-%Y-%m-%d_%H-%M].
    #[arg(long, value_name = "SCHEMA")]
    pub naming_schema: Option<String>,
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    /// How long snapshots are kept: a number with h, d, w, m (months) or y.
    #[arg(long, default_value = DEFAULT_LIFETIME)]
    pub lifetime: String,
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
    /// Snapshot another dataset.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Snapshot the dataset's descendants too.
    #[arg(long, conflicts_with = "no_recursive")]
    pub recursive: bool,
    /// Snapshot the dataset alone (drops the exclude list).
    #[arg(long)]
    pub no_recursive: bool,
    /// Replace the exclude list; repeatable.
    #[arg(long, value_name = "DATASET", conflicts_with = "clear_exclude")]
    pub exclude: Vec<String>,
    /// Empty the exclude list.
    #[arg(long)]
    pub clear_exclude: bool,
    /// strftime-style snapshot name pattern.
    #[arg(long, value_name = "SCHEMA")]
    pub naming_schema: Option<String>,
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    /// How long snapshots are kept: a number with h, d, w, m (months) or y.
    #[arg(long)]
    pub lifetime: Option<String>,
    /// Switch the task on.
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Switch the task off.
    #[arg(long)]
    pub disable: bool,
}

/// The changes `edit` was asked for, apart from the schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotEdit {
    /// `--stale-after`, as given.
    pub stale_after: Option<String>,
    pub system: Option<String>,
    pub dataset: Option<String>,
    pub recursive: Option<bool>,
    /// `Some(vec![])` empties the list; `None` keeps it.
    pub exclude: Option<Vec<String>>,
    pub naming_schema: Option<String>,
    pub lifetime: Option<String>,
    pub enabled: Option<bool>,
}

impl From<&EditArgs> for SnapshotEdit {
    fn from(a: &EditArgs) -> Self {
        let flag = |on: bool, off: bool| match (on, off) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        };
        SnapshotEdit {
            stale_after: a.schedule.stale_after.clone(),
            system: a.system.clone(),
            dataset: a.dataset.clone(),
            recursive: flag(a.recursive, a.no_recursive),
            exclude: if a.clear_exclude {
                Some(Vec::new())
            } else if a.exclude.is_empty() {
                None
            } else {
                Some(a.exclude.clone())
            },
            naming_schema: a.naming_schema.clone(),
            lifetime: a.lifetime.clone(),
            enabled: flag(a.enable, a.disable),
        }
    }
}

/// Checks excludes against the dataset and turns them into full dataset
/// names. `child` means `<dataset>/child`; a name starting with the pool is
/// taken as full and must lie below the dataset.
pub fn normalize_excludes(
    dataset: &str,
    recursive: bool,
    excludes: &[String],
) -> anyhow::Result<Vec<String>> {
    if excludes.is_empty() {
        return Ok(Vec::new());
    }
    if !recursive {
        bail!(EXCLUDE_NOT_RECURSIVE);
    }
    let dataset = dataset.trim().trim_end_matches('/');
    let pool = dataset.split('/').next().unwrap_or(dataset);
    let below = format!("{dataset}/");
    let mut out: Vec<String> = Vec::new();
    for exclude in excludes {
        let exclude = exclude.trim().trim_end_matches('/');
        let full = if exclude.starts_with(&below) {
            exclude.to_owned()
        } else if exclude.is_empty()
            || exclude.starts_with('/')
            || exclude == pool
            || is_below(exclude, pool)
        {
            bail!(EXCLUDE_NOT_DESCENDANT);
        } else {
            format!("{below}{exclude}")
        };
        // `tank/data/../other` and `tank/data/x@snap` name no descendant.
        let odd = |c: &str| c.is_empty() || c == "." || c == ".." || c.contains(['@', '#']);
        if full.split('/').any(odd) {
            bail!(EXCLUDE_NOT_DESCENDANT);
        }
        if !out.contains(&full) {
            out.push(full);
        }
    }
    Ok(out)
}

/// The spec `create` sends, validated as far as the CLI can.
pub fn create_spec(args: &CreateArgs) -> anyhow::Result<TaskSpec> {
    let schedule = args.schedule.resolve_or(Schedule::hourly())?;
    let naming_schema = check_schema(
        args.naming_schema
            .as_deref()
            .unwrap_or(DEFAULT_PERIODIC_SCHEMA),
    )?;
    let exclude = normalize_excludes(&args.dataset, args.recursive, &args.exclude)?;
    Ok(TaskSpec {
        schedule: schedule.expression().to_owned(),
        enabled: !args.disabled,
        stale_after: args.schedule.stale_after_or_default()?,
        kind: Some(Kind::Snapshot(SnapshotTaskSpec {
            system: args.system.trim().to_owned(),
            dataset: args.dataset.trim().trim_end_matches('/').to_owned(),
            recursive: args.recursive,
            exclude,
            naming_schema,
            lifetime: args.lifetime.trim().to_owned(),
        })),
    })
}

/// The complete spec `edit` sends: the current one with the requested
/// changes, checked again as a whole (a new dataset must still contain the
/// excludes). `schedule` is the new cron expression, if one was asked for.
pub fn merge_edit(
    current: &TaskSpec,
    edit: &SnapshotEdit,
    schedule: Option<String>,
) -> anyhow::Result<TaskSpec> {
    if *edit == SnapshotEdit::default() && schedule.is_none() {
        bail!("nothing to change: pass at least one flag to edit");
    }
    let Some(Kind::Snapshot(snap)) = &current.kind else {
        bail!("the task's current spec is not a periodic snapshot task");
    };
    let mut snap = snap.clone();
    if let Some(system) = &edit.system {
        snap.system = system.trim().to_owned();
    }
    if let Some(dataset) = &edit.dataset {
        snap.dataset = dataset.trim().trim_end_matches('/').to_owned();
    }
    if let Some(recursive) = edit.recursive {
        snap.recursive = recursive;
    }
    let exclude = match &edit.exclude {
        Some(list) => list.clone(),
        // Excludes mean nothing without recursion; keeping them would only
        // make the controller refuse the edit.
        None if !snap.recursive => Vec::new(),
        None => snap.exclude.clone(),
    };
    snap.exclude = normalize_excludes(&snap.dataset, snap.recursive, &exclude)?;
    if let Some(schema) = &edit.naming_schema {
        snap.naming_schema = check_schema(schema)?;
    }
    if let Some(lifetime) = &edit.lifetime {
        snap.lifetime = lifetime.trim().to_owned();
    }
    Ok(TaskSpec {
        schedule: schedule.unwrap_or_else(|| current.schedule.clone()),
        enabled: edit.enabled.unwrap_or(current.enabled),
        stale_after: edited_stale_after(edit.stale_after.as_deref(), current)?,
        kind: Some(Kind::Snapshot(snap)),
    })
}

fn snapshot_spec(task: &Task) -> SnapshotTaskSpec {
    match task.spec.as_ref().and_then(|s| s.kind.as_ref()) {
        Some(Kind::Snapshot(snap)) => snap.clone(),
        _ => SnapshotTaskSpec::default(),
    }
}

pub async fn create(
    channel: Channel,
    args: &CreateArgs,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let spec = create_spec(args)?;
    task::create(channel, spec, output, |t| {
        format!("Created snapshot task {}: {}", t.id, t.name)
    })
    .await
}

pub async fn list(channel: Channel, output: OutputFormat) -> anyhow::Result<()> {
    task::list(
        channel,
        SNAPSHOT,
        output,
        "No periodic snapshot tasks configured",
        tasks_table,
    )
    .await
}

fn tasks_table(tasks: &[Task]) -> String {
    let mut table = Table::new(&[
        "ID",
        "SYSTEM",
        "DATASET",
        "RECURSIVE",
        "SCHEMA",
        "SCHEDULE",
        "LIFETIME",
        "ENABLED",
        "STATUS",
        "NEXT RUN",
        "LAST RUN",
    ]);
    for t in tasks {
        let snap = snapshot_spec(t);
        let schedule = if t.schedule_description.is_empty() {
            task_schedule(t).to_owned()
        } else {
            cell(&t.schedule_description, 40)
        };
        table.row(vec![
            t.id.to_string(),
            snap.system,
            snap.dataset,
            yes_no(snap.recursive),
            snap.naming_schema,
            schedule,
            snap.lifetime,
            yes_no(t.spec.as_ref().is_some_and(|s| s.enabled)),
            task_status(t).to_owned(),
            next_run_text(t),
            if t.last_run_unix_ms > 0 {
                human_time(t.last_run_unix_ms)
            } else {
                "never".into()
            },
        ]);
    }
    table.render()
}

fn task_detail_text(t: &Task) -> String {
    let snap = snapshot_spec(t);
    let mut lines = vec![
        format!("ID:             {}", t.id),
        format!("Name:           {}", t.name),
        format!("System:         {}", snap.system),
        format!("Dataset:        {}", snap.dataset),
        format!("Recursive:      {}", yes_no(snap.recursive)),
        format!(
            "Exclude:        {}",
            if snap.exclude.is_empty() {
                "-".into()
            } else {
                snap.exclude.join(", ")
            }
        ),
        format!("Naming schema:  {}", snap.naming_schema),
        format!("Lifetime:       {}", snap.lifetime),
        format!("Schedule:       {}", schedule_text(t)),
        format!("Stale after:    {}", task::stale_after_text(t)),
        format!(
            "Enabled:        {}",
            yes_no(t.spec.as_ref().is_some_and(|s| s.enabled))
        ),
        format!("Status:         {}", task_status(t)),
    ];
    if !t.last_error.is_empty() {
        lines.push(format!("Last error:     {}", t.last_error));
    }
    lines.push(format!("Next run:       {}", next_run_text(t)));
    lines.push(format!("Last run:       {}", last_run_text(t)));
    if t.created_unix_ms > 0 {
        lines.push(format!("Created:        {}", human_time(t.created_unix_ms)));
    }
    lines.join("\n")
}

pub async fn show(channel: Channel, id: &str, output: OutputFormat) -> anyhow::Result<()> {
    let task = task::get(channel, id, SNAPSHOT).await?;
    match output {
        OutputFormat::Json => print_json(&TaskJson::from(&task)),
        OutputFormat::Table => {
            outln!("{}", task_detail_text(&task))?;
            Ok(())
        }
    }
}

pub async fn edit(channel: Channel, args: &EditArgs, output: OutputFormat) -> anyhow::Result<()> {
    let current = task::get(channel.clone(), &args.task, SNAPSHOT).await?;
    let Some(spec) = current.spec.as_ref() else {
        bail!("the controller sent task {} without its spec", current.id);
    };
    // The current schedule is only the fallback for "no schedule flag",
    // which resolve() already answers with None; an expression this CLI
    // cannot read must not block editing other fields.
    let default = Schedule::parse(task_schedule(&current)).unwrap_or_else(|_| Schedule::hourly());
    let schedule = args
        .schedule
        .resolve(default)?
        .map(|s| s.expression().to_owned());
    let merged = merge_edit(spec, &SnapshotEdit::from(args), schedule)?;
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
            outln!("Updated snapshot task {}.\n", updated.id)?;
            outln!("{}", task_detail_text(&updated))?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::task::tests::snapshot_task;
    use clap::Parser;
    use clap::error::ErrorKind;

    #[derive(Parser)]
    struct CreateCli {
        #[command(flatten)]
        args: CreateArgs,
    }

    #[derive(Parser)]
    struct EditCli {
        #[command(flatten)]
        args: EditArgs,
    }

    fn create_args(flags: &[&str]) -> CreateArgs {
        let argv = ["create"].iter().chain(flags.iter());
        CreateCli::try_parse_from(argv)
            .map(|c| c.args)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn edit_of(flags: &[&str]) -> SnapshotEdit {
        let argv = ["edit", "7"].iter().chain(flags.iter());
        let cli = EditCli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
        SnapshotEdit::from(&cli.args)
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn snap_of(spec: &TaskSpec) -> &SnapshotTaskSpec {
        match &spec.kind {
            Some(Kind::Snapshot(s)) => s,
            _ => panic!("no snapshot spec"),
        }
    }

    #[test]
    fn excludes_need_recursion() {
        let err = normalize_excludes("tank/data", false, &strings(&["tmp"])).unwrap_err();
        assert_eq!(err.to_string(), EXCLUDE_NOT_RECURSIVE);
        assert_eq!(
            normalize_excludes("tank/data", false, &[]).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn excludes_become_full_names() {
        let got = normalize_excludes(
            "tank/data",
            true,
            &strings(&["tmp", "tank/data/cache/", "a/b", "tmp"]),
        )
        .unwrap();
        assert_eq!(
            got,
            strings(&["tank/data/tmp", "tank/data/cache", "tank/data/a/b"])
        );
        assert_eq!(
            normalize_excludes("tank", true, &strings(&["tank/x", "y"])).unwrap(),
            strings(&["tank/x", "tank/y"])
        );
    }

    #[test]
    fn excludes_outside_the_dataset_are_refused() {
        for bad in [
            "tank/data",
            "tank/other",
            "tank/database",
            "tank",
            "/tmp",
            "",
            "../other",
            "tmp@snap",
        ] {
            let err = normalize_excludes("tank/data", true, &strings(&[bad])).unwrap_err();
            assert_eq!(err.to_string(), EXCLUDE_NOT_DESCENDANT, "{bad:?}");
        }
    }

    #[test]
    fn create_defaults() {
        let spec = create_spec(&create_args(&[
            "--system",
            "nas1",
            "--dataset",
            "tank/data",
        ]))
        .unwrap();
        assert_eq!(spec.schedule, Schedule::hourly().expression());
        assert!(spec.enabled);
        let snap = snap_of(&spec);
        assert_eq!(snap.system, "nas1");
        assert_eq!(snap.dataset, "tank/data");
        assert!(!snap.recursive);
        assert!(snap.exclude.is_empty());
        assert_eq!(snap.naming_schema, "auto-%Y-%m-%d_%H-%M");
        assert_eq!(snap.lifetime, "2w");
    }

    #[test]
    fn create_validates_before_sending() {
        let err = create_spec(&create_args(&[
            "--system",
            "nas1",
            "--dataset",
            "tank/data",
            "--exclude",
            "tmp",
        ]))
        .unwrap_err();
        assert_eq!(err.to_string(), EXCLUDE_NOT_RECURSIVE);
        let err = create_spec(&create_args(&[
            "--system",
            "nas1",
            "--dataset",
            "tank/data",
            "--naming-schema",
            "auto-%Y",
        ]))
        .unwrap_err();
        assert!(err.to_string().starts_with("naming_schema: "), "{err}");
        let spec = create_spec(&create_args(&[
            "--system",
            "nas1",
            "--dataset",
            "tank/data",
            "--recursive",
            "--exclude",
            "tmp",
            "--schedule",
            "daily",
            "--lifetime",
            "3m",
            "--disabled",
        ]))
        .unwrap();
        assert_eq!(snap_of(&spec).exclude, strings(&["tank/data/tmp"]));
        assert_eq!(spec.schedule, "0 0 * * *");
        assert_eq!(snap_of(&spec).lifetime, "3m");
        assert!(!spec.enabled);
    }

    #[test]
    fn edit_without_flags_is_refused() {
        let current = snapshot_task().spec.unwrap_or_default();
        let err = merge_edit(&current, &edit_of(&[]), None).unwrap_err();
        assert!(err.to_string().starts_with("nothing to change"), "{err}");
    }

    #[test]
    fn edit_merges_into_the_current_spec() {
        let current = snapshot_task().spec.unwrap_or_default();
        let merged = merge_edit(
            &current,
            &edit_of(&["--lifetime", "1y", "--disable"]),
            Some("0 3 * * *".into()),
        )
        .unwrap();
        assert_eq!(merged.schedule, "0 3 * * *");
        assert!(!merged.enabled);
        let snap = snap_of(&merged);
        assert_eq!(snap.lifetime, "1y");
        // Untouched fields stay as they were.
        assert_eq!(snap.system, "nas1");
        assert_eq!(snap.dataset, "tank/data");
        assert!(snap.recursive);
        assert_eq!(snap.exclude, strings(&["tank/data/tmp"]));
        assert_eq!(snap.naming_schema, "auto-%Y-%m-%d_%H-%M");
    }

    #[test]
    fn edit_keeps_schedule_unless_asked() {
        let current = snapshot_task().spec.unwrap_or_default();
        let merged = merge_edit(&current, &edit_of(&["--enable"]), None).unwrap();
        assert_eq!(merged.schedule, "0 * * * *");
        assert!(merged.enabled);
    }

    #[test]
    fn edit_excludes() {
        let current = snapshot_task().spec.unwrap_or_default();
        let merged = merge_edit(
            &current,
            &edit_of(&["--exclude", "a", "--exclude", "b"]),
            None,
        )
        .unwrap();
        assert_eq!(
            snap_of(&merged).exclude,
            strings(&["tank/data/a", "tank/data/b"])
        );
        let merged = merge_edit(&current, &edit_of(&["--clear-exclude"]), None).unwrap();
        assert!(snap_of(&merged).exclude.is_empty());
        // Turning recursion off drops the excludes that would no longer mean anything.
        let merged = merge_edit(&current, &edit_of(&["--no-recursive"]), None).unwrap();
        assert!(!snap_of(&merged).recursive);
        assert!(snap_of(&merged).exclude.is_empty());
        // ...but asking for both is a mistake worth reporting.
        let err = merge_edit(
            &current,
            &edit_of(&["--no-recursive", "--exclude", "x"]),
            None,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), EXCLUDE_NOT_RECURSIVE);
        // A new dataset must still contain the kept excludes.
        let err = merge_edit(&current, &edit_of(&["--dataset", "tank/other"]), None).unwrap_err();
        assert_eq!(err.to_string(), EXCLUDE_NOT_DESCENDANT);
    }

    #[test]
    fn edit_flags_conflict() {
        for flags in [
            &["--recursive", "--no-recursive"][..],
            &["--enable", "--disable"],
            &["--exclude", "a", "--clear-exclude"],
        ] {
            let argv = ["edit", "7"].iter().chain(flags.iter());
            let kind = EditCli::try_parse_from(argv).err().map(|e| e.kind());
            assert_eq!(kind, Some(ErrorKind::ArgumentConflict), "{flags:?}");
        }
    }

    #[test]
    fn list_and_show_text() {
        let task = snapshot_task();
        let table = tasks_table(std::slice::from_ref(&task));
        let row = table.lines().nth(1).unwrap_or_default();
        assert!(row.starts_with("7   nas1"), "{row}");
        assert!(row.contains("every hour"), "{row}");
        let text = task_detail_text(&task);
        assert!(text.contains("Exclude:        tank/data/tmp"), "{text}");
        assert!(
            text.contains("Schedule:       every hour (0 * * * *)"),
            "{text}"
        );
        assert!(text.contains("Last run:       never"), "{text}");
    }
}
