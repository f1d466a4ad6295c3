//! Planning one dataset's replication (pure): by snapshot GUID, as zrepl does, with typed conflicts.
//!
//! The incremental base is the newest target snapshot whose GUID is also
//! on the source (as a snapshot, or as a bookmark once the snapshot is
//! gone there), whatever it is called on either side, and conflicts are
//! typed ("no common snapshot", "diverged") instead of raw zfs text. Every
//! matching snapshot reaches the target: consecutive ones in one `-I`
//! stream (zfs receives them one after another), across a snapshot that
//! does not match with `-i`. A run cut short leaves a target that the next
//! run continues from: its newest snapshot is a common one.

use std::collections::HashMap;

use crate::zfs::SnapshotInfo;
use thiserror::Error;

/// One `zfs send | zfs recv`. Snapshot names are the part after '@', as
/// the source calls them; a bookmark is written `#name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    /// A full stream of `snapshot`; creates the target dataset.
    Full { snapshot: String },
    /// The changes from `from` (already on the target; a snapshot or a
    /// `#bookmark` of it) to `to` (`-i`).
    Incremental { from: String, to: String },
    /// Every snapshot after `from` up to `to`, `count` of them, all
    /// matching the task's schemas, in one stream package (`-I`).
    Intermediates {
        from: String,
        to: String,
        count: usize,
    },
}

impl Transfer {
    pub fn full(snapshot: impl Into<String>) -> Transfer {
        Transfer::Full {
            snapshot: snapshot.into(),
        }
    }

    pub fn incremental(from: impl Into<String>, to: impl Into<String>) -> Transfer {
        Transfer::Incremental {
            from: from.into(),
            to: to.into(),
        }
    }

    /// The (newest) snapshot this transfer brings to the target.
    pub fn snapshot(&self) -> &str {
        match self {
            Transfer::Full { snapshot } => snapshot,
            Transfer::Incremental { to, .. } | Transfer::Intermediates { to, .. } => to,
        }
    }

    /// How many snapshots this transfer brings to the target.
    pub fn snapshots(&self) -> usize {
        match self {
            Transfer::Full { .. } | Transfer::Incremental { .. } => 1,
            Transfer::Intermediates { count, .. } => *count,
        }
    }

    /// For progress and messages: `tank/a@s1 (full)`, `tank/a@s1 -> @s2`,
    /// `tank/a#b -> @s2`, `tank/a@s1 -> @s9 (8 snapshots)`.
    pub fn label(&self, source_dataset: &str) -> String {
        match self {
            Transfer::Full { snapshot } => format!("{source_dataset}@{snapshot} (full)"),
            Transfer::Incremental { from, to } => {
                format!("{source_dataset}{} -> @{to}", with_mark(from))
            }
            Transfer::Intermediates { from, to, count } => {
                format!("{source_dataset}@{from} -> @{to} ({count} snapshots)")
            }
        }
    }
}

/// An incremental source as zfs takes it after `-i`/`-I`: `@snapshot`,
/// or `#bookmark` as it is written already.
pub(super) fn with_mark(from: &str) -> String {
    if from.starts_with('#') {
        from.to_owned()
    } else {
        format!("@{from}")
    }
}

/// What one run does for one dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// In order; empty when the target is up to date.
    pub transfers: Vec<Transfer>,
    /// Receive with `-F` (roll the target back to its newest snapshot
    /// first): only when overwriting was allowed and the target exists.
    pub force: bool,
    /// The common snapshot the first incremental starts from, as the
    /// source calls it (`#name` when only its bookmark is left there);
    /// `None` when the plan starts with a full stream.
    pub base: Option<String>,
    /// The same snapshot as the target calls it (names may differ; GUIDs
    /// do not).
    pub target_base: Option<String>,
    /// Target snapshots (names on the target) to destroy before the
    /// transfers: those newer than the base, or all of them when there is
    /// no common snapshot. Only ever non-empty when overwriting was allowed,
    /// since `recv -F` of a plain incremental stream refuses a target whose
    /// newest snapshot is not the base, and a full stream refuses a target
    /// with snapshots.
    pub discard: Vec<String>,
}

impl Plan {
    pub fn is_up_to_date(&self) -> bool {
        self.transfers.is_empty()
    }
}

/// Why a dataset cannot be replicated as things stand.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    #[error("Dataset '{dataset}' does not have any matching snapshots to replicate")]
    NoMatchingSnapshots { dataset: String },
    #[error(
        "Target dataset '{target_dataset}' has data but no snapshot in common with '{source_dataset}' ({}); refusing to overwrite it without --allow-overwrite",
        describe_newest(.newest)
    )]
    NoCommonSnapshot {
        target_dataset: String,
        source_dataset: String,
        /// The target's newest snapshot, `None` when it has none.
        newest: Option<String>,
    },
    #[error(
        "Target dataset '{target_dataset}' has diverged from '{source_dataset}': it has snapshot '{snapshot}' newer than the common base '{base}'; refusing to overwrite it without --allow-overwrite"
    )]
    Diverged {
        target_dataset: String,
        source_dataset: String,
        /// The target's newest snapshot, which the source does not have.
        snapshot: String,
        /// The common base as the target calls it.
        base: String,
    },
}

fn describe_newest(newest: &Option<String>) -> String {
    match newest {
        Some(name) => format!("its newest snapshot is '{name}'"),
        None => "it has no snapshots".to_owned(),
    }
}

/// Decides what to send from `source_dataset` to `target_dataset`.
///
/// - `source`: the source's snapshots, oldest first.
/// - `bookmarks`: the source's bookmarks: a target snapshot whose GUID is
///   only there (its snapshot destroyed on the source) is still a base.
/// - `matching(name)`: whether a source snapshot name matches one of the
///   task's naming schemas; only those are sent.
/// - `target`: `None` when the target dataset does not exist, else its
///   snapshots, oldest first.
///
/// Rules:
/// - No matching snapshot on the source at all: [`PlanError::NoMatchingSnapshots`].
/// - Target absent: a full stream of the oldest matching snapshot, then an
///   incremental to each newer matching one.
/// - The base is the newest target snapshot whose GUID is on the source
///   (names may differ). From it, an incremental chain through every
///   matching source snapshot newer than the base; none: up to date.
/// - Target snapshots newer than the base (none of which the source has,
///   by the choice of the base) mean the target has diverged:
///   [`PlanError::Diverged`], or with `allow_overwrite` they are discarded
///   and the chain is received with `-F`.
/// - An existing target without a common snapshot (even one without any
///   snapshot: its content is unknown, so it counts as data):
///   [`PlanError::NoCommonSnapshot`], or with `allow_overwrite` all its
///   snapshots are discarded and the full chain is received with `-F`.
pub fn plan(
    source_dataset: &str,
    target_dataset: &str,
    source: &[SnapshotInfo],
    bookmarks: &[SnapshotInfo],
    matching: impl Fn(&str) -> bool,
    target: Option<&[SnapshotInfo]>,
    allow_overwrite: bool,
) -> Result<Plan, PlanError> {
    let matching: Vec<usize> = (0..source.len())
        .filter(|&i| matching(&source[i].name))
        .collect();
    if matching.is_empty() {
        return Err(PlanError::NoMatchingSnapshots {
            dataset: source_dataset.to_owned(),
        });
    }
    let Some(target) = target else {
        return Ok(Plan {
            transfers: chain(source, None, &matching),
            force: false,
            base: None,
            target_base: None,
            discard: Vec::new(),
        });
    };

    let on_source: HashMap<u64, Kept> = bookmarks
        .iter()
        .map(|b| (b.guid, Kept::Bookmark(b)))
        .chain(
            source
                .iter()
                .enumerate()
                .map(|(i, s)| (s.guid, Kept::Snapshot(i))),
        )
        .collect();
    let common = target
        .iter()
        .enumerate()
        .rev()
        .find_map(|(t, snap)| on_source.get(&snap.guid).map(|&kept| (t, kept)));

    let Some((target_base, source_base)) = common else {
        if !allow_overwrite {
            return Err(PlanError::NoCommonSnapshot {
                target_dataset: target_dataset.to_owned(),
                source_dataset: source_dataset.to_owned(),
                newest: target.last().map(|s| s.name.clone()),
            });
        }
        return Ok(Plan {
            transfers: chain(source, None, &matching),
            force: true,
            base: None,
            target_base: None,
            discard: target.iter().map(|s| s.name.clone()).collect(),
        });
    };

    let diverged = &target[target_base + 1..];
    if let Some(newest) = diverged.last().filter(|_| !allow_overwrite) {
        return Err(PlanError::Diverged {
            target_dataset: target_dataset.to_owned(),
            source_dataset: source_dataset.to_owned(),
            snapshot: newest.name.clone(),
            base: target[target_base].name.clone(),
        });
    }
    let (newer, base, base_index): (Vec<usize>, String, Option<usize>) = match source_base {
        Kept::Snapshot(b) => (
            matching.into_iter().filter(|&i| i > b).collect(),
            source[b].name.clone(),
            Some(b),
        ),
        Kept::Bookmark(mark) => (
            matching
                .into_iter()
                .filter(|&i| source[i].createtxg > mark.createtxg)
                .collect(),
            format!("#{}", mark.name),
            None,
        ),
    };
    let target_base = Some(target[target_base].name.clone());
    if newer.is_empty() {
        // Up to date. Diverged snapshots, allowed to be overwritten, are
        // left alone until there is something to receive.
        return Ok(Plan {
            transfers: Vec::new(),
            force: false,
            base: Some(base),
            target_base,
            discard: Vec::new(),
        });
    }
    Ok(Plan {
        transfers: chain(source, Some((&base, base_index)), &newer),
        force: allow_overwrite,
        base: Some(base),
        target_base,
        discard: diverged.iter().map(|s| s.name.clone()).collect(),
    })
}

/// Where the base was found on the source.
#[derive(Debug, Clone, Copy)]
enum Kept<'a> {
    /// `source[i]`.
    Snapshot(usize),
    /// Only a bookmark is left.
    Bookmark(&'a SnapshotInfo),
}

/// Transfers bringing `source[i]` for each `i` in `indices` (ascending),
/// starting from `from` (already on the target: its name and its index in
/// `source`, none for a bookmark) or with a full stream. Snapshots next to
/// each other in `source` go in one `-I` transfer: nothing lies between
/// them that the task does not send.
fn chain(
    source: &[SnapshotInfo],
    from: Option<(&str, Option<usize>)>,
    indices: &[usize],
) -> Vec<Transfer> {
    let mut previous = from.map(|(name, index)| (name.to_owned(), index));
    let mut out: Vec<Transfer> = Vec::with_capacity(indices.len());
    // The last transfer spans neighbouring snapshots only, from a
    // snapshot (`-I` refuses a bookmark): it may be stretched.
    let mut stretchable = false;
    for &i in indices {
        let name = source[i].name.clone();
        let Some((from, from_index)) = previous.replace((name.clone(), Some(i))) else {
            out.push(Transfer::full(name));
            stretchable = false;
            continue;
        };
        let neighbour = from_index.is_some_and(|f| f + 1 == i);
        match out.last_mut() {
            Some(Transfer::Intermediates { to, count, .. }) if neighbour && stretchable => {
                *to = name;
                *count += 1;
            }
            Some(last) if neighbour && stretchable => {
                if let Transfer::Incremental { from: first, .. } = last {
                    let first = std::mem::take(first);
                    *last = Transfer::Intermediates {
                        from: first,
                        to: name,
                        count: 2,
                    };
                }
            }
            _ => {
                out.push(Transfer::incremental(from, name));
                stretchable = neighbour;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without source bookmarks, as most cases are.
    fn plan(
        source_dataset: &str,
        target_dataset: &str,
        source: &[SnapshotInfo],
        matching: impl Fn(&str) -> bool,
        target: Option<&[SnapshotInfo]>,
        allow_overwrite: bool,
    ) -> Result<Plan, PlanError> {
        super::plan(
            source_dataset,
            target_dataset,
            source,
            &[],
            matching,
            target,
            allow_overwrite,
        )
    }

    fn range(from: &str, to: &str, count: usize) -> Transfer {
        Transfer::Intermediates {
            from: from.into(),
            to: to.into(),
            count,
        }
    }

    /// Snapshots oldest first; guids derived from names unless given.
    fn snaps(list: &[(&str, u64)]) -> Vec<SnapshotInfo> {
        list.iter()
            .enumerate()
            .map(|(i, (name, guid))| SnapshotInfo {
                name: (*name).to_owned(),
                guid: *guid,
                creation: 1_700_000_000 + i as i64 * 60,
                createtxg: 10 + i as u64 * 5,
            })
            .collect()
    }

    fn auto(name: &str) -> bool {
        name.starts_with("auto-")
    }

    fn full(s: &str) -> Transfer {
        Transfer::full(s)
    }

    fn inc(from: &str, to: &str) -> Transfer {
        Transfer::incremental(from, to)
    }

    const SRC: &str = "tank/data";
    const DST: &str = "backup/nas1/tank/data";

    #[test]
    fn first_run_sends_oldest_matching_in_full_then_each_newer_matching() {
        let source = snaps(&[
            ("manual-1", 1),
            ("auto-1", 2),
            ("hourly", 3),
            ("auto-2", 4),
            ("manual-2", 5),
            ("auto-3", 6),
            ("manual-3", 7),
        ]);
        let p = plan(SRC, DST, &source, auto, None, false).unwrap();
        // manual-* and hourly lie between them: `-i` over them each time.
        assert_eq!(
            p.transfers,
            [
                full("auto-1"),
                inc("auto-1", "auto-2"),
                inc("auto-2", "auto-3")
            ]
        );
        assert!(!p.force);
        assert_eq!(p.base, None);
        assert!(p.discard.is_empty());
        // allow_overwrite changes nothing when there is nothing to overwrite.
        assert_eq!(plan(SRC, DST, &source, auto, None, true).unwrap(), p);
    }

    #[test]
    fn later_run_continues_from_the_newest_common_snapshot() {
        let source = snaps(&[
            ("auto-1", 1),
            ("auto-2", 2),
            ("manual", 3),
            ("auto-3", 4),
            ("auto-4", 5),
        ]);
        let target = snaps(&[("auto-1", 1), ("auto-2", 2)]);
        let p = plan(SRC, DST, &source, auto, Some(&target), false).unwrap();
        // Over `manual` with `-i`; auto-3 and auto-4 are neighbours.
        assert_eq!(
            p.transfers,
            [inc("auto-2", "auto-3"), inc("auto-3", "auto-4")]
        );
        assert_eq!(p.base.as_deref(), Some("auto-2"));
        assert!(!p.force && p.discard.is_empty());
    }

    #[test]
    fn up_to_date_is_an_empty_plan() {
        let source = snaps(&[("auto-1", 1), ("auto-2", 2), ("manual", 3)]);
        let target = snaps(&[("auto-1", 1), ("auto-2", 2)]);
        for allow in [false, true] {
            let p = plan(SRC, DST, &source, auto, Some(&target), allow).unwrap();
            assert!(p.is_up_to_date());
            assert_eq!(p.base.as_deref(), Some("auto-2"));
            assert!(!p.force && p.discard.is_empty());
        }
    }

    #[test]
    fn common_snapshot_is_found_by_guid_not_name() {
        let source = snaps(&[("auto-1", 11), ("auto-2", 22), ("auto-3", 33)]);
        // auto-2 was renamed on the target; a same-named snapshot there with
        // another guid is not common.
        let target = snaps(&[("auto-1", 11), ("kept-forever", 22)]);
        let p = plan(SRC, DST, &source, auto, Some(&target), false).unwrap();
        assert_eq!(p.transfers, [inc("auto-2", "auto-3")]);
        assert_eq!(
            p.base.as_deref(),
            Some("auto-2"),
            "the source's name is sent"
        );
        assert_eq!(
            p.target_base.as_deref(),
            Some("kept-forever"),
            "and the target's is known, for its hold"
        );

        let impostor = snaps(&[("auto-1", 99), ("auto-2", 98)]);
        let err = plan(SRC, DST, &source, auto, Some(&impostor), false).unwrap_err();
        assert_eq!(
            err,
            PlanError::NoCommonSnapshot {
                target_dataset: DST.into(),
                source_dataset: SRC.into(),
                newest: Some("auto-2".into()),
            }
        );
    }

    #[test]
    fn base_may_be_a_non_matching_snapshot() {
        // The newest common snapshot does not match the task's schema (e.g.
        // it was sent by another task); the chain starts from it anyway.
        let source = snaps(&[("auto-1", 1), ("manual-x", 2), ("auto-2", 3)]);
        let target = snaps(&[("auto-1", 1), ("manual-x", 2)]);
        let p = plan(SRC, DST, &source, auto, Some(&target), false).unwrap();
        assert_eq!(p.transfers, [inc("manual-x", "auto-2")]);
    }

    #[test]
    fn older_target_only_snapshots_do_not_matter() {
        // Retention removed auto-0 from the source; the target keeps it.
        let source = snaps(&[("auto-1", 1), ("auto-2", 2)]);
        let target = snaps(&[("auto-0", 100), ("auto-1", 1)]);
        let p = plan(SRC, DST, &source, auto, Some(&target), false).unwrap();
        assert_eq!(p.transfers, [inc("auto-1", "auto-2")]);
    }

    #[test]
    fn diverged_target_is_refused_or_overwritten() {
        let source = snaps(&[("auto-1", 1), ("auto-2", 2), ("auto-3", 3)]);
        let target = snaps(&[("auto-1", 1), ("local-a", 50), ("local-b", 51)]);
        let err = plan(SRC, DST, &source, auto, Some(&target), false).unwrap_err();
        assert_eq!(
            err,
            PlanError::Diverged {
                target_dataset: DST.into(),
                source_dataset: SRC.into(),
                snapshot: "local-b".into(),
                base: "auto-1".into(),
            }
        );
        assert_eq!(
            err.to_string(),
            "Target dataset 'backup/nas1/tank/data' has diverged from 'tank/data': it has snapshot 'local-b' newer than the common base 'auto-1'; refusing to overwrite it without --allow-overwrite"
        );
        let p = plan(SRC, DST, &source, auto, Some(&target), true).unwrap();
        assert_eq!(p.transfers, [range("auto-1", "auto-3", 2)]);
        assert!(p.force);
        assert_eq!(p.discard, ["local-a", "local-b"]);
        assert_eq!(p.base.as_deref(), Some("auto-1"));
    }

    #[test]
    fn diverged_with_nothing_new_is_still_reported() {
        let source = snaps(&[("auto-1", 1)]);
        let target = snaps(&[("auto-1", 1), ("local", 50)]);
        assert!(matches!(
            plan(SRC, DST, &source, auto, Some(&target), false),
            Err(PlanError::Diverged { .. })
        ));
        // Overwriting allowed: nothing to receive, so nothing is destroyed.
        let p = plan(SRC, DST, &source, auto, Some(&target), true).unwrap();
        assert!(p.is_up_to_date() && p.discard.is_empty());
    }

    #[test]
    fn no_common_snapshot_is_refused_or_overwritten() {
        let source = snaps(&[("other", 7), ("auto-1", 1), ("auto-2", 2)]);
        let target = snaps(&[("x", 80), ("y", 81)]);
        let err = plan(SRC, DST, &source, auto, Some(&target), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Target dataset 'backup/nas1/tank/data' has data but no snapshot in common with 'tank/data' (its newest snapshot is 'y'); refusing to overwrite it without --allow-overwrite"
        );
        let p = plan(SRC, DST, &source, auto, Some(&target), true).unwrap();
        assert_eq!(p.transfers, [full("auto-1"), inc("auto-1", "auto-2")]);
        assert!(p.force);
        assert_eq!(p.base, None);
        assert_eq!(p.discard, ["x", "y"]);
    }

    #[test]
    fn existing_target_without_snapshots_counts_as_data() {
        let source = snaps(&[("auto-1", 1)]);
        let err = plan(SRC, DST, &source, auto, Some(&[]), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Target dataset 'backup/nas1/tank/data' has data but no snapshot in common with 'tank/data' (it has no snapshots); refusing to overwrite it without --allow-overwrite"
        );
        let p = plan(SRC, DST, &source, auto, Some(&[]), true).unwrap();
        assert_eq!(p.transfers, [full("auto-1")]);
        assert!(p.force && p.discard.is_empty());
    }

    #[test]
    fn no_matching_snapshots() {
        let source = snaps(&[("manual-1", 1), ("hourly", 2)]);
        for target in [None, Some(&snaps(&[("manual-1", 1)])[..])] {
            let err = plan(SRC, DST, &source, auto, target, true).unwrap_err();
            assert_eq!(
                err.to_string(),
                "Dataset 'tank/data' does not have any matching snapshots to replicate"
            );
        }
        assert!(matches!(
            plan(SRC, DST, &[], auto, None, false),
            Err(PlanError::NoMatchingSnapshots { .. })
        ));
    }

    #[test]
    fn a_run_cut_short_is_continued_by_the_next() {
        let source = snaps(&[("auto-1", 1), ("auto-2", 2), ("auto-3", 3), ("auto-4", 4)]);
        let first = plan(SRC, DST, &source, auto, None, false).unwrap();
        assert_eq!(
            first.transfers,
            [full("auto-1"), range("auto-1", "auto-4", 3)]
        );
        // zfs receives a `-I` package one snapshot after another: cut
        // after auto-2, the target has it and the rest follows.
        let cut = &snaps(&[("auto-1", 1), ("auto-2", 2)]);
        let next = plan(SRC, DST, &source, auto, Some(cut), false).unwrap();
        assert_eq!(next.transfers, [range("auto-2", "auto-4", 2)]);
        // Suppose the run stops after each number of completed transfers:
        // the target then holds exactly what those transfers brought, and
        // the next plan sends the rest, never anything twice.
        for done in 0..=first.transfers.len() {
            let received: Vec<SnapshotInfo> = first.transfers[..done]
                .iter()
                .map(|t| {
                    let s = source.iter().find(|s| s.name == t.snapshot()).unwrap();
                    SnapshotInfo {
                        createtxg: s.createtxg + 1000,
                        ..s.clone()
                    }
                })
                .collect();
            let target = (done > 0).then_some(&received[..]);
            let next = plan(SRC, DST, &source, auto, target, false).unwrap();
            assert_eq!(next.transfers, first.transfers[done..], "after {done}");
        }
    }

    #[test]
    fn transfer_labels() {
        assert_eq!(full("auto-1").label("tank/a"), "tank/a@auto-1 (full)");
        assert_eq!(inc("a", "b").label("tank/a"), "tank/a@a -> @b");
        assert_eq!(inc("#m", "b").label("tank/a"), "tank/a#m -> @b");
        assert_eq!(
            range("a", "d", 3).label("tank/a"),
            "tank/a@a -> @d (3 snapshots)"
        );
        assert_eq!(inc("a", "b").snapshot(), "b");
        assert_eq!(range("a", "d", 3).snapshot(), "d");
        assert_eq!(range("a", "d", 3).snapshots(), 3);
    }

    #[test]
    fn neighbouring_matching_snapshots_go_in_one_stream() {
        let source = snaps(&[
            ("auto-1", 1),
            ("auto-2", 2),
            ("auto-3", 3),
            ("manual", 4),
            ("auto-4", 5),
            ("auto-5", 6),
            ("auto-6", 7),
        ]);
        let p = plan(SRC, DST, &source, auto, None, false).unwrap();
        assert_eq!(
            p.transfers,
            [
                full("auto-1"),
                range("auto-1", "auto-3", 2),
                inc("auto-3", "auto-4"),
                range("auto-4", "auto-6", 2),
            ]
        );
        let total: usize = p.transfers.iter().map(Transfer::snapshots).sum();
        assert_eq!(total, 6, "every matching snapshot, `manual` not");
        let target = snaps(&[("auto-1", 1), ("auto-2", 2), ("auto-3", 3)]);
        let p = plan(SRC, DST, &source, auto, Some(&target), false).unwrap();
        assert_eq!(
            p.transfers,
            [inc("auto-3", "auto-4"), range("auto-4", "auto-6", 2)]
        );
        let up_to_2 = &snaps(&[("auto-1", 1), ("auto-2", 2)]);
        let p = plan(SRC, DST, &source[..3], auto, Some(up_to_2), false).unwrap();
        assert_eq!(p.transfers, [inc("auto-2", "auto-3")], "one stays `-i`");
    }

    #[test]
    fn a_bookmark_stands_in_for_a_base_gone_from_the_source() {
        // auto-2, the target's newest, was destroyed on the source after
        // its bookmark was made.
        let source = snaps(&[("auto-1", 1), ("auto-3", 3), ("auto-4", 4)]);
        let mut bookmarks = snaps(&[("nasfleet-7-2", 2)]);
        bookmarks[0].createtxg = 12;
        let target = snaps(&[("auto-1", 1), ("auto-2", 2)]);
        let p = super::plan(SRC, DST, &source, &bookmarks, auto, Some(&target), false).unwrap();
        assert_eq!(
            p.transfers,
            [inc("#nasfleet-7-2", "auto-3"), inc("auto-3", "auto-4")]
        );
        assert_eq!(p.base.as_deref(), Some("#nasfleet-7-2"));
        assert_eq!(p.target_base.as_deref(), Some("auto-2"));
        // A snapshot with the GUID wins over its bookmark.
        let with_snapshot = snaps(&[("auto-1", 1), ("auto-2", 2), ("auto-3", 3)]);
        let p = super::plan(
            SRC,
            DST,
            &with_snapshot,
            &bookmarks,
            auto,
            Some(&target),
            false,
        )
        .unwrap();
        assert_eq!(p.transfers, [inc("auto-2", "auto-3")]);
        // Without it, the target has no common snapshot.
        assert!(matches!(
            plan(SRC, DST, &source, auto, Some(&target), false),
            Err(PlanError::Diverged { .. }) | Err(PlanError::NoCommonSnapshot { .. })
        ));
    }
}
