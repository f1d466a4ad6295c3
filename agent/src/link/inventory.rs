//! Sending the inventory up the session: collected in the background so heartbeats keep flowing while zfs is slow, at most one collection at a time, abandoned when it takes too long.

use crate::config::RunSettings;
use crate::inventory;
use crate::zfs::Zfs;
use nasfleet_proto::v1::AgentMessage;
use nasfleet_proto::v1::agent_message::Body as Up;
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
        match collected {
            Ok(mut inventory) => {
                inventory.replication_public_key = public_key;
                tracing::debug!(
                    pools = inventory.pools.len(),
                    datasets = inventory.datasets.len(),
                    snapshots = inventory.snapshots.len(),
                    "sending inventory"
                );
                let _ = tx
                    .send(AgentMessage {
                        body: Some(Up::Inventory(inventory)),
                    })
                    .await;
            }
            Err(_) => tracing::error!(
                "inventory collection took longer than {}s and was abandoned",
                INVENTORY_TIMEOUT.as_secs()
            ),
        }
    }));
}
