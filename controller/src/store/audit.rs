//! The audit log in the store: entries under consecutive sequence numbers, appended by the writer (so durable before the call they record is answered), bounded by count and age with the oldest dropped first and the drops counted.

use super::{StoreError, Tables, Write, decode, encode};
use serde::{Deserialize, Serialize};

/// One recorded call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEntry {
    /// Assigned when appended: 1, 2, 3, ... never reused.
    pub seq: u64,
    pub unix_ms: i64,
    /// `user:NAME` or `system:NAME`: who made the call.
    pub actor: String,
    /// The caller's address as the controller saw it; empty if unknown.
    pub address: String,
    /// What was asked: the RPC's name, e.g. `CreateTask`.
    pub action: String,
    /// What it was asked of, e.g. `replication task 'bench'`.
    pub object: String,
    /// `None`: done; `Some(reason)`: refused, and why.
    pub refused: Option<String>,
}

/// How much of the log is kept.
#[derive(Debug, Clone, Copy)]
pub struct AuditRetention {
    pub max_entries: u64,
    pub max_age_ms: i64,
}

/// 90 days or 1,000,000 entries, whichever is reached first.
pub const DEFAULT_AUDIT_RETENTION: AuditRetention = AuditRetention {
    max_entries: 1_000_000,
    max_age_ms: 90 * 24 * 3600 * 1000,
};

/// Which entries [`Tables::audit_entries`] returns.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub actor: Option<String>,
    /// An action, in any case.
    pub action: Option<String>,
    pub since_unix_ms: Option<i64>,
    pub limit: usize,
}

const DROPPED_KEY: &str = "audit_dropped";

fn seq_of(key: &[u8]) -> u64 {
    <[u8; 8]>::try_from(key).map_or(0, u64::from_be_bytes)
}

impl Tables {
    /// Newest first.
    pub fn audit_entries(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.audit.iter().rev() {
            let (key, bytes) = item?;
            let entry: AuditEntry = decode(&key, &bytes)?;
            if filter
                .since_unix_ms
                .is_some_and(|since| entry.unix_ms < since)
            {
                // Entries are appended in time order: nothing older matches.
                break;
            }
            let actor_ok = filter.actor.as_ref().is_none_or(|a| {
                entry.actor == *a || entry.actor.split_once(':').is_some_and(|(_, n)| n == a)
            });
            let action_ok = filter
                .action
                .as_ref()
                .is_none_or(|a| entry.action.eq_ignore_ascii_case(a));
            if actor_ok && action_ok {
                out.push(entry);
                if filter.limit > 0 && out.len() >= filter.limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Entries dropped by retention since the log began.
    pub fn audit_dropped(&self) -> Result<u64, StoreError> {
        Ok(self
            .meta
            .get(DROPPED_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }
}

impl Write<'_> {
    /// Appends `entry` under the next sequence number (returned), then
    /// drops what retention no longer keeps.
    pub fn append_audit(
        &self,
        mut entry: AuditEntry,
        retention: AuditRetention,
    ) -> Result<u64, StoreError> {
        let last = self.audit.last()?.map_or(0, |(key, _)| seq_of(&key));
        entry.seq = last + 1;
        self.audit
            .insert(entry.seq.to_be_bytes(), encode(&entry)?)?;
        self.prune_audit(entry.unix_ms, retention)?;
        Ok(entry.seq)
    }

    fn prune_audit(&self, now_unix_ms: i64, retention: AuditRetention) -> Result<(), StoreError> {
        let mut dropped = 0;
        while let Some((first, bytes)) = self.audit.first()? {
            let (first_seq, last_seq) = (
                seq_of(&first),
                self.audit.last()?.map_or(0, |(key, _)| seq_of(&key)),
            );
            // Sequence numbers are consecutive: the log holds last - first + 1.
            let over = last_seq - first_seq + 1 > retention.max_entries.max(1);
            let entry: AuditEntry = decode(&first, &bytes)?;
            let too_old = now_unix_ms.saturating_sub(entry.unix_ms) > retention.max_age_ms;
            if !over && !too_old {
                break;
            }
            self.audit.remove(first)?;
            dropped += 1;
        }
        if dropped > 0 {
            let total = self.audit_dropped()? + dropped;
            self.meta.insert(DROPPED_KEY, &total.to_be_bytes())?;
        }
        Ok(())
    }
}
