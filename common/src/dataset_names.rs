//! ZFS dataset and snapshot names: the rules a name must follow before it reaches zfs as an argument, shared by the CLI's pre-checks, the controller and the agent.

use crate::echo::echo;
use thiserror::Error;

/// Longest dataset name zfs accepts (ZFS_MAX_DATASET_NAME_LEN minus the NUL).
pub const MAX_DATASET_NAME: usize = 255;

/// Why a dataset name was refused before it could reach zfs as an argument.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DatasetNameError {
    #[error("dataset name must not be empty")]
    Empty,
    #[error("dataset name '{}' is longer than {MAX_DATASET_NAME} characters", echo(.name))]
    TooLong { name: String },
    #[error("dataset name '{}' must start with a letter (the pool name)", echo(.name))]
    BadStart { name: String },
    #[error("dataset name '{}' has an empty component (leading, trailing or double '/')", echo(.name))]
    EmptyComponent { name: String },
    #[error("dataset name '{}' has a '.' or '..' component", echo(.name))]
    DotComponent { name: String },
    #[error(
        "dataset name '{}' contains {:?}; only letters, digits, '_', '.', ':', '-', spaces (not in the pool name) and '/' between components are allowed",
        echo(.name),
        .bad
    )]
    BadCharacter { name: String, bad: char },
    #[error("'{}' is not a snapshot name (dataset@snapshot)", echo(.name))]
    NotASnapshot { name: String },
    #[error("snapshot name '{}' has nothing after '@'", echo(.name))]
    EmptySnapshot { name: String },
    #[error("snapshot name '{}' must not be '.' or '..' after '@'", echo(.name))]
    DotSnapshot { name: String },
    #[error(
        "snapshot name '{}' contains {:?}; after '@' only letters, digits, spaces, '_', '.', ':' and '-' are allowed",
        echo(.name),
        .bad
    )]
    SnapshotBadCharacter { name: String, bad: char },
    #[error("no snapshot names given")]
    NoSnapshots,
    #[error(
        "snapshots '{}' and '{}' are in different pools; one zfs call takes snapshots of one pool only",
        echo(.first),
        echo(.other)
    )]
    SeveralPools { first: String, other: String },
    #[error(
        "snapshots '{}' and '{}' overlap; one zfs call takes at most one snapshot of each dataset",
        echo(.first),
        echo(.other)
    )]
    Overlapping { first: String, other: String },
    #[error("hold tag '{}' is not one of nasfleet's (nasfleet:TASKID)", echo(.tag))]
    NotAHoldTag { tag: String },
    #[error("'{}' is not a bookmark name (dataset#bookmark)", echo(.name))]
    NotABookmark { name: String },
    #[error(
        "'{}' is not a zfs receive resume token (digits, 'a'-'f' and '-')",
        echo(.token)
    )]
    BadResumeToken { token: String },
}

/// Checks a dataset name (`pool[/child...]`) before it is passed to zfs.
///
/// The characters zfs allows: letters, digits, '_', '.', ':', '-' and, below
/// the pool, spaces (checked on zfs-fuse; OpenZFS agrees). Names come from
/// configuration and from the controller and must never act as an option
/// (`-rf`); a space is harmless because local arguments are argv entries and
/// every word sent through ssh is quoted.
pub fn validate_dataset_name(name: &str) -> Result<(), DatasetNameError> {
    if name.is_empty() {
        return Err(DatasetNameError::Empty);
    }
    let owned = || name.to_owned();
    if name.len() > MAX_DATASET_NAME {
        return Err(DatasetNameError::TooLong { name: owned() });
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(DatasetNameError::BadStart { name: owned() });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-');
    for (index, component) in name.split('/').enumerate() {
        // Pools take no spaces; datasets below them may.
        let allowed = |c: char| allowed(c) || (index > 0 && c == ' ');
        if component.is_empty() {
            return Err(DatasetNameError::EmptyComponent { name: owned() });
        }
        if component == "." || component == ".." {
            return Err(DatasetNameError::DotComponent { name: owned() });
        }
        if let Some(bad) = component.chars().find(|c| !allowed(*c)) {
            return Err(DatasetNameError::BadCharacter { name: owned(), bad });
        }
    }
    Ok(())
}

/// Checks the part of a snapshot name after '@'.
///
/// The same characters as a dataset component, plus the space: zfs accepts
/// spaces in snapshot names (checked on zfs-fuse) and TrueNAS's naming
/// schemas may contain them. Arguments go to zfs one argv entry each and
/// every word sent through ssh is quoted, so a space is data, not syntax.
pub fn validate_snapshot_component(component: &str) -> Result<(), DatasetNameError> {
    check_snapshot_component(component, component)
}

/// [`validate_snapshot_component`] whose errors name `name`, the whole
/// word the component came from (e.g. `@short` or `dataset@short`).
pub fn check_snapshot_component(component: &str, name: &str) -> Result<(), DatasetNameError> {
    let owned = || name.to_owned();
    if component.is_empty() {
        return Err(DatasetNameError::EmptySnapshot { name: owned() });
    }
    if component == "." || component == ".." {
        return Err(DatasetNameError::DotSnapshot { name: owned() });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-' | ' ');
    if let Some(bad) = component.chars().find(|c| !allowed(*c)) {
        return Err(DatasetNameError::SnapshotBadCharacter { name: owned(), bad });
    }
    if component.len() > MAX_DATASET_NAME {
        return Err(DatasetNameError::TooLong { name: owned() });
    }
    Ok(())
}

/// Checks a full snapshot name `dataset@snapshot` and returns its two parts.
/// Anything without exactly one '@' is refused, so a snapshot operation can
/// never be pointed at a dataset.
pub fn validate_snapshot_name(full_name: &str) -> Result<(&str, &str), DatasetNameError> {
    let Some((dataset, snapshot)) = full_name.split_once('@') else {
        return Err(DatasetNameError::NotASnapshot {
            name: full_name.to_owned(),
        });
    };
    validate_dataset_name(dataset)?;
    check_snapshot_component(snapshot, full_name)?;
    if full_name.len() > MAX_DATASET_NAME {
        return Err(DatasetNameError::TooLong {
            name: full_name.to_owned(),
        });
    }
    Ok((dataset, snapshot))
}
