//! Tasks of every kind: finding them, presenting them with status and next run, and the operations on them (create, edit, delete, enable, estimate); checking a spec, building a run's work (and an estimate's) and protecting replication bases live in the submodules.

mod protection;
mod validate;
mod work;

pub use protection::protected_snapshots;
pub use validate::validate;
pub use work::prepare;

use crate::engine::access::Actor;
use crate::engine::error::FleetError;
use crate::engine::holds;
use crate::engine::runs::{self, Trigger};
use crate::engine::ssh_trust;
use crate::engine::state::SharedState;
use crate::engine::systems::{covers, not_enrolled};
use crate::store::PendingRelease;
use chrono::Utc;
use nasfleet_common::echo::echo;
use nasfleet_common::schedule::Schedule;
use nasfleet_proto::v1::{
    ReplicationEstimate, ReplicationTaskSpec, Run, RunState, SnapshotTaskSpec, Task, TaskSpec,
    task_spec,
};

pub use crate::engine::kinds::{kind_of, state_word, systems_named, systems_of};
use nasfleet_proto::v1::TaskKind;
/// TrueNAS's default retention of periodic snapshots.
pub const DEFAULT_LIFETIME: &str = "2w";

fn invalid(field: &str, rule: impl std::fmt::Display) -> FleetError {
    FleetError::invalid(field, rule)
}

/// Every task that names `system`: as the system it runs on, a replication
/// source or a replication target.
pub fn tasks_using(state: &SharedState, system: &str) -> Result<Vec<Task>, FleetError> {
    let tasks = state.store.tasks()?;
    Ok(tasks
        .into_iter()
        .filter(|task| systems_named(task).iter().any(|s| s == system))
        .collect())
}

/// [`find`] for `actor`: a task they do not see is answered as missing.
pub fn find_seen(state: &SharedState, actor: &Actor, reference: &str) -> Result<Task, FleetError> {
    let task = find(state, reference)?;
    if actor.sees_task(&task) {
        return Ok(task);
    }
    Err(FleetError::NotFound(match reference.parse::<u64>() {
        Ok(id) => format!("task {id} does not exist"),
        Err(_) => format!("task '{}' does not exist", echo(reference)),
    }))
}

/// A spec may only name systems its author sees; one they do not see is
/// refused as validation refuses a system that is not enrolled, before
/// validation could tell the two apart.
fn check_spec_systems(actor: &Actor, spec: &TaskSpec) -> Result<(), FleetError> {
    let seen = |field: &str, system: &str| {
        if actor.sees(system) {
            Ok(())
        } else {
            Err(not_enrolled(field, system))
        }
    };
    match spec.kind.as_ref() {
        Some(task_spec::Kind::Snapshot(s)) => seen("system", &s.system),
        Some(task_spec::Kind::Rsync(r)) => seen("system", &r.system),
        Some(task_spec::Kind::Replication(r)) => {
            for source in &r.sources {
                seen("sources", &source.system)?;
            }
            seen("target", &r.target_system)
        }
        None => Ok(()),
    }
}

/// Finds a task by id (digits) or by its name; an ambiguous name is refused.
pub fn find(state: &SharedState, reference: &str) -> Result<Task, FleetError> {
    if let Ok(id) = reference.parse::<u64>() {
        return state
            .store
            .task(id)?
            .ok_or_else(|| FleetError::NotFound(format!("task {id} does not exist")));
    }
    let matching: Vec<Task> = state
        .store
        .tasks()?
        .into_iter()
        .filter(|t| t.name == reference)
        .collect();
    match matching.len() {
        0 => Err(FleetError::NotFound(format!(
            "task '{}' does not exist",
            echo(reference)
        ))),
        1 => Ok(matching.into_iter().next().unwrap_or_default()),
        n => Err(invalid(
            "task",
            format!("'{}' names {n} tasks; use the task id", echo(reference)),
        )),
    }
}

/// Fills in what is derived rather than stored: status and last error from
/// the latest run that actually ran, and the next scheduled run.
pub fn present(state: &SharedState, task: Task) -> Result<Task, FleetError> {
    present_with(state, task, &mut NextRuns::default())
}

/// Runs looked at, newest first, for the latest one that actually ran.
const STATUS_LOOKBACK: usize = 20;

/// Next fire times by schedule expression, for one listing: thousands of
/// tasks share a handful of schedules, and a cron parse costs far more
/// than a lookup.
#[derive(Default)]
struct NextRuns {
    at: Option<chrono::DateTime<chrono_tz::Tz>>,
    by_schedule: std::collections::HashMap<String, i64>,
}

impl NextRuns {
    fn next(&mut self, state: &SharedState, schedule: &str) -> i64 {
        let now = *self
            .at
            .get_or_insert_with(|| Utc::now().with_timezone(&state.timezone));
        *self
            .by_schedule
            .entry(schedule.to_owned())
            .or_insert_with(|| match Schedule::parse(schedule) {
                Ok(schedule) => schedule
                    .next_after(&now)
                    .map_or(0, |t| t.timestamp_millis()),
                Err(_) => 0,
            })
    }
}

fn present_with(
    state: &SharedState,
    mut task: Task,
    next_runs: &mut NextRuns,
) -> Result<Task, FleetError> {
    let latest = state
        .store
        .latest_run_of_task(task.id, STATUS_LOOKBACK, |r| {
            !matches!(r.state(), RunState::Skipped | RunState::Missed)
        })?;
    task.set_status(latest.as_ref().map_or(RunState::Pending, |r| r.state()));
    if let Some(run) = latest {
        task.last_run_id = run.id;
        task.last_run_unix_ms = run.started_unix_ms;
        if run.state() == RunState::Failed {
            task.last_error = run.reason;
        }
    }
    let enabled = task.spec.as_ref().is_some_and(|s| s.enabled);
    task.next_run_unix_ms = if enabled {
        next_runs.next(state, &task.schedule)
    } else {
        0
    };
    Ok(task)
}

/// Every task `actor` sees, or those of one kind (`Unspecified` = all),
/// as callers see them.
pub fn list(state: &SharedState, actor: &Actor, kind: TaskKind) -> Result<Vec<Task>, FleetError> {
    let mut next_runs = NextRuns::default();
    state
        .store
        .tasks()?
        .into_iter()
        .filter(|t| kind == TaskKind::Unspecified || t.kind() == kind)
        .filter(|t| actor.sees_task(t))
        .map(|t| present_with(state, t, &mut next_runs))
        .collect()
}

/// One task by id or name, as callers see it.
pub fn get(state: &SharedState, actor: &Actor, reference: &str) -> Result<Task, FleetError> {
    present(state, find_seen(state, actor, reference)?)
}

/// Checks a spec as `create` (no `reference`) or an edit of task
/// `reference` would, and stores nothing.
pub async fn check(
    state: &SharedState,
    actor: &Actor,
    reference: &str,
    spec: Option<TaskSpec>,
) -> Result<Task, FleetError> {
    let existing = match reference {
        "" => None,
        reference => Some(find_seen(state, actor, reference)?),
    };
    let spec = spec.ok_or_else(|| invalid("spec", "the task spec is required"))?;
    check_spec_systems(actor, &spec)?;
    let task = validate(state, spec, existing.as_ref()).await?;
    present(state, task)
}

/// What a run of a replication task would send now, per dataset: of the
/// spec checked as [`check`] checks it, or without a spec of the stored
/// task `reference`. Stores and changes nothing.
pub async fn estimate(
    state: &SharedState,
    actor: &Actor,
    reference: &str,
    spec: Option<TaskSpec>,
) -> Result<ReplicationEstimate, FleetError> {
    let task = match (reference, spec) {
        (_, Some(spec)) => check(state, actor, reference, Some(spec)).await?,
        ("", None) => return Err(invalid("spec", "the task spec or a task is required")),
        (reference, None) => find_seen(state, actor, reference)?,
    };
    match task.spec.and_then(|s| s.kind) {
        Some(task_spec::Kind::Replication(spec)) => Ok(ReplicationEstimate {
            datasets: work::estimate(state, &spec).await,
        }),
        _ => Err(invalid(
            "task",
            "only replication tasks send data; this is another kind",
        )),
    }
}

/// Validates and stores a new task, and with `create_snapshot_task` the
/// snapshot tasks its sources lack; every id is durable before it is used.
pub async fn create(
    state: &SharedState,
    actor: &Actor,
    spec: TaskSpec,
) -> Result<Task, FleetError> {
    check_spec_systems(actor, &spec)?;
    let by = actor.label();
    let by = by.as_str();
    let mut task = validate(state, spec, None).await?;
    let mut companions = companion_snapshot_tasks(state, &task).await?;
    task.id = state.store.next_id().await?;
    for companion in &mut companions {
        companion.id = state.store.next_id().await?;
    }
    tracing::info!(task = %task.name, id = task.id, by, schedule = %task.schedule, "task created");
    let saved = save(state, task).await?;
    ssh_trust::allow_in_background(state, &replication_specs(&[&saved]));
    for companion in companions {
        tracing::info!(task = %companion.name, id = companion.id, "snapshot task created for replication");
        save(state, companion).await?;
    }
    Ok(saved)
}

/// Replaces the spec of task `reference` (its kind cannot change).
pub async fn update(
    state: &SharedState,
    actor: &Actor,
    reference: &str,
    spec: Option<TaskSpec>,
) -> Result<Task, FleetError> {
    let existing = find_seen(state, actor, reference)?;
    let spec = spec.ok_or_else(|| invalid("spec", "the new task spec is required"))?;
    check_spec_systems(actor, &spec)?;
    let by = actor.label();
    let by = by.as_str();
    if spec.kind.as_ref().map(kind_of)
        != existing
            .spec
            .as_ref()
            .and_then(|s| s.kind.as_ref())
            .map(kind_of)
    {
        return Err(invalid("kind", "a task's kind cannot change"));
    }
    let was_enabled = existing.spec.as_ref().is_some_and(|s| s.enabled);
    let task = validate(state, spec, Some(&existing)).await?;
    if !was_enabled && task.spec.as_ref().is_some_and(|s| s.enabled) {
        reset_schedule_mark(state, task.id).await?;
    }
    tracing::info!(task = %task.name, id = task.id, by, "task updated");
    // Datasets the edit drops are no longer held for the task: recorded
    // with the edit, released in the background.
    let releases = match (
        replication_specs(&[&existing]).as_slice(),
        replication_specs(&[&task]).as_slice(),
    ) {
        ([before], [after]) => holds::on_edit(task.id, before, after),
        _ => Vec::new(),
    };
    let saved = save_with(state, task, releases.clone()).await?;
    ssh_trust::allow_in_background(state, &replication_specs(&[&existing, &saved]));
    holds::release_in_background(state, releases);
    Ok(saved)
}

/// Deletes a task with its run history; refused while it runs.
pub async fn delete(
    state: &SharedState,
    actor: &Actor,
    reference: &str,
) -> Result<Task, FleetError> {
    let task = find_seen(state, actor, reference)?;
    let by = actor.label();
    let by = by.as_str();
    if let Some(run) = crate::engine::runs::active_run_of(state, task.id)? {
        return Err(FleetError::Conflict(format!(
            "task '{}' is running (run {}); cancel the run first",
            task.name, run.id
        )));
    }
    let shown = present(state, task.clone())?;
    let id = task.id;
    // The deleted task's targets stop admitting what only it needed, and
    // its bases are no longer held for it: the releases are recorded with
    // the deletion, so a controller restart does not forget them.
    let specs = replication_specs(&[&task]);
    let releases: Vec<_> = specs
        .iter()
        .flat_map(|spec| holds::on_delete(id, spec))
        .collect();
    let recorded = releases.clone();
    state
        .store
        .write(move |w| {
            w.delete_task(id)?;
            recorded.iter().try_for_each(|r| w.put_pending_release(r))
        })
        .await?;
    state.scheduler_wake.notify_one();
    ssh_trust::allow_in_background(state, &specs);
    holds::release_in_background(state, releases);
    tracing::info!(task = %task.name, id = task.id, by, "task deleted");
    Ok(shown)
}

/// Enables or disables a task.
pub async fn set_enabled(
    state: &SharedState,
    actor: &Actor,
    reference: &str,
    enabled: bool,
) -> Result<Task, FleetError> {
    let mut task = find_seen(state, actor, reference)?;
    let by = actor.label();
    let by = by.as_str();
    let id = task.id;
    let spec = task
        .spec
        .as_mut()
        .ok_or_else(|| FleetError::Internal(format!("task {id} has no spec")))?;
    if enabled && !spec.enabled {
        reset_schedule_mark(state, id).await?;
    }
    spec.enabled = enabled;
    tracing::info!(task = %task.name, id, enabled, by, "task enabled state changed");
    save(state, task).await
}

/// The replication specs among `tasks`.
fn replication_specs<'a>(tasks: &[&'a Task]) -> Vec<&'a ReplicationTaskSpec> {
    tasks
        .iter()
        .filter_map(|t| match t.spec.as_ref()?.kind.as_ref()? {
            task_spec::Kind::Replication(spec) => Some(spec),
            _ => None,
        })
        .collect()
}

/// Stores a task, tells the scheduler, and returns it as callers see it.
async fn save(state: &SharedState, task: Task) -> Result<Task, FleetError> {
    save_with(state, task, Vec::new()).await
}

/// [`save`], recording `releases` in the same write.
async fn save_with(
    state: &SharedState,
    task: Task,
    releases: Vec<PendingRelease>,
) -> Result<Task, FleetError> {
    let stored = task.clone();
    state
        .store
        .write(move |w| {
            w.put_task(&stored)?;
            releases.iter().try_for_each(|r| w.put_pending_release(r))
        })
        .await?;
    state.scheduler_wake.notify_one();
    present(state, task)
}

/// Scheduled fires while a task was disabled are not owed: enabling
/// starts its schedule from now.
async fn reset_schedule_mark(state: &SharedState, task_id: u64) -> Result<(), FleetError> {
    let now = Utc::now().timestamp_millis();
    state
        .store
        .write(move |w| w.set_schedule_mark(task_id, now))
        .await?;
    Ok(())
}

/// For `--create-snapshot-task`: a periodic snapshot task on the
/// replication's schedule for every source dataset that no snapshot
/// task with the replication's (first) naming schema covers yet.
async fn companion_snapshot_tasks(
    state: &SharedState,
    task: &Task,
) -> Result<Vec<Task>, FleetError> {
    let Some(task_spec::Kind::Replication(spec)) = task.spec.as_ref().and_then(|s| s.kind.as_ref())
    else {
        return Ok(Vec::new());
    };
    if !spec.create_snapshot_task {
        return Ok(Vec::new());
    }
    let existing: Vec<SnapshotTaskSpec> = state
        .store
        .tasks()?
        .into_iter()
        .filter_map(|t| match t.spec?.kind? {
            task_spec::Kind::Snapshot(s) => Some(s),
            task_spec::Kind::Replication(_) | task_spec::Kind::Rsync(_) => None,
        })
        .collect();
    let mut companions = Vec::new();
    for source in &spec.sources {
        let schema = source
            .naming_schemas
            .first()
            .cloned()
            .unwrap_or_else(|| nasfleet_common::naming::DEFAULT_PERIODIC_SCHEMA.into());
        for dataset in &source.datasets {
            let covered = existing.iter().any(|s| {
                s.system == source.system && s.naming_schema == schema && covers(s, dataset)
            });
            if covered {
                continue;
            }
            let spec = TaskSpec {
                schedule: task.schedule.clone(),
                enabled: true,
                stale_after: String::new(),
                kind: Some(task_spec::Kind::Snapshot(SnapshotTaskSpec {
                    system: source.system.clone(),
                    dataset: dataset.clone(),
                    recursive: source.recursive,
                    exclude: Vec::new(),
                    naming_schema: schema.clone(),
                    lifetime: String::new(),
                })),
            };
            companions.push(validate(state, spec, None).await?);
        }
    }
    Ok(companions)
}

/// Starts a run of task `reference` now, for person `by`.
pub async fn run_now(
    state: &SharedState,
    actor: &Actor,
    reference: &str,
) -> Result<Run, FleetError> {
    let task = find_seen(state, actor, reference)?;
    let parts = prepare(state, &task, Utc::now()).await;
    let trigger = Trigger::Manual {
        by: actor.name().to_owned(),
    };
    runs::start(state, &task, trigger, parts).await
}

/// The newest `limit` runs of task `reference`, or of all tasks (`""`),
/// with live progress merged in.
pub fn history(
    state: &SharedState,
    actor: &Actor,
    reference: &str,
    limit: usize,
) -> Result<Vec<Run>, FleetError> {
    // A task's runs are the actor's when the task is; all runs are
    // filtered before the limit, so a scoped person still gets `limit`.
    let runs = if reference.is_empty() {
        state
            .store
            .runs_where(limit, |r| runs::sees_run(state, actor, r))?
    } else {
        state
            .store
            .runs_of_task(find_seen(state, actor, reference)?.id, limit)?
    };
    Ok(runs.into_iter().map(|r| state.runs.overlay(r)).collect())
}
