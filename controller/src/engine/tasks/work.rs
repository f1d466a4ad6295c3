//! What each system taking part in a run gets: snapshot work with its retention, replication work with its targets and the target's listing, rsync work.

use super::{invalid, protected_snapshots};
use crate::engine::error::FleetError;
use crate::engine::runs::RunPlan;
use crate::engine::ssh_trust;
use crate::engine::state::SharedState;
use crate::engine::systems::inventory_header;
use chrono::{DateTime, Utc};
use nasfleet_common::duration::parse_lifetime;
use nasfleet_common::names::{is_below, replication_target_path};
use nasfleet_common::naming::NamingSchema;
use nasfleet_proto::v1::{
    DatasetEstimate, EstimateReplication, ListReplicas, ReplicationDataset, ReplicationSource,
    ReplicationTarget, ReplicationTaskSpec, ReplicationWork, Retention, SnapshotTaskSpec,
    SnapshotWork, StartRun, Task, agent_request, start_run, task_spec,
};
use std::time::Duration;

/// Most target datasets a replication run asks its target's agent to list;
/// the sources list the rest over ssh.
const MAX_LISTED_REPLICAS: usize = 256;
/// How long a replication run's dispatch waits for that listing.
const REPLICA_LISTING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an estimate waits for each source's answer (its agent gives
/// up after 60 s itself).
const ESTIMATE_TIMEOUT: Duration = Duration::from_secs(65);

/// The work each system taking part in a run of `task` gets, or why it
/// could not be prepared (the run then fails with that reason). `at` is
/// the instant snapshot names are rendered for (the scheduled time, or now).
pub async fn prepare(state: &SharedState, task: &Task, at: DateTime<Utc>) -> RunPlan {
    match parts(state, task, at).await {
        Ok(parts) => RunPlan::Parts(parts),
        Err(reason) => RunPlan::Unprepared(reason),
    }
}

async fn parts(
    state: &SharedState,
    task: &Task,
    at: DateTime<Utc>,
) -> Result<Vec<(String, StartRun)>, String> {
    match task.spec.as_ref().and_then(|s| s.kind.as_ref()) {
        Some(task_spec::Kind::Snapshot(spec)) => snapshot_work(state, spec, at)
            .map(|work| vec![(spec.system.clone(), work)])
            .map_err(|e| e.to_string()),
        Some(task_spec::Kind::Replication(spec)) => {
            replication_work(state, task.id, spec, at, Purpose::Run).await
        }
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

/// What a run of `spec` would send now, per dataset, as its source agents
/// estimate it from the target agent's listing (see
/// [`EstimateReplication`]). Changes nothing: no SSH connection is set up,
/// no allow-list sent, no snapshot taken. A source that cannot answer has
/// each of its datasets say why.
pub async fn estimate(state: &SharedState, spec: &ReplicationTaskSpec) -> Vec<DatasetEstimate> {
    let parts = match replication_work(state, 0, spec, Utc::now(), Purpose::Estimate).await {
        Ok(parts) => parts,
        Err(reason) => {
            return vec![DatasetEstimate {
                error: reason,
                ..Default::default()
            }];
        }
    };
    // Every source at once: each may take seconds (`zfs send -n -P` per
    // snapshot to send).
    let mut asked = tokio::task::JoinSet::new();
    for (index, (system, start)) in parts.into_iter().enumerate() {
        let Some(start_run::Work::Replication(work)) = start.work else {
            continue;
        };
        let state = state.clone();
        asked.spawn(async move {
            let request = agent_request::Body::EstimateReplication(EstimateReplication {
                work: Some(work.clone()),
            });
            let answer = state
                .sessions
                .request(&system, request, ESTIMATE_TIMEOUT)
                .await;
            let why = match answer {
                Ok(response) if response.error.is_empty() => return (index, response.estimates),
                Ok(response) => response.error,
                Err(e) => e.to_string(),
            };
            let unanswered = work
                .datasets
                .iter()
                .map(|d| DatasetEstimate {
                    source: format!("{system}:{}", d.source),
                    target: d.target.clone(),
                    error: format!("{system}: {why}"),
                    ..Default::default()
                })
                .collect();
            (index, unanswered)
        });
    }
    let mut answers = asked.join_all().await;
    // In the task's order of sources, whichever answered first.
    answers.sort_by_key(|(index, _)| *index);
    answers.into_iter().flat_map(|(_, e)| e).collect()
}

/// Why replication work is prepared: a run needs the SSH trust and the
/// snapshot it takes first; an estimate touches nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Run,
    Estimate,
}

async fn replication_work(
    state: &SharedState,
    task_id: u64,
    spec: &ReplicationTaskSpec,
    at: DateTime<Utc>,
    purpose: Purpose,
) -> Result<Vec<(String, StartRun)>, String> {
    // One part per source system, holding all of its datasets.
    let mut parts: Vec<(String, ReplicationWork)> = Vec::new();
    for source in &spec.sources {
        let index = match parts
            .iter()
            .position(|(system, _)| system == &source.system)
        {
            Some(index) => index,
            None => {
                let mut work = source_work(state, spec, source, at, purpose).await?;
                work.task_id = task_id;
                parts.push((source.system.clone(), work));
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

/// The work of one source system, without its datasets yet: how it
/// reaches the target, and the snapshot it takes first when the task
/// makes its own snapshots.
async fn source_work(
    state: &SharedState,
    spec: &ReplicationTaskSpec,
    source: &ReplicationSource,
    at: DateTime<Utc>,
    purpose: Purpose,
) -> Result<ReplicationWork, String> {
    let target = if source.system == spec.target_system {
        ReplicationTarget {
            system: spec.target_system.clone(),
            ..Default::default()
        }
    } else if purpose == Purpose::Estimate {
        // Estimates plan from the target agent's listing only.
        ReplicationTarget {
            system: spec.target_system.clone(),
            zfs_dialect: inventory_header(state, &spec.target_system)
                .ok()
                .flatten()
                .map_or(0, |i| i.zfs_dialect),
            ..Default::default()
        }
    } else {
        let connection = ssh_trust::ensure(state, &source.system, &spec.target_system)
            .await
            .map_err(|e| {
                format!(
                    "{}: SSH connection to '{}' could not be set up: {e}",
                    source.system, spec.target_system
                )
            })?;
        // The gate on the target admits what this run needs; a target agent
        // that cannot be told keeps the list it had.
        if let Err(e) = ssh_trust::allow(state, &source.system, &spec.target_system).await {
            tracing::warn!(source = %source.system, target = %spec.target_system, error = %e, "replication allow-list not refreshed before the run");
        }
        let mut target = ssh_trust::replication_target(&connection);
        // Saves the source a probe over ssh on every run.
        if let Ok(Some(inventory)) = inventory_header(state, &spec.target_system) {
            target.zfs_dialect = inventory.zfs_dialect;
        }
        target
    };
    let pre_snapshot_name = if spec.create_snapshot_task && purpose == Purpose::Run {
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
    Ok(ReplicationWork {
        target: Some(target),
        datasets: Vec::new(),
        allow_overwrite: spec.allow_overwrite,
        pre_snapshot_name,
        pre_snapshot_recursive: source.recursive,
        target_replicas: Vec::new(),
        task_id: 0,
        no_raw: spec.no_raw,
        bandwidth_limit: spec.bandwidth_limit,
    })
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
            inventory_header(state, system).ok().flatten()
        } else {
            None
        };
        for dataset in &work.datasets {
            wanted.push((index, dataset.target.clone()));
            let Some(source_inventory) = source_inventory.as_ref().filter(|_| dataset.recursive)
            else {
                continue;
            };
            for child in source_inventory
                .datasets
                .iter()
                .filter(|d| is_below(&d.name, &dataset.source))
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
