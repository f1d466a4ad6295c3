//! One replication run on a source system: pre-flight checks of the target, the optional snapshot, then every dataset (and child) replicated as a step of its own.

use super::options::{ReplicateOptions, ReplicationError};
use super::replicas::snapshots_of;
use super::resume::Resumed;
use super::target::preflight;
use super::transfer::replicate_dataset;
use super::zfs_host::{LocalZfs, ZfsHost};
use crate::runs::context::{RunContext, RunFailure, rate};
use crate::zfs::{Dialect, Zfs, ZfsError};
use nasfleet_common::names::is_below;
use nasfleet_common::naming::NamingSchema;
use nasfleet_proto::v1::{ReplicaListing, ReplicationDataset, ReplicationWork};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long after a run starts the target agent's listing (taken at
/// dispatch) may stand in for a listing over ssh; later steps list anew.
/// Short: the listing should be about as fresh as one taken at the step.
const TARGET_LISTING_FRESH: Duration = Duration::from_secs(10);

/// Runs one replication work item; returns nothing but records bytes and steps in `ctx`.
pub(crate) async fn run(
    ctx: &mut RunContext<'_>,
    work: &ReplicationWork,
) -> Result<(), RunFailure> {
    let target = work.target.as_ref().ok_or_else(|| {
        RunFailure::Failed("The controller sent replication work without a target".into())
    })?;
    let started = Instant::now();
    let listed_by_target: HashMap<&str, &ReplicaListing> = work
        .target_replicas
        .iter()
        .map(|listing| (listing.dataset.as_str(), listing))
        .collect();
    let zfs = ctx.zfs.clone();
    // Every source system of a run reports its steps into one list, so
    // each name carries the system, as the dataset steps' names do.
    let system = ctx.identity.system.clone();
    let (host, target_dialect): (Box<dyn ZfsHost>, Dialect) = if target.ssh_host.is_empty() {
        (Box::new(LocalZfs), zfs.dialect)
    } else {
        let step = format!("{system} pre-flight");
        ctx.begin(&step)?;
        let outcome = preflight(ctx, target).await;
        let (remote, dialect) = ctx.end(&step, outcome)?;
        (Box::new(remote), dialect)
    };

    if !work.pre_snapshot_name.is_empty() {
        let step = format!("{system} snapshot");
        ctx.begin(&step)?;
        let outcome = pre_snapshot(ctx, &zfs, work).await;
        ctx.end(&step, outcome)?;
    }

    let mut options = ReplicateOptions::new(zfs.dialect, target_dialect);
    options.allow_overwrite = work.allow_overwrite;
    options.task_id = (work.task_id > 0).then_some(work.task_id);
    options.raw = !work.no_raw;
    options.rate_limit = (work.bandwidth_limit > 0).then_some(work.bandwidth_limit);
    let mut first_failure: Option<RunFailure> = None;
    for dataset in &work.datasets {
        for (source, destination) in dataset_pairs(&zfs, dataset).await? {
            ctx.check_cancelled()?;
            let step = format!("{system}:{source} → {destination}");
            ctx.begin(&step)?;
            options.target_listing = listed_by_target
                .get(destination.as_str())
                .filter(|_| started.elapsed() < TARGET_LISTING_FRESH)
                .map(|listing| snapshots_of(listing));
            let outcome =
                replicate_one(ctx, dataset, &source, &destination, host.as_ref(), &options).await;
            if let Err(failure) = ctx.end(&step, outcome) {
                if matches!(failure, RunFailure::Cancelled(_)) {
                    return Err(failure);
                }
                ctx.log(format!("FAILED {source}: {failure}"));
                first_failure.get_or_insert(failure);
            }
        }
    }
    match first_failure {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}

/// Takes this run's snapshot of every source dataset (`--create-snapshot-task`).
async fn pre_snapshot(
    ctx: &mut RunContext<'_>,
    zfs: &Zfs,
    work: &ReplicationWork,
) -> Result<((), String), RunFailure> {
    let (mut taken, mut there) = (0, 0);
    for dataset in &work.datasets {
        let name = format!("{}@{}", dataset.source, work.pre_snapshot_name);
        match zfs
            .create_snapshots(std::slice::from_ref(&name), work.pre_snapshot_recursive)
            .await
        {
            Ok(()) => {
                taken += 1;
                ctx.log(format!("created snapshot {name}"));
            }
            // Taken already this minute (e.g. by the companion snapshot task): that is the one we want.
            Err(ZfsError::SnapshotExists { .. }) => {
                there += 1;
                ctx.log(format!("snapshot {name} exists already; kept"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let detail = match there {
        0 => format!("@{}: {taken} taken", work.pre_snapshot_name),
        _ => format!(
            "@{}: {taken} taken, {there} there already (taken earlier this minute, e.g. by its snapshot task)",
            work.pre_snapshot_name
        ),
    };
    Ok(((), detail))
}

/// The (source, target) dataset pairs of one replication dataset: itself,
/// and every descendant when recursive, parents first.
pub(super) async fn dataset_pairs(
    zfs: &Zfs,
    dataset: &ReplicationDataset,
) -> Result<Vec<(String, String)>, RunFailure> {
    if !dataset.recursive {
        return Ok(vec![(dataset.source.clone(), dataset.target.clone())]);
    }
    let pool = dataset.source.split('/').next().unwrap_or_default();
    let listing = zfs.list_datasets_and_snapshots(pool).await?;
    let mut pairs: Vec<(String, String)> = listing
        .datasets
        .iter()
        .filter(|d| d.name == dataset.source || is_below(&d.name, &dataset.source))
        .map(|d| {
            let suffix = &d.name[dataset.source.len()..];
            (d.name.clone(), format!("{}{suffix}", dataset.target))
        })
        .collect();
    if pairs.is_empty() {
        return Err(RunFailure::Failed(format!(
            "Dataset not found: '{}'",
            dataset.source
        )));
    }
    // "a" sorts before "a/b": parents are received before their children.
    pairs.sort();
    Ok(pairs)
}

async fn replicate_one(
    ctx: &mut RunContext<'_>,
    dataset: &ReplicationDataset,
    source: &str,
    destination: &str,
    host: &dyn ZfsHost,
    options: &ReplicateOptions,
) -> Result<((), String), RunFailure> {
    let matching = matching_schemas(dataset)?;

    let reporter = ctx.progress_reporter();
    let started = Instant::now();
    let moved = ctx.step_bytes();
    let counter = moved.clone();
    // Of this step, so that watching it can say how far it is and how
    // long is left.
    let mut progress = move |bytes: u64, estimate: Option<u64>, label: &str| {
        counter.store(bytes, std::sync::atomic::Ordering::Relaxed);
        reporter.report(
            source,
            format!("sending {label}"),
            bytes,
            estimate,
            rate(bytes, started),
        );
    };
    let mut cancel = ctx.cancel_flag.clone();
    let result = replicate_dataset(
        source,
        destination,
        &matching,
        host,
        options,
        &mut progress,
        &mut cancel,
    )
    .await;
    match result {
        Ok(outcome) => {
            moved.store(outcome.bytes, std::sync::atomic::Ordering::Relaxed);
            ctx.bytes += outcome.bytes;
            let resumed_at = match &outcome.resumed {
                Some(Resumed::Completed {
                    at,
                    bytes,
                    snapshot,
                }) => {
                    ctx.log(format!(
                        "resumed {source}@{snapshot} to {destination} at {at} bytes ({bytes} more)"
                    ));
                    Some(*at)
                }
                Some(Resumed::Discarded { reason }) => {
                    ctx.log(format!(
                        "discarded a partial receive on {destination} that cannot be resumed: {reason}"
                    ));
                    None
                }
                None => None,
            };
            for transfer in &outcome.transferred {
                ctx.log(format!("sent {} to {destination}", transfer.label(source)));
            }
            if outcome.features.raw {
                ctx.log(format!(
                    "{source} is encrypted: sent raw, {destination} keeps it encrypted"
                ));
            }
            for note in &outcome.notes {
                ctx.log(format!("WARNING {source}: {note}"));
            }
            let sent = if outcome.up_to_date && resumed_at.is_none() {
                "up to date".to_owned()
            } else {
                format!(
                    "{} snapshot(s), {} bytes",
                    outcome.snapshots(),
                    outcome.bytes
                )
            };
            let detail = match resumed_at {
                Some(at) => format!("resumed at {at} bytes; {sent}"),
                None => sent,
            };
            Ok(((), detail))
        }
        // What moved before the failure still moved: the run's total says so.
        Err(e) => {
            ctx.bytes += moved.load(std::sync::atomic::Ordering::Relaxed);
            Err(failure_of(ctx, source, e))
        }
    }
}

/// Whether a snapshot name matches one of `dataset`'s naming schemas:
/// only those are replicated.
pub(super) fn matching_schemas(
    dataset: &ReplicationDataset,
) -> Result<impl Fn(&str) -> bool + Send + Sync + use<>, RunFailure> {
    let schemas: Vec<NamingSchema> = dataset
        .naming_schemas
        .iter()
        .map(|s| {
            NamingSchema::new(s).map_err(|e| RunFailure::Failed(format!("naming schema: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(move |name: &str| schemas.iter().any(|s| s.parse(name).is_some()))
}

/// Why a dataset's replication stopped, as its step says it.
fn failure_of(ctx: &RunContext<'_>, source: &str, error: ReplicationError) -> RunFailure {
    match error {
        ReplicationError::Cancelled { .. } => {
            if let Err(cancelled) = ctx.check_cancelled() {
                return cancelled;
            }
            RunFailure::Failed(format!("replication of '{source}' was cancelled"))
        }
        other => RunFailure::Failed(other.to_string()),
    }
}
