//! How inventories are kept: each system's inventory without its snapshots, and the snapshots of each of its datasets under their own key (a long list in a file, see `snapshot_files`), so that reading one dataset's snapshots never reads a million others.

use super::snapshot_files::{FILE_THRESHOLD, Reference};
use super::{StoreError, Tables, Write};
use nasfleet_proto::v1::{Inventory, Snapshot};
use std::collections::{BTreeMap, HashSet};

/// `system \0 dataset`: every key of a system sorts together, datasets in name order.
fn dataset_key(system: &str, dataset: &str) -> Vec<u8> {
    let mut key = system_prefix(system);
    key.extend_from_slice(dataset.as_bytes());
    key
}

fn system_prefix(system: &str) -> Vec<u8> {
    let mut key = system.as_bytes().to_vec();
    key.push(0);
    key
}

/// An inventory on its way to the form it is stored in: the inventory
/// itself with no snapshots (`snapshot_count` says how many it had), and per
/// dataset the encoded `DatasetSnapshots` of its snapshots in the order the
/// agent sent them. Snapshots can be added a page at a time, so a million of
/// them are only ever held encoded (about 60 bytes each).
#[derive(Debug, PartialEq)]
pub struct StoredInventory {
    header: Inventory,
    datasets: BTreeMap<String, Vec<u8>>,
    snapshots: u64,
}

impl StoredInventory {
    /// Starts from `inventory`, taking the snapshots it carries.
    pub fn new(mut inventory: Inventory) -> Self {
        let snapshots = std::mem::take(&mut inventory.snapshots);
        let datasets = inventory
            .datasets
            .iter()
            .map(|d| (d.name.clone(), Vec::new()))
            .collect();
        let mut stored = StoredInventory {
            header: inventory,
            datasets,
            snapshots: 0,
        };
        stored.add(&snapshots);
        stored
    }

    /// The inventory without its snapshots.
    pub fn header(&self) -> &Inventory {
        &self.header
    }

    /// Snapshots added so far.
    pub fn snapshots(&self) -> u64 {
        self.snapshots
    }

    pub fn add(&mut self, snapshots: &[Snapshot]) {
        for snapshot in snapshots {
            let dataset = snapshot
                .name
                .split_once('@')
                .map_or(snapshot.name.as_str(), |(d, _)| d);
            let bytes = match self.datasets.get_mut(dataset) {
                Some(bytes) => bytes,
                None => self.datasets.entry(dataset.to_owned()).or_default(),
            };
            // Field 1 of DatasetSnapshots, written in place: no copy of the snapshot.
            prost::encoding::message::encode(1, snapshot, bytes);
        }
        self.snapshots += snapshots.len() as u64;
    }

    /// The encoded inventory and each dataset's encoded snapshots, as
    /// [`Write::put_inventory`] takes them.
    pub fn finish(mut self) -> (Vec<u8>, BTreeMap<String, Vec<u8>>) {
        use prost::Message;
        self.header.snapshot_count = self.snapshots;
        self.header.snapshot_pages = 0;
        (self.header.encode_to_vec(), self.datasets)
    }
}

/// How many snapshots an encoded `DatasetSnapshots` holds, without
/// decoding them: each is one length-delimited field.
pub fn count_snapshots(mut bytes: &[u8]) -> Result<u64, prost::DecodeError> {
    use prost::bytes::Buf;
    let mut count = 0;
    while bytes.has_remaining() {
        let (tag, wire_type) = prost::encoding::decode_key(&mut bytes)?;
        prost::encoding::skip_field(wire_type, tag, &mut bytes, Default::default())?;
        count += 1;
    }
    Ok(count)
}

fn corrupt_list(key: &[u8], source: prost::DecodeError) -> StoreError {
    StoreError::CorruptProto {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        source,
    }
}

/// A whole inventory in its stored form (see [`StoredInventory`]). CPU-heavy
/// for a system with many snapshots: call it off the runtime.
pub fn stored_form(inventory: Inventory) -> (Vec<u8>, BTreeMap<String, Vec<u8>>) {
    StoredInventory::new(inventory).finish()
}

impl Tables {
    /// The stored inventory of `system` without its snapshots (an
    /// inventory stored before they were kept apart still has them).
    pub fn inventory(&self, system: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.inventories.get(system)?.map(|v| v.to_vec()))
    }

    /// The encoded `DatasetSnapshots` of one dataset of `system`.
    pub fn dataset_snapshots(
        &self,
        system: &str,
        dataset: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Some((key, value)) = self.dataset_value(system, dataset)? else {
            return Ok(None);
        };
        match Reference::decode(&key, &value) {
            Some(reference) => self.snapshot_files.read(&reference?).map(Some),
            None => Ok(Some(value.to_vec())),
        }
    }

    /// How many snapshots one dataset of `system` has, without decoding
    /// them (and, for a long list, without reading its file).
    pub fn dataset_snapshot_count(
        &self,
        system: &str,
        dataset: &str,
    ) -> Result<Option<u64>, StoreError> {
        let Some((key, value)) = self.dataset_value(system, dataset)? else {
            return Ok(None);
        };
        match Reference::decode(&key, &value) {
            Some(reference) => Ok(Some(reference?.count)),
            None => count_snapshots(&value)
                .map(Some)
                .map_err(|source| corrupt_list(&key, source)),
        }
    }

    /// What sled holds for one dataset of `system` (its list or a
    /// reference), with the key it is under.
    fn dataset_value(
        &self,
        system: &str,
        dataset: &str,
    ) -> Result<Option<(Vec<u8>, sled::IVec)>, StoreError> {
        let key = dataset_key(system, dataset);
        Ok(self.dataset_snapshots.get(&key)?.map(|value| (key, value)))
    }

    /// Deletes the snapshot files no reference names (see
    /// [`super::snapshot_files::SnapshotFiles::sweep`]).
    pub(super) fn sweep_snapshot_files(&self) -> Result<(), StoreError> {
        let mut referenced = HashSet::new();
        for entry in self.dataset_snapshots.iter() {
            let (key, value) = entry?;
            if let Some(Ok(reference)) = Reference::decode(&key, &value) {
                referenced.insert(reference.name);
            }
        }
        let deleted = self.snapshot_files.sweep(&referenced)?;
        if deleted > 0 {
            tracing::info!(deleted, "deleted snapshot list files left unused");
        }
        Ok(())
    }

    /// Around the writer's flush: see [`super::snapshot_files::SnapshotFiles`].
    pub(super) fn before_flush(&self) -> Result<(), StoreError> {
        self.snapshot_files.before_flush()
    }

    pub(super) fn after_flush(&self) {
        self.snapshot_files.after_flush(|key| {
            self.dataset_snapshots
                .get(key)
                .ok()
                .flatten()
                .map(|v| v.to_vec())
        });
    }

    /// The encoded `DatasetSnapshots` of every dataset of `system`, in
    /// dataset order: what the tests of removal look at.
    #[cfg(test)]
    pub fn all_dataset_snapshots(&self, system: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        self.dataset_snapshots
            .scan_prefix(system_prefix(system))
            .values()
            .map(|v| Ok(v?.to_vec()))
            .collect()
    }
}

impl Write<'_> {
    /// Stores an inventory in its [`stored_form`], for systems that still
    /// exist (an agent's last words after its removal must not bring it
    /// back). Datasets whose snapshots did not change are not rewritten;
    /// datasets that are gone lose theirs.
    pub fn put_inventory(
        &self,
        system: &str,
        inventory: &[u8],
        datasets: &BTreeMap<String, Vec<u8>>,
    ) -> Result<(), StoreError> {
        if !self.systems_read().contains_key(system) {
            return Ok(());
        }
        self.inventories.insert(system, inventory)?;
        for (dataset, snapshots) in datasets {
            let key = dataset_key(system, dataset);
            let value = if snapshots.len() > FILE_THRESHOLD {
                let count = count_snapshots(snapshots).map_err(|e| corrupt_list(&key, e))?;
                let reference = self.snapshot_files.put(system, dataset, snapshots, count)?;
                std::borrow::Cow::Owned(reference.encode())
            } else {
                std::borrow::Cow::Borrowed(snapshots.as_slice())
            };
            let old = self.dataset_snapshots.get(&key)?;
            if old.as_deref() != Some(value.as_ref()) {
                self.dataset_snapshots
                    .insert(key.as_slice(), value.as_ref())?;
                if let Some(old) = old {
                    self.snapshot_files.release(&key, &old);
                }
            }
        }
        let prefix = system_prefix(system);
        for entry in self.dataset_snapshots.scan_prefix(&prefix) {
            let (key, value) = entry?;
            let dataset = String::from_utf8_lossy(&key[prefix.len()..]);
            if !datasets.contains_key(dataset.as_ref()) {
                self.dataset_snapshots.remove(&key)?;
                self.snapshot_files.release(&key, &value);
            }
        }
        Ok(())
    }

    /// Forgets every dataset's snapshots of `system` (its inventory goes with the system).
    pub(super) fn remove_dataset_snapshots(&self, system: &str) -> Result<(), StoreError> {
        for entry in self.dataset_snapshots.scan_prefix(system_prefix(system)) {
            let (key, value) = entry?;
            self.dataset_snapshots.remove(&key)?;
            self.snapshot_files.release(&key, &value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nasfleet_proto::v1::{Dataset, DatasetSnapshots};
    use prost::Message;

    fn snapshot(name: &str, guid: u64) -> Snapshot {
        Snapshot {
            name: name.into(),
            guid,
            ..Default::default()
        }
    }

    #[test]
    fn snapshots_are_kept_per_dataset_in_the_agents_order() {
        let inventory = Inventory {
            hostname: "nas1".into(),
            datasets: ["tank", "tank/a", "tank/empty"]
                .iter()
                .map(|n| Dataset {
                    name: (*n).into(),
                    ..Default::default()
                })
                .collect(),
            snapshots: vec![
                snapshot("tank/a@2", 2),
                snapshot("tank@1", 1),
                snapshot("tank/a@1", 3),
            ],
            ..Default::default()
        };
        let (header, datasets) = stored_form(inventory);
        let header = Inventory::decode(header.as_slice()).unwrap();
        assert!(header.snapshots.is_empty());
        assert_eq!(header.snapshot_count, 3);
        assert_eq!(header.hostname, "nas1");
        let names = |dataset: &str| -> Vec<String> {
            DatasetSnapshots::decode(datasets[dataset].as_slice())
                .unwrap()
                .snapshots
                .into_iter()
                .map(|s| s.name)
                .collect()
        };
        assert_eq!(names("tank/a"), ["tank/a@2", "tank/a@1"]);
        assert_eq!(names("tank"), ["tank@1"]);
        assert!(names("tank/empty").is_empty());
    }
}
