//! The systems of the fleet as the engine sees them: enrolled or not, their inventories (fresh when asked), datasets with their coverage, snapshots, manual snapshots, and removal.

use crate::engine::access::{Actor, not_found_system};
use crate::engine::error::{FleetError, corrupt};
use crate::engine::state::SharedState;
use crate::engine::summaries::Summaries;
use crate::sessions::LiveSession;
use crate::store::SystemRecord;
use chrono::Utc;
use nasfleet_common::dataset_names::validate_dataset_name;
use nasfleet_common::echo::echo;
use nasfleet_common::names::is_below;
use nasfleet_common::naming::{DEFAULT_MANUAL_SCHEMA, NamingSchema};
use nasfleet_proto::v1::{
    AgentErrorKind, CreateSnapshots, DatasetSnapshots, DatasetSummary, Inventory,
    ListSystemsResponse, Snapshot, SnapshotTaskSpec, SystemDetail, SystemStatus, SystemSummary,
    agent_request, task_spec,
};
use prost::Message;
use std::time::Duration;

/// How long validation waits for a fresh inventory when a dataset is not in the stored one.
const INVENTORY_REFRESH: Duration = Duration::from_secs(10);
/// How long `system show --refresh` waits for the agent's fresh inventory.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a one-time snapshot may take on the agent.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);

/// `FIELD: System 'NAME' is not enrolled` unless `system` is in the fleet.
pub fn require_enrolled(state: &SharedState, field: &str, system: &str) -> Result<(), FleetError> {
    match state.store.system(system)? {
        Some(_) => Ok(()),
        None => Err(not_enrolled(field, system)),
    }
}

/// How a spec's reference to a system that is not in the fleet (or that
/// its author does not see) is refused.
pub fn not_enrolled(field: &str, system: &str) -> FleetError {
    FleetError::invalid(field, format!("System '{}' is not enrolled", echo(system)))
}

/// The stored inventory of a system without its snapshots (see
/// [`dataset_snapshots`]), if it has reported.
pub fn inventory_header(
    state: &SharedState,
    system: &str,
) -> Result<Option<Inventory>, FleetError> {
    match state.store.inventory(system)? {
        Some(bytes) => Ok(Some(
            Inventory::decode(bytes.as_slice()).map_err(|e| corrupt("inventory", e))?,
        )),
        None => Ok(None),
    }
}

/// The snapshots of one dataset as the system's inventory lists them, in
/// the agent's order: one read, whatever the system's other snapshots.
pub fn dataset_snapshots(
    state: &SharedState,
    system: &str,
    dataset: &str,
) -> Result<Vec<Snapshot>, FleetError> {
    match state.store.dataset_snapshots(system, dataset)? {
        Some(bytes) => Ok(DatasetSnapshots::decode(bytes.as_slice())
            .map_err(|e| corrupt("dataset snapshots", e))?
            .snapshots),
        // Not a dataset of the inventory, or an inventory stored with its
        // snapshots inline (before they were kept per dataset).
        None => Ok(inventory_header(state, system)?
            .map(|i| i.snapshots)
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s.name.split_once('@').is_some_and(|(d, _)| d == dataset))
            .collect()),
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
    if has(inventory_header(state, system)?) {
        return Ok(true);
    }
    if let Some(waiter) = state.sessions.request_inventory(system) {
        let _ = tokio::time::timeout(INVENTORY_REFRESH, waiter).await;
        return Ok(has(inventory_header(state, system)?));
    }
    Ok(false)
}

/// The stored record of an enrolled system.
pub fn record(state: &SharedState, name: &str) -> Result<SystemRecord, FleetError> {
    state
        .store
        .system(name)?
        .ok_or_else(|| not_found_system(name))
}

/// A system as lists show it: ONLINE while its agent is connected, with
/// the live session's address and version.
pub fn summary(state: &SharedState, record: &SystemRecord) -> SystemSummary {
    summary_with(record, state.sessions.live(&record.name).as_ref())
}

/// [`summary`] with the system's live session (if ONLINE) already read.
fn summary_with(record: &SystemRecord, live: Option<&LiveSession>) -> SystemSummary {
    let (status, last_seen, address, version) = match live {
        Some(l) => (
            SystemStatus::Online,
            l.last_heartbeat_unix_ms.max(record.last_seen_unix_ms),
            String::from(&*l.address),
            String::from(&*l.agent_version),
        ),
        None => (
            SystemStatus::Offline,
            record.last_seen_unix_ms,
            record.address.clone(),
            record.agent_version.clone(),
        ),
    };
    SystemSummary {
        name: record.name.clone(),
        status: status.into(),
        last_seen_unix_ms: last_seen,
        address,
        agent_version: version,
        pools: record.pools.clone(),
        enrolled_unix_ms: record.enrolled_unix_ms,
        inventory_problem: record.inventory_problem.clone().unwrap_or_default(),
        inventory_unix_ms: record.inventory_unix_ms,
    }
}

/// Every system `actor` sees, ordered by name.
pub fn list(state: &SharedState, actor: &Actor) -> Result<Vec<SystemSummary>, FleetError> {
    Ok(seen_by(&summaries(state)?, actor))
}

fn seen_by(all: &Summaries, actor: &Actor) -> Vec<SystemSummary> {
    all.list
        .iter()
        .filter(|s| actor.sees(&s.name))
        .cloned()
        .collect()
}

/// [`list`] as the API answers it: to an actor who sees every system, the
/// list encoded once for all such callers.
pub fn list_response(
    state: &SharedState,
    actor: &Actor,
) -> Result<ListSystemsResponse, FleetError> {
    let all = summaries(state)?;
    if actor.sees_all(all.list.iter().map(|s| s.name.as_str())) {
        return Ok(all.response());
    }
    Ok(ListSystemsResponse::new(seen_by(&all, actor)))
}

/// Every system's summary, built again only when something changed (see
/// [`crate::engine::summaries::SummaryCache`]).
fn summaries(state: &SharedState) -> Result<Summaries, FleetError> {
    // Read before the records and sessions: a change while building leaves
    // the list tagged older than what it shows, so it is built again next
    // time rather than kept too long.
    let generations = (state.store.systems_generation(), state.sessions.changes());
    state
        .system_summaries
        .get(generations, || -> Result<_, FleetError> {
            let records = state.store.systems()?;
            let live = state
                .sessions
                .live_of(records.iter().map(|r| r.name.as_str()));
            Ok(records
                .iter()
                .zip(&live)
                .map(|(r, l)| summary_with(r, l.as_ref()))
                .collect())
        })
}

/// Has the agent of `system` send a fresh inventory and waits for it to be stored.
async fn refresh(state: &SharedState, system: &str) -> Result<(), FleetError> {
    let waiter = state.sessions.request_inventory(system).ok_or_else(|| {
        FleetError::Unavailable(format!(
            "System '{system}' is offline; cannot refresh its inventory"
        ))
    })?;
    if tokio::time::timeout(REFRESH_TIMEOUT, waiter).await.is_err() {
        return Err(FleetError::TimedOut(format!(
            "system '{system}' did not send its inventory within {}s",
            REFRESH_TIMEOUT.as_secs()
        )));
    }
    Ok(())
}

/// One system with its inventory (none if it never reported).
pub async fn detail(
    state: &SharedState,
    actor: &Actor,
    name: &str,
    fresh: bool,
) -> Result<SystemDetail, FleetError> {
    actor.system_visible(name)?;
    record(state, name)?;
    if fresh {
        refresh(state, name).await?;
    }
    let record = record(state, name)?;
    Ok(SystemDetail {
        summary: Some(summary(state, &record)),
        inventory: detail_inventory(state, name)?,
        certificate_serial: record.cert_serial,
        certificate_expires_unix_ms: record.cert_expires_unix_ms,
    })
}

/// Snapshots a system's detail carries; beyond this it carries counts
/// only, and Fleet.ListSnapshots lists them.
pub const DETAIL_SNAPSHOTS: u64 = 10_000;

/// A system's inventory for its detail: datasets with their snapshot
/// counts, and the snapshots themselves while there are at most
/// [`DETAIL_SNAPSHOTS`].
fn detail_inventory(state: &SharedState, system: &str) -> Result<Option<Inventory>, FleetError> {
    let Some(mut inventory) = inventory_header(state, system)? else {
        return Ok(None);
    };
    if !inventory.snapshots.is_empty() {
        // Stored before snapshots were kept per dataset: count them here.
        for dataset in &mut inventory.datasets {
            dataset.snapshot_count = inventory
                .snapshots
                .iter()
                .filter(|s| {
                    s.name
                        .split_once('@')
                        .is_some_and(|(d, _)| d == dataset.name)
                })
                .count() as u64;
        }
        return Ok(Some(inventory));
    }
    // Per dataset: its snapshots while they are few, else only their count
    // (which the store keeps without reading a long list).
    let whole = inventory.snapshot_count <= DETAIL_SNAPSHOTS;
    let mut snapshots = Vec::new();
    for dataset in &mut inventory.datasets {
        if !whole {
            dataset.snapshot_count = state
                .store
                .dataset_snapshot_count(system, &dataset.name)?
                .unwrap_or(0);
            continue;
        }
        let Some(bytes) = state.store.dataset_snapshots(system, &dataset.name)? else {
            continue;
        };
        let own = DatasetSnapshots::decode(bytes.as_slice())
            .map_err(|e| corrupt("dataset snapshots", e))?
            .snapshots;
        dataset.snapshot_count = own.len() as u64;
        snapshots.extend(own);
    }
    inventory.snapshots = snapshots;
    Ok(Some(inventory))
}

/// The inventory of a system without its snapshots (see
/// [`dataset_snapshots`]), fresh from its agent when asked; an error when it
/// never reported.
pub async fn reported_inventory(
    state: &SharedState,
    system: &str,
    fresh: bool,
) -> Result<Inventory, FleetError> {
    record(state, system)?;
    if fresh {
        refresh(state, system).await?;
    }
    inventory_header(state, system)?.ok_or_else(|| {
        FleetError::Conflict(format!(
            "system '{system}' has not reported its inventory yet"
        ))
    })
}

fn dataset_not_found(system: &str, dataset: &str) -> FleetError {
    FleetError::NotFound(format!(
        "dataset: Dataset not found: '{}' on system '{}'",
        echo(dataset),
        echo(system)
    ))
}

/// Snapshots of a system, of one dataset (and its descendants when
/// `recursive`) or of all, ordered by dataset and then by age.
pub async fn snapshots(
    state: &SharedState,
    actor: &Actor,
    system: &str,
    dataset: &str,
    recursive: bool,
    fresh: bool,
) -> Result<Vec<Snapshot>, FleetError> {
    actor.system_visible(system)?;
    let inventory = reported_inventory(state, system, fresh).await?;
    if !dataset.is_empty() && !inventory.datasets.iter().any(|d| d.name == dataset) {
        return Err(dataset_not_found(system, dataset));
    }
    let mut snapshots: Vec<Snapshot> = Vec::new();
    for listed in inventory.datasets.iter().filter(|d| {
        dataset.is_empty() || d.name == dataset || (recursive && is_below(&d.name, dataset))
    }) {
        snapshots.extend(dataset_snapshots(state, system, &listed.name)?);
    }
    snapshots.sort_by(|a, b| {
        (a.name.split_once('@').map(|p| p.0), a.creation_unix)
            .cmp(&(b.name.split_once('@').map(|p| p.0), b.creation_unix))
    });
    Ok(snapshots)
}

/// Whether a periodic snapshot task takes snapshots of `dataset`.
pub fn covers(spec: &SnapshotTaskSpec, dataset: &str) -> bool {
    let under = |parent: &str| dataset == parent || is_below(dataset, parent);
    if spec.recursive {
        under(&spec.dataset) && !spec.exclude.iter().any(|e| under(e))
    } else {
        dataset == spec.dataset
    }
}

/// The datasets of a system with their snapshot counts, newest snapshot
/// and the snapshot tasks that cover them.
pub async fn datasets(
    state: &SharedState,
    actor: &Actor,
    system: &str,
    fresh: bool,
) -> Result<Vec<DatasetSummary>, FleetError> {
    actor.system_visible(system)?;
    let inventory = reported_inventory(state, system, fresh).await?;
    let snapshot_tasks: Vec<(String, SnapshotTaskSpec)> = state
        .store
        .tasks()?
        .into_iter()
        .filter_map(|t| match t.spec?.kind? {
            task_spec::Kind::Snapshot(spec) if spec.system == system => Some((t.name, spec)),
            _ => None,
        })
        .collect();
    inventory
        .datasets
        .iter()
        .map(|dataset| {
            let own = dataset_snapshots(state, system, &dataset.name)?;
            let newest = own.iter().max_by_key(|s| s.creation_unix);
            Ok(DatasetSummary {
                dataset: Some(dataset.clone()),
                snapshot_count: u32::try_from(own.len()).unwrap_or(u32::MAX),
                newest_snapshot: newest.map(|s| s.name.clone()).unwrap_or_default(),
                snapshot_tasks: snapshot_tasks
                    .iter()
                    .filter(|(_, spec)| covers(spec, &dataset.name))
                    .map(|(name, _)| name.clone())
                    .collect(),
            })
        })
        .collect()
}

/// Takes a one-time snapshot named by `naming_schema` (default
/// `manual-%Y-%m-%d_%H-%M`) now; returns the names created.
pub async fn take_snapshot(
    state: &SharedState,
    actor: &Actor,
    system: &str,
    dataset: &str,
    recursive: bool,
    naming_schema: &str,
) -> Result<Vec<String>, FleetError> {
    actor.system_visible(system)?;
    record(state, system)?;
    let schema_text = if naming_schema.is_empty() {
        DEFAULT_MANUAL_SCHEMA
    } else {
        naming_schema
    };
    let schema =
        NamingSchema::new(schema_text).map_err(|e| FleetError::invalid("naming_schema", e))?;
    validate_dataset_name(dataset).map_err(|e| FleetError::invalid("dataset", e))?;
    if !dataset_exists(state, system, dataset).await? {
        return Err(dataset_not_found(system, dataset));
    }
    let name = format!(
        "{dataset}@{}",
        schema.render(&Utc::now().with_timezone(&state.timezone))
    );
    let answer = state
        .sessions
        .request(
            system,
            agent_request::Body::CreateSnapshots(CreateSnapshots {
                names: vec![name],
                recursive,
            }),
            SNAPSHOT_TIMEOUT,
        )
        .await
        .map_err(|e| FleetError::Unavailable(e.to_string()))?;
    if !answer.error.is_empty() {
        return Err(match answer.error_kind() {
            AgentErrorKind::AlreadyExists => FleetError::AlreadyExists(answer.error),
            AgentErrorKind::TimedOut => FleetError::TimedOut(answer.error),
            AgentErrorKind::Invalid => FleetError::invalid_message(&answer.error),
            AgentErrorKind::Unspecified => FleetError::Conflict(answer.error),
        });
    }
    // So listings show the new snapshot without waiting for the next period.
    let _ = state.sessions.request_inventory(system);
    Ok(answer.created)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> Actor {
        Actor::Person {
            name: "root".into(),
            role: nasfleet_common::roles::Role::Admin,
            scope: crate::engine::access::Scope::All,
        }
    }
    use crate::engine::fixtures::{enroll, inventory_of, snapshot, store};
    use crate::engine::state::test_state;
    use nasfleet_proto::v1::{Task, TaskSpec};

    #[tokio::test]
    async fn a_million_snapshots_arrive_in_pages_and_are_kept_and_counted_whole() {
        use crate::agents::inventory::{Arrived, Assembly};
        use nasfleet_proto::INVENTORY_PAGE_SNAPSHOTS;
        use nasfleet_proto::v1::{Dataset, InventoryPage};
        const DATASETS: usize = 100;
        const TOTAL: usize = 1_000_000;
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path());
        enroll(&state, "nas1", &Inventory::default()).await;
        let dataset_name = |i: usize| format!("tank/d{:03}", i % DATASETS);
        let head = Inventory {
            hostname: "nas1".into(),
            datasets: (0..DATASETS)
                .map(|i| Dataset {
                    name: dataset_name(i),
                    ..Default::default()
                })
                .collect(),
            snapshot_count: TOTAL as u64,
            snapshot_pages: TOTAL.div_ceil(INVENTORY_PAGE_SNAPSHOTS) as u32,
            ..Default::default()
        };
        let mut assembly = Assembly::default();
        assert_eq!(assembly.inventory(head), None);
        let mut whole = None;
        for page in 0..TOTAL / INVENTORY_PAGE_SNAPSHOTS {
            let first = page * INVENTORY_PAGE_SNAPSHOTS;
            let snapshots = (first..first + INVENTORY_PAGE_SNAPSHOTS)
                .map(|i| Snapshot {
                    name: format!("{}@auto-{i:07}", dataset_name(i)),
                    guid: i as u64 + 1,
                    creation_unix: i as i64,
                    ..Default::default()
                })
                .collect();
            whole = assembly.page(InventoryPage {
                page: page as u32,
                snapshots,
            });
        }
        let Some(Arrived::Paged(stored)) = whole else {
            panic!("the last page completes the inventory");
        };
        let (header, datasets) = stored.finish();
        state
            .store
            .write(move |w| w.put_inventory("nas1", &header, &datasets))
            .await
            .unwrap();
        let detail = detail_inventory(&state, "nas1").unwrap().unwrap();
        assert_eq!(detail.snapshot_count, TOTAL as u64);
        assert!(
            detail.snapshots.is_empty(),
            "counts only, beyond {DETAIL_SNAPSHOTS}"
        );
        let counted: u64 = detail.datasets.iter().map(|d| d.snapshot_count).sum();
        assert_eq!(counted, TOTAL as u64);
        let one = dataset_snapshots(&state, "nas1", "tank/d007").unwrap();
        assert_eq!(one.len(), TOTAL / DATASETS);
        assert!(one.iter().all(|s| s.name.starts_with("tank/d007@")));
        assert_eq!(one[1].guid, 108, "in the agent's order");
    }

    #[tokio::test]
    async fn the_list_shows_a_new_system_and_a_new_session_at_once_though_it_is_cached() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path());
        enroll(&state, "nas2", &Inventory::default()).await;
        let shown = |state: &SharedState| -> Vec<(String, i32)> {
            list(state, &admin())
                .unwrap()
                .into_iter()
                .map(|s| (s.name, s.status))
                .collect()
        };
        let offline = SystemStatus::Offline as i32;
        assert_eq!(shown(&state), [("nas2".to_string(), offline)]);
        enroll(&state, "nas1", &Inventory::default()).await;
        assert_eq!(shown(&state)[0], ("nas1".to_string(), offline));
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let (id, _close) = state
            .sessions
            .register("nas1", tx, "127.0.0.1".into(), "1".into(), 1);
        assert_eq!(
            shown(&state)[0],
            ("nas1".to_string(), SystemStatus::Online as i32)
        );
        state.sessions.unregister("nas1", id);
        assert_eq!(shown(&state)[0], ("nas1".to_string(), offline));
    }

    fn snapshot_task(name: &str, dataset: &str, recursive: bool, exclude: &[&str]) -> Task {
        Task {
            id: 1,
            name: name.into(),
            spec: Some(TaskSpec {
                kind: Some(task_spec::Kind::Snapshot(SnapshotTaskSpec {
                    system: "nas1".into(),
                    dataset: dataset.into(),
                    recursive,
                    exclude: exclude.iter().map(|e| (*e).into()).collect(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn coverage_follows_recursion_and_exclusions_not_name_prefixes() {
        let Some(task_spec::Kind::Snapshot(spec)) =
            snapshot_task("t", "tank/a", true, &["tank/a/tmp"])
                .spec
                .and_then(|s| s.kind)
        else {
            unreachable!()
        };
        assert!(covers(&spec, "tank/a"));
        assert!(covers(&spec, "tank/a/b/c"));
        assert!(!covers(&spec, "tank/a/tmp"));
        assert!(!covers(&spec, "tank/a/tmp/deep"));
        assert!(!covers(&spec, "tank/ab"));
        let flat = SnapshotTaskSpec {
            recursive: false,
            ..spec
        };
        assert!(covers(&flat, "tank/a") && !covers(&flat, "tank/a/b"));
    }

    #[tokio::test]
    async fn datasets_and_snapshots_of_a_system_as_lists_show_them() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path());
        let inventory = inventory_of(
            &["tank/a", "tank/a/b", "tank/ab"],
            vec![
                snapshot("tank/a@2", 2, 200),
                snapshot("tank/a@1", 1, 100),
                snapshot("tank/a/b@1", 3, 100),
                snapshot("tank/ab@1", 4, 100),
            ],
        );
        enroll(&state, "nas1", &inventory).await;
        store(
            &state,
            vec![snapshot_task("hourly", "tank/a", true, &[])],
            Vec::new(),
        )
        .await;

        let names = |snaps: Vec<Snapshot>| snaps.into_iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(
            names(
                snapshots(&state, &admin(), "nas1", "tank/a", true, false)
                    .await
                    .unwrap()
            ),
            vec!["tank/a@1", "tank/a@2", "tank/a/b@1"]
        );
        assert_eq!(
            names(
                snapshots(&state, &admin(), "nas1", "tank/a", false, false)
                    .await
                    .unwrap()
            ),
            vec!["tank/a@1", "tank/a@2"]
        );
        assert!(matches!(
            snapshots(&state, &admin(), "nas1", "tank/zz", false, false).await,
            Err(FleetError::NotFound(m)) if m == "dataset: Dataset not found: 'tank/zz' on system 'nas1'"
        ));
        assert!(matches!(
            snapshots(&state, &admin(), "nas9", "", false, false).await,
            Err(FleetError::NotFound(m)) if m == "system 'nas9' is not enrolled"
        ));

        let listed = datasets(&state, &admin(), "nas1", false).await.unwrap();
        let row = |name: &str| {
            listed
                .iter()
                .find(|d| d.dataset.as_ref().is_some_and(|x| x.name == name))
                .cloned()
                .unwrap()
        };
        assert_eq!(row("tank/a").snapshot_count, 2);
        assert_eq!(row("tank/a").newest_snapshot, "tank/a@2");
        assert_eq!(row("tank/a/b").snapshot_tasks, vec!["hourly".to_owned()]);
        assert!(row("tank/ab").snapshot_tasks.is_empty());
    }

    #[tokio::test]
    async fn a_fresh_inventory_needs_the_system_online() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path());
        enroll(&state, "nas1", &inventory_of(&["tank"], Vec::new())).await;
        assert!(matches!(
            detail(&state, &admin(), "nas1", true).await,
            Err(FleetError::Unavailable(m)) if m == "System 'nas1' is offline; cannot refresh its inventory"
        ));
        let shown = detail(&state, &admin(), "nas1", false).await.unwrap();
        assert_eq!(
            shown.summary.map(|s| s.status()),
            Some(SystemStatus::Offline)
        );
        assert!(shown.inventory.is_some());
    }
}
