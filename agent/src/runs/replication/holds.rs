//! Holds on a replication's incremental base: once a dataset is replicated, its newest common snapshot carries the task's tag (`nasfleet:TASKID`) on the source and on the target, and the tag leaves every older snapshot only after that, so neither retention nor a person's `zfs destroy` can take the base the next incremental needs.

use super::zfs_host::ZfsHost;
use crate::host::process;
use crate::zfs;
use std::time::Duration;

/// How many snapshots one `zfs holds` call names: the words go over ssh
/// to the target, so the line stays well below any argument limit.
const HOLDS_PER_CALL: usize = 200;

/// One side of a replicated dataset, for [`move_hold`].
pub(super) struct Side<'a> {
    pub host: &'a dyn ZfsHost,
    pub dataset: &'a str,
    /// The snapshot (after '@') that gets the hold: the newest common one.
    pub newest: &'a str,
    /// The snapshots (after '@') that existed before this run: any of
    /// them may carry the tag from an earlier run.
    pub before: Vec<String>,
}

/// Holds `tag` on each side's newest snapshot (a hold already there is
/// fine), then releases it from every other snapshot of that side that
/// carries it. When a hold cannot be placed, older holds stay: a base
/// keeps its protection until its successor has it. What failed comes
/// back as notes for the run's log; it does not undo the transfer.
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
        let older: Vec<String> = side
            .before
            .iter()
            .filter(|name| name.as_str() != side.newest)
            .map(|name| format!("{}@{name}", side.dataset))
            .collect();
        match tagged(side.host, tag, &older, timeout).await {
            Ok(held) => {
                for snapshot in held {
                    if let Err(note) = release(side.host, tag, &snapshot, timeout).await {
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
/// this system (a task is deleted). Returns how many were released.
pub async fn release_all(tag: &str, dataset: &str, timeout: Duration) -> Result<usize, String> {
    let local = super::zfs_host::LocalZfs;
    let args = zfs::recursive_snapshot_names_args(dataset).map_err(|e| e.to_string())?;
    let (program, args) = local.command(args);
    let listed = process::run(&program, &args, timeout)
        .await
        .map_err(|e| format!("listing the snapshots of {dataset}: {e}"))?;
    let snapshots: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    let held = tagged(&local, tag, &snapshots, timeout).await?;
    for snapshot in &held {
        release(&local, tag, snapshot, timeout).await?;
    }
    Ok(held.len())
}

async fn hold(host: &dyn ZfsHost, tag: &str, snapshot: &str, timeout: Duration) -> Result<(), String> {
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
        Err(e) => Err(format!(
            "could not release the hold {tag} on {snapshot} ({}): {e}",
            host.describe()
        )),
    }
}

/// Those of `snapshots` (full names) that carry `tag`.
async fn tagged(
    host: &dyn ZfsHost,
    tag: &str,
    snapshots: &[String],
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let mut held = Vec::new();
    for chunk in snapshots.chunks(HOLDS_PER_CALL) {
        let args = zfs::holds_args(chunk).map_err(|e| e.to_string())?;
        let (program, args) = host.command(args);
        let out = match process::run(&program, &args, timeout).await {
            Ok(out) => out,
            // Destroyed since it was listed: it holds nothing any more.
            Err(e) if e.stderr().is_some_and(zfs::is_missing_dataset) => continue,
            Err(e) => {
                return Err(format!(
                    "could not list the holds ({}): {e}",
                    host.describe()
                ));
            }
        };
        held.extend(
            zfs::parse_holds(&String::from_utf8_lossy(&out.stdout))
                .into_iter()
                .filter(|(_, t)| t == tag)
                .map(|(snapshot, _)| snapshot),
        );
    }
    Ok(held)
}
