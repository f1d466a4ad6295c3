//! The target side of a replication run's dispatch: this system's snapshots of the datasets a source is about to replicate to, so the source can plan without listing them over ssh.

use super::transfer::local_snapshots;
use crate::zfs::{SnapshotInfo, SnapshotListing, Zfs};
use nasfleet_proto::v1::{ReplicaListing, ReplicaSnapshot};
use std::time::{Duration, Instant};

/// Most datasets a target's agent lists for one dispatch (the controller
/// asks for at most as many), and the time it may spend on them: the
/// controller stops waiting after 10 s.
const MAX_LISTED_REPLICAS: usize = 256;
const REPLICA_LISTING_BUDGET: Duration = Duration::from_secs(8);

/// The target side of a replication run's dispatch: the snapshots of each
/// of `datasets` on this system. A dataset that cannot be listed (or is
/// over the limits) is left out; its source lists it over ssh.
pub async fn list_replicas(zfs: &Zfs, datasets: &[String]) -> Vec<ReplicaListing> {
    let started = Instant::now();
    let mut replicas = Vec::new();
    for dataset in datasets.iter().take(MAX_LISTED_REPLICAS) {
        if started.elapsed() > REPLICA_LISTING_BUDGET {
            tracing::info!(
                listed = replicas.len(),
                asked = datasets.len(),
                "listing replicas took too long; the sources list the rest over ssh"
            );
            break;
        }
        match local_snapshots(zfs.dialect, dataset, zfs.timeout).await {
            Ok(snapshots) => replicas.push(listing_of(dataset, snapshots)),
            Err(err) => tracing::info!(%dataset, %err, "replica not listed"),
        }
    }
    replicas
}

fn listing_of(dataset: &str, listed: Option<SnapshotListing>) -> ReplicaListing {
    let exists = listed.is_some();
    let listed = listed.unwrap_or_default();
    ReplicaListing {
        dataset: dataset.to_owned(),
        exists,
        snapshots: listed
            .snapshots
            .into_iter()
            .map(|s| ReplicaSnapshot {
                name: s.name,
                guid: s.guid,
                creation_unix: s.creation,
                createtxg: s.createtxg,
            })
            .collect(),
        resume_token: listed.resume_token.unwrap_or_default(),
    }
}

/// What [`listing_of`] packed: `None` when the dataset did not exist.
/// (Bookmarks and encryption stay home: the source needs neither of the
/// target.)
pub(super) fn snapshots_of(listing: &ReplicaListing) -> Option<SnapshotListing> {
    listing.exists.then(|| SnapshotListing {
        snapshots: listing
            .snapshots
            .iter()
            .map(|s| SnapshotInfo {
                name: s.name.clone(),
                guid: s.guid,
                creation: s.creation_unix,
                createtxg: s.createtxg,
            })
            .collect(),
        resume_token: Some(listing.resume_token.clone()).filter(|t| !t.is_empty()),
        ..SnapshotListing::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_listings_travel_intact() {
        let snapshots = vec![
            SnapshotInfo {
                name: "auto-2026-01-01_00-00".into(),
                guid: 18_000_000_000_000_000_000,
                creation: 1_767_225_600,
                createtxg: 12,
            },
            SnapshotInfo {
                name: "with space".into(),
                guid: 7,
                creation: 1_767_225_660,
                createtxg: 13,
            },
        ];
        let listed = SnapshotListing {
            snapshots,
            resume_token: Some("1-abc-de-789c".into()),
            ..SnapshotListing::default()
        };
        let listing = listing_of("backup/nas1/tank a", Some(listed.clone()));
        assert_eq!(listing.dataset, "backup/nas1/tank a");
        assert!(listing.exists);
        assert_eq!(snapshots_of(&listing), Some(listed));

        let absent = listing_of("backup/nas1/gone", None);
        assert!(!absent.exists);
        assert_eq!(snapshots_of(&absent), None);
        // An existing dataset without snapshots is not an absent one.
        let empty = listing_of("backup/nas1/empty", Some(SnapshotListing::default()));
        assert_eq!(snapshots_of(&empty), Some(SnapshotListing::default()));
    }
}
