//! Alerts in the store: one record per raised alert under its own id, active until its condition clears; cleared records are kept (newest first, bounded) so people can see what happened while they were away.

use super::{StoreError, Tables, Write, decode, encode};
use serde::{Deserialize, Serialize};

/// Cleared alerts kept at most; the oldest go first.
pub const MAX_CLEARED_ALERTS: usize = 1000;

/// One alert: a condition the controller saw, from when it was first seen
/// until it cleared.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AlertRecord {
    pub id: u64,
    /// Identifies the condition, e.g. `offline:nas1` or
    /// `stale-replication:12:nas1:tank/a`; one active alert per key.
    pub key: String,
    /// `system-offline`, `pool-capacity`, ...
    pub kind: String,
    /// `info`, `warning` or `critical`.
    pub level: String,
    /// The systems it concerns, for the people who see them.
    pub systems: Vec<String>,
    /// What it is about, e.g. `pool 'tank' of nas1`.
    pub object: String,
    /// What to do about it, in words a person can act on.
    pub text: String,
    pub first_seen_unix_ms: i64,
    pub last_seen_unix_ms: i64,
    pub cleared_unix_ms: Option<i64>,
    /// Who dismissed it; a dismissed alert stays quiet until it clears.
    pub dismissed_by: Option<String>,
}

fn id_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

impl Tables {
    /// Every alert, active and cleared, newest first.
    pub fn alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        self.alerts
            .iter()
            .rev()
            .map(|item| {
                let (key, bytes) = item?;
                decode(&key, &bytes)
            })
            .collect()
    }

    pub fn alert(&self, id: u64) -> Result<Option<AlertRecord>, StoreError> {
        self.alerts
            .get(id_key(id))?
            .map(|bytes| decode(&id_key(id), &bytes))
            .transpose()
    }
}

impl Write<'_> {
    pub fn put_alert(&self, alert: &AlertRecord) -> Result<(), StoreError> {
        self.alerts.insert(id_key(alert.id), encode(alert)?)?;
        Ok(())
    }

    /// Drops the oldest cleared alerts beyond [`MAX_CLEARED_ALERTS`].
    pub fn prune_cleared_alerts(&self) -> Result<usize, StoreError> {
        let cleared: Vec<u64> = self
            .alerts()?
            .into_iter()
            .filter(|a| a.cleared_unix_ms.is_some())
            .map(|a| a.id)
            .collect();
        let mut dropped = 0;
        for id in cleared.iter().skip(MAX_CLEARED_ALERTS) {
            self.alerts.remove(id_key(*id))?;
            dropped += 1;
        }
        Ok(dropped)
    }
}
