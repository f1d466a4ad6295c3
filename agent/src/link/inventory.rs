//! Sending the inventory up the session: collected in the background so heartbeats keep flowing while zfs is slow, at most one collection at a time, abandoned when it takes too long.

use crate::config::RunSettings;
use crate::inventory;
use crate::zfs::Zfs;
use nasfleet_proto::INVENTORY_PAGE_SNAPSHOTS;
use nasfleet_proto::v1::agent_message::Body as Up;
use nasfleet_proto::v1::{AgentMessage, Inventory, InventoryPage, InventoryProblem};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Longest one inventory collection may take before it is abandoned.
const INVENTORY_TIMEOUT: Duration = Duration::from_secs(120);

/// Collects and sends an inventory in the background, so heartbeats keep
/// flowing while zfs is slow. At most one collection runs at a time.
/// `public_key` (this agent's replication key) goes with it.
pub(super) fn start_inventory(
    collecting: &mut Option<JoinHandle<()>>,
    settings: &Arc<RunSettings>,
    zfs: &Arc<Zfs>,
    public_key: String,
    tx: &mpsc::Sender<AgentMessage>,
) {
    if collecting.as_ref().is_some_and(|task| !task.is_finished()) {
        tracing::debug!("inventory collection already running");
        return;
    }
    let (settings, zfs, tx) = (settings.clone(), zfs.clone(), tx.clone());
    *collecting = Some(tokio::spawn(async move {
        let collected = tokio::time::timeout(
            INVENTORY_TIMEOUT,
            inventory::collect(&settings.inventory, &zfs),
        )
        .await;
        let messages = match collected {
            Ok(mut inventory) => {
                inventory.replication_public_key = public_key;
                tracing::debug!(
                    pools = inventory.pools.len(),
                    datasets = inventory.datasets.len(),
                    snapshots = inventory.snapshots.len(),
                    "sending inventory"
                );
                paged(inventory)
            }
            Err(_) => {
                let reason = format!(
                    "collecting the inventory took longer than {}s and was abandoned (is zfs hanging?)",
                    INVENTORY_TIMEOUT.as_secs()
                );
                tracing::error!("{reason}");
                vec![Up::InventoryProblem(InventoryProblem { reason })]
            }
        };
        for body in messages {
            if tx.send(AgentMessage { body: Some(body) }).await.is_err() {
                break;
            }
        }
    }));
}

/// The messages that carry `inventory`: itself, and when it has more than
/// a page of snapshots, itself without them followed by their pages.
fn paged(mut inventory: Inventory) -> Vec<Up> {
    if inventory.snapshots.len() <= INVENTORY_PAGE_SNAPSHOTS {
        return vec![Up::Inventory(inventory)];
    }
    let snapshots = std::mem::take(&mut inventory.snapshots);
    inventory.snapshot_count = snapshots.len() as u64;
    let pages: Vec<Up> = snapshots
        .chunks(INVENTORY_PAGE_SNAPSHOTS)
        .enumerate()
        .map(|(page, chunk)| {
            Up::InventoryPage(InventoryPage {
                page: page as u32,
                snapshots: chunk.to_vec(),
            })
        })
        .collect();
    inventory.snapshot_pages = pages.len() as u32;
    std::iter::once(Up::Inventory(inventory))
        .chain(pages)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nasfleet_proto::v1::Snapshot;
    use prost::Message;

    fn inventory_with(snapshots: usize) -> Inventory {
        Inventory {
            hostname: "nas1".into(),
            snapshots: (0..snapshots)
                .map(|i| Snapshot {
                    name: format!("tank/d{}@auto-{i:07}", i % 7),
                    guid: i as u64 + 1,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_small_inventory_is_one_message() {
        let messages = paged(inventory_with(INVENTORY_PAGE_SNAPSHOTS));
        assert!(
            matches!(&messages[..], [Up::Inventory(i)] if i.snapshots.len() == INVENTORY_PAGE_SNAPSHOTS && i.snapshot_pages == 0)
        );
    }

    #[test]
    fn a_million_snapshots_go_in_pages_of_about_a_mebibyte_in_order() {
        let total = 1_000_000;
        let messages = paged(inventory_with(total));
        let Up::Inventory(head) = &messages[0] else {
            panic!("the inventory comes first");
        };
        assert!(head.snapshots.is_empty());
        assert_eq!(head.snapshot_count, total as u64);
        assert_eq!(head.snapshot_pages as usize, messages.len() - 1);
        let mut next_guid = 1;
        for (index, message) in messages[1..].iter().enumerate() {
            let Up::InventoryPage(page) = message else {
                panic!("pages follow the inventory");
            };
            assert_eq!(page.page as usize, index);
            assert!(
                page.encoded_len() < 2 * 1024 * 1024,
                "page {index}: {} bytes",
                page.encoded_len()
            );
            for snapshot in &page.snapshots {
                assert_eq!(snapshot.guid, next_guid);
                next_guid += 1;
            }
        }
        assert_eq!(next_guid - 1, total as u64);
    }
}
