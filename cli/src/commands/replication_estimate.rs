//! What a replication run would send now (`replication create --dry-run`, `replication show`): asking the controller for its sources' `zfs send -n -P` estimates and showing them per dataset.

use super::status_error;
use crate::output::{Table, human_bytes};
use nasfleet_proto::v1::fleet_client::FleetClient;
use nasfleet_proto::v1::{DatasetEstimate, UpdateTaskRequest};
use serde::Serialize;
use tonic::transport::Channel;

/// The estimate of the task `request` names (or of its spec, unsaved).
pub async fn fetch(
    channel: Channel,
    request: UpdateTaskRequest,
) -> anyhow::Result<Vec<DatasetEstimate>> {
    match FleetClient::new(channel)
        .estimate_replication(request)
        .await
    {
        Ok(estimate) => Ok(estimate.into_inner().datasets),
        Err(status) => Err(status_error(status)),
    }
}

/// One dataset's estimate in `-o json`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct EstimateJson {
    pub source: String,
    pub target: String,
    pub snapshots: Option<u32>,
    /// `null` where zfs cannot estimate (zfs-fuse) or on an error.
    pub bytes: Option<u64>,
    /// The incremental base, `null` for a full first stream; `#name`
    /// when it is a bookmark of the source (the snapshot is gone there).
    pub base: Option<String>,
    pub base_guid: Option<u64>,
    pub base_is_bookmark: bool,
    /// Target snapshots a run would destroy first (overwriting).
    pub discards: u32,
    /// A partial receive on the target a run would resume, from this many
    /// stream bytes on; `null`: none.
    pub resumes_at: Option<u64>,
    /// Encrypted, sent raw: the target stores ciphertext.
    pub raw: bool,
    pub error: Option<String>,
}

impl From<&DatasetEstimate> for EstimateJson {
    fn from(e: &DatasetEstimate) -> Self {
        let failed = !e.error.is_empty();
        EstimateJson {
            source: e.source.clone(),
            target: e.target.clone(),
            snapshots: Some(e.snapshots).filter(|_| !failed),
            bytes: Some(e.bytes).filter(|_| e.bytes_known && !failed),
            base: Some(e.base.clone()).filter(|b| !b.is_empty()),
            base_guid: Some(e.base_guid).filter(|_| !e.base.is_empty()),
            base_is_bookmark: e.base_is_bookmark,
            discards: e.discards,
            resumes_at: Some(e.resume_bytes).filter(|_| e.resumes && !failed),
            raw: e.raw,
            error: Some(e.error.clone()).filter(|_| failed),
        }
    }
}

/// `heading`, then a row per dataset and a total, for people.
pub fn lines(heading: &str, estimates: &[DatasetEstimate]) -> Vec<String> {
    let mut lines = vec![heading.to_owned()];
    if estimates.is_empty() {
        lines.push("  (no datasets)".into());
        return lines;
    }
    let mut table = Table::new(&["DATASET", "BASE", "SNAPSHOTS", "SIZE", "NOTE"]);
    let (mut snapshots, mut bytes, mut all_known) = (0u64, 0u64, true);
    let mut unknown_sizes = false;
    for e in estimates {
        let dataset = if e.target.is_empty() {
            e.source.clone()
        } else {
            format!("{} → {}", e.source, e.target)
        };
        if !e.error.is_empty() {
            all_known = false;
            table.row(vec![
                dataset,
                "-".into(),
                "-".into(),
                "-".into(),
                e.error.clone(),
            ]);
            continue;
        }
        snapshots += u64::from(e.snapshots);
        let size = if e.bytes_known {
            bytes = bytes.saturating_add(e.bytes);
            human_bytes(e.bytes)
        } else {
            all_known = false;
            unknown_sizes = true;
            "unknown".into()
        };
        let base = if e.base.is_empty() {
            "none (full)".to_owned()
        } else if e.base_is_bookmark {
            format!("{} (bookmark, guid {})", e.base, e.base_guid)
        } else {
            format!("@{} (guid {})", e.base, e.base_guid)
        };
        let mut notes = Vec::new();
        if e.resumes {
            notes.push(format!(
                "resumes a partial receive at {}",
                human_bytes(e.resume_bytes)
            ));
        }
        notes.push(match (e.snapshots, e.discards) {
            (0, _) => "up to date".to_owned(),
            (_, 0) => String::new(),
            (_, n) => format!("overwrites: destroys {n} target snapshot(s) first"),
        });
        if e.raw {
            notes.push("encrypted: sent raw".to_owned());
        }
        let note = notes
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        table.row(vec![dataset, base, e.snapshots.to_string(), size, note]);
    }
    lines.extend(table.render().lines().map(|l| format!("  {l}")));
    let total = if all_known {
        human_bytes(bytes)
    } else {
        format!("at least {}", human_bytes(bytes))
    };
    lines.push(format!("  Total: {snapshots} snapshot(s), {total}"));
    if unknown_sizes {
        lines.push(
            "  Sizes marked unknown: this ZFS cannot estimate a send (zfs-fuse has no `zfs send -n -P`)."
                .into(),
        );
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(source: &str, snapshots: u32, bytes: Option<u64>, error: &str) -> DatasetEstimate {
        DatasetEstimate {
            source: source.into(),
            target: format!("backup/{source}"),
            snapshots,
            bytes: bytes.unwrap_or(0),
            bytes_known: bytes.is_some(),
            error: error.into(),
            ..Default::default()
        }
    }

    #[test]
    fn rows_total_and_what_is_unknown() {
        let incremental = DatasetEstimate {
            base: "auto-1".into(),
            base_guid: 42,
            discards: 2,
            ..estimate("nas1:tank/a", 3, Some(3 * 1024 * 1024), "")
        };
        let all = [
            incremental,
            estimate("nas1:tank/b", 0, Some(0), ""),
            estimate("nas2:tank/c", 2, None, ""),
            estimate("nas3:tank/d", 0, None, "nas3: system is OFFLINE"),
        ];
        let text = lines("Would send:", &all).join("\n");
        assert!(
            text.contains("nas1:tank/a → backup/nas1:tank/a  @auto-1 (guid 42)  3"),
            "{text}"
        );
        assert!(
            text.contains("destroys 2 target snapshot(s) first"),
            "{text}"
        );
        assert!(text.contains("none (full)"), "{text}");
        assert!(text.contains("3.0M"), "{text}");
        assert!(text.contains("up to date"), "{text}");
        assert!(text.contains("nas3: system is OFFLINE"), "{text}");
        assert!(
            text.contains("Total: 5 snapshot(s), at least 3.0M"),
            "{text}"
        );
        assert!(text.contains("Sizes marked unknown"), "{text}");

        let known = lines("Would send:", &all[..2]).join("\n");
        assert!(known.contains("Total: 3 snapshot(s), 3.0M"), "{known}");
        assert!(!known.contains("unknown"), "{known}");
    }

    #[test]
    fn bookmarks_resumes_and_raw_sends_are_told() {
        let from_bookmark = DatasetEstimate {
            base: "#nasfleet-7-00000000000000ab".into(),
            base_guid: 171,
            base_is_bookmark: true,
            resumes: true,
            resume_bytes: 3 * 1024 * 1024,
            raw: true,
            ..estimate("nas1:tank/secret", 2, Some(5 * 1024 * 1024), "")
        };
        let text = lines("Would send:", std::slice::from_ref(&from_bookmark)).join("\n");
        assert!(
            text.contains("#nasfleet-7-00000000000000ab (bookmark, guid 171)"),
            "{text}"
        );
        assert!(
            text.contains("resumes a partial receive at 3.0M; encrypted: sent raw"),
            "{text}"
        );
        let json = EstimateJson::from(&from_bookmark);
        assert!(json.base_is_bookmark && json.raw);
        assert_eq!(json.resumes_at, Some(3 * 1024 * 1024));
    }

    #[test]
    fn json_leaves_out_what_is_not_known() {
        let json = EstimateJson::from(&estimate("nas2:tank/c", 2, None, ""));
        assert_eq!(
            (json.snapshots, json.bytes, json.error),
            (Some(2), None, None)
        );
        let json = EstimateJson::from(&estimate("nas3:tank/d", 0, None, "OFFLINE"));
        assert_eq!(
            (json.snapshots, json.bytes, json.error.as_deref()),
            (None, None, Some("OFFLINE"))
        );
    }
}
