//! The source side of a replication dry run: what a run of this work would send now, dataset by dataset, planned from the target agent's listing and measured with `zfs send -n -P`; nothing is sent, taken or changed.

use super::options::ReplicateOptions;
use super::replicas::snapshots_of;
use super::run::{dataset_pairs, matching_schemas};
use super::transfer::{estimate_dataset, local_snapshots};
use crate::zfs::{self, Dialect, Zfs};
use nasfleet_proto::v1::{DatasetEstimate, ReplicationWork};
use tokio::sync::watch;

/// One [`DatasetEstimate`] per dataset of `work` (children of a recursive
/// one included), named `SYSTEM:DATASET` as a run's steps are. A remote
/// target dataset that the target's agent did not list is not guessed
/// at: a run would list it over ssh, which an estimate does not do.
pub async fn estimate_replication(
    zfs: &Zfs,
    system: &str,
    work: &ReplicationWork,
) -> Vec<DatasetEstimate> {
    let target_dialect = work
        .target
        .as_ref()
        .and_then(|t| Dialect::from_proto(t.zfs_dialect))
        .unwrap_or(zfs.dialect);
    // This system is the target too: it lists the target itself.
    let local = work.target.as_ref().is_none_or(|t| t.ssh_host.is_empty());
    let mut options = ReplicateOptions::new(zfs.dialect, target_dialect);
    options.allow_overwrite = work.allow_overwrite;
    options.raw = !work.no_raw;
    // Nobody cancels an estimate: the controller's timeout bounds it.
    let (_, mut never_cancelled) = watch::channel(false);
    let mut estimates = Vec::new();
    for dataset in &work.datasets {
        let named = |source: &str, target: &str| DatasetEstimate {
            source: format!("{system}:{source}"),
            target: target.to_owned(),
            ..Default::default()
        };
        let planned = match matching_schemas(dataset) {
            Ok(matching) => dataset_pairs(zfs, dataset).await.map(|p| (matching, p)),
            Err(failure) => Err(failure),
        };
        let (matching, pairs) = match planned {
            Ok(planned) => planned,
            Err(failure) => {
                estimates.push(DatasetEstimate {
                    error: failure.to_string(),
                    ..named(&dataset.source, &dataset.target)
                });
                continue;
            }
        };
        for (source, target) in pairs {
            let listed = if local {
                match local_snapshots(zfs.dialect, &target, zfs::DEFAULT_TIMEOUT).await {
                    Ok(listed) => listed,
                    Err(e) => {
                        estimates.push(DatasetEstimate {
                            error: e.to_string(),
                            ..named(&source, &target)
                        });
                        continue;
                    }
                }
            } else if let Some(listing) = work.target_replicas.iter().find(|l| l.dataset == target)
            {
                snapshots_of(listing)
            } else {
                estimates.push(DatasetEstimate {
                    error: format!(
                        "'{target}' was not listed by the target's agent; a run lists it over ssh"
                    ),
                    ..named(&source, &target)
                });
                continue;
            };
            let estimate = estimate_dataset(
                &source,
                &target,
                &matching,
                listed.as_ref(),
                &options,
                &mut never_cancelled,
            )
            .await;
            estimates.push(match estimate {
                Ok(estimate) => {
                    let snapshots = u32::try_from(estimate.snapshots()).unwrap_or(u32::MAX);
                    let (base, base_guid) = estimate.base.unwrap_or_default();
                    DatasetEstimate {
                        snapshots,
                        bytes: estimate.bytes.unwrap_or(0),
                        bytes_known: estimate.bytes.is_some(),
                        base_is_bookmark: base.starts_with('#'),
                        base,
                        base_guid,
                        discards: u32::try_from(estimate.discards).unwrap_or(u32::MAX),
                        resumes: estimate.resumes_at.is_some(),
                        resume_bytes: estimate.resumes_at.unwrap_or(0),
                        raw: estimate.features.raw,
                        ..named(&source, &target)
                    }
                }
                Err(e) => DatasetEstimate {
                    error: e.to_string(),
                    ..named(&source, &target)
                },
            });
        }
    }
    estimates
}
