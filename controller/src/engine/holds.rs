//! Releasing a deleted replication task's holds: its tag (`nasfleet:TASKID`) comes off every snapshot of its source datasets and of their replicas, asked of each system's agent.

use crate::engine::state::SharedState;
use nasfleet_common::names::{replication_hold_tag, replication_target_path};
use nasfleet_proto::v1::{ReleaseHolds, ReplicationTaskSpec, agent_request};
use std::time::Duration;

/// How long one agent may take to release (it lists every snapshot).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(70);
/// Attempts per system, and the pause between them: a system that is
/// briefly away (an agent restart) still gets the release.
const ATTEMPTS: u32 = 3;
const PAUSE: Duration = Duration::from_secs(10);

/// The datasets of each system of `spec` whose snapshots may carry the
/// task's hold: the sources on their systems, the replicas on the target.
fn held_datasets(spec: &ReplicationTaskSpec) -> Vec<(String, Vec<String>)> {
    let mut per_system: Vec<(String, Vec<String>)> = Vec::new();
    let mut add =
        |system: &str, dataset: String| match per_system.iter_mut().find(|(s, _)| s == system) {
            Some((_, datasets)) if datasets.contains(&dataset) => {}
            Some((_, datasets)) => datasets.push(dataset),
            None => per_system.push((system.to_owned(), vec![dataset])),
        };
    for source in &spec.sources {
        for dataset in &source.datasets {
            add(&source.system, dataset.clone());
            add(
                &spec.target_system,
                replication_target_path(&spec.target_dataset, &source.system, dataset),
            );
        }
    }
    per_system
}

/// Releases task `task_id`'s holds on every system of `spec`, in the
/// background (a deletion does not wait for agents). A system that cannot
/// be reached after [`ATTEMPTS`] keeps the holds; the log says which and
/// how to release them by hand.
pub fn release_in_background(state: &SharedState, task_id: u64, spec: &ReplicationTaskSpec) {
    let tag = replication_hold_tag(task_id);
    for (system, datasets) in held_datasets(spec) {
        let state = state.clone();
        let tag = tag.clone();
        tokio::spawn(async move {
            let mut last_error = String::new();
            for attempt in 1..=ATTEMPTS {
                let request = agent_request::Body::ReleaseHolds(ReleaseHolds {
                    tag: tag.clone(),
                    datasets: datasets.clone(),
                });
                match state
                    .sessions
                    .request(&system, request, RELEASE_TIMEOUT)
                    .await
                {
                    Ok(response) if response.error.is_empty() => {
                        tracing::info!(%system, %tag, "replication holds released");
                        return;
                    }
                    Ok(response) => last_error = response.error,
                    Err(e) => last_error = e.to_string(),
                }
                if attempt < ATTEMPTS {
                    tokio::time::sleep(PAUSE).await;
                }
            }
            tracing::warn!(%system, %tag, datasets = ?datasets, error = %last_error,
                "holds of a deleted replication task not released; on that system: zfs release {tag} <snapshot>");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nasfleet_proto::v1::ReplicationSource;

    #[test]
    fn sources_and_their_replicas_each_on_their_system() {
        let spec = ReplicationTaskSpec {
            sources: vec![
                ReplicationSource {
                    system: "nas1".into(),
                    datasets: vec!["tank/a".into(), "tank/b".into()],
                    ..Default::default()
                },
                ReplicationSource {
                    system: "nas2".into(),
                    datasets: vec!["tank/a".into()],
                    ..Default::default()
                },
            ],
            target_system: "nas2".into(),
            target_dataset: "backup".into(),
            ..Default::default()
        };
        assert_eq!(
            held_datasets(&spec),
            [
                (
                    "nas1".to_owned(),
                    vec!["tank/a".to_owned(), "tank/b".to_owned()]
                ),
                (
                    "nas2".to_owned(),
                    vec![
                        "backup/nas1/tank/a".to_owned(),
                        "backup/nas1/tank/b".to_owned(),
                        "tank/a".to_owned(),
                        "backup/nas2/tank/a".to_owned()
                    ]
                ),
            ]
        );
    }
}
