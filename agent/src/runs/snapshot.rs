//! One periodic snapshot task run: take the task's snapshots (atomically where zfs can), then destroy what its retention says has expired, and nothing else.

use super::context::{RunContext, RunFailure};
use super::retention::{self, RetentionPolicy};
use crate::zfs::{Zfs, ZfsError};
use nasfleet_common::names::is_below;
use nasfleet_common::naming::NamingSchema;
use nasfleet_proto::v1::SnapshotWork;
use std::collections::HashSet;
use std::time::Duration;

/// Datasets a snapshot task covers: the dataset, plus every descendant when
/// recursive, minus excluded subtrees. `all` is every dataset of the pool.
pub fn covered_datasets(
    dataset: &str,
    recursive: bool,
    exclude: &[String],
    all: &[String],
) -> Vec<String> {
    let under = |name: &str, parent: &str| name == parent || is_below(name, parent);
    if !recursive {
        return vec![dataset.to_owned()];
    }
    all.iter()
        .filter(|name| under(name, dataset) && !exclude.iter().any(|e| under(name, e)))
        .cloned()
        .collect()
}

/// One periodic snapshot task run: take the snapshot, then apply retention.
pub(crate) async fn run(ctx: &mut RunContext<'_>, work: &SnapshotWork) -> Result<(), RunFailure> {
    let zfs = ctx.zfs.clone();
    let pool = work
        .dataset
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let listing = zfs.list_datasets_and_snapshots(&pool).await?;
    let all: Vec<String> = listing.datasets.iter().map(|d| d.name.clone()).collect();
    if !all.contains(&work.dataset) {
        return Err(RunFailure::Failed(format!(
            "Dataset not found: '{}'",
            work.dataset
        )));
    }
    let covered = covered_datasets(&work.dataset, work.recursive, &work.exclude, &all);

    ctx.begin("snapshot")?;
    let outcome = take_snapshots(ctx, &zfs, work, &covered).await;
    let created = ctx.end("snapshot", outcome)?;

    let Some(retention) = &work.retention else {
        return Ok(());
    };
    ctx.begin("retention")?;
    let outcome = apply_retention(ctx, &zfs, work, retention, &covered, &created).await;
    ctx.end("retention", outcome)
}

/// Takes the task's snapshots; returns their full names.
///
/// A snapshot of this name that exists already (a second run within the
/// same minute of a minute-resolution schema) is the snapshot this run
/// wanted: it is kept and counted, not an error.
async fn take_snapshots(
    ctx: &mut RunContext<'_>,
    zfs: &Zfs,
    work: &SnapshotWork,
    covered: &[String],
) -> Result<(Vec<String>, String), RunFailure> {
    let wanted: Vec<String> = covered
        .iter()
        .map(|d| format!("{d}@{}", work.snapshot_name))
        .collect();
    let (existing, _) = zfs.list_snapshots(&work.dataset, work.recursive).await?;
    let existing: HashSet<String> = existing.into_iter().map(|s| s.name).collect();
    let missing: Vec<String> = wanted
        .iter()
        .filter(|n| !existing.contains(*n))
        .cloned()
        .collect();
    for name in wanted.iter().filter(|n| existing.contains(*n)) {
        ctx.log(format!("snapshot {name} exists already; kept"));
    }
    if missing.len() == wanted.len() && work.recursive && work.exclude.is_empty() {
        // One recursive snapshot is atomic across the whole tree.
        zfs.create_snapshots(&[format!("{}@{}", work.dataset, work.snapshot_name)], true)
            .await?;
    } else if !missing.is_empty() {
        zfs.create_snapshots(&missing, false).await?;
    }
    for name in &missing {
        ctx.log(format!("created snapshot {name}"));
    }
    let detail = format!(
        "{} snapshot(s) @{} ({} new)",
        wanted.len(),
        work.snapshot_name,
        missing.len()
    );
    Ok((wanted, detail))
}

/// Destroys the task's expired snapshots, and nothing else.
async fn apply_retention(
    ctx: &mut RunContext<'_>,
    zfs: &Zfs,
    work: &SnapshotWork,
    retention: &nasfleet_proto::v1::Retention,
    covered: &[String],
    created: &[String],
) -> Result<((), String), RunFailure> {
    // Guessing could destroy the base the next incremental replication needs.
    if !retention.protection_unknown.is_empty() {
        let detail = format!(
            "nothing destroyed: the snapshots replication needs could not be determined ({})",
            retention.protection_unknown
        );
        ctx.log(detail.clone());
        return Ok(((), detail));
    }
    let policy = RetentionPolicy {
        schema: NamingSchema::new(&retention.naming_schema)
            .map_err(|e| RunFailure::Failed(format!("naming schema: {e}")))?,
        lifetime: Duration::from_secs(retention.lifetime_secs),
        timezone: nasfleet_common::schedule::parse_timezone(&retention.timezone)
            .map_err(|e| RunFailure::Failed(e.to_string()))?,
        // Never destroy what this run just took, whatever the clocks say.
        protected: retention.protected.iter().chain(created).cloned().collect(),
    };
    let (snapshots, _) = zfs.list_snapshots(&work.dataset, work.recursive).await?;
    let names: Vec<String> = snapshots.into_iter().map(|s| s.name).collect();
    let covered_set: HashSet<String> = covered.iter().cloned().collect();
    let doomed = retention::expired(&names, &covered_set, &policy, chrono::Utc::now());
    let mut held = 0;
    for name in &doomed {
        ctx.check_cancelled()?;
        match zfs.destroy_snapshot(name).await {
            Ok(()) => ctx.log(format!("destroyed expired snapshot {name}")),
            // Someone destroyed it meanwhile: the goal is reached.
            Err(ZfsError::SnapshotNotFound { .. }) => {
                ctx.log(format!("expired snapshot {name} was already gone"))
            }
            // A hold (a replication's base, or a person's) outranks the
            // lifetime: it stays until released.
            Err(ZfsError::SnapshotBusy { .. }) => {
                held += 1;
                ctx.log(format!(
                    "kept expired snapshot {name}: it is held or in use (zfs holds)"
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let detail = match held {
        0 => format!("{} expired snapshot(s) destroyed", doomed.len()),
        held => format!(
            "{} expired snapshot(s) destroyed, {held} kept: held or in use",
            doomed.len() - held
        ),
    };
    Ok(((), detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covered_datasets_follow_recursion_and_exclusions() {
        let all: Vec<String> = [
            "tank",
            "tank/a",
            "tank/a/x",
            "tank/a/y",
            "tank/a/y/deep",
            "tank/ab",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(covered_datasets("tank/a", false, &[], &all), vec!["tank/a"]);
        assert_eq!(
            covered_datasets("tank/a", true, &["tank/a/y".into()], &all),
            vec!["tank/a", "tank/a/x"]
        );
        // "tank/ab" is a sibling, not a child, of "tank/a".
        assert_eq!(
            covered_datasets("tank/a", true, &[], &all),
            vec!["tank/a", "tank/a/x", "tank/a/y", "tank/a/y/deep"]
        );
    }
}
