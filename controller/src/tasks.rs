//! Tasks of every kind: validating a spec before anything is stored, finding tasks, presenting them with status and next run, and building their work.

use crate::state::SharedState;
use chrono::{DateTime, Utc};
use nasfleet_proto::duration::parse_lifetime;
use nasfleet_proto::naming::NamingSchema;
use nasfleet_proto::schedule::Schedule;
use nasfleet_proto::status::now_unix_ms;
use nasfleet_proto::v1::{
    Inventory, Retention, RunState, SnapshotTaskSpec, SnapshotWork, StartRun, Task, TaskSpec,
    start_run, task_spec,
};
use prost::Message;
use std::time::Duration;
use tonic::Status;

pub const KIND_SNAPSHOT: &str = "snapshot";
/// TrueNAS's default retention of periodic snapshots.
pub const DEFAULT_LIFETIME: &str = "2w";
/// How long validation waits for a fresh inventory when a dataset is not in the stored one.
const INVENTORY_REFRESH: Duration = Duration::from_secs(10);

fn invalid(field: &str, message: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {message}"))
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("controller store failure: {e}"))
}

/// The system a task runs on.
pub fn system_of(task: &Task) -> &str {
    match task.spec.as_ref().and_then(|s| s.kind.as_ref()) {
        Some(task_spec::Kind::Snapshot(s)) => &s.system,
        None => "",
    }
}

/// The stored inventory of a system, if it has reported.
pub fn inventory(state: &SharedState, system: &str) -> Result<Option<Inventory>, Status> {
    match state.store.inventory(system).map_err(internal)? {
        Some(bytes) => Ok(Some(Inventory::decode(bytes.as_slice()).map_err(internal)?)),
        None => Ok(None),
    }
}

/// Whether `dataset` exists on `system`, asking the agent for a fresh
/// inventory when the stored one does not have it (it may be minutes old).
pub async fn dataset_exists(
    state: &SharedState,
    system: &str,
    dataset: &str,
) -> Result<bool, Status> {
    let has =
        |inv: Option<Inventory>| inv.is_some_and(|i| i.datasets.iter().any(|d| d.name == dataset));
    if has(inventory(state, system)?) {
        return Ok(true);
    }
    if let Some(waiter) = state.sessions.request_inventory(system) {
        let _ = tokio::time::timeout(INVENTORY_REFRESH, waiter).await;
        return Ok(has(inventory(state, system)?));
    }
    Ok(false)
}

/// Checks a spec completely and returns the task to store. Nothing is
/// written here: a refused spec changes nothing.
pub async fn validate(
    state: &SharedState,
    mut spec: TaskSpec,
    existing: Option<&Task>,
) -> Result<Task, Status> {
    let (kind, name, default_schedule) = match spec.kind.as_mut() {
        Some(task_spec::Kind::Snapshot(snapshot)) => {
            validate_snapshot(state, snapshot).await?;
            (
                KIND_SNAPSHOT,
                format!("{}:{}", snapshot.system, snapshot.dataset),
                Schedule::hourly(),
            )
        }
        None => {
            return Err(Status::invalid_argument(
                "kind: a task needs a kind (e.g. snapshot)",
            ));
        }
    };
    let schedule = if spec.schedule.trim().is_empty() {
        default_schedule
    } else {
        Schedule::parse(&spec.schedule).map_err(|e| Status::invalid_argument(e.to_string()))?
    };
    spec.schedule = schedule.expression().to_owned();
    let (id, created) = match existing {
        Some(task) => (task.id, task.created_unix_ms),
        None => (state.store.next_id().map_err(internal)?, now_unix_ms()),
    };
    Ok(Task {
        id,
        kind: kind.into(),
        name,
        spec: Some(spec),
        schedule: schedule.expression().to_owned(),
        schedule_description: schedule.describe(),
        created_unix_ms: created,
        ..Default::default()
    })
}

async fn validate_snapshot(state: &SharedState, spec: &mut SnapshotTaskSpec) -> Result<(), Status> {
    if spec.system.is_empty() {
        return Err(invalid("system", "System is required"));
    }
    if state
        .store
        .system(&spec.system)
        .map_err(internal)?
        .is_none()
    {
        return Err(invalid(
            "system",
            format!("System '{}' is not enrolled", spec.system),
        ));
    }
    spec.dataset = spec.dataset.trim_end_matches('/').to_owned();
    if spec.dataset.is_empty() {
        return Err(invalid("dataset", "Dataset is required"));
    }
    if spec.naming_schema.is_empty() {
        spec.naming_schema = nasfleet_proto::naming::DEFAULT_PERIODIC_SCHEMA.into();
    }
    NamingSchema::new(&spec.naming_schema).map_err(|e| invalid("naming_schema", e))?;
    if spec.lifetime.is_empty() {
        spec.lifetime = DEFAULT_LIFETIME.into();
    }
    parse_lifetime("lifetime", &spec.lifetime)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if !spec.exclude.is_empty() && !spec.recursive {
        return Err(invalid(
            "exclude",
            "Excluding datasets is not necessary for non-recursive periodic snapshot tasks",
        ));
    }
    let prefix = format!("{}/", spec.dataset);
    for excluded in &spec.exclude {
        if !excluded.starts_with(&prefix) || excluded.len() == prefix.len() {
            return Err(invalid(
                "exclude",
                "Excluded dataset should be a child or other descendant of the selected dataset",
            ));
        }
    }
    if !dataset_exists(state, &spec.system, &spec.dataset).await? {
        return Err(invalid(
            "dataset",
            format!(
                "Dataset not found: '{}' on system '{}'",
                spec.dataset, spec.system
            ),
        ));
    }
    Ok(())
}

/// Finds a task by id (digits) or by its name; an ambiguous name is refused.
pub fn find(state: &SharedState, reference: &str) -> Result<Task, Status> {
    if let Ok(id) = reference.parse::<u64>() {
        return state
            .store
            .task(id)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("task {id} does not exist")));
    }
    let matching: Vec<Task> = state
        .store
        .tasks()
        .map_err(internal)?
        .into_iter()
        .filter(|t| t.name == reference)
        .collect();
    match matching.len() {
        0 => Err(Status::not_found(format!(
            "task '{reference}' does not exist"
        ))),
        1 => Ok(matching.into_iter().next().unwrap_or_default()),
        n => Err(Status::invalid_argument(format!(
            "task: '{reference}' names {n} tasks; use the task id"
        ))),
    }
}

/// The word for a run state, as statuses and the CLI show it.
pub fn state_word(state: RunState) -> &'static str {
    match state {
        RunState::Unspecified | RunState::Pending => "PENDING",
        RunState::Running => "RUNNING",
        RunState::Finished => "FINISHED",
        RunState::Success => "SUCCESS",
        RunState::Failed => "FAILED",
        RunState::Skipped => "SKIPPED",
        RunState::Missed => "MISSED",
    }
}

/// Fills in what is derived rather than stored: status and last error from
/// the latest run that actually ran, and the next scheduled run.
pub fn present(state: &SharedState, mut task: Task) -> Result<Task, Status> {
    let runs = state.store.runs_of_task(task.id, 20).map_err(internal)?;
    let latest = runs
        .iter()
        .find(|r| !matches!(r.state(), RunState::Skipped | RunState::Missed));
    task.status = latest.map_or("PENDING", |r| state_word(r.state())).into();
    if let Some(run) = latest {
        task.last_run_id = run.id;
        task.last_run_unix_ms = run.started_unix_ms;
        if run.state() == RunState::Failed {
            task.last_error = run.reason.clone();
        }
    }
    let enabled = task.spec.as_ref().is_some_and(|s| s.enabled);
    task.next_run_unix_ms = match (enabled, Schedule::parse(&task.schedule)) {
        (true, Ok(schedule)) => {
            let now = Utc::now().with_timezone(&state.timezone);
            schedule
                .next_after(&now)
                .map_or(0, |t| t.timestamp_millis())
        }
        _ => 0,
    };
    Ok(task)
}

/// The work a run of `task` sends to its agent. `at` is the instant the
/// snapshot name is rendered for (the scheduled time, or now).
pub fn work(
    state: &SharedState,
    task: &Task,
    run_id: u64,
    at: DateTime<Utc>,
) -> Result<StartRun, Status> {
    match task.spec.as_ref().and_then(|s| s.kind.as_ref()) {
        Some(task_spec::Kind::Snapshot(spec)) => {
            let schema =
                NamingSchema::new(&spec.naming_schema).map_err(|e| invalid("naming_schema", e))?;
            let lifetime = parse_lifetime("lifetime", &spec.lifetime)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            Ok(StartRun {
                run_id,
                work: Some(start_run::Work::Snapshot(SnapshotWork {
                    dataset: spec.dataset.clone(),
                    recursive: spec.recursive,
                    exclude: spec.exclude.clone(),
                    snapshot_name: schema.render(&at.with_timezone(&state.timezone)),
                    retention: Some(Retention {
                        naming_schema: spec.naming_schema.clone(),
                        lifetime_secs: lifetime.as_secs(),
                        timezone: state.timezone.name().to_owned(),
                        // Replication bases are protected once replication tasks exist.
                        protected: Vec::new(),
                    }),
                })),
            })
        }
        None => Err(Status::internal(format!("task {} has no kind", task.id))),
    }
}
