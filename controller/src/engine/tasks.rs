//! Tasks of every kind: validating a spec before anything is stored, finding tasks, presenting them with status and next run, and building their work.

use crate::engine::error::{FleetError, corrupt};
use crate::engine::ssh_trust;
use crate::state::SharedState;
use chrono::{DateTime, Utc};
use nasfleet_common::dataset_names::validate_dataset_name;
use nasfleet_common::duration::parse_lifetime;
use nasfleet_common::echo::echo;
use nasfleet_common::names::{is_below, replication_target_path};
use nasfleet_common::naming::NamingSchema;
use nasfleet_common::schedule::Schedule;
use nasfleet_common::status::now_unix_ms;
use nasfleet_proto::v1::{
    Inventory, ListReplicas, ReplicationDataset, ReplicationTarget, ReplicationTaskSpec,
    ReplicationWork, Retention, RsyncDirection, RsyncMode, RsyncTaskSpec, RunState,
    SnapshotTaskSpec, SnapshotWork, StartRun, Task, TaskSpec, ValidateRsync, agent_request,
    start_run, task_spec,
};
use prost::Message;
use std::collections::HashMap;
use std::time::Duration;

pub const KIND_SNAPSHOT: &str = "snapshot";
pub const KIND_REPLICATION: &str = "replication";
pub const KIND_RSYNC: &str = "rsync";
/// Host-side checks of an rsync task (incl. --validate-remote-path's 5 s).
const RSYNC_VALIDATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest replication task name.
const MAX_TASK_NAME: usize = 120;
/// TrueNAS's default retention of periodic snapshots.
pub const DEFAULT_LIFETIME: &str = "2w";
/// How long validation waits for a fresh inventory when a dataset is not in the stored one.
const INVENTORY_REFRESH: Duration = Duration::from_secs(10);
/// Most target datasets a replication run asks its target's agent to list;
/// the sources list the rest over ssh.
const MAX_LISTED_REPLICAS: usize = 256;
/// How long a replication run's dispatch waits for that listing.
const REPLICA_LISTING_TIMEOUT: Duration = Duration::from_secs(10);

fn invalid(field: &str, rule: impl std::fmt::Display) -> FleetError {
    FleetError::invalid(field, rule)
}

/// `FIELD: System 'NAME' is not enrolled` unless `system` is in the fleet.
pub fn require_enrolled(state: &SharedState, field: &str, system: &str) -> Result<(), FleetError> {
    match state.store.system(system)? {
        Some(_) => Ok(()),
        None => Err(invalid(
            field,
            format!("System '{}' is not enrolled", echo(system)),
        )),
    }
}

/// Every task that names `system`: as the system it runs on, a replication
/// source or a replication target.
pub fn tasks_using(state: &SharedState, system: &str) -> Result<Vec<Task>, FleetError> {
    let tasks = state.store.tasks()?;
    Ok(tasks
        .into_iter()
        .filter(|task| {
            let target = match task.spec.as_ref().and_then(|s| s.kind.as_ref()) {
                Some(task_spec::Kind::Replication(r)) => r.target_system == system,
                _ => false,
            };
            target || systems_of(task).iter().any(|s| s == system)
        })
        .collect())
}

/// The systems a task's runs take part on, in order, without repeats.
pub fn systems_of(task: &Task) -> Vec<String> {
    match task.spec.as_ref().and_then(|s| s.kind.as_ref()) {
        Some(task_spec::Kind::Snapshot(s)) => vec![s.system.clone()],
        Some(task_spec::Kind::Rsync(r)) => vec![r.system.clone()],
        Some(task_spec::Kind::Replication(r)) => {
            let mut systems: Vec<String> = Vec::new();
            for source in &r.sources {
                if !systems.contains(&source.system) {
                    systems.push(source.system.clone());
                }
            }
            systems
        }
        None => Vec::new(),
    }
}

/// The stored inventory of a system, if it has reported.
pub fn inventory(state: &SharedState, system: &str) -> Result<Option<Inventory>, FleetError> {
    match state.store.inventory(system)? {
        Some(bytes) => Ok(Some(
            Inventory::decode(bytes.as_slice()).map_err(|e| corrupt("inventory", e))?,
        )),
        None => Ok(None),
    }
}

/// Whether `dataset` exists on `system`, asking the agent for a fresh
/// inventory when the stored one does not have it (it may be minutes old).
pub async fn dataset_exists(
    state: &SharedState,
    system: &str,
    dataset: &str,
) -> Result<bool, FleetError> {
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
) -> Result<Task, FleetError> {
    let (kind, name, default_schedule) = match spec.kind.as_mut() {
        Some(task_spec::Kind::Snapshot(snapshot)) => {
            validate_snapshot(state, snapshot).await?;
            (
                KIND_SNAPSHOT,
                format!("{}:{}", snapshot.system, snapshot.dataset),
                Schedule::hourly(),
            )
        }
        Some(task_spec::Kind::Replication(replication)) => {
            validate_replication(state, replication, existing.map(|t| t.id)).await?;
            (
                KIND_REPLICATION,
                replication.name.clone(),
                Schedule::weekly(),
            )
        }
        Some(task_spec::Kind::Rsync(rsync)) => {
            validate_rsync(state, rsync).await?;
            let name = if rsync.description.trim().is_empty() {
                format!(
                    "{}:{} {} {}",
                    rsync.system,
                    rsync.path,
                    arrow(rsync),
                    rsync.remote_host
                )
            } else {
                rsync.description.trim().to_owned()
            };
            (KIND_RSYNC, name, Schedule::hourly())
        }
        None => {
            return Err(invalid("kind", "a task needs a kind (e.g. snapshot)"));
        }
    };
    let schedule = if spec.schedule.trim().is_empty() {
        default_schedule
    } else {
        Schedule::parse(&spec.schedule).map_err(|e| FleetError::invalid_message(&e.to_string()))?
    };
    spec.schedule = schedule.expression().to_owned();
    // A new task gets its id when it is saved, so checks use up none.
    let (id, created) = match existing {
        Some(task) => (task.id, task.created_unix_ms),
        None => (0, now_unix_ms()),
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

async fn validate_snapshot(
    state: &SharedState,
    spec: &mut SnapshotTaskSpec,
) -> Result<(), FleetError> {
    if spec.system.is_empty() {
        return Err(invalid("system", "System is required"));
    }
    require_enrolled(state, "system", &spec.system)?;
    spec.dataset = spec.dataset.trim_end_matches('/').to_owned();
    if spec.dataset.is_empty() {
        return Err(invalid("dataset", "Dataset is required"));
    }
    validate_dataset_name(&spec.dataset).map_err(|e| invalid("dataset", e))?;
    for excluded in &spec.exclude {
        validate_dataset_name(excluded).map_err(|e| invalid("exclude", e))?;
    }
    if spec.naming_schema.is_empty() {
        spec.naming_schema = nasfleet_common::naming::DEFAULT_PERIODIC_SCHEMA.into();
    }
    NamingSchema::new(&spec.naming_schema).map_err(|e| invalid("naming_schema", e))?;
    if spec.lifetime.is_empty() {
        spec.lifetime = DEFAULT_LIFETIME.into();
    }
    parse_lifetime("lifetime", &spec.lifetime)
        .map_err(|e| FleetError::invalid_message(&e.to_string()))?;
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
                echo(&spec.dataset),
                spec.system
            ),
        ));
    }
    Ok(())
}

async fn validate_replication(
    state: &SharedState,
    spec: &mut ReplicationTaskSpec,
    own_id: Option<u64>,
) -> Result<(), FleetError> {
    spec.name = spec.name.trim().to_owned();
    if spec.name.is_empty() {
        return Err(invalid("name", "Name is required"));
    }
    if spec.name.len() > MAX_TASK_NAME
        || spec.name.parse::<u64>().is_ok()
        || spec.name.chars().any(|c| c.is_control())
    {
        return Err(invalid(
            "name",
            format!(
                "'{}' must be 1-{MAX_TASK_NAME} printable characters and not a number",
                echo(&spec.name)
            ),
        ));
    }
    let taken = state
        .store
        .tasks()?
        .into_iter()
        .any(|t| t.kind == KIND_REPLICATION && t.name == spec.name && Some(t.id) != own_id);
    if taken {
        return Err(invalid("name", "Object with this name already exists"));
    }
    if spec.sources.iter().all(|s| s.datasets.is_empty()) {
        return Err(invalid("sources", "At least one source is required"));
    }
    if spec.target_system.is_empty() || spec.target_dataset.trim_end_matches('/').is_empty() {
        return Err(invalid("target", "Destination is required"));
    }
    spec.target_dataset = spec.target_dataset.trim_end_matches('/').to_owned();
    validate_dataset_name(&spec.target_dataset).map_err(|e| invalid("target", e))?;
    require_enrolled(state, "target", &spec.target_system)?;
    let pool = spec.target_dataset.split('/').next().unwrap_or_default();
    let target_pools = inventory(state, &spec.target_system)?
        .map(|i| i.pools)
        .unwrap_or_default();
    if !target_pools.iter().any(|p| p.name == pool) {
        return Err(invalid(
            "target",
            format!("Pool '{pool}' not found on system '{}'", spec.target_system),
        ));
    }
    // Every landing path, to find collisions and overlaps.
    let mut landing: HashMap<String, String> = HashMap::new();
    let mut recursive_sources: Vec<(String, String)> = Vec::new();
    for source in &mut spec.sources {
        require_enrolled(state, "sources", &source.system)?;
        if source.naming_schemas.is_empty() {
            source.naming_schemas = vec![nasfleet_common::naming::DEFAULT_PERIODIC_SCHEMA.into()];
        }
        for schema in &source.naming_schemas {
            NamingSchema::new(schema).map_err(|e| invalid("naming_schema", e))?;
        }
        for dataset in &mut source.datasets {
            *dataset = dataset.trim_end_matches('/').to_owned();
            validate_dataset_name(dataset).map_err(|e| invalid("sources", e))?;
            if !dataset_exists(state, &source.system, dataset).await? {
                return Err(invalid(
                    "sources",
                    format!(
                        "Dataset not found: '{}' on system '{}'",
                        echo(dataset),
                        source.system
                    ),
                ));
            }
            let inside = |outer: &str, inner: &str| {
                inner == outer || inner.starts_with(&format!("{outer}/"))
            };
            if source.system == spec.target_system && inside(dataset, &spec.target_dataset) {
                return Err(invalid(
                    "target",
                    format!(
                        "the target dataset must not be inside source dataset {}:{dataset}",
                        source.system
                    ),
                ));
            }
            let path = replication_target_path(&spec.target_dataset, &source.system, dataset);
            let label = format!("{}:{dataset}", source.system);
            if let Some(other) = landing.insert(path.clone(), label.clone()) {
                return Err(invalid(
                    "sources",
                    format!("{other} and {label} both land on {path}"),
                ));
            }
            if source.recursive {
                recursive_sources.push((source.system.clone(), dataset.clone()));
            }
        }
    }
    // A dataset under a recursive source is replicated with it already.
    for source in &spec.sources {
        for dataset in &source.datasets {
            for (system, parent) in &recursive_sources {
                if system == &source.system && dataset.starts_with(&format!("{parent}/")) {
                    return Err(invalid(
                        "sources",
                        format!(
                            "{system}:{dataset} is already replicated as a child of recursive source {system}:{parent}"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn arrow(spec: &RsyncTaskSpec) -> &'static str {
    match spec.direction() {
        RsyncDirection::Pull => "<-",
        _ => "->",
    }
}

/// Field rules first, then everything that needs the task's host, checked
/// there by its agent (path, user, key, and the remote path when asked).
async fn validate_rsync(state: &SharedState, spec: &mut RsyncTaskSpec) -> Result<(), FleetError> {
    if spec.system.is_empty() {
        return Err(invalid("system", "System is required"));
    }
    require_enrolled(state, "system", &spec.system)?;
    // Refused here as well as on the agent, so a task that would hand rsync
    // a program to run or a file to read is never stored, whoever calls.
    nasfleet_common::rsync_aux::check_auxiliary(&spec.auxiliary)
        .map_err(|e| FleetError::invalid_message(&e.to_string()))?;
    if spec.mode() == RsyncMode::Unspecified {
        spec.set_mode(RsyncMode::Module);
    }
    if spec.remote_port == 0 {
        spec.remote_port = if spec.mode() == RsyncMode::Ssh {
            22
        } else {
            873
        };
    }
    let answer = state
        .sessions
        .request(
            &spec.system,
            agent_request::Body::ValidateRsync(ValidateRsync {
                spec: Some(spec.clone()),
            }),
            RSYNC_VALIDATE_TIMEOUT,
        )
        .await
        .map_err(|e| {
            FleetError::Conflict(format!(
                "system: {e}; rsync tasks are checked on their system"
            ))
        })?;
    if !answer.error.is_empty() {
        // The agent words its refusals as `field: rule`.
        return Err(FleetError::invalid_message(&answer.error));
    }
    Ok(())
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
pub fn present(state: &SharedState, mut task: Task) -> Result<Task, FleetError> {
    let runs = state.store.runs_of_task(task.id, 20)?;
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

/// The work each system taking part in a run of `task` gets, or why it
/// could not be prepared (the run then fails with that reason). `at` is
/// the instant snapshot names are rendered for (the scheduled time, or now).
pub async fn prepare(
    state: &SharedState,
    task: &Task,
    at: DateTime<Utc>,
) -> Result<Vec<(String, StartRun)>, String> {
    match task.spec.as_ref().and_then(|s| s.kind.as_ref()) {
        Some(task_spec::Kind::Snapshot(spec)) => snapshot_work(state, spec, at)
            .map(|work| vec![(spec.system.clone(), work)])
            .map_err(|e| e.to_string()),
        Some(task_spec::Kind::Replication(spec)) => replication_work(state, spec, at).await,
        Some(task_spec::Kind::Rsync(spec)) => Ok(vec![(
            spec.system.clone(),
            StartRun {
                run_id: 0,
                work: Some(start_run::Work::Rsync(spec.clone())),
            },
        )]),
        None => Err(format!("task {} has no kind", task.id)),
    }
}

fn snapshot_work(
    state: &SharedState,
    spec: &SnapshotTaskSpec,
    at: DateTime<Utc>,
) -> Result<StartRun, FleetError> {
    let schema = NamingSchema::new(&spec.naming_schema).map_err(|e| invalid("naming_schema", e))?;
    let lifetime = parse_lifetime("lifetime", &spec.lifetime)
        .map_err(|e| FleetError::invalid_message(&e.to_string()))?;
    let protected = protected_snapshots(state, &spec.system);
    if let Err(reason) = &protected {
        tracing::warn!(system = %spec.system, %reason, "protected snapshots unknown; retention will destroy nothing this run");
    }
    Ok(StartRun {
        run_id: 0,
        work: Some(start_run::Work::Snapshot(SnapshotWork {
            dataset: spec.dataset.clone(),
            recursive: spec.recursive,
            exclude: spec.exclude.clone(),
            snapshot_name: schema.render(&at.with_timezone(&state.timezone)),
            retention: Some(Retention {
                naming_schema: spec.naming_schema.clone(),
                lifetime_secs: lifetime.as_secs(),
                timezone: state.timezone.name().to_owned(),
                protected: protected.clone().unwrap_or_default(),
                protection_unknown: protected.err().unwrap_or_default(),
            }),
        })),
    })
}

async fn replication_work(
    state: &SharedState,
    spec: &ReplicationTaskSpec,
    at: DateTime<Utc>,
) -> Result<Vec<(String, StartRun)>, String> {
    let mut parts: Vec<(String, ReplicationWork)> = Vec::new();
    for source in &spec.sources {
        let index = match parts
            .iter()
            .position(|(system, _)| system == &source.system)
        {
            Some(index) => index,
            None => {
                let target = if source.system == spec.target_system {
                    ReplicationTarget {
                        system: spec.target_system.clone(),
                        ..Default::default()
                    }
                } else {
                    let connection = ssh_trust::ensure(state, &source.system, &spec.target_system)
                        .await
                        .map_err(|s| {
                            format!(
                                "{}: SSH connection to '{}' could not be set up: {}",
                                source.system, spec.target_system, s
                            )
                        })?;
                    let mut target = ssh_trust::replication_target(&connection);
                    // Saves the source a probe over ssh on every run.
                    if let Ok(Some(inventory)) = inventory(state, &spec.target_system) {
                        target.zfs_dialect = inventory.zfs_dialect;
                    }
                    target
                };
                let pre_snapshot_name = if spec.create_snapshot_task {
                    let schema = source
                        .naming_schemas
                        .first()
                        .map(String::as_str)
                        .unwrap_or(nasfleet_common::naming::DEFAULT_PERIODIC_SCHEMA);
                    NamingSchema::new(schema)
                        .map_err(|e| format!("naming schema: {e}"))?
                        .render(&at.with_timezone(&state.timezone))
                } else {
                    String::new()
                };
                parts.push((
                    source.system.clone(),
                    ReplicationWork {
                        target: Some(target),
                        datasets: Vec::new(),
                        allow_overwrite: spec.allow_overwrite,
                        pre_snapshot_name,
                        pre_snapshot_recursive: source.recursive,
                        target_replicas: Vec::new(),
                    },
                ));
                parts.len() - 1
            }
        };
        for dataset in &source.datasets {
            parts[index].1.datasets.push(ReplicationDataset {
                source: dataset.clone(),
                target: replication_target_path(&spec.target_dataset, &source.system, dataset),
                recursive: source.recursive,
                naming_schemas: source.naming_schemas.clone(),
            });
        }
    }
    attach_target_replicas(state, spec, &mut parts).await;
    Ok(parts
        .into_iter()
        .map(|(system, work)| {
            (
                system,
                StartRun {
                    run_id: 0,
                    work: Some(start_run::Work::Replication(work)),
                },
            )
        })
        .collect())
}

/// Asks the target's agent for the snapshots of the target datasets of
/// every part that replicates over ssh, and hands each part its own: a
/// source then plans without listing them over ssh, which costs a login
/// shell on the target per dataset. Children of recursive sources are
/// named from the source's stored inventory; a child it does not know yet
/// is listed over ssh by the source. Best effort: without an answer every
/// source lists over ssh, as it must anyway when the hint is off.
async fn attach_target_replicas(
    state: &SharedState,
    spec: &ReplicationTaskSpec,
    parts: &mut [(String, ReplicationWork)],
) {
    let mut wanted: Vec<(usize, String)> = Vec::new();
    for (index, (system, work)) in parts.iter().enumerate() {
        if system == &spec.target_system {
            continue;
        }
        let source_inventory = if work.datasets.iter().any(|d| d.recursive) {
            inventory(state, system).ok().flatten()
        } else {
            None
        };
        for dataset in &work.datasets {
            wanted.push((index, dataset.target.clone()));
            let Some(source_inventory) = source_inventory.as_ref().filter(|_| dataset.recursive)
            else {
                continue;
            };
            let prefix = format!("{}/", dataset.source);
            for child in source_inventory
                .datasets
                .iter()
                .filter(|d| d.name.starts_with(&prefix))
            {
                let target = replication_target_path(&spec.target_dataset, system, &child.name);
                wanted.push((index, target));
            }
        }
    }
    wanted.truncate(MAX_LISTED_REPLICAS);
    if wanted.is_empty() {
        return;
    }
    let request = agent_request::Body::ListReplicas(ListReplicas {
        datasets: wanted.iter().map(|(_, dataset)| dataset.clone()).collect(),
    });
    let replicas = match state
        .sessions
        .request(&spec.target_system, request, REPLICA_LISTING_TIMEOUT)
        .await
    {
        Ok(response) if response.error.is_empty() => response.replicas,
        Ok(response) => {
            tracing::info!(target = %spec.target_system, error = %response.error, "target datasets not listed by the target's agent; the sources list them over ssh");
            return;
        }
        Err(e) => {
            tracing::info!(target = %spec.target_system, error = %e, "target datasets not listed by the target's agent; the sources list them over ssh");
            return;
        }
    };
    for listing in replicas {
        if let Some((index, _)) = wanted.iter().find(|(_, d)| *d == listing.dataset) {
            parts[*index].1.target_replicas.push(listing);
        }
    }
}

/// Snapshots on `system` that retention must keep: for every replication
/// source dataset there (and its children when recursive), the newest
/// snapshot it has in common with its target, matched by GUID. Read from the
/// inventories, which replication runs refresh when they end.
///
/// Fails closed: when any input it needs cannot be read, the answer is the
/// reason, and retention destroys nothing rather than risk an incremental
/// base.
pub fn protected_snapshots(state: &SharedState, system: &str) -> Result<Vec<String>, String> {
    let tasks = state
        .store
        .tasks()
        .map_err(|e| format!("the tasks could not be read ({e})"))?;
    let replications: Vec<ReplicationTaskSpec> = tasks
        .into_iter()
        .filter_map(|task| match task.spec.and_then(|s| s.kind) {
            Some(task_spec::Kind::Replication(spec))
                if spec.sources.iter().any(|s| s.system == system) =>
            {
                Some(spec)
            }
            _ => None,
        })
        .collect();
    if replications.is_empty() {
        return Ok(Vec::new());
    }
    let known = |of: &str| -> Result<Inventory, String> {
        match inventory(state, of) {
            Ok(Some(inventory)) => Ok(inventory),
            Ok(None) => Err(format!("the snapshots of '{of}' are not known yet")),
            Err(e) => Err(format!("the snapshots of '{of}' could not be read ({e})")),
        }
    };
    let source_inventory = known(system)?;
    let mut protected = Vec::new();
    for spec in replications {
        let target_inventory = known(&spec.target_system)?;
        for source in spec.sources.iter().filter(|s| s.system == system) {
            for dataset in &source.datasets {
                let under =
                    |name: &str| name == dataset || (source.recursive && is_below(name, dataset));
                for covered in source_inventory.datasets.iter().filter(|d| under(&d.name)) {
                    let target_path =
                        replication_target_path(&spec.target_dataset, system, &covered.name);
                    if let Some(base) = newest_common(
                        &source_inventory,
                        &covered.name,
                        &target_inventory,
                        &target_path,
                    ) {
                        protected.push(base);
                    }
                }
            }
        }
    }
    Ok(protected)
}

/// The newest snapshot of `source_dataset` whose GUID the target dataset also has.
fn newest_common(
    source: &Inventory,
    source_dataset: &str,
    target: &Inventory,
    target_dataset: &str,
) -> Option<String> {
    let of = |inv: &Inventory, dataset: &str| -> Vec<(u64, i64, String)> {
        inv.snapshots
            .iter()
            .filter(|s| s.name.split_once('@').is_some_and(|(d, _)| d == dataset))
            .map(|s| (s.guid, s.creation_unix, s.name.clone()))
            .collect()
    };
    let target_guids: std::collections::HashSet<u64> = of(target, target_dataset)
        .into_iter()
        .map(|(g, _, _)| g)
        .collect();
    of(source, source_dataset)
        .into_iter()
        .filter(|(guid, _, _)| target_guids.contains(guid))
        .max_by_key(|(_, creation, _)| *creation)
        .map(|(_, _, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::test_state;
    use nasfleet_proto::v1::{Dataset, ReplicationSource, Snapshot, TaskSpec};

    fn snapshot(name: &str, guid: u64, creation_unix: i64) -> Snapshot {
        Snapshot {
            name: name.into(),
            guid,
            creation_unix,
            ..Default::default()
        }
    }

    fn inventory_of(datasets: &[&str], snapshots: Vec<Snapshot>) -> Inventory {
        Inventory {
            datasets: datasets
                .iter()
                .map(|d| Dataset {
                    name: (*d).into(),
                    ..Default::default()
                })
                .collect(),
            snapshots,
            ..Default::default()
        }
    }

    fn replication_task(id: u64, source: &str, datasets: &[&str], target: &str) -> Task {
        Task {
            id,
            name: format!("r{id}"),
            kind: KIND_REPLICATION.into(),
            spec: Some(TaskSpec {
                kind: Some(task_spec::Kind::Replication(ReplicationTaskSpec {
                    sources: vec![ReplicationSource {
                        system: source.into(),
                        datasets: datasets.iter().map(|d| (*d).into()).collect(),
                        recursive: true,
                        naming_schemas: Vec::new(),
                    }],
                    target_system: target.into(),
                    target_dataset: "backup".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn store(state: &SharedState, tasks: Vec<Task>, inventories: Vec<(&str, Vec<u8>)>) {
        let inventories: Vec<(String, Vec<u8>)> = inventories
            .into_iter()
            .map(|(n, b)| (n.to_owned(), b))
            .collect();
        state
            .store
            .write(move |w| {
                for task in &tasks {
                    w.put_task(task)?;
                }
                for (name, bytes) in &inventories {
                    // Inventories are kept only for enrolled systems.
                    w.put_token(
                        name,
                        &crate::store::TokenRecord {
                            created_unix_ms: 0,
                            expires_unix_ms: i64::MAX,
                            created_by: "test".into(),
                            used_by: None,
                            used_unix_ms: None,
                        },
                    )?;
                    let system = crate::store::SystemRecord {
                        name: name.clone(),
                        enrolled_unix_ms: 0,
                        cert_serial: format!("serial-{name}"),
                        last_seen_unix_ms: 0,
                        address: String::new(),
                        agent_version: String::new(),
                        pools: Vec::new(),
                    };
                    let cert = crate::store::CertRecord {
                        principal: format!("system:{name}"),
                        role: None,
                        issued_unix_ms: 0,
                        revoked_unix_ms: None,
                    };
                    w.enroll(name, 1, &system, &format!("serial-{name}"), &cert)
                        .map_err(|e| match e {
                            crate::store::EnrollError::Store(e) => e,
                            crate::store::EnrollError::Refused(r) => panic!("{r}"),
                        })?;
                    w.put_inventory(name, bytes)?;
                }
                Ok(())
            })
            .await
            .unwrap();
    }

    fn source_and_target() -> (Inventory, Inventory) {
        let source = inventory_of(
            &["tank/a", "tank/a/child"],
            vec![
                snapshot("tank/a@old", 1, 100),
                snapshot("tank/a@base", 2, 200),
                snapshot("tank/a@newer", 3, 300),
                snapshot("tank/a/child@c1", 11, 100),
            ],
        );
        // The target has old and base (same GUIDs, one under another name),
        // and the child's first snapshot.
        let target = inventory_of(
            &["backup/nas1/tank/a", "backup/nas1/tank/a/child"],
            vec![
                snapshot("backup/nas1/tank/a@old", 1, 100),
                snapshot("backup/nas1/tank/a@renamed", 2, 200),
                snapshot("backup/nas1/tank/a/child@c1", 11, 100),
            ],
        );
        (source, target)
    }

    #[test]
    fn newest_common_matches_by_guid_not_name() {
        let (source, target) = source_and_target();
        assert_eq!(
            newest_common(&source, "tank/a", &target, "backup/nas1/tank/a").as_deref(),
            Some("tank/a@base")
        );
        assert_eq!(
            newest_common(&source, "tank/a/child", &target, "backup/nas1/tank/a/child").as_deref(),
            Some("tank/a/child@c1")
        );
        // Nothing in common: no base to protect.
        assert_eq!(
            newest_common(&source, "tank/a", &target, "backup/elsewhere"),
            None
        );
        // A sibling with a common prefix is another dataset.
        assert_eq!(
            newest_common(&source, "tank/a", &target, "backup/nas1/tank"),
            None
        );
    }

    #[tokio::test]
    async fn protected_snapshots_are_the_bases_of_every_covered_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path());
        let (source, target) = source_and_target();
        store(
            &state,
            vec![replication_task(1, "nas1", &["tank/a"], "nas2")],
            vec![
                ("nas1", source.encode_to_vec()),
                ("nas2", target.encode_to_vec()),
            ],
        )
        .await;
        let mut protected = protected_snapshots(&state, "nas1").unwrap();
        protected.sort();
        assert_eq!(protected, vec!["tank/a/child@c1", "tank/a@base"]);
        // A system that is no replication source needs no inventories at all.
        assert_eq!(
            protected_snapshots(&state, "nas9").unwrap(),
            Vec::<String>::new()
        );
    }

    #[tokio::test]
    async fn protected_snapshots_fail_closed_when_an_inventory_is_missing_or_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path());
        let (source, _) = source_and_target();
        store(
            &state,
            vec![
                replication_task(1, "nas1", &["tank/a"], "nas2"),
                replication_task(2, "nas3", &["tank/a"], "nas1"),
            ],
            vec![
                ("nas1", source.encode_to_vec()),
                ("nas3", b"\xff\xff not protobuf".to_vec()),
            ],
        )
        .await;
        // The target's snapshots were never reported.
        let reason = protected_snapshots(&state, "nas1").unwrap_err();
        assert!(
            reason.contains("'nas2'") && reason.contains("not known"),
            "{reason}"
        );
        // The source's own inventory cannot be decoded.
        let reason = protected_snapshots(&state, "nas3").unwrap_err();
        assert!(
            reason.contains("'nas3'") && reason.contains("could not be read"),
            "{reason}"
        );
    }
}
