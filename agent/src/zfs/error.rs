//! Why a zfs operation failed, in words a person can act on: zfs's and zpool's stderr turned into typed reasons, their usage text cut off.

use super::names::DatasetNameError;
use crate::host::process::ProcessError;
use thiserror::Error;

/// Why a zfs operation failed, in words a person can act on.
#[derive(Debug, Error)]
pub enum ZfsError {
    #[error(transparent)]
    InvalidName(#[from] DatasetNameError),
    #[error("Dataset not found: '{name}'")]
    DatasetNotFound { name: String },
    #[error("snapshot '{name}' already exists")]
    SnapshotExists { name: String },
    #[error("snapshot '{name}' does not exist")]
    SnapshotNotFound { name: String },
    /// zfs refused to destroy it: it is held (`zfs holds`), cloned or in use.
    #[error("snapshot '{name}' is busy: held (see `zfs holds`), cloned or in use")]
    SnapshotBusy { name: String },
    #[error("pool '{name}' does not exist")]
    PoolNotFound { name: String },
    /// `zfs receive` refused an incremental stream: the target was modified
    /// since its most recent snapshot, or that snapshot is not the base.
    #[error(
        "Target dataset '{dataset}' has been modified or has diverged since its most recent snapshot; refusing to overwrite it without --allow-overwrite"
    )]
    Diverged { dataset: String },
    /// `zfs receive` of a full stream found the target dataset there already.
    #[error(
        "Target dataset '{dataset}' already exists and is not a replica of the source; refusing to overwrite it without --allow-overwrite"
    )]
    TargetExists { dataset: String },
    /// A raw (encrypted, `send -w`) stream onto a replica that was
    /// received decrypted.
    #[error(
        "Target dataset '{dataset}' was received decrypted, so a raw stream of the encrypted source cannot continue it; replicate with --no-raw, or into a new target"
    )]
    RawOntoDecrypted { dataset: String },
    /// A decrypted stream onto a replica that keeps ciphertext (received
    /// raw) whose key is not loaded on the target.
    #[error(
        "Target dataset '{dataset}' holds the source's ciphertext (received raw) and its key is not loaded there, so a decrypted stream cannot continue it; replicate without --no-raw"
    )]
    DecryptedOntoRaw { dataset: String },
    /// An interrupted resumable receive waits on the target; a new stream
    /// cannot start until it is resumed or discarded.
    #[error("Target dataset '{dataset}' holds a partial receive that waits to be resumed")]
    PartialReceive { dataset: String },
    /// zfs succeeded but printed something the agent cannot read.
    #[error("could not read the output of `{command}`: {detail}")]
    UnexpectedOutput { command: String, detail: String },
    #[error(transparent)]
    Process(ProcessError),
}

impl ZfsError {
    /// Turns known zfs stderr into a typed reason; everything else keeps the
    /// command and its stderr.
    pub(crate) fn from_process(err: ProcessError, subject: &str) -> ZfsError {
        let err = without_usage(err);
        if let Some(stderr) = err.stderr() {
            if stderr.contains("dataset does not exist") {
                return ZfsError::DatasetNotFound {
                    name: subject.to_owned(),
                };
            }
            if stderr.contains("no such pool") {
                return ZfsError::PoolNotFound {
                    name: subject.to_owned(),
                };
            }
        }
        ZfsError::Process(err)
    }

    /// Turns the stderr of `zfs snapshot` into a typed reason. zfs names
    /// the object it complains about in quotes: `cannot create snapshot
    /// 'tank/a@x': dataset already exists`, `cannot open 'tank/nope':
    /// dataset does not exist` (OpenZFS may quote `tank/nope@x` there).
    pub(super) fn from_snapshot_process(err: ProcessError, names: &[String]) -> ZfsError {
        let err = without_usage(err);
        let first = names.first().map(String::as_str).unwrap_or_default();
        if let Some(stderr) = err.stderr() {
            let quoted = first_quoted(stderr);
            if stderr.contains("dataset already exists") {
                let name = quoted.filter(|q| q.contains('@')).unwrap_or(first);
                return ZfsError::SnapshotExists {
                    name: name.to_owned(),
                };
            }
            if stderr.contains("dataset does not exist") {
                let name = quoted.unwrap_or(first);
                let dataset = name.split_once('@').map_or(name, |(d, _)| d);
                return ZfsError::DatasetNotFound {
                    name: dataset.to_owned(),
                };
            }
            if stderr.contains("no such pool") {
                let name = quoted.unwrap_or(first);
                let pool = name.split(['/', '@']).next().unwrap_or(name);
                return ZfsError::PoolNotFound {
                    name: pool.to_owned(),
                };
            }
        }
        ZfsError::Process(err)
    }

    /// Turns the stderr of `zfs destroy` of one snapshot into a typed
    /// reason. zfs says "dataset does not exist" for a missing snapshot
    /// and for a missing dataset alike; either way the snapshot is absent.
    pub(crate) fn from_destroy_process(err: ProcessError, full_name: &str) -> ZfsError {
        let err = without_usage(err);
        if err
            .stderr()
            .is_some_and(|e| e.contains("dataset does not exist") || e.contains("no such pool"))
        {
            return ZfsError::SnapshotNotFound {
                name: full_name.to_owned(),
            };
        }
        // A snapshot with a hold (or a clone, or in use) stays. zfs-fuse
        // says "dataset is busy"; OpenZFS 2.x "it's being held" for a hold.
        if err
            .stderr()
            .is_some_and(|e| e.contains("dataset is busy") || e.contains("being held"))
        {
            return ZfsError::SnapshotBusy {
                name: full_name.to_owned(),
            };
        }
        ZfsError::Process(err)
    }
}

/// `zfs hold` found the tag on the snapshot already: the goal is reached.
pub fn is_hold_present(stderr: &str) -> bool {
    stderr.contains("tag already exists")
}

/// `zfs release` found no such tag on the snapshot: the goal is reached.
pub fn is_hold_absent(stderr: &str) -> bool {
    stderr.contains("no such tag")
}

/// The first `'...'` in a zfs message. Validated names never contain a quote.
fn first_quoted(text: &str) -> Option<&str> {
    let (_, rest) = text.split_once('\'')?;
    let (quoted, _) = rest.split_once('\'')?;
    Some(quoted)
}

/// zfs and zpool follow a one-line complaint with their whole usage text
/// (dozens of lines on zfs-fuse); only the complaint helps a person.
pub(super) fn without_usage(err: ProcessError) -> ProcessError {
    match err {
        ProcessError::Failed {
            command,
            code,
            stderr,
        } => {
            let cut = if stderr.starts_with("usage:") {
                stderr.find('\n')
            } else {
                stderr.find("\nusage:")
            };
            let stderr = match cut {
                Some(i) => stderr[..i].trim_end().to_owned(),
                None => stderr,
            };
            ProcessError::Failed {
                command,
                code,
                stderr,
            }
        }
        other => other,
    }
}

/// Whether a failed zfs call's stderr says the dataset it was given does
/// not exist (both dialects: `cannot open 'X': dataset does not exist`).
pub fn is_missing_dataset(stderr: &str) -> bool {
    stderr.contains("dataset does not exist")
}

/// Turns the stderr of a failed `zfs receive` into a typed reason, if it
/// is a known one. zfs-fuse wraps its messages at 80 columns ("... does
/// not\nmatch incremental source"), so whitespace is normalised first.
pub fn recv_error(stderr: &str, target_dataset: &str) -> Option<ZfsError> {
    let text = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
    let dataset = || target_dataset.to_owned();
    if text.contains("has been modified since most recent snapshot")
        || text.contains("does not match incremental source")
    {
        return Some(ZfsError::Diverged { dataset: dataset() });
    }
    // Full stream onto an existing dataset: "destination 'X' exists / must
    // specify -F to overwrite it", or with -F onto one that has snapshots:
    // "destination has snapshots (eg. X@s) / must destroy them".
    if (text.contains("destination '") && text.contains("' exists"))
        || text.contains("destination has snapshots")
    {
        return Some(ZfsError::TargetExists { dataset: dataset() });
    }
    if text.contains("raw receive on top of existing unencrypted dataset") {
        return Some(ZfsError::RawOntoDecrypted { dataset: dataset() });
    }
    if text.contains("inherited key must be loaded") {
        return Some(ZfsError::DecryptedOntoRaw { dataset: dataset() });
    }
    if text.contains("contains partially-complete state") {
        return Some(ZfsError::PartialReceive { dataset: dataset() });
    }
    if text.contains("no such pool") {
        let name = first_quoted(&text).unwrap_or(target_dataset);
        let pool = name.split(['/', '@']).next().unwrap_or(name);
        return Some(ZfsError::PoolNotFound {
            name: pool.to_owned(),
        });
    }
    if text.contains("does not exist") {
        let name = first_quoted(&text).unwrap_or(target_dataset);
        return Some(ZfsError::DatasetNotFound {
            name: name.to_owned(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn snapshot_stderr_becomes_typed_error() {
        let failed = |stderr: &str| ProcessError::Failed {
            command: "zfs snapshot".into(),
            code: Some(1),
            stderr: stderr.into(),
        };
        let req = names(&["nfhelperA/a@s1"]);
        // Captured from zfs-fuse.
        let e = ZfsError::from_snapshot_process(
            failed("cannot create snapshot 'nfhelperA/a@s1': dataset already exists"),
            &req,
        );
        assert_eq!(e.to_string(), "snapshot 'nfhelperA/a@s1' already exists");
        let e = ZfsError::from_snapshot_process(
            failed(
                "cannot create snapshot 'nfhelperA/a/c@s1': dataset already exists\nno snapshots were created",
            ),
            &req,
        );
        assert_eq!(e.to_string(), "snapshot 'nfhelperA/a/c@s1' already exists");
        let e = ZfsError::from_snapshot_process(
            failed("cannot open 'nfhelperA/nope': dataset does not exist"),
            &names(&["nfhelperA/nope@s1"]),
        );
        assert_eq!(e.to_string(), "Dataset not found: 'nfhelperA/nope'");
        // OpenZFS names the snapshot it could not create.
        let e = ZfsError::from_snapshot_process(
            failed("cannot create snapshot 'tank/nope@s1': dataset does not exist"),
            &names(&["tank/a@s1", "tank/nope@s1"]),
        );
        assert!(matches!(&e, ZfsError::DatasetNotFound { name } if name == "tank/nope"));
        let e = ZfsError::from_snapshot_process(
            failed("cannot create snapshot 'nopool/a@s': no such pool"),
            &names(&["nopool/a@s"]),
        );
        assert_eq!(e.to_string(), "pool 'nopool' does not exist");
        let e = ZfsError::from_snapshot_process(failed("out of space"), &req);
        assert!(e.to_string().ends_with(": out of space"), "{e}");

        let e = ZfsError::from_destroy_process(
            failed("cannot open 'nfhelperA/a@nope': dataset does not exist"),
            "nfhelperA/a@nope",
        );
        assert_eq!(e.to_string(), "snapshot 'nfhelperA/a@nope' does not exist");
        let e = ZfsError::from_destroy_process(
            failed(
                "cannot destroy 'tank/a@s': snapshot has dependent clones\nuse '-R' to destroy the following datasets:\ntank/clone",
            ),
            "tank/a@s",
        );
        assert!(matches!(e, ZfsError::Process(_)));
        // A held snapshot, as each dialect says it.
        for held in [
            "cannot destroy 'hp@a': dataset is busy",
            "cannot destroy snapshot tank/a@s: it's being held. Run 'zfs holds -r tank/a@s' to see holders.",
        ] {
            let e = ZfsError::from_destroy_process(failed(held), "tank/a@s");
            assert!(matches!(e, ZfsError::SnapshotBusy { .. }), "{held}");
        }
    }

    #[test]
    fn known_stderr_becomes_typed_error() {
        let failed = |stderr: &str| ProcessError::Failed {
            command: "zfs get".into(),
            code: Some(1),
            stderr: stderr.into(),
        };
        let e = ZfsError::from_process(
            failed("cannot open 'nosuch/x': dataset does not exist"),
            "nosuch/x",
        );
        assert_eq!(e.to_string(), "Dataset not found: 'nosuch/x'");
        let e = ZfsError::from_process(
            failed("cannot open 'nosuchpool': no such pool"),
            "nosuchpool",
        );
        assert_eq!(e.to_string(), "pool 'nosuchpool' does not exist");
        let e = ZfsError::from_process(failed("permission denied"), "tank");
        assert!(e.to_string().ends_with(": permission denied"));
        // Captured from zfs-fuse: `zfs get -H bogus nfhelper1`.
        let usage = "bad property list: invalid property 'bogus'\nusage:\n\tget [-rHp] [-d max] [-o \"all\" | field[,...]] [-s source[,...]]\n";
        let e = ZfsError::from_process(failed(usage), "nfhelper1");
        assert!(
            e.to_string()
                .ends_with("(exit code 1): bad property list: invalid property 'bogus'"),
            "{e}"
        );
    }

    #[test]
    fn recv_stderr_becomes_typed_error() {
        let target = "nfhelperrsB/dst";
        // Captured from zfs-fuse, line breaks included.
        let cases: &[(&str, &str)] = &[
            (
                "cannot receive incremental stream: most recent snapshot of nfhelperrsB/dst does not\nmatch incremental source",
                "Diverged",
            ),
            (
                "cannot receive incremental stream: destination nfhelperrsB/dst has been modified\nsince most recent snapshot",
                "Diverged",
            ),
            (
                "cannot receive new filesystem stream: destination 'nfhelperrsB/dst' exists\nmust specify -F to overwrite it",
                "TargetExists",
            ),
            (
                "cannot receive new filesystem stream: destination has snapshots (eg. nfhelperrsB/other@o1)\nmust destroy them to overwrite it",
                "TargetExists",
            ),
            (
                "cannot open 'nfhelperrsB/nope/x': dataset does not exist\ncannot receive new filesystem stream: dataset does not exist",
                "DatasetNotFound nfhelperrsB/nope/x",
            ),
            // OpenZFS, incremental onto a missing target.
            (
                "cannot receive incremental stream: destination 'backup/a' does not exist",
                "DatasetNotFound backup/a",
            ),
            (
                "cannot open 'nopool/x': no such pool",
                "PoolNotFound nopool",
            ),
        ];
        for (stderr, want) in cases {
            let got = match recv_error(stderr, target) {
                Some(ZfsError::Diverged { dataset }) if dataset == target => "Diverged".to_owned(),
                Some(ZfsError::TargetExists { dataset }) if dataset == target => {
                    "TargetExists".to_owned()
                }
                Some(ZfsError::DatasetNotFound { name }) => format!("DatasetNotFound {name}"),
                Some(ZfsError::PoolNotFound { name }) => format!("PoolNotFound {name}"),
                other => format!("{other:?}"),
            };
            assert_eq!(&got, want, "{stderr}");
        }
        assert!(recv_error("cannot receive: failed to read from stream", target).is_none());
        assert!(recv_error("out of space", target).is_none());
        assert_eq!(
            recv_error("does not\nmatch incremental source", "backup/a")
                .unwrap()
                .to_string(),
            "Target dataset 'backup/a' has been modified or has diverged since its most recent snapshot; refusing to overwrite it without --allow-overwrite"
        );
    }
}
