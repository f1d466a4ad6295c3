//! Notification channels in the store (where alert messages go, with their secrets and how delivery has gone) and the outbox of messages not yet delivered.

use super::{AlertRecord, StoreError, Tables, Write, decode, encode};
use serde::{Deserialize, Serialize};

/// Messages waiting at most, over all channels; beyond it the oldest go.
pub const MAX_OUTBOX: usize = 10_000;

/// How a mail channel protects its connection.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain SMTP: only for a relay on the same host or network.
    None,
    /// STARTTLS, required (never falls back to plain).
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

impl SmtpSecurity {
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpSecurity::None => "none",
            SmtpSecurity::Starttls => "starttls",
            SmtpSecurity::Tls => "tls",
        }
    }
}

/// Where a channel delivers, secrets included.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChannelTarget {
    Webhook {
        /// May carry a secret in its path or query (Slack's do).
        url: String,
        /// Sent with every request (e.g. `Authorization`); values are secrets.
        headers: Vec<(String, String)>,
        /// Extra trusted CA certificates (PEM) besides Mozilla's roots.
        ca_pem: Option<String>,
    },
    Smtp(SmtpRelay),
}

/// A mail relay and the mail's envelope, secrets included.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SmtpRelay {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub from: String,
    pub to: Vec<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Extra trusted CA certificates (PEM) besides Mozilla's roots.
    pub ca_pem: Option<String>,
}

/// One notification channel and how delivering to it has gone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChannelRecord {
    pub name: String,
    pub target: ChannelTarget,
    /// Alerts below this level (`info`, `warning`, `critical`) are not sent.
    pub min_level: String,
    pub created_by: String,
    pub created_unix_ms: i64,
    #[serde(flatten)]
    pub delivery: DeliveryStats,
}

/// How delivering to a channel has gone.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct DeliveryStats {
    pub delivered: u64,
    pub last_success_unix_ms: i64,
    pub last_error: Option<String>,
    pub last_error_unix_ms: i64,
    /// Failed attempts since the last success.
    pub failures_in_a_row: u32,
    /// Messages given up on (too old, or pushed out of a full outbox).
    pub dropped: u64,
}

impl ChannelRecord {
    /// A channel nothing has been sent to yet.
    pub fn new(
        name: String,
        target: ChannelTarget,
        min_level: String,
        created_by: String,
        created_unix_ms: i64,
    ) -> Self {
        ChannelRecord {
            name,
            target,
            min_level,
            created_by,
            created_unix_ms,
            delivery: DeliveryStats::default(),
        }
    }
}

/// One message for one channel: an alert that was raised or cleared (or a
/// test), waiting for its next attempt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: u64,
    pub channel: String,
    /// `raised` or `cleared`.
    pub event: String,
    /// The alert as it was when the message was queued.
    pub alert: AlertRecord,
    pub queued_unix_ms: i64,
    pub attempts: u32,
    pub next_attempt_unix_ms: i64,
}

fn id_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

impl Tables {
    /// Every channel, by name.
    pub fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        self.channels
            .iter()
            .map(|item| {
                let (key, bytes) = item?;
                decode(&key, &bytes)
            })
            .collect()
    }

    pub fn channel(&self, name: &str) -> Result<Option<ChannelRecord>, StoreError> {
        self.channels
            .get(name)?
            .map(|bytes| decode(name.as_bytes(), &bytes))
            .transpose()
    }

    /// Whether message `id` still waits in the outbox.
    pub fn message_queued(&self, id: u64) -> Result<bool, StoreError> {
        Ok(self.outbox.contains_key(id_key(id))?)
    }

    /// Every message not yet delivered, oldest first.
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox
            .iter()
            .map(|item| {
                let (key, bytes) = item?;
                decode(&key, &bytes)
            })
            .collect()
    }
}

impl Write<'_> {
    pub fn put_channel(&self, channel: &ChannelRecord) -> Result<(), StoreError> {
        self.channels
            .insert(channel.name.as_bytes(), encode(channel)?)?;
        Ok(())
    }

    /// Removes a channel and every message waiting for it.
    pub fn remove_channel(&self, name: &str) -> Result<(), StoreError> {
        self.channels.remove(name.as_bytes())?;
        for entry in self.outbox()? {
            if entry.channel == name {
                self.outbox.remove(id_key(entry.id))?;
            }
        }
        Ok(())
    }

    /// Queues messages, numbering them in order; when the outbox would
    /// hold more than [`MAX_OUTBOX`], the oldest are dropped (and counted
    /// on their channels) to make room.
    pub fn queue_messages(&self, mut entries: Vec<OutboxEntry>) -> Result<(), StoreError> {
        // Messages have their own counter: ids of tasks, runs and alerts
        // are typed by people and should stay short.
        let mut next = self
            .meta
            .get("next_message_id")?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        for entry in &mut entries {
            next += 1;
            entry.id = next;
        }
        self.meta.insert("next_message_id", &next.to_be_bytes())?;
        // sled counts a tree's entries by walking it: once per batch.
        let excess = (self.outbox.len() + entries.len()).saturating_sub(MAX_OUTBOX);
        if excess > 0 {
            for oldest in self.outbox()?.into_iter().take(excess) {
                self.drop_message(&oldest)?;
            }
        }
        for entry in entries
            .iter()
            .skip(entries.len().saturating_sub(MAX_OUTBOX))
        {
            self.outbox.insert(id_key(entry.id), encode(entry)?)?;
        }
        Ok(())
    }

    pub fn put_message(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        self.outbox.insert(id_key(entry.id), encode(entry)?)?;
        Ok(())
    }

    /// Removes a delivered message.
    pub fn remove_message(&self, id: u64) -> Result<(), StoreError> {
        self.outbox.remove(id_key(id))?;
        Ok(())
    }

    /// Gives up on a message, counting it on its channel.
    pub fn drop_message(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        self.outbox.remove(id_key(entry.id))?;
        if let Some(mut channel) = self.channel(&entry.channel)? {
            channel.delivery.dropped += 1;
            self.put_channel(&channel)?;
        }
        Ok(())
    }
}

/// A queued `task-failed` message for `channel`, for tests.
#[cfg(test)]
pub(crate) fn sample_message(channel: &str) -> OutboxEntry {
    OutboxEntry {
        id: 0,
        channel: channel.into(),
        event: "raised".into(),
        alert: AlertRecord {
            id: 1,
            key: "k".into(),
            kind: "task-failed".into(),
            level: "warning".into(),
            systems: vec![],
            object: "o".into(),
            text: "t".into(),
            first_seen_unix_ms: 0,
            last_seen_unix_ms: 0,
            cleared_unix_ms: None,
            dismissed_by: None,
        },
        queued_unix_ms: 0,
        attempts: 0,
        next_attempt_unix_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn messages_are_numbered_on_their_own_and_a_full_outbox_drops_the_oldest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let webhook = ChannelTarget::Webhook {
            url: "http://127.0.0.1/".into(),
            headers: vec![],
            ca_pem: None,
        };
        let channel = ChannelRecord::new("hook".into(), webhook, "info".into(), "admin".into(), 0);
        let first_task_id = store
            .write_blocking(move |w| {
                w.put_channel(&channel)?;
                w.queue_messages(vec![sample_message("hook"); 3])?;
                w.next_id()
            })
            .expect("queued");
        // Messages take no ids that tasks, runs and alerts would.
        assert_eq!(first_task_id, 1);
        let ids: Vec<u64> = store
            .outbox()
            .expect("outbox")
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, vec![1, 2, 3]);
        store
            .write_blocking(|w| w.queue_messages(vec![sample_message("hook"); MAX_OUTBOX - 1]))
            .expect("queued");
        let outbox = store.outbox().expect("outbox");
        assert_eq!(outbox.len(), MAX_OUTBOX);
        assert_eq!(outbox.first().map(|m| m.id), Some(3));
        let dropped = store
            .channel("hook")
            .expect("read")
            .map(|c| c.delivery.dropped);
        assert_eq!(dropped, Some(2));
    }
}
