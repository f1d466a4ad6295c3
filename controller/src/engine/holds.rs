//! Releasing a replication task's holds when it is deleted, or from the datasets an edit dropped: its tag (`nasfleet:TASKID`) comes off every snapshot of those source datasets and of their replicas (and its cursor bookmarks off the sources), asked of each system's agent.

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
    release_on(state, task_id, held_datasets(spec));
}

/// Releases task `task_id`'s holds from the datasets `before` (the task
/// as it was) covered and `after` (as edited) no longer does, in the
/// background, as [`release_in_background`] does.
pub fn release_dropped_in_background(
    state: &SharedState,
    task_id: u64,
    before: &ReplicationTaskSpec,
    after: &ReplicationTaskSpec,
) {
    let dropped = dropped_datasets(before, after);
    if !dropped.is_empty() {
        release_on(state, task_id, dropped);
    }
}

/// The datasets of each system that `before` holds and `after` does not.
fn dropped_datasets(
    before: &ReplicationTaskSpec,
    after: &ReplicationTaskSpec,
) -> Vec<(String, Vec<String>)> {
    let kept = held_datasets(after);
    held_datasets(before)
        .into_iter()
        .filter_map(|(system, datasets)| {
            let still: &[String] = kept
                .iter()
                .find(|(s, _)| *s == system)
                .map_or(&[], |(_, d)| d.as_slice());
            let gone: Vec<String> = datasets
                .into_iter()
                .filter(|d| !still.contains(d))
                .collect();
            (!gone.is_empty()).then_some((system, gone))
        })
        .collect()
}

fn release_on(state: &SharedState, task_id: u64, per_system: Vec<(String, Vec<String>)>) {
    let tag = replication_hold_tag(task_id);
    for (system, datasets) in per_system {
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
                "holds of a replication task not released from datasets it no longer covers; on that system: zfs release {tag} <snapshot>");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nasfleet_proto::v1::ReplicationSource;

    #[test]
    fn an_edit_releases_only_what_it_dropped() {
        let source = |system: &str, datasets: &[&str]| ReplicationSource {
            system: system.into(),
            datasets: datasets.iter().map(|d| (*d).to_owned()).collect(),
            ..Default::default()
        };
        let before = ReplicationTaskSpec {
            sources: vec![source("nas1", &["tank/a", "tank/b"])],
            target_system: "nas3".into(),
            target_dataset: "backup".into(),
            ..Default::default()
        };
        let after = ReplicationTaskSpec {
            sources: vec![source("nas1", &["tank/a"]), source("nas2", &["pool"])],
            ..before.clone()
        };
        assert_eq!(
            dropped_datasets(&before, &after),
            [
                ("nas1".to_owned(), vec!["tank/b".to_owned()]),
                ("nas3".to_owned(), vec!["backup/nas1/tank/b".to_owned()]),
            ]
        );
        assert!(dropped_datasets(&before, &before).is_empty());
        // A new target: every old replica is dropped, the sources stay.
        let moved = ReplicationTaskSpec {
            target_dataset: "elsewhere".into(),
            ..before.clone()
        };
        assert_eq!(
            dropped_datasets(&before, &moved),
            [(
                "nas3".to_owned(),
                vec![
                    "backup/nas1/tank/a".to_owned(),
                    "backup/nas1/tank/b".to_owned()
                ]
            )]
        );
    }

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
