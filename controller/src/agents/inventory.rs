//! An agent's inventory on its way in: its pages put back together, the newest whole one (or the reason it did not arrive) handed from the stream's reader to its recorder, and stored.

use crate::engine::state::SharedState;
use crate::store::StoredInventory;
use nasfleet_common::status::now_unix_ms;
use nasfleet_proto::v1::{Inventory, InventoryPage};
use std::sync::Mutex;
use tokio::sync::Notify;

/// Snapshots kept per system. An inventory announcing more is refused
/// (and the system shown as having a stale inventory) rather than held in
/// memory: a million snapshots take about 60 MB while their pages arrive.
pub const MAX_SNAPSHOTS: u64 = 2_000_000;

/// What a page or an inventory completes.
#[derive(Debug, PartialEq)]
pub enum Arrived {
    /// One message with every snapshot (boxed: ten times a reason's size).
    Whole(Box<Inventory>),
    /// The pages of an inventory, already in the form it is stored in.
    Paged(Box<StoredInventory>),
    /// Why the inventory being received will not be stored.
    Problem(String),
}

/// The inventory whose snapshot pages are still arriving on one stream.
#[derive(Default)]
pub struct Assembly {
    /// Boxed: every connected agent's reader holds an `Assembly`, and most
    /// never receive a page.
    pending: Option<Box<Pending>>,
    /// The pages of a refused inventory still come; they are dropped.
    skipping: bool,
}

struct Pending {
    stored: StoredInventory,
    announced: u64,
    pages: u32,
    next: u32,
}

impl Assembly {
    /// An inventory arrived; it supersedes one whose pages are still due.
    pub fn inventory(&mut self, mut inventory: Inventory) -> Option<Arrived> {
        self.pending = None;
        self.skipping = false;
        if inventory.snapshot_pages == 0 {
            return Some(Arrived::Whole(Box::new(inventory)));
        }
        if inventory.snapshot_count > MAX_SNAPSHOTS {
            self.skipping = true;
            return Some(Arrived::Problem(format!(
                "the system has {} snapshots; the controller keeps the inventory of at most {MAX_SNAPSHOTS} per system",
                inventory.snapshot_count
            )));
        }
        let (announced, pages) = (inventory.snapshot_count, inventory.snapshot_pages);
        inventory.snapshots.clear();
        self.pending = Some(Box::new(Pending {
            stored: StoredInventory::new(inventory),
            announced,
            pages,
            next: 0,
        }));
        None
    }

    /// A page of snapshots arrived.
    pub fn page(&mut self, page: InventoryPage) -> Option<Arrived> {
        let Some(pending) = self.pending.as_mut() else {
            return (!self.skipping).then(|| {
                Arrived::Problem(format!(
                    "page {} of an inventory's snapshots arrived without its inventory",
                    page.page
                ))
            });
        };
        if page.page != pending.next {
            let expected = pending.next;
            self.pending = None;
            self.skipping = true;
            return Some(Arrived::Problem(format!(
                "page {} of the inventory's snapshots arrived where page {expected} was due",
                page.page
            )));
        }
        let announced = pending.announced;
        if pending.stored.snapshots() + page.snapshots.len() as u64 > announced {
            self.pending = None;
            self.skipping = true;
            return Some(Arrived::Problem(format!(
                "the inventory's pages hold more than the {announced} snapshots it announced"
            )));
        }
        pending.stored.add(&page.snapshots);
        pending.next += 1;
        if pending.next < pending.pages {
            return None;
        }
        let stored = self.pending.take()?.stored;
        if stored.snapshots() != announced {
            return Some(Arrived::Problem(format!(
                "the inventory announced {announced} snapshots and its pages held {}",
                stored.snapshots()
            )));
        }
        Some(Arrived::Paged(Box::new(stored)))
    }

    /// The stream ended: why an inventory whose pages were due did not arrive.
    pub fn ended(&mut self) -> Option<String> {
        self.pending.take().map(|p| {
            format!(
                "the connection ended after {} of the {} pages of the inventory's snapshots",
                p.next, p.pages
            )
        })
    }
}

/// Where a stream's reader leaves what arrived for its recorder, which
/// may be busy writing: only the newest inventory is worth writing, and a
/// problem after it is kept with it.
#[derive(Default)]
pub struct Mailbox {
    slot: Mutex<Delivery>,
    ready: Notify,
}

#[derive(Default)]
pub struct Delivery {
    pub inventory: Option<Received>,
    pub problem: Option<String>,
}

/// A whole inventory as it arrived.
pub enum Received {
    Whole(Inventory),
    Paged(StoredInventory),
}

impl Received {
    fn header(&self) -> &Inventory {
        match self {
            Received::Whole(inventory) => inventory,
            Received::Paged(stored) => stored.header(),
        }
    }

    fn snapshots(&self) -> u64 {
        match self {
            Received::Whole(inventory) => inventory.snapshots.len() as u64,
            Received::Paged(stored) => stored.snapshots(),
        }
    }
}

impl Mailbox {
    pub fn put(&self, arrived: Arrived) {
        {
            let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
            match arrived {
                Arrived::Whole(inventory) => {
                    slot.inventory = Some(Received::Whole(*inventory));
                    slot.problem = None;
                }
                Arrived::Paged(stored) => {
                    slot.inventory = Some(Received::Paged(*stored));
                    slot.problem = None;
                }
                Arrived::Problem(reason) => slot.problem = Some(reason),
            }
        }
        self.ready.notify_one();
    }

    pub fn take(&self) -> Delivery {
        std::mem::take(&mut *self.slot.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Resolves once something was put since the last take (or was never taken).
    pub async fn ready(&self) {
        self.ready.notified().await;
    }
}

/// Stores what a stream delivered: the inventory, then the problem that
/// makes it stale. Wakes whoever waits for the system's inventory either way.
pub async fn record(state: &SharedState, name: &str, session: u64, delivery: Delivery) {
    let touched = delivery.inventory.is_some() || delivery.problem.is_some();
    if let Some(inventory) = delivery.inventory {
        record_whole(state, name, inventory).await;
    }
    if let Some(reason) = delivery.problem {
        tracing::warn!(system = %name, %reason, "inventory not received; the stored one is stale");
        let system = name.to_owned();
        let result = state
            .store
            .write(move |w| w.update_system(&system, |r| r.inventory_problem = Some(reason)))
            .await;
        if let Err(e) = result {
            tracing::error!(system = %name, error = %e, "cannot record why the inventory is stale");
        }
    }
    if touched {
        state.sessions.inventory_received(name, session);
    }
}

async fn record_whole(state: &SharedState, name: &str, received: Received) {
    let header = received.header();
    let pools: Vec<String> = header.pools.iter().map(|p| p.name.clone()).collect();
    tracing::debug!(system = %name, pools = ?pools, datasets = header.datasets.len(),
        snapshots = received.snapshots(), "inventory received");
    for problem in &header.errors {
        tracing::warn!(system = %name, problem = %problem, "agent reported an inventory problem");
    }
    let version = header.agent_version.clone();
    let collected = match header.collected_unix_ms {
        0 => now_unix_ms(),
        at => at,
    };
    let many = received.snapshots() >= TRIM_AFTER_SNAPSHOTS;
    // Grouping a million snapshots by dataset takes a while: not on the runtime.
    let stored = tokio::task::spawn_blocking(move || match received {
        Received::Whole(inventory) => crate::store::stored_form(inventory),
        Received::Paged(stored) => stored.finish(),
    })
    .await;
    let Ok((header, datasets)) = stored else {
        tracing::error!(system = %name, "inventory could not be prepared for the store");
        return;
    };
    let system = name.to_owned();
    let result = state
        .store
        .write(move |w| {
            w.put_inventory(&system, &header, &datasets)?;
            w.update_system(&system, |r| {
                r.pools = pools;
                r.agent_version = version;
                r.last_seen_unix_ms = now_unix_ms();
                r.inventory_unix_ms = collected;
                r.inventory_problem = None;
            })
        })
        .await;
    if let Err(e) = result {
        tracing::error!(system = %name, error = %e, "cannot store inventory");
    }
    if many {
        // At once rather than at the next periodic trim: 60 MB just came free.
        let _ = tokio::task::spawn_blocking(crate::memory::release_free_memory).await;
    }
}

/// Inventories with this many snapshots free tens of megabytes at once once stored.
const TRIM_AFTER_SNAPSHOTS: u64 = 100_000;

#[cfg(test)]
mod tests {
    use super::*;
    use nasfleet_proto::v1::Snapshot;
    use prost::Message;

    fn announced(count: u64, pages: u32) -> Inventory {
        Inventory {
            hostname: "nas1".into(),
            snapshot_count: count,
            snapshot_pages: pages,
            ..Default::default()
        }
    }

    fn page(page: u32, guids: std::ops::Range<u64>) -> InventoryPage {
        InventoryPage {
            page,
            snapshots: guids
                .map(|guid| Snapshot {
                    name: format!("tank@{guid}"),
                    guid,
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn pages_in_order_make_the_whole_inventory() {
        let mut assembly = Assembly::default();
        assert_eq!(assembly.inventory(announced(5, 3)), None);
        assert_eq!(assembly.page(page(0, 0..2)), None);
        assert_eq!(assembly.page(page(1, 2..4)), None);
        let Some(Arrived::Paged(stored)) = assembly.page(page(2, 4..5)) else {
            panic!("the last page completes it");
        };
        assert_eq!(stored.snapshots(), 5);
        let (_, datasets) = stored.finish();
        let guids: Vec<u64> =
            nasfleet_proto::v1::DatasetSnapshots::decode(datasets["tank"].as_slice())
                .unwrap()
                .snapshots
                .iter()
                .map(|s| s.guid)
                .collect();
        assert_eq!(guids, [0, 1, 2, 3, 4]);
        assert_eq!(assembly.ended(), None);
        // Without pages an inventory is whole at once.
        assert!(matches!(
            assembly.inventory(announced(0, 0)),
            Some(Arrived::Whole(_))
        ));
    }

    #[test]
    fn a_missing_page_or_a_cut_stream_is_a_problem_and_stores_nothing() {
        let mut assembly = Assembly::default();
        assembly.inventory(announced(4, 2));
        assert!(
            matches!(assembly.page(page(1, 2..4)), Some(Arrived::Problem(p)) if p.contains("page 1") && p.contains("page 0 was due"))
        );
        // The rest of that inventory's pages are dropped quietly.
        assert_eq!(assembly.page(page(2, 4..5)), None);
        assembly.inventory(announced(4, 2));
        assembly.page(page(0, 0..2));
        assert_eq!(
            assembly.ended().as_deref(),
            Some("the connection ended after 1 of the 2 pages of the inventory's snapshots")
        );
        assembly.inventory(announced(3, 1));
        assert!(
            matches!(assembly.page(page(0, 0..2)), Some(Arrived::Problem(p)) if p.contains("announced 3"))
        );
        assembly.inventory(announced(1, 1));
        assert!(
            matches!(assembly.page(page(0, 0..2)), Some(Arrived::Problem(p)) if p.contains("more than the 1"))
        );
    }

    #[test]
    fn an_inventory_beyond_the_limit_is_refused_before_its_pages_are_held() {
        let mut assembly = Assembly::default();
        let Some(Arrived::Problem(reason)) = assembly.inventory(announced(MAX_SNAPSHOTS + 1, 300))
        else {
            panic!("refused");
        };
        assert!(reason.contains("at most 2000000"), "{reason}");
        assert_eq!(assembly.page(page(0, 0..2)), None);
        assert_eq!(assembly.ended(), None);
    }

    #[test]
    fn the_mailbox_keeps_the_newest_inventory_and_a_later_problem() {
        let mailbox = Mailbox::default();
        mailbox.put(Arrived::Whole(Box::new(announced(1, 0))));
        mailbox.put(Arrived::Whole(Box::new(announced(2, 0))));
        mailbox.put(Arrived::Problem("cut".into()));
        let delivery = mailbox.take();
        assert_eq!(
            delivery.inventory.map(|i| i.header().snapshot_count),
            Some(2)
        );
        assert_eq!(delivery.problem.as_deref(), Some("cut"));
        mailbox.put(Arrived::Problem("cut".into()));
        mailbox.put(Arrived::Whole(Box::new(announced(3, 0))));
        let delivery = mailbox.take();
        assert_eq!(delivery.problem, None);
        assert!(mailbox.take().inventory.is_none());
    }
}
