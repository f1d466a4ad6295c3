//! What every task kind shares on the command line: the task's JSON shape and the calls that do not care about the kind (get, delete, enable, run now).

use super::run::{RunJson, watch_run};
use super::{confirm, status_error};
use crate::output::{OutputFormat, human_time, print_json};
use anyhow::bail;
use clap::Subcommand;
use nasfleet_common::replication_rules::effective_schemas;
pub use nasfleet_common::replication_summary::task_schedule;
use nasfleet_common::rsync_rules::effective_port;
use nasfleet_common::status::{rfc3339_from_unix_ms, run_state_word, task_kind_word};
use nasfleet_proto::v1::fleet_client::FleetClient;
use nasfleet_proto::v1::task_spec::Kind;
use nasfleet_proto::v1::{
    ListTasksRequest, ReplicationSource, ReplicationTaskSpec, RsyncDirection, RsyncMode,
    RsyncTaskSpec, RunState, SetTaskEnabledRequest, SnapshotTaskSpec, Task, TaskKind as WireKind,
    TaskRef, TaskSpec,
};
use serde::Serialize;
use tonic::transport::Channel;

/// Which kind of task a command group manages, and how to call it in messages.
#[derive(Debug, Clone, Copy)]
pub struct TaskKind {
    /// `Task.kind` on the wire.
    pub wire: WireKind,
    /// What people call it, e.g. `periodic snapshot task`.
    pub noun: &'static str,
    /// What deleting a task of this kind leaves alone, for the question.
    pub delete_note: &'static str,
    /// The `nasfleet` command group that manages this kind.
    pub group: &'static str,
}

impl TaskKind {
    /// The noun with its article: `a snapshot task`, `an rsync task`.
    pub fn with_article(&self) -> String {
        // By sound, not by letter: "an rsync task".
        let an = self.noun.starts_with(['a', 'e', 'i', 'o', 'u']) || self.noun.starts_with("rsync");
        format!("{} {}", if an { "an" } else { "a" }, self.noun)
    }
}

/// Periodic snapshot tasks.
pub const SNAPSHOT: TaskKind = TaskKind {
    wire: WireKind::Snapshot,
    noun: "snapshot task",
    delete_note: "Its snapshots stay.",
    group: "snapshot-task",
};

/// Replication tasks.
pub const REPLICATION: TaskKind = TaskKind {
    wire: WireKind::Replication,
    noun: "replication task",
    delete_note: "Snapshots and replicated datasets stay.",
    group: "replication",
};

/// Rsync tasks.
pub const RSYNC: TaskKind = TaskKind {
    wire: WireKind::Rsync,
    noun: "rsync task",
    delete_note: "Files already copied stay.",
    group: "rsync",
};

/// Every kind the CLI knows, to name the right command group in messages.
pub const KINDS: [TaskKind; 3] = [SNAPSHOT, REPLICATION, RSYNC];

/// The fields of a periodic snapshot task's spec, flattened into [`TaskJson`].
#[derive(Debug, Serialize)]
pub struct SnapshotSpecJson {
    pub system: String,
    pub dataset: String,
    pub recursive: bool,
    pub exclude: Vec<String>,
    pub naming_schema: String,
    pub lifetime: String,
}

impl From<&SnapshotTaskSpec> for SnapshotSpecJson {
    fn from(s: &SnapshotTaskSpec) -> Self {
        SnapshotSpecJson {
            system: s.system.clone(),
            dataset: s.dataset.clone(),
            recursive: s.recursive,
            exclude: s.exclude.clone(),
            naming_schema: s.naming_schema.clone(),
            lifetime: s.lifetime.clone(),
        }
    }
}

/// One source of a replication task in JSON.
#[derive(Debug, Serialize)]
pub struct ReplicationSourceJson {
    pub system: String,
    pub datasets: Vec<String>,
    pub recursive: bool,
    /// The schemas replicated; the default when the task names none.
    pub naming_schemas: Vec<String>,
}

impl From<&ReplicationSource> for ReplicationSourceJson {
    fn from(s: &ReplicationSource) -> Self {
        ReplicationSourceJson {
            system: s.system.clone(),
            datasets: s.datasets.clone(),
            recursive: s.recursive,
            naming_schemas: effective_schemas(s),
        }
    }
}

/// Where a replication task's sources land.
#[derive(Debug, Serialize)]
pub struct ReplicationTargetJson {
    pub system: String,
    pub dataset: String,
}

/// The fields of a replication task's spec, flattened into [`TaskJson`].
/// The task's name is `TaskJson.name` already.
#[derive(Debug, Serialize)]
pub struct ReplicationSpecJson {
    pub sources: Vec<ReplicationSourceJson>,
    pub target: ReplicationTargetJson,
    pub allow_overwrite: bool,
    pub create_snapshot_task: bool,
    /// Encrypted datasets are sent decrypted rather than raw (`zfs send -w`).
    pub no_raw: bool,
    /// Bytes per second each source sends at; 0: no limit.
    pub bandwidth_limit: u64,
}

impl From<&ReplicationTaskSpec> for ReplicationSpecJson {
    fn from(r: &ReplicationTaskSpec) -> Self {
        ReplicationSpecJson {
            sources: r.sources.iter().map(ReplicationSourceJson::from).collect(),
            target: ReplicationTargetJson {
                system: r.target_system.clone(),
                dataset: r.target_dataset.clone(),
            },
            allow_overwrite: r.allow_overwrite,
            create_snapshot_task: r.create_snapshot_task,
            no_raw: r.no_raw,
            bandwidth_limit: r.bandwidth_limit,
        }
    }
}

/// `PUSH` / `PULL`, as JSON and tables spell the direction.
pub fn rsync_direction_word(direction: RsyncDirection) -> &'static str {
    match direction {
        RsyncDirection::Push => "PUSH",
        RsyncDirection::Pull => "PULL",
        RsyncDirection::Unspecified => "UNSPECIFIED",
    }
}

/// `MODULE` / `SSH`; a spec without a mode is a module task, as on the controller.
pub fn rsync_mode_word(mode: RsyncMode) -> &'static str {
    match mode {
        RsyncMode::Ssh => "SSH",
        RsyncMode::Module | RsyncMode::Unspecified => "MODULE",
    }
}

/// The fields of an rsync task's spec by their TrueNAS names, flattened into [`TaskJson`].
#[derive(Debug, Serialize)]
pub struct RsyncSpecJson {
    pub system: String,
    pub path: String,
    pub user: String,
    /// `PUSH` or `PULL`.
    pub direction: &'static str,
    pub description: String,
    pub remote_host: String,
    /// `MODULE` or `SSH`.
    pub mode: &'static str,
    pub remote_module: String,
    /// The effective port: the mode's default when the spec leaves it at 0.
    pub remote_port: u32,
    pub remote_path: String,
    pub validate_remote_path: bool,
    pub recursive: bool,
    pub times: bool,
    pub compress: bool,
    pub archive: bool,
    pub delete: bool,
    pub quiet: bool,
    pub preserve_permissions: bool,
    pub preserve_xattrs: bool,
    pub delay_updates: bool,
    /// Extra rsync arguments, one word each, exactly as given.
    pub auxiliary: Vec<String>,
}

impl From<&RsyncTaskSpec> for RsyncSpecJson {
    fn from(s: &RsyncTaskSpec) -> Self {
        RsyncSpecJson {
            system: s.system.clone(),
            path: s.path.clone(),
            user: s.user.clone(),
            direction: rsync_direction_word(s.direction()),
            description: s.description.clone(),
            remote_host: s.remote_host.clone(),
            mode: rsync_mode_word(s.mode()),
            remote_module: s.remote_module.clone(),
            remote_port: effective_port(s),
            remote_path: s.remote_path.clone(),
            validate_remote_path: s.validate_remote_path,
            recursive: s.recursive,
            times: s.times,
            compress: s.compress,
            archive: s.archive,
            delete: s.delete,
            quiet: s.quiet,
            preserve_permissions: s.preserve_permissions,
            preserve_xattrs: s.preserve_xattrs,
            delay_updates: s.delay_updates,
            auxiliary: s.auxiliary.clone(),
        }
    }
}

/// A task as `-o json` prints it. The kind-specific spec fields sit at the
/// top level (flattened) so scripts read `.dataset`, not `.spec.snapshot.dataset`;
/// each kind has its own flattened part, absent for the other kinds.
#[derive(Debug, Serialize)]
pub struct TaskJson {
    pub id: u64,
    pub name: String,
    pub kind: String,
    #[serde(flatten)]
    pub snapshot: Option<SnapshotSpecJson>,
    #[serde(flatten)]
    pub replication: Option<ReplicationSpecJson>,
    #[serde(flatten)]
    pub rsync: Option<RsyncSpecJson>,
    /// Normalised cron expression.
    pub schedule: String,
    pub schedule_description: String,
    /// `--stale-after`; absent: twice the schedule's period.
    pub stale_after: Option<String>,
    pub enabled: bool,
    pub status: String,
    pub last_error: Option<String>,
    pub next_run: Option<String>,
    pub last_run_id: Option<u64>,
    pub last_run: Option<String>,
    pub created: Option<String>,
}

/// The task's status word: the state of its latest run, `PENDING` before
/// the first (also from a controller that did not say).
pub fn task_status(task: &Task) -> &'static str {
    match task.status() {
        RunState::Unspecified => run_state_word(RunState::Pending),
        state => run_state_word(state),
    }
}

impl From<&Task> for TaskJson {
    fn from(t: &Task) -> Self {
        let spec = t.spec.as_ref();
        let kind = spec.and_then(|s| s.kind.as_ref());
        let snapshot = match kind {
            Some(Kind::Snapshot(snap)) => Some(SnapshotSpecJson::from(snap)),
            _ => None,
        };
        let replication = match kind {
            Some(Kind::Replication(r)) => Some(ReplicationSpecJson::from(r)),
            _ => None,
        };
        let rsync = match kind {
            Some(Kind::Rsync(r)) => Some(RsyncSpecJson::from(r)),
            _ => None,
        };
        TaskJson {
            id: t.id,
            name: t.name.clone(),
            kind: task_kind_word(t.kind()).to_owned(),
            snapshot,
            replication,
            rsync,
            schedule: task_schedule(t).to_owned(),
            schedule_description: t.schedule_description.clone(),
            stale_after: spec
                .map(|s| s.stale_after.clone())
                .filter(|s| !s.is_empty()),
            enabled: spec.map(|s| s.enabled).unwrap_or(false),
            status: task_status(t).to_owned(),
            last_error: Some(t.last_error.clone()).filter(|e| !e.is_empty()),
            next_run: rfc3339_from_unix_ms(t.next_run_unix_ms),
            last_run_id: Some(t.last_run_id).filter(|id| *id != 0),
            last_run: rfc3339_from_unix_ms(t.last_run_unix_ms),
            created: rfc3339_from_unix_ms(t.created_unix_ms),
        }
    }
}

/// When the task counts as stale, for people.
pub fn stale_after_text(task: &Task) -> String {
    match task.spec.as_ref().map(|s| s.stale_after.as_str()) {
        Some(after) if !after.is_empty() => after.to_owned(),
        _ => "twice its schedule's period".to_owned(),
    }
}

/// When the task runs next, for people.
pub fn next_run_text(task: &Task) -> String {
    let enabled = task.spec.as_ref().map(|s| s.enabled).unwrap_or(false);
    if !enabled {
        "disabled".into()
    } else if task.next_run_unix_ms <= 0 {
        "-".into()
    } else {
        human_time(task.next_run_unix_ms)
    }
}

/// `every hour (0 * * * *)`, or just the expression when there is no description.
pub fn schedule_text(task: &Task) -> String {
    let expression = task_schedule(task);
    if task.schedule_description.is_empty() {
        expression.to_owned()
    } else {
        format!("{} ({expression})", task.schedule_description)
    }
}

/// `run 12 at 2026-...`, or `never`.
pub fn last_run_text(task: &Task) -> String {
    match (task.last_run_id, task.last_run_unix_ms) {
        (0, _) => "never".into(),
        (id, ms) if ms > 0 => format!("run {id} at {}", human_time(ms)),
        (id, _) => format!("run {id}"),
    }
}

/// Refuses to work on a task of another kind through this command group, so
/// `snapshot-task edit 7` cannot rewrite a replication task's spec. The
/// message says what the task is and which command group manages it.
pub fn expect_kind(task: &Task, kind: TaskKind) -> anyhow::Result<()> {
    if task.kind() == kind.wire {
        return Ok(());
    }
    let actual = KINDS.iter().find(|k| k.wire == task.kind());
    let what = match actual {
        Some(k) => k.with_article(),
        None => "a task of unknown kind".to_owned(),
    };
    let hint = actual
        .map(|k| format!("; see `nasfleet {} show {}`", k.group, task.id))
        .unwrap_or_default();
    bail!(
        "task {} ({}) is {what}, not {}{hint}",
        task.id,
        task.name,
        kind.with_article()
    )
}

/// Fetches one task by id or name and checks its kind.
/// `list` of every task kind: JSON objects, or the kind's table, or `empty`
/// when there are none.
pub async fn list(
    channel: Channel,
    kind: TaskKind,
    output: OutputFormat,
    empty: &str,
    table: fn(&[Task]) -> String,
) -> anyhow::Result<()> {
    let tasks = FleetClient::new(channel)
        .list_tasks(ListTasksRequest {
            kind: kind.wire.into(),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .tasks;
    match output {
        OutputFormat::Json => {
            let rows: Vec<TaskJson> = tasks.iter().map(TaskJson::from).collect();
            print_json(&rows)
        }
        OutputFormat::Table => {
            if tasks.is_empty() {
                outln!("{empty}")?;
            } else {
                outln!("{}", table(&tasks))?;
            }
            Ok(())
        }
    }
}

/// Creates a task from a complete spec and prints it: the JSON object, or
/// `heading` (e.g. "Created snapshot task 3: NAME") with schedule and next run.
pub async fn create(
    channel: Channel,
    spec: TaskSpec,
    output: OutputFormat,
    heading: impl Fn(&Task) -> String,
) -> anyhow::Result<()> {
    let created = FleetClient::new(channel)
        .create_task(spec)
        .await
        .map_err(status_error)?
        .into_inner();
    match output {
        OutputFormat::Json => print_json(&TaskJson::from(&created)),
        OutputFormat::Table => {
            outln!("{}", heading(&created))?;
            outln!("Schedule:  {}", schedule_text(&created))?;
            outln!("Next run:  {}", next_run_text(&created))?;
            Ok(())
        }
    }
}

pub async fn get(channel: Channel, task: &str, kind: TaskKind) -> anyhow::Result<Task> {
    let task = FleetClient::new(channel)
        .get_task(TaskRef {
            task: task.to_owned(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    expect_kind(&task, kind)?;
    Ok(task)
}

/// The commands every task kind's group has, flattened into it.
#[derive(Debug, Clone, Subcommand)]
pub enum LifecycleCommand {
    /// Delete a task, after asking (what it made stays).
    Delete {
        /// Task id or name.
        task: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Run a task now.
    Run {
        /// Task id or name.
        task: String,
        /// Follow the run until it ends; the exit status says whether it succeeded.
        #[arg(long)]
        watch: bool,
    },
    /// Switch a task on.
    Enable {
        /// Task id or name.
        task: String,
    },
    /// Switch a task off; it keeps its settings.
    Disable {
        /// Task id or name.
        task: String,
    },
}

impl LifecycleCommand {
    /// Runs one of them on a task of `kind`; they take no flags to check
    /// beforehand, so the group hands over its connection.
    pub async fn execute(
        self,
        channel: Channel,
        kind: TaskKind,
        output: OutputFormat,
    ) -> anyhow::Result<()> {
        match self {
            LifecycleCommand::Delete { task, yes } => delete(channel, &task, yes, kind).await,
            LifecycleCommand::Run { task, watch } => {
                run_now(channel, &task, watch, kind, output).await
            }
            LifecycleCommand::Enable { task } => {
                set_enabled(channel, &task, true, kind, output).await
            }
            LifecycleCommand::Disable { task } => {
                set_enabled(channel, &task, false, kind, output).await
            }
        }
    }
}

/// `delete ID [--yes]`: names the task in the question, then deletes it.
pub async fn delete(channel: Channel, task: &str, yes: bool, kind: TaskKind) -> anyhow::Result<()> {
    let current = get(channel.clone(), task, kind).await?;
    if !yes
        && !confirm(format!(
            "Delete {} {} ({})? {}",
            kind.noun, current.id, current.name, kind.delete_note
        ))
        .await?
    {
        bail!("not deleted: confirm on a terminal or pass --yes");
    }
    // By id, not by what was typed: the name could have been reused meanwhile.
    let deleted = FleetClient::new(channel)
        .delete_task(TaskRef {
            task: current.id.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    outln!("Deleted {} {} ({}).", kind.noun, deleted.id, deleted.name)?;
    Ok(())
}

/// `enable ID` / `disable ID`.
pub async fn set_enabled(
    channel: Channel,
    task: &str,
    enabled: bool,
    kind: TaskKind,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let current = get(channel.clone(), task, kind).await?;
    let updated = FleetClient::new(channel)
        .set_task_enabled(SetTaskEnabledRequest {
            task: current.id.to_string(),
            enabled,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    match output {
        OutputFormat::Json => print_json(&TaskJson::from(&updated)),
        OutputFormat::Table => {
            outln!(
                "{} {} {} ({}); next run: {}.",
                if enabled { "Enabled" } else { "Disabled" },
                kind.noun,
                updated.id,
                updated.name,
                next_run_text(&updated)
            )?;
            Ok(())
        }
    }
}

/// `run ID [--watch]`: starts a run now and prints its id, or follows it.
pub async fn run_now(
    channel: Channel,
    task: &str,
    watch: bool,
    kind: TaskKind,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let current = get(channel.clone(), task, kind).await?;
    let run = FleetClient::new(channel.clone())
        .run_task(TaskRef {
            task: current.id.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    match output {
        // With --watch the event stream starts with the run itself.
        OutputFormat::Json if watch => {}
        OutputFormat::Json => print_json(&RunJson::from(&run))?,
        OutputFormat::Table => outln!(
            "Started run {} of {} {} ({}).",
            run.id,
            kind.noun,
            current.id,
            current.name
        )?,
    }
    if watch {
        watch_run(channel, run.id, output).await
    } else {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use nasfleet_proto::v1::TaskSpec;
    use serde_json::json;

    pub(crate) fn snapshot_task() -> Task {
        Task {
            id: 7,
            kind: nasfleet_proto::v1::TaskKind::Snapshot.into(),
            name: "nas1:tank/data (auto-%Y-%m-%d_%H-%M)".into(),
            spec: Some(TaskSpec {
                stale_after: String::new(),
                schedule: "0 * * * *".into(),
                enabled: true,
                kind: Some(Kind::Snapshot(SnapshotTaskSpec {
                    system: "nas1".into(),
                    dataset: "tank/data".into(),
                    recursive: true,
                    exclude: vec!["tank/data/tmp".into()],
                    naming_schema: "auto-%Y-%m-%d_%H-%M".into(),
                    lifetime: "2w".into(),
                })),
            }),
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
    fn task_json_is_flat() {
        let value = serde_json::to_value(TaskJson::from(&snapshot_task())).unwrap();
        assert_eq!(
            value,
            json!({
                "id": 7,
                "name": "nas1:tank/data (auto-%Y-%m-%d_%H-%M)",
                "kind": "snapshot",
                "system": "nas1",
                "dataset": "tank/data",
                "recursive": true,
                "exclude": ["tank/data/tmp"],
                "naming_schema": "auto-%Y-%m-%d_%H-%M",
                "lifetime": "2w",
                "schedule": "0 * * * *",
                "schedule_description": "every hour",
                "stale_after": null,
                "enabled": true,
                "status": "PENDING",
                "last_error": null,
                "next_run": "2023-11-14T22:13:20Z",
                "last_run_id": null,
                "last_run": null,
                "created": "2023-11-03T08:26:40Z",
            })
        );
    }

    #[test]
    fn task_json_carries_failures() {
        let mut task = snapshot_task();
        task.set_status(nasfleet_proto::v1::RunState::Failed);
        task.last_error = "dataset does not exist".into();
        task.last_run_id = 12;
        let value = serde_json::to_value(TaskJson::from(&task)).unwrap();
        assert_eq!(value["status"], "FAILED");
        assert_eq!(value["last_error"], "dataset does not exist");
        assert_eq!(value["last_run_id"], 12);
    }

    #[test]
    fn other_kinds_are_refused() {
        let mut task = snapshot_task();
        assert!(expect_kind(&task, SNAPSHOT).is_ok());
        task.set_kind(WireKind::Replication);
        let err = expect_kind(&task, SNAPSHOT).unwrap_err().to_string();
        assert!(
            err.contains("is a replication task, not a snapshot task"),
            "{err}"
        );
        assert!(expect_kind(&task, REPLICATION).is_ok());
        let err = expect_kind(&snapshot_task(), REPLICATION)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is a snapshot task, not a replication task"),
            "{err}"
        );
    }

    #[test]
    fn disabled_tasks_have_no_next_run() {
        let mut task = snapshot_task();
        if let Some(spec) = task.spec.as_mut() {
            spec.enabled = false;
        }
        assert_eq!(next_run_text(&task), "disabled");
    }
}
