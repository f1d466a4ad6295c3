//! Planning one dataset's replication (pure): by snapshot GUID, as zrepl does, with typed conflicts.
//!
//! The incremental base is the newest target snapshot whose GUID is also
//! on the source, whatever it is called on either side, and conflicts are
//! typed ("no common snapshot", "diverged") instead of raw zfs text. Every
//! matching snapshot is sent one by one (`-i` chain, never `-I`), so the
//! target holds each of them and a run cut short leaves a target that the
//! next run continues from: its newest snapshot is a common one by
//! construction.

use std::collections::HashMap;

use crate::zfs::SnapshotInfo;
use thiserror::Error;

/// One `zfs send | zfs recv`. Snapshot names are the part after '@', as
/// the source calls them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    /// A full stream of `snapshot`; creates the target dataset.
    Full { snapshot: String },
    /// The changes from `from` (already on the target) to `to`.
    Incremental { from: String, to: String },
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

    /// The snapshot this transfer brings to the target.
    pub fn snapshot(&self) -> &str {
        match self {
            Transfer::Full { snapshot } => snapshot,
            Transfer::Incremental { to, .. } => to,
        }
    }

    /// For progress and messages: `tank/a@s1 (full)`, `tank/a@s1 -> @s2`.
    pub fn label(&self, source_dataset: &str) -> String {
        match self {
            Transfer::Full { snapshot } => format!("{source_dataset}@{snapshot} (full)"),
            Transfer::Incremental { from, to } => format!("{source_dataset}@{from} -> @{to}"),
        }
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
    /// source calls it; `None` when the plan starts with a full stream.
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

    let on_source: HashMap<u64, usize> = source
        .iter()
        .enumerate()
        .map(|(i, s)| (s.guid, i))
        .collect();
    let common = target
        .iter()
        .enumerate()
        .rev()
        .find_map(|(t, snap)| on_source.get(&snap.guid).map(|&s| (t, s)));

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
    let newer: Vec<usize> = matching.into_iter().filter(|&i| i > source_base).collect();
    let base = source[source_base].name.clone();
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
        transfers: chain(source, Some(&base), &newer),
        force: allow_overwrite,
        base: Some(base),
        target_base,
        discard: diverged.iter().map(|s| s.name.clone()).collect(),
    })
}

/// Transfers bringing `source[i]` for each `i` in `indices` (ascending),
/// starting from `from` (already on the target) or with a full stream.
fn chain(source: &[SnapshotInfo], from: Option<&str>, indices: &[usize]) -> Vec<Transfer> {
    let mut previous = from.map(str::to_owned);
    let mut out = Vec::with_capacity(indices.len());
    for &i in indices {
        let name = source[i].name.clone();
        out.push(match previous.take() {
            None => Transfer::Full {
                snapshot: name.clone(),
            },
            Some(from) => Transfer::Incremental {
                from,
                to: name.clone(),
            },
        });
        previous = Some(name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            p.transfers,
            [inc("auto-1", "auto-2"), inc("auto-2", "auto-3")]
        );
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
        assert_eq!(first.transfers.len(), 4);
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
        assert_eq!(inc("a", "b").snapshot(), "b");
    }
}
