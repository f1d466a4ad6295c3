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
}

/// Holds `tag` on each side's newest snapshot (a hold already there is
/// fine), then releases it from every other held snapshot of that side
/// (one held only by others answers "no such tag", which is fine). When a
/// hold cannot be placed, older holds stay: a base keeps its protection
/// until its successor has it. What failed comes back as notes for the
/// run's log; it does not undo the transfer.
pub(super) async fn move_hold(tag: &str, sides: &[Side<'_>], timeout: Duration) -> Vec<String> {
    let mut notes = Vec::new();
    for side in sides {
        let newest = format!("{}@{}", side.dataset, side.newest);
        if let Err(note) = hold(side.host, tag, &newest, timeout).await {
            notes.push(note);
            return notes;
        }
    }
    for side in sides {
        let newest = format!("{}@{}", side.dataset, side.newest);
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
