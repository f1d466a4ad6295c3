//! The snapshots retention must keep on a system: the incremental bases of every replication that sources from it, matched by GUID; fails closed.

use crate::engine::state::SharedState;
use crate::engine::systems::{dataset_snapshots, inventory_header};
use nasfleet_common::names::{is_below, replication_target_path};
use nasfleet_proto::v1::{Inventory, ReplicationTaskSpec, Snapshot, task_spec};

/// Snapshots on `system` that retention must keep: for every replication
/// source dataset there (and its children when recursive), the newest
/// snapshot it has in common with its target, matched by GUID. Read from the
/// inventories, which replication runs refresh when they end: the dataset
/// lists, and the snapshots of only the datasets involved (a system may
/// have a million snapshots elsewhere).
///
/// Fails closed: when any input it needs cannot be read, the answer is the
/// reason, and retention destroys nothing rather than risk an incremental
/// base.
pub fn protected_snapshots(state: &SharedState, system: &str) -> Result<Vec<String>, String> {
    let tasks = state
        .store
        .tasks_shared()
        .map_err(|e| format!("the tasks could not be read ({e})"))?;
    let replications: Vec<ReplicationTaskSpec> = tasks
        .iter()
        .filter_map(
            |task| match task.spec.as_ref().and_then(|s| s.kind.as_ref()) {
                Some(task_spec::Kind::Replication(spec))
                    if spec.sources.iter().any(|s| s.system == system) =>
                {
                    Some(spec.clone())
                }
                _ => None,
            },
        )
        .collect();
    if replications.is_empty() {
        return Ok(Vec::new());
    }
    let known = |of: &str| -> Result<Inventory, String> {
        match inventory_header(state, of) {
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
                    let snapshots = |of: &str, dataset: &str| {
                        dataset_snapshots(state, of, dataset).map_err(|e| {
                            format!("the snapshots of '{of}:{dataset}' could not be read ({e})")
                        })
                    };
                    let target_has = target_inventory
                        .datasets
                        .iter()
                        .any(|d| d.name == target_path);
                    let target_snapshots = if target_has {
                        snapshots(&spec.target_system, &target_path)?
                    } else {
                        Vec::new()
                    };
                    if let Some(base) =
                        newest_common(&snapshots(system, &covered.name)?, &target_snapshots)
                    {
                        protected.push(base);
                    }
                }
            }
        }
    }
    Ok(protected)
}

/// The newest of a source dataset's snapshots whose GUID its target dataset's also have.
fn newest_common(source: &[Snapshot], target: &[Snapshot]) -> Option<String> {
    let target_guids: std::collections::HashSet<u64> = target.iter().map(|s| s.guid).collect();
    source
        .iter()
        .filter(|s| target_guids.contains(&s.guid))
        .max_by_key(|s| s.creation_unix)
        .map(|s| s.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fixtures::{inventory_of, snapshot, store};
    use crate::engine::state::test_state;
    use nasfleet_proto::v1::Task;
    use nasfleet_proto::v1::TaskKind;
    use nasfleet_proto::v1::{ReplicationSource, TaskSpec};
    use prost::Message;

    fn replication_task(id: u64, source: &str, datasets: &[&str], target: &str) -> Task {
        Task {
            id,
            name: format!("r{id}"),
            kind: TaskKind::Replication.into(),
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

    /// The snapshots of one dataset, as the store keeps them apart.
    fn of(inventory: &Inventory, dataset: &str) -> Vec<Snapshot> {
        inventory
            .snapshots
            .iter()
            .filter(|s| s.name.split_once('@').is_some_and(|(d, _)| d == dataset))
            .cloned()
            .collect()
    }

    #[test]
    fn newest_common_matches_by_guid_not_name() {
        let (source, target) = source_and_target();
        let newest_common = |source: &Inventory, sd: &str, target: &Inventory, td: &str| {
            newest_common(&of(source, sd), &of(target, td))
        };
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
                ("nas1", Some(source.encode_to_vec())),
                ("nas2", Some(target.encode_to_vec())),
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
                ("nas1", Some(source.encode_to_vec())),
                ("nas3", Some(b"\xff\xff not protobuf".to_vec())),
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
