//! Holds on a replication's incremental base: once a dataset is replicated, its newest common snapshot carries the task's tag (`nasfleet:TASKID`) on the source and on the target, and the tag leaves every older snapshot only after that, so neither retention nor a person's `zfs destroy` can take the base the next incremental needs.

use super::zfs_host::{LocalZfs, ZfsHost};
use crate::host::process;
use crate::zfs;
use std::time::Duration;

/// One side of a replicated dataset, for [`move_hold`].
pub(super) struct Side<'a> {
    pub host: &'a dyn ZfsHost,
    pub dataset: &'a str,
    /// The snapshot (after '@') that gets the hold: the newest common one.
    pub newest: &'a str,
    /// The base the run started from (after '@'), which had the hold
    /// unless this is the task's first run; `None`: not known.
    pub previous: Option<&'a str>,
    /// The hold is on `newest` already (it rode along with the receive).
    pub held: bool,
    /// The dataset came into being with this run's receive, so none of
    /// its older snapshots can carry the tag: nothing to release there
    /// (on a target, a remote listing fewer).
    pub fresh: bool,
}

/// Holds `tag` on each side's newest snapshot (a hold already there is
/// fine), then releases it from the older ones, the two sides at the same
/// time. When a hold cannot be placed, older holds stay: a base keeps its
/// protection until its successor has it on both sides. Releasing: a side
/// reached over ssh whose previous base is known releases just that one
/// (one remote call); otherwise every other held snapshot of the side is
/// listed and released (one held only by others answers "no such tag",
/// which is fine), which also clears what an interrupted run left. What
/// failed comes back as notes for the run's log; it does not undo the
/// transfer.
pub(super) async fn move_hold(
    tag: &str,
    source: Option<Side<'_>>,
    target: Side<'_>,
    timeout: Duration,
) -> Vec<String> {
    let (on_source, on_target) = tokio::join!(
        async {
            match &source {
                Some(side) => place(tag, side, timeout).await,
                None => Ok(()),
            }
        },
        place(tag, &target, timeout)
    );
    let placed: Vec<String> = [on_source, on_target]
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if !placed.is_empty() {
        return placed;
    }
    let (mut notes, on_target) = tokio::join!(
        async {
            match &source {
                Some(side) => release_older(tag, side, timeout).await,
                None => Vec::new(),
            }
        },
        release_older(tag, &target, timeout)
    );
    notes.extend(on_target);
    notes
}

/// Holds `tag` on `side`'s newest snapshot unless it is held already.
async fn place(tag: &str, side: &Side<'_>, timeout: Duration) -> Result<(), String> {
    if side.held {
        return Ok(());
    }
    hold(
        side.host,
        tag,
        &format!("{}@{}", side.dataset, side.newest),
        timeout,
    )
    .await
}

/// Releases `tag` from `side`'s snapshots other than its newest.
async fn release_older(tag: &str, side: &Side<'_>, timeout: Duration) -> Vec<String> {
    if side.fresh {
        return Vec::new();
    }
    let newest = format!("{}@{}", side.dataset, side.newest);
    if side.host.can_chain()
        && let Some(previous) = side.previous
    {
        let previous = format!("{}@{previous}", side.dataset);
        if previous == newest {
            return Vec::new();
        }
        return release(side.host, tag, &previous, timeout)
            .await
            .err()
            .into_iter()
            .collect();
    }
    let mut notes = Vec::new();
    match held(side.host, side.dataset, false, timeout).await {
        Ok(held) => {
            for snapshot in held.iter().filter(|s| **s != newest) {
                if let Err(note) = release(side.host, tag, snapshot, timeout).await {
                    notes.push(note);
                }
            }
        }
        Err(note) => notes.push(note),
    }
    notes
}

/// Releases `tag` from every snapshot of `dataset` and its descendants on
/// this system (a task is deleted). Returns how many held snapshots it
/// went through (some may have been held only by others).
pub async fn release_all(tag: &str, dataset: &str, timeout: Duration) -> Result<usize, String> {
    let local = LocalZfs;
    let held = held(&local, dataset, true, timeout).await?;
    for snapshot in &held {
        release(&local, tag, snapshot, timeout).await?;
    }
    Ok(held.len())
}

async fn hold(
    host: &dyn ZfsHost,
    tag: &str,
    snapshot: &str,
    timeout: Duration,
) -> Result<(), String> {
    let args = zfs::hold_args(tag, snapshot).map_err(|e| e.to_string())?;
    let (program, args) = host.command(args);
    match process::run(&program, &args, timeout).await {
        Ok(_) => Ok(()),
        Err(e) if e.stderr().is_some_and(zfs::is_hold_present) => Ok(()),
        Err(e) => Err(format!(
            "could not hold {snapshot} ({}) as the next base: {e}",
            host.describe()
        )),
    }
}

async fn release(
    host: &dyn ZfsHost,
    tag: &str,
    snapshot: &str,
    timeout: Duration,
) -> Result<(), String> {
    let args = zfs::release_args(tag, snapshot).map_err(|e| e.to_string())?;
    let (program, args) = host.command(args);
    match process::run(&program, &args, timeout).await {
        Ok(_) => Ok(()),
        Err(e) if e.stderr().is_some_and(zfs::is_hold_absent) => Ok(()),
        // Destroyed since it was listed: it holds nothing any more.
        Err(e) if e.stderr().is_some_and(zfs::is_missing_dataset) => Ok(()),
        Err(e) => Err(format!(
            "could not release the hold {tag} on {snapshot} ({}): {e}",
            host.describe()
        )),
    }
}

/// The snapshots of `dataset` (and of its descendants when `recursive`)
/// that have any hold, by their `userrefs`.
async fn held(
    host: &dyn ZfsHost,
    dataset: &str,
    recursive: bool,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let args = zfs::held_snapshots_args(dataset, recursive).map_err(|e| e.to_string())?;
    let (program, args) = host.command(args);
    match process::run(&program, &args, timeout).await {
        Ok(out) => Ok(zfs::parse_held_snapshots(&String::from_utf8_lossy(
            &out.stdout,
        ))),
        Err(e) if e.stderr().is_some_and(zfs::is_missing_dataset) => Ok(Vec::new()),
        Err(e) => Err(format!(
            "could not list the held snapshots of {dataset} ({}): {e}",
            host.describe()
        )),
    }
}
