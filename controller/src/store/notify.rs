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

    /// Queues a message; when the outbox is full, the oldest messages are
    /// dropped (and counted on their channels) to make room.
    pub fn queue_message(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        let excess = (self.outbox.len() + 1).saturating_sub(MAX_OUTBOX);
        if excess > 0 {
            for oldest in self.outbox()?.into_iter().take(excess) {
                self.drop_message(&oldest)?;
            }
        }
        self.outbox.insert(id_key(entry.id), encode(entry)?)?;
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
