//! Releasing a replication task's holds when it is deleted, or from the datasets an edit dropped: its tag (`nasfleet:TASKID`) comes off every snapshot of those source datasets and of their replicas (and its cursor bookmarks off the sources), asked of each system's agent.

use crate::engine::state::SharedState;
use crate::store::PendingRelease;
use nasfleet_common::names::{replication_hold_tag, replication_target_path};
use nasfleet_proto::v1::{ReleaseHolds, ReplicationTaskSpec, agent_request};
use std::time::Duration;

/// How long one agent may take to release (it lists every snapshot).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(70);
/// Pauses between attempts on one system: a system that is briefly away
/// (an agent restart) gets the release within a minute; one that is away
/// longer, every five minutes for a day. What is still not released then
/// stays in the store and is tried again at the controller's next start.
const PAUSES: [Duration; 3] = [
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
];
const LATER_PAUSE: Duration = Duration::from_secs(300);
const LATER_ATTEMPTS: u32 = 288;

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

/// What deleting task `task_id` (replicating `spec`) leaves to release:
/// every dataset it held, per system. Stored with the deletion.
pub fn on_delete(task_id: u64, spec: &ReplicationTaskSpec) -> Vec<PendingRelease> {
    pending(task_id, held_datasets(spec))
}

/// What an edit of task `task_id` from `before` to `after` leaves to
/// release: the datasets `before` held and `after` no longer does.
pub fn on_edit(
    task_id: u64,
    before: &ReplicationTaskSpec,
    after: &ReplicationTaskSpec,
) -> Vec<PendingRelease> {
    pending(task_id, dropped_datasets(before, after))
}

fn pending(task_id: u64, per_system: Vec<(String, Vec<String>)>) -> Vec<PendingRelease> {
    per_system
        .into_iter()
        .map(|(system, datasets)| PendingRelease {
            task_id,
            system,
            datasets,
        })
        .collect()
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

/// Every release the store still holds, started again (the controller
/// starts).
pub fn resume_pending(state: &SharedState) {
    match state.store.pending_releases() {
        Ok(pending) if pending.is_empty() => {}
        Ok(pending) => {
            tracing::info!(
                count = pending.len(),
                "releasing holds of deleted or edited replication tasks"
            );
            release_in_background(state, pending);
        }
        Err(e) => tracing::warn!(error = %e, "could not read the releases still to be made"),
    }
}

/// Asks each system's agent to release its share of `pending` (stored
/// already), in the background; a release made is dropped from the store.
pub fn release_in_background(state: &SharedState, pending: Vec<PendingRelease>) {
    for release in pending {
        let state = state.clone();
        tokio::spawn(async move { release_until_done(&state, release).await });
    }
}

async fn release_until_done(state: &SharedState, release: PendingRelease) {
    let tag = replication_hold_tag(release.task_id);
    let system = release.system.clone();
    let pauses = PAUSES
        .into_iter()
        .chain(std::iter::repeat_n(LATER_PAUSE, LATER_ATTEMPTS as usize));
    let mut last_error = String::new();
    for (attempt, pause) in pauses.enumerate() {
        let request = agent_request::Body::ReleaseHolds(ReleaseHolds {
            tag: tag.clone(),
            datasets: release.datasets.clone(),
        });
        match state
            .sessions
            .request(&system, request, RELEASE_TIMEOUT)
            .await
        {
            Ok(response) if response.error.is_empty() => {
                tracing::info!(%system, %tag, "replication holds released");
                let (task_id, datasets) = (release.task_id, release.datasets.clone());
                let forgotten = state
                    .store
                    .write(move |w| w.remove_pending_release(task_id, &system, &datasets))
                    .await;
                if let Err(e) = forgotten {
                    tracing::warn!(error = %e, "a release was made but stays recorded; it is made again at the next start");
                }
                return;
            }
            Ok(response) => last_error = response.error,
            Err(e) => last_error = e.to_string(),
        }
        if attempt + 1 == PAUSES.len() {
            tracing::warn!(%system, %tag, datasets = ?release.datasets, error = %last_error,
                "holds of a replication task not released from datasets it no longer covers; trying every 5 minutes (or on that system: zfs release {tag} <snapshot>)");
        }
        tokio::time::sleep(pause).await;
    }
    tracing::warn!(%system, %tag, error = %last_error,
        "holds still not released after a day of trying; tried again at the controller's next start");
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
