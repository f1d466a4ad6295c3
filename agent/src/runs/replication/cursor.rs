//! The replication cursor on OpenZFS sources: after each dataset, a bookmark of its newest common snapshot (`#nasfleet-TASKID-GUID`), so that the next run still sends incrementally when that snapshot itself is gone from the source (zrepl's replication cursor).

use crate::host::process;
use crate::zfs::{self, SnapshotInfo};
use nasfleet_common::names::{replication_bookmark, replication_bookmark_task};
use std::time::Duration;

/// Makes `dataset@snapshot` (GUID `guid`) the task's cursor on this
/// system: bookmarks it unless `bookmarks` (the dataset's, as listed
/// before the run) has it already, then destroys the task's older
/// cursors. A cursor that cannot be made leaves the old ones in place.
/// What failed comes back as notes for the run's log.
pub(super) async fn move_cursor(
    task_id: u64,
    dataset: &str,
    snapshot: &str,
    guid: u64,
    bookmarks: &[SnapshotInfo],
    timeout: Duration,
) -> Vec<String> {
    let name = replication_bookmark(task_id, guid);
    let mut notes = Vec::new();
    if !bookmarks.iter().any(|b| b.name == name) {
        let made = zfs::bookmark_args(
            &format!("{dataset}@{snapshot}"),
            &format!("{dataset}#{name}"),
        )
        .map_err(|e| e.to_string());
        let made = match made {
            Ok(args) => process::run("zfs", &args, timeout)
                .await
                .map(|_| ())
                .or_else(|e| match e.stderr() {
                    // Made by a run that stopped before listing it.
                    Some(stderr) if stderr.contains("already exists") => Ok(()),
                    _ => Err(e.to_string()),
                }),
            Err(e) => Err(e),
        };
        if let Err(e) = made {
            notes.push(format!(
                "could not bookmark {dataset}@{snapshot} as the replication cursor: {e}"
            ));
            return notes;
        }
    }
    for old in bookmarks
        .iter()
        .filter(|b| b.name != name && replication_bookmark_task(&b.name) == Some(task_id))
    {
        if let Err(e) = destroy(dataset, &old.name, timeout).await {
            notes.push(e);
        }
    }
    notes
}

/// Destroys every cursor of `task_id` on `dataset` and its descendants (a
/// task is deleted). Returns how many there were.
pub async fn remove_all(task_id: u64, dataset: &str, timeout: Duration) -> Result<usize, String> {
    let args = zfs::bookmarks_args(dataset).map_err(|e| e.to_string())?;
    let listed = match process::run("zfs", &args, timeout).await {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) if e.stderr().is_some_and(zfs::is_missing_dataset) => return Ok(0),
        Err(e) => return Err(format!("could not list the bookmarks of {dataset}: {e}")),
    };
    let mut removed = 0;
    for full in listed.lines().map(str::trim) {
        let Some((owner, name)) = full.split_once('#') else {
            continue;
        };
        if replication_bookmark_task(name) == Some(task_id) {
            destroy(owner, name, timeout).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

async fn destroy(dataset: &str, name: &str, timeout: Duration) -> Result<(), String> {
    let full = format!("{dataset}#{name}");
    let args = zfs::destroy_bookmark_args(&full).map_err(|e| e.to_string())?;
    match process::run("zfs", &args, timeout).await {
        Ok(_) => Ok(()),
        Err(e) if e.stderr().is_some_and(zfs::is_missing_dataset) => Ok(()),
        Err(e) => Err(format!("could not destroy the old cursor {full}: {e}")),
    }
}
