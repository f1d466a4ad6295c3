//! zfs and zpool command lines (pure): one argv entry per argument, names checked first, the differences of the two dialects spelt out, so unit tests check both without running anything.

use super::dialect::Dialect;
use super::names::{
    DatasetNameError, validate_bookmark_name, validate_dataset_name, validate_incremental_base,
    validate_snapshot_name, validate_snapshot_set,
};
use nasfleet_common::names::is_replication_hold_tag;

/// Properties read for every dataset and snapshot of a pool, in one call.
const INVENTORY_PROPERTIES: &str =
    "type,used,available,mountpoint,readonly,guid,creation,referenced,userrefs";

fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

/// `zfs version`: OpenZFS 0.8+ only; zfs-fuse answers "unrecognized command".
pub fn version_args() -> Vec<String> {
    args(&["version"])
}

/// `zpool upgrade -v`: prints the pool version on legacy implementations.
pub fn pool_version_args() -> Vec<String> {
    args(&["upgrade", "-v"])
}

/// `zpool list` of every pool. zfs-fuse has no `-p` here (nor on `zpool
/// get`), so its sizes are human-readable and only approximately exact.
/// All pools are listed rather than named ones: a missing name makes zpool
/// exit non-zero, and the caller wants to say which pool is missing anyway.
pub fn list_pools_args(dialect: Dialect) -> Vec<String> {
    match dialect {
        Dialect::Legacy => args(&["list", "-H", "-o", "name,size,free,health"]),
        Dialect::OpenZfs => args(&["list", "-H", "-p", "-o", "name,size,free,health"]),
    }
}

/// One recursive `zfs get` for every dataset and snapshot of a pool. This
/// form is the same in both dialects: `zfs get -p` prints exact numbers even
/// on zfs-fuse, and without `-t` it includes snapshots.
pub fn list_datasets_and_snapshots_args(pool: &str) -> Result<Vec<String>, DatasetNameError> {
    validate_dataset_name(pool)?;
    let mut out = args(&[
        "get",
        "-H",
        "-p",
        "-o",
        "name,property,value",
        "-r",
        INVENTORY_PROPERTIES,
        "--",
    ]);
    out.push(pool.to_owned());
    Ok(out)
}

/// Lists the snapshots of `dataset` (and of its descendants if `recursive`).
///
/// OpenZFS has `zfs list -p -t snapshot`. zfs-fuse's `zfs list` has no `-p`
/// and prints even `guid` human-readable ("7.74E"), so there the `zfs get`
/// form is used. Non-recursive listing uses `-d 1`, which also yields
/// direct child datasets; the parser keeps only the dataset's own snapshots.
pub fn list_snapshots_args(
    dialect: Dialect,
    dataset: &str,
    recursive: bool,
) -> Result<Vec<String>, DatasetNameError> {
    validate_dataset_name(dataset)?;
    let depth: &[&str] = if recursive { &["-r"] } else { &["-d", "1"] };
    let mut out = match dialect {
        Dialect::OpenZfs => args(&[
            "list",
            "-H",
            "-p",
            "-t",
            "snapshot",
            "-o",
            "name,guid,creation,used,referenced",
        ]),
        Dialect::Legacy => args(&["get", "-H", "-p", "-o", "name,property,value"]),
    };
    out.extend(args(depth));
    if dialect == Dialect::Legacy {
        out.push("type,guid,creation,used,referenced".to_owned());
    }
    out.push("--".to_owned());
    out.push(dataset.to_owned());
    Ok(out)
}

/// `zfs snapshot [-r] -- a@x [b@x ...]`: the OpenZFS form, which takes all
/// the snapshots atomically (all or none) in one transaction group.
///
/// zfs-fuse takes one snapshot per call ("too many arguments"); use
/// [`create_snapshots_commands`] to get the right form for a dialect.
pub fn create_snapshots_args(
    names: &[String],
    recursive: bool,
) -> Result<Vec<String>, DatasetNameError> {
    validate_snapshot_set(names, recursive)?;
    let mut out = args(&["snapshot"]);
    if recursive {
        out.push("-r".to_owned());
    }
    out.push("--".to_owned());
    out.extend(names.iter().cloned());
    Ok(out)
}

/// The zfs calls that take `names`: one atomic call on OpenZFS, one call
/// per snapshot on zfs-fuse. The whole set is validated first either way.
pub fn create_snapshots_commands(
    dialect: Dialect,
    names: &[String],
    recursive: bool,
) -> Result<Vec<Vec<String>>, DatasetNameError> {
    let all = create_snapshots_args(names, recursive)?;
    Ok(match dialect {
        Dialect::OpenZfs => vec![all],
        Dialect::Legacy => names
            .iter()
            .map(|name| {
                let mut one = args(&["snapshot"]);
                if recursive {
                    one.push("-r".to_owned());
                }
                one.push("--".to_owned());
                one.push(name.clone());
                one
            })
            .collect(),
    })
}

/// `zfs destroy -- dataset@snapshot`, the same in both dialects. Refuses
/// anything that is not a snapshot name, so no bug upstream can turn this
/// into the destruction of a dataset; never recursive.
pub fn destroy_snapshot_args(full_name: &str) -> Result<Vec<String>, DatasetNameError> {
    validate_snapshot_name(full_name)?;
    let mut out = args(&["destroy", "--"]);
    out.push(full_name.to_owned());
    Ok(out)
}

/// Properties read per snapshot for replication planning: exact `guid`
/// (the identity of a snapshot across systems), and `createtxg` with
/// `creation` for the order (`creation` has one-second resolution, so two
/// snapshots taken in the same second need `createtxg`). OpenZFS lists
/// the dataset itself (its `receive_resume_token`) and its bookmarks in
/// the same call, with whether it is encrypted and its key loaded.
const SNAPSHOT_GUID_PROPERTIES: &str =
    "name,guid,creation,createtxg,receive_resume_token,encryption,keystatus";

/// Where a send starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFrom<'a> {
    /// A full stream.
    Full,
    /// `-i FROM`: the changes since `@snapshot` or `#bookmark` (of the
    /// sent dataset) or a full snapshot name (a clone's origin).
    Incremental(&'a str),
    /// `-I @FROM`: every snapshot after `FROM` up to the sent one, in one
    /// stream package (zfs refuses a bookmark here).
    Intermediates(&'a str),
}

/// Which of OpenZFS's stream features a send uses. None of them: a plain
/// stream that any ZFS receives, zfs-fuse (pool version 23) too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamFeatures {
    /// `-L -c -e`: large blocks whole, compressed blocks as stored (a
    /// compressed dataset moves fewer bytes than its logical size),
    /// embedded blocks as such. Only when both sides run OpenZFS.
    pub compact: bool,
    /// `-w`: an encrypted dataset's blocks exactly as stored, so the
    /// target keeps ciphertext and never needs the key.
    pub raw: bool,
}

impl StreamFeatures {
    fn flags(self) -> impl Iterator<Item = String> {
        let raw: &[&str] = if self.raw { &["-w"] } else { &[] };
        let compact: &[&str] = if self.compact {
            &["-L", "-c", "-e"]
        } else {
            &[]
        };
        raw.iter().chain(compact).map(|s| (*s).to_owned())
    }
}

/// `zfs send [-w] [-L -c -e] [-i|-I FROM] -- DATASET@SNAPSHOT`.
///
/// Deliberately without `-p` (properties such as `mountpoint` would come
/// along and could mount the replica over something on the target) and
/// `-R` (children are replicated one dataset at a time by the caller).
/// `features` are the caller's to choose: none of them for a target that
/// is not OpenZFS. zfs-fuse's getopt accepts `--` here.
pub fn send_args(
    features: StreamFeatures,
    from: SendFrom<'_>,
    snapshot: &str,
) -> Result<Vec<String>, DatasetNameError> {
    validate_snapshot_name(snapshot)?;
    let mut out = args(&["send"]);
    out.extend(features.flags());
    match from {
        SendFrom::Full => {}
        SendFrom::Incremental(from) => {
            validate_incremental_base(from)?;
            out.push("-i".to_owned());
            out.push(from.to_owned());
        }
        SendFrom::Intermediates(from) => {
            if from.contains('#') {
                return Err(DatasetNameError::NotASnapshot {
                    name: from.to_owned(),
                });
            }
            validate_incremental_base(from)?;
            out.push("-I".to_owned());
            out.push(from.to_owned());
        }
    }
    out.push("--".to_owned());
    out.push(snapshot.to_owned());
    Ok(out)
}

/// `zfs send -n -P ...`: what [`send_args`] would send, measured without
/// sending (the `size` line of [`parse_send_estimate`]). `None` on
/// zfs-fuse, whose `zfs send` has neither `-n` nor `-P`.
pub fn send_estimate_args(
    dialect: Dialect,
    features: StreamFeatures,
    from: SendFrom<'_>,
    snapshot: &str,
) -> Result<Option<Vec<String>>, DatasetNameError> {
    if dialect == Dialect::Legacy {
        return Ok(None);
    }
    let mut out = send_args(features, from, snapshot)?;
    // After "send": the flags go before -i and `--`.
    out.splice(1..1, args(&["-n", "-P"]));
    Ok(Some(out))
}

/// `zfs send -t TOKEN`: the rest of an interrupted receive (OpenZFS). The
/// token carries the stream's features; zfs refuses other flags with it.
pub fn send_resume_args(token: &str) -> Result<Vec<String>, DatasetNameError> {
    validate_resume_token(token)?;
    Ok(vec!["send".to_owned(), "-t".to_owned(), token.to_owned()])
}

/// `zfs send -n -v -P -t TOKEN`: the token's contents (where the receive
/// stopped, see [`super::parse::parse_resume_info`]) and the size of the
/// rest, without sending.
pub fn send_resume_info_args(token: &str) -> Result<Vec<String>, DatasetNameError> {
    let mut out = send_resume_args(token)?;
    out.splice(1..1, args(&["-n", "-v", "-P"]));
    Ok(out)
}

/// A `receive_resume_token` as OpenZFS prints it: a version, a checksum, a
/// length and the compressed contents, all hex, joined by '-'. Anything
/// else never reaches a command line.
fn validate_resume_token(token: &str) -> Result<(), DatasetNameError> {
    let hex_words = token
        .split('-')
        .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_hexdigit()));
    if token.len() > 65_536 || !token.starts_with(|c: char| c.is_ascii_digit()) || !hex_words {
        return Err(DatasetNameError::BadResumeToken {
            token: token.to_owned(),
        });
    }
    Ok(())
}

/// `zfs receive [-s -u [-o readonly=on]] [-F] -- TARGET`.
///
/// `-F` (only when the caller chose to overwrite) rolls the target back to
/// its most recent snapshot first, discarding changes made there. OpenZFS
/// also gets `-s`: an interrupted receive keeps what arrived and leaves a
/// `receive_resume_token` ([`send_resume_args`] continues it); `-u`: the
/// replica is not mounted, so it cannot cover another file system at an
/// inherited mountpoint, and nothing (not even atime updates) modifies it
/// between runs; and, for a stream that `creates` the replica, `-o
/// readonly=on`, so it is read-only from the moment it exists. On an
/// incremental the property would be set again for every snapshot of an
/// `-I` package (measured: 150 snapshots took half as long again); the
/// caller sets it once after the last one instead. zfs-fuse has none of
/// them (it mounts the replica; the caller sets `readonly=on` afterwards,
/// see [`set_readonly_args`]).
pub fn recv_args(
    dialect: Dialect,
    target_dataset: &str,
    force: bool,
    creates: bool,
) -> Result<Vec<String>, DatasetNameError> {
    validate_dataset_name(target_dataset)?;
    let mut out = args(&["receive"]);
    if dialect == Dialect::OpenZfs {
        out.extend(["-s", "-u"].map(str::to_owned));
        if creates {
            out.extend(["-o", "readonly=on"].map(str::to_owned));
        }
    }
    if force {
        out.push("-F".to_owned());
    }
    out.push("--".to_owned());
    out.push(target_dataset.to_owned());
    Ok(out)
}

/// `zfs receive -A -- TARGET`: discards the partial state an interrupted
/// `receive -s` left (OpenZFS), when its token can no longer be resumed.
pub fn recv_abort_args(target_dataset: &str) -> Result<Vec<String>, DatasetNameError> {
    validate_dataset_name(target_dataset)?;
    let mut out = args(&["receive", "-A", "--"]);
    out.push(target_dataset.to_owned());
    Ok(out)
}

/// `zfs bookmark -- DATASET@SNAPSHOT DATASET#NAME` (OpenZFS): a bookmark
/// keeps what an incremental send needs of a snapshot after the
/// snapshot itself is destroyed.
pub fn bookmark_args(snapshot: &str, bookmark: &str) -> Result<Vec<String>, DatasetNameError> {
    let (dataset, _) = validate_snapshot_name(snapshot)?;
    validate_bookmark_name(bookmark)?;
    if bookmark.split_once('#').map(|(d, _)| d) != Some(dataset) {
        return Err(DatasetNameError::NotABookmark {
            name: bookmark.to_owned(),
        });
    }
    Ok(vec![
        "bookmark".to_owned(),
        "--".to_owned(),
        snapshot.to_owned(),
        bookmark.to_owned(),
    ])
}

/// `zfs destroy -- DATASET#NAME`.
pub fn destroy_bookmark_args(bookmark: &str) -> Result<Vec<String>, DatasetNameError> {
    validate_bookmark_name(bookmark)?;
    Ok(vec![
        "destroy".to_owned(),
        "--".to_owned(),
        bookmark.to_owned(),
    ])
}

/// `zfs list -H -o name -t bookmark -r -- DATASET`: the bookmarks of
/// `dataset` and its descendants (OpenZFS), one full name per line.
pub fn bookmarks_args(dataset: &str) -> Result<Vec<String>, DatasetNameError> {
    validate_dataset_name(dataset)?;
    let mut out = args(&["list", "-H", "-o", "name", "-t", "bookmark", "-r", "--"]);
    out.push(dataset.to_owned());
    Ok(out)
}

/// Lists the snapshots of `dataset` itself (not of its children) with exact
/// guid, creation and createtxg; parse with [`super::parse::parse_snapshot_guids`].
///
/// zfs-fuse's `zfs list` prints `guid` human-readable ("7.74E"), useless
/// for comparing snapshots, so the Legacy form is a `zfs get -p -d 1`
/// (which also lists the dataset and its direct children; the parser keeps
/// only the snapshots). OpenZFS lists the dataset itself (for its resume
/// token), its direct children (ignored) and its bookmarks too.
pub fn snapshot_guids_args(
    dialect: Dialect,
    dataset: &str,
) -> Result<Vec<String>, DatasetNameError> {
    validate_dataset_name(dataset)?;
    let mut out = match dialect {
        Dialect::OpenZfs => args(&[
            "list",
            "-H",
            "-p",
            "-t",
            "filesystem,volume,snapshot,bookmark",
            "-d",
            "1",
            "-o",
            SNAPSHOT_GUID_PROPERTIES,
        ]),
        Dialect::Legacy => args(&[
            "get",
            "-H",
            "-p",
            "-o",
            "name,property,value",
            "-d",
            "1",
            "type,guid,creation,createtxg",
        ]),
    };
    out.push("--".to_owned());
    out.push(dataset.to_owned());
    Ok(out)
}

/// `zfs list -H -o name -- DATASET`: exits 0 if the dataset exists; if not,
/// it fails with "dataset does not exist" (see [`super::error::is_missing_dataset`]).
/// The same in both dialects.
pub fn dataset_exists_args(dataset: &str) -> Result<Vec<String>, DatasetNameError> {
    validate_dataset_name(dataset)?;
    let mut out = args(&["list", "-H", "-o", "name", "--"]);
    out.push(dataset.to_owned());
    Ok(out)
}

/// The parent of a dataset name, `None` for a pool's root dataset.
pub fn parent_dataset(dataset: &str) -> Option<&str> {
    dataset.rsplit_once('/').map(|(parent, _)| parent)
}

/// `zfs create -p -- PARENT`: creates the parent of `dataset` and any
/// missing ancestors, so `zfs receive` can create `dataset` itself. `None`
/// for a pool's root dataset, which has no parent to create. Succeeds when
/// the parent exists already (checked on zfs-fuse), but the caller checks
/// first: a delegated replication user may lack the `create` permission.
pub fn create_parents_args(dataset: &str) -> Result<Option<Vec<String>>, DatasetNameError> {
    validate_dataset_name(dataset)?;
    Ok(parent_dataset(dataset).map(|parent| {
        let mut out = args(&["create", "-p", "--"]);
        out.push(parent.to_owned());
        out
    }))
}

/// `zfs set readonly=on DATASET`, for a replica. No `--`: zfs-fuse's
/// `zfs set` takes no options and would treat `--` as a dataset name
/// ("cannot open '--'"); the validated name cannot start with '-'.
///
/// On zfs-fuse a mounted dataset then reads back as `readonly off
/// temporary` (the fuse mount reports rw) although writes fail with EROFS.
pub fn set_readonly_args(dataset: &str) -> Result<Vec<String>, DatasetNameError> {
    validate_dataset_name(dataset)?;
    let mut out = args(&["set", "readonly=on"]);
    out.push(dataset.to_owned());
    Ok(out)
}

/// `zfs hold -- TAG SNAPSHOT`: `SNAPSHOT` cannot be destroyed (zfs answers
/// "dataset is busy") until every hold on it is released. Only
/// [`is_replication_hold_tag`] tags.
pub fn hold_args(tag: &str, snapshot: &str) -> Result<Vec<String>, DatasetNameError> {
    hold_or_release("hold", tag, snapshot)
}

/// `zfs release -- TAG SNAPSHOT`: undoes [`hold_args`].
pub fn release_args(tag: &str, snapshot: &str) -> Result<Vec<String>, DatasetNameError> {
    hold_or_release("release", tag, snapshot)
}

fn hold_or_release(
    subcommand: &str,
    tag: &str,
    snapshot: &str,
) -> Result<Vec<String>, DatasetNameError> {
    validate_snapshot_name(snapshot)?;
    if !is_replication_hold_tag(tag) {
        return Err(DatasetNameError::NotAHoldTag {
            tag: tag.to_owned(),
        });
    }
    Ok(vec![
        subcommand.to_owned(),
        "--".to_owned(),
        tag.to_owned(),
        snapshot.to_owned(),
    ])
}

/// `zfs list -H -p -o name,userrefs -t snapshot (-r | -d 1) -- DATASET`:
/// each snapshot of `dataset` (and of its descendants when `recursive`)
/// with its number of holds ([`parse_held_snapshots`]). Both dialects have
/// `userrefs`; zfs-fuse has no `zfs holds`.
pub fn held_snapshots_args(
    dataset: &str,
    recursive: bool,
) -> Result<Vec<String>, DatasetNameError> {
    validate_dataset_name(dataset)?;
    let depth: &[&str] = if recursive { &["-r"] } else { &["-d", "1"] };
    let mut out = args(&["list", "-H", "-o", "name,userrefs", "-t", "snapshot"]);
    out.extend(depth.iter().map(|s| (*s).to_owned()));
    out.push("--".to_owned());
    out.push(dataset.to_owned());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zfs::error::is_missing_dataset;

    #[test]
    fn holds_take_only_nasfleet_tags_and_snapshot_names() {
        assert_eq!(
            hold_args("nasfleet:7", "tank/a@auto 1").unwrap(),
            ["hold", "--", "nasfleet:7", "tank/a@auto 1"]
        );
        assert_eq!(
            release_args("nasfleet:7", "tank/a@s").unwrap(),
            ["release", "--", "nasfleet:7", "tank/a@s"]
        );
        assert!(hold_args("-r", "tank/a@s").is_err());
        assert!(hold_args("keep", "tank/a@s").is_err());
        assert!(release_args("nasfleet:7", "tank/a").is_err());
        assert_eq!(
            held_snapshots_args("tank/a", false).unwrap(),
            [
                "list",
                "-H",
                "-o",
                "name,userrefs",
                "-t",
                "snapshot",
                "-d",
                "1",
                "--",
                "tank/a"
            ]
        );
        assert_eq!(held_snapshots_args("tank/a", true).unwrap()[6], "-r");
        assert!(held_snapshots_args("-r", true).is_err());
    }

    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn create_snapshots_commands_for_both_dialects() {
        let two = names(&["tank/a@s", "tank/b/c@s"]);
        assert_eq!(
            create_snapshots_args(&two, false).unwrap(),
            ["snapshot", "--", "tank/a@s", "tank/b/c@s"]
        );
        assert_eq!(
            create_snapshots_args(&two, true).unwrap(),
            ["snapshot", "-r", "--", "tank/a@s", "tank/b/c@s"]
        );
        assert_eq!(
            create_snapshots_commands(Dialect::OpenZfs, &two, true).unwrap(),
            [create_snapshots_args(&two, true).unwrap()]
        );
        let legacy = create_snapshots_commands(Dialect::Legacy, &two, true).unwrap();
        assert_eq!(legacy.len(), 2);
        assert_eq!(strs(&legacy[0]), ["snapshot", "-r", "--", "tank/a@s"]);
        assert_eq!(strs(&legacy[1]), ["snapshot", "-r", "--", "tank/b/c@s"]);
        let one = create_snapshots_commands(Dialect::Legacy, &names(&["tank@x"]), false).unwrap();
        assert_eq!(one, [["snapshot", "--", "tank@x"]]);
    }

    #[test]
    fn create_snapshots_refuses_bad_sets() {
        for dialect in [Dialect::Legacy, Dialect::OpenZfs] {
            let refuse = |v: &[&str], recursive: bool| {
                create_snapshots_commands(dialect, &names(v), recursive).unwrap_err()
            };
            assert_eq!(refuse(&[], false), DatasetNameError::NoSnapshots);
            assert!(matches!(
                refuse(&["tank/a"], false),
                DatasetNameError::NotASnapshot { .. }
            ));
            assert!(matches!(
                refuse(&["tank/a@x", "-r"], false),
                DatasetNameError::NotASnapshot { .. }
            ));
            assert!(matches!(
                refuse(&["tank/a@x", "tank/a@y"], false),
                DatasetNameError::Overlapping { .. }
            ));
            assert_eq!(
                refuse(&["tank/a@x", "tank/a/b@x"], true),
                DatasetNameError::Overlapping {
                    first: "tank/a@x".into(),
                    other: "tank/a/b@x".into()
                }
            );
            assert!(matches!(
                refuse(&["tank/a/b@x", "tank/a@x"], true),
                DatasetNameError::Overlapping { .. }
            ));
            assert_eq!(
                refuse(&["tank/a@x", "other/a@x"], false).to_string(),
                "snapshots 'tank/a@x' and 'other/a@x' are in different pools; one zfs call takes snapshots of one pool only"
            );
        }
        // Without -r a dataset and its child may be snapshotted together,
        // and "tank/ab" is no descendant of "tank/a".
        assert!(create_snapshots_args(&names(&["tank/a@x", "tank/a/b@x"]), false).is_ok());
        assert!(create_snapshots_args(&names(&["tank/a@x", "tank/ab@x"]), true).is_ok());
    }

    #[test]
    fn destroy_only_ever_takes_a_snapshot() {
        assert_eq!(
            destroy_snapshot_args("tank/a@auto-2026-01-01_00-00").unwrap(),
            ["destroy", "--", "tank/a@auto-2026-01-01_00-00"]
        );
        for not_a_snapshot in [
            "tank",
            "tank/a",
            "-r",
            "tank/a@",
            "@x",
            "tank/a@x@y",
            "tank/a@x/y",
        ] {
            assert!(
                destroy_snapshot_args(not_a_snapshot).is_err(),
                "{not_a_snapshot:?} would have been destroyed"
            );
        }
    }

    #[test]
    fn probe_commands() {
        assert_eq!(version_args(), ["version"]);
        assert_eq!(pool_version_args(), ["upgrade", "-v"]);
    }

    #[test]
    fn pool_list_differs_by_dialect() {
        assert_eq!(
            strs(&list_pools_args(Dialect::Legacy)),
            ["list", "-H", "-o", "name,size,free,health"]
        );
        assert_eq!(
            strs(&list_pools_args(Dialect::OpenZfs)),
            ["list", "-H", "-p", "-o", "name,size,free,health"]
        );
    }

    #[test]
    fn dataset_listing_is_one_recursive_get() {
        let a = list_datasets_and_snapshots_args("tank").unwrap();
        assert_eq!(
            strs(&a),
            [
                "get",
                "-H",
                "-p",
                "-o",
                "name,property,value",
                "-r",
                "type,used,available,mountpoint,readonly,guid,creation,referenced,userrefs",
                "--",
                "tank"
            ]
        );
        assert!(list_datasets_and_snapshots_args("-rf").is_err());
    }

    #[test]
    fn snapshot_listing_differs_by_dialect() {
        let open = list_snapshots_args(Dialect::OpenZfs, "tank/a", true).unwrap();
        assert_eq!(
            strs(&open),
            [
                "list",
                "-H",
                "-p",
                "-t",
                "snapshot",
                "-o",
                "name,guid,creation,used,referenced",
                "-r",
                "--",
                "tank/a"
            ]
        );
        let legacy = list_snapshots_args(Dialect::Legacy, "tank/a", true).unwrap();
        assert_eq!(
            strs(&legacy),
            [
                "get",
                "-H",
                "-p",
                "-o",
                "name,property,value",
                "-r",
                "type,guid,creation,used,referenced",
                "--",
                "tank/a"
            ]
        );
        let legacy_flat = list_snapshots_args(Dialect::Legacy, "tank/a", false).unwrap();
        assert_eq!(
            strs(&legacy_flat)[5..],
            [
                "-d",
                "1",
                "type,guid,creation,used,referenced",
                "--",
                "tank/a"
            ]
        );
        let open_flat = list_snapshots_args(Dialect::OpenZfs, "tank/a", false).unwrap();
        assert_eq!(strs(&open_flat)[7..], ["-d", "1", "--", "tank/a"]);
        assert!(list_snapshots_args(Dialect::OpenZfs, "tank/$(x)", true).is_err());
        assert!(list_snapshots_args(Dialect::Legacy, "-rf", false).is_err());
    }

    #[test]
    fn send_full_and_incremental() {
        let plain = StreamFeatures::default();
        assert_eq!(
            send_args(plain, SendFrom::Full, "tank/a@s1").unwrap(),
            ["send", "--", "tank/a@s1"]
        );
        assert_eq!(
            send_args(plain, SendFrom::Incremental("@s1"), "tank/a@s2").unwrap(),
            ["send", "-i", "@s1", "--", "tank/a@s2"]
        );
        assert_eq!(
            send_args(
                plain,
                SendFrom::Incremental("tank/origin@o"),
                "tank/a@auto 1"
            )
            .unwrap(),
            ["send", "-i", "tank/origin@o", "--", "tank/a@auto 1"]
        );
        assert_eq!(
            send_args(
                plain,
                SendFrom::Incremental("#nasfleet-7-00000000000000ab"),
                "tank/a@s2"
            )
            .unwrap(),
            [
                "send",
                "-i",
                "#nasfleet-7-00000000000000ab",
                "--",
                "tank/a@s2"
            ]
        );
        assert_eq!(
            send_args(plain, SendFrom::Intermediates("@s1"), "tank/a@s9").unwrap(),
            ["send", "-I", "@s1", "--", "tank/a@s9"]
        );
        // zfs: "multiple snapshots cannot be sent from a bookmark".
        assert!(send_args(plain, SendFrom::Intermediates("#b"), "tank/a@s9").is_err());
        for bad_snapshot in ["tank/a", "-R", "tank/a@", "tank/a@x;y"] {
            assert!(
                send_args(plain, SendFrom::Full, bad_snapshot).is_err(),
                "{bad_snapshot}"
            );
        }
        for bad_base in [
            "@",
            "s1",
            "-R",
            "@x/y",
            "@$(id)",
            "tank/a",
            "@.",
            "#",
            "#a#b",
            "tank/a#b@c",
        ] {
            assert!(
                send_args(plain, SendFrom::Incremental(bad_base), "tank/a@s2").is_err(),
                "{bad_base:?} accepted"
            );
        }
    }

    #[test]
    fn stream_features_become_flags() {
        let all = StreamFeatures {
            compact: true,
            raw: true,
        };
        assert_eq!(
            send_args(all, SendFrom::Incremental("@a"), "tank/a@b").unwrap(),
            ["send", "-w", "-L", "-c", "-e", "-i", "@a", "--", "tank/a@b"]
        );
        let compact = StreamFeatures {
            compact: true,
            raw: false,
        };
        assert_eq!(
            send_args(compact, SendFrom::Full, "tank/a@b").unwrap(),
            ["send", "-L", "-c", "-e", "--", "tank/a@b"]
        );
    }

    #[test]
    fn resumes_take_only_a_token() {
        let token = "1-10615845e7-f0-789c636064000310a500c4ec50360710e72765";
        assert_eq!(send_resume_args(token).unwrap(), ["send", "-t", token]);
        assert_eq!(
            send_resume_info_args(token).unwrap(),
            ["send", "-n", "-v", "-P", "-t", token]
        );
        for bad in ["", "-R", "1--2", "1-xyz", "abc-1", "1-2 -3", "1-2;id"] {
            assert!(send_resume_args(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            recv_abort_args("backup/a").unwrap(),
            ["receive", "-A", "--", "backup/a"]
        );
        assert!(recv_abort_args("-F").is_err());
    }

    #[test]
    fn bookmarks_are_of_the_snapshots_dataset() {
        assert_eq!(
            bookmark_args("tank/a@s", "tank/a#nasfleet-1-0000000000000001").unwrap(),
            [
                "bookmark",
                "--",
                "tank/a@s",
                "tank/a#nasfleet-1-0000000000000001"
            ]
        );
        assert!(bookmark_args("tank/a@s", "tank/b#x").is_err());
        assert!(bookmark_args("tank/a@s", "tank/a@x").is_err());
        assert!(bookmark_args("tank/a", "tank/a#x").is_err());
        assert_eq!(
            destroy_bookmark_args("tank/a#x").unwrap(),
            ["destroy", "--", "tank/a#x"]
        );
        // Never a dataset or a snapshot.
        assert!(destroy_bookmark_args("tank/a").is_err());
        assert!(destroy_bookmark_args("tank/a@s").is_err());
        assert!(bookmarks_args("-r").is_err());
    }

    #[test]
    fn send_estimates_only_where_zfs_can_make_them() {
        let plain = StreamFeatures::default();
        assert_eq!(
            send_estimate_args(
                Dialect::OpenZfs,
                plain,
                SendFrom::Incremental("@s1"),
                "tank/a@s2"
            )
            .unwrap()
            .unwrap(),
            ["send", "-n", "-P", "-i", "@s1", "--", "tank/a@s2"]
        );
        assert_eq!(
            send_estimate_args(Dialect::OpenZfs, plain, SendFrom::Full, "tank/a@s1")
                .unwrap()
                .unwrap(),
            ["send", "-n", "-P", "--", "tank/a@s1"]
        );
        assert!(
            send_estimate_args(Dialect::Legacy, plain, SendFrom::Full, "tank/a@s1")
                .unwrap()
                .is_none()
        );
        assert!(
            send_estimate_args(
                Dialect::OpenZfs,
                plain,
                SendFrom::Incremental("-R"),
                "tank/a@s2"
            )
            .is_err()
        );
    }

    #[test]
    fn recv_differs_by_dialect() {
        assert_eq!(
            recv_args(Dialect::Legacy, "backup/nas1/tank/a", false, true).unwrap(),
            ["receive", "--", "backup/nas1/tank/a"]
        );
        assert_eq!(
            recv_args(Dialect::Legacy, "backup/a", true, false).unwrap(),
            ["receive", "-F", "--", "backup/a"]
        );
        assert_eq!(
            recv_args(Dialect::OpenZfs, "backup/a", false, true).unwrap(),
            ["receive", "-s", "-u", "-o", "readonly=on", "--", "backup/a"]
        );
        assert_eq!(
            recv_args(Dialect::OpenZfs, "backup/a", false, false).unwrap(),
            ["receive", "-s", "-u", "--", "backup/a"]
        );
        assert_eq!(
            recv_args(Dialect::OpenZfs, "backup/a", true, true).unwrap(),
            [
                "receive",
                "-s",
                "-u",
                "-o",
                "readonly=on",
                "-F",
                "--",
                "backup/a"
            ]
        );
        for dialect in [Dialect::Legacy, Dialect::OpenZfs] {
            assert!(recv_args(dialect, "backup/a@s", false, true).is_err());
            assert!(recv_args(dialect, "-F", false, true).is_err());
            assert!(recv_args(dialect, "backup/a;rm", true, true).is_err());
        }
    }

    #[test]
    fn snapshot_guid_listing_differs_by_dialect() {
        assert_eq!(
            snapshot_guids_args(Dialect::Legacy, "tank/a").unwrap(),
            [
                "get",
                "-H",
                "-p",
                "-o",
                "name,property,value",
                "-d",
                "1",
                "type,guid,creation,createtxg",
                "--",
                "tank/a"
            ]
        );
        assert_eq!(
            snapshot_guids_args(Dialect::OpenZfs, "tank/a").unwrap(),
            [
                "list",
                "-H",
                "-p",
                "-t",
                "filesystem,volume,snapshot,bookmark",
                "-d",
                "1",
                "-o",
                "name,guid,creation,createtxg,receive_resume_token,encryption,keystatus",
                "--",
                "tank/a"
            ]
        );
        for dialect in [Dialect::Legacy, Dialect::OpenZfs] {
            assert!(snapshot_guids_args(dialect, "-r").is_err());
            assert!(snapshot_guids_args(dialect, "tank/a@s").is_err());
        }
    }

    #[test]
    fn target_side_commands() {
        assert_eq!(
            dataset_exists_args("backup/a").unwrap(),
            ["list", "-H", "-o", "name", "--", "backup/a"]
        );
        assert_eq!(
            create_parents_args("backup/nas1/tank/a").unwrap(),
            Some(names(&["create", "-p", "--", "backup/nas1/tank"]))
        );
        assert_eq!(create_parents_args("backup").unwrap(), None);
        assert_eq!(
            set_readonly_args("backup/a").unwrap(),
            ["set", "readonly=on", "backup/a"]
        );
        for bad in ["-p", "backup/a@s", "", "backup/../x"] {
            assert!(dataset_exists_args(bad).is_err(), "{bad}");
            assert!(create_parents_args(bad).is_err(), "{bad}");
            assert!(set_readonly_args(bad).is_err(), "{bad}");
        }
        assert_eq!(parent_dataset("a/b/c"), Some("a/b"));
        assert_eq!(parent_dataset("a"), None);
        assert!(is_missing_dataset(
            "cannot open 'nfhelperrsB/nope': dataset does not exist"
        ));
        assert!(!is_missing_dataset("cannot open 'x': permission denied"));
    }
}
