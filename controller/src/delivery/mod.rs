//! Delivering notifications: the worker that sends the outbox's due messages (each channel's oldest first, every channel at once, each attempt bounded in time) and records how each went, and the single delivery a `notify test` asks for.

pub mod mail;
pub mod message;
pub mod webhook;

use crate::engine::error::FleetError;
use crate::engine::notify;
use crate::engine::state::SharedState;
use crate::store::{ChannelRecord, ChannelTarget, OutboxEntry};
use message::{Message, Sender};
use nasfleet_common::status::now_unix_ms;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How often the outbox is looked at.
const POLL: Duration = Duration::from_secs(1);
/// Messages one channel sends at most per pass (a mass event drains in
/// passes, and each pass's outcomes are stored together).
const MESSAGES_PER_ROUND: usize = 100;
/// One delivery attempt takes at most this long, whatever the channel.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum DeliveryError {
    /// The channel's settings cannot make a message (a bad CA, say).
    #[error("{0}")]
    Setup(String),
    /// The receiver could not be reached or refused the message.
    #[error("{0}")]
    Failed(String),
    #[error("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())]
    TimedOut,
}

/// The extra CA certificates a channel trusts.
fn parse_ca(ca_pem: Option<&str>) -> Result<Vec<CertificateDer<'static>>, DeliveryError> {
    let Some(pem) = ca_pem else {
        return Ok(Vec::new());
    };
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DeliveryError::Setup(format!("CA certificate: {e}")))
}

/// Mozilla's roots (as lettre uses them too) plus the channel's own CA.
fn tls_roots(ca_pem: Option<&str>) -> Result<rustls::RootCertStore, DeliveryError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for der in parse_ca(ca_pem)? {
        roots
            .add(der)
            .map_err(|e| DeliveryError::Setup(format!("CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// Sends one message over one channel.
pub async fn deliver(channel: &ChannelRecord, message: &Message) -> Result<(), DeliveryError> {
    let attempt = async {
        match &channel.target {
            ChannelTarget::Webhook {
                url,
                headers,
                ca_pem,
            } => webhook::post(url, headers, ca_pem.as_deref(), message).await,
            ChannelTarget::Smtp(relay) => mail::send(relay, message).await,
        }
    };
    tokio::time::timeout(ATTEMPT_TIMEOUT, attempt)
        .await
        .unwrap_or(Err(DeliveryError::TimedOut))
}

pub fn sender(state: &SharedState) -> Sender {
    Sender {
        controller_url: state.url.clone(),
        console_url: state.console_url.clone(),
        timezone: state.timezone,
    }
}

/// Sends a test message over `channel` now and records the outcome on it.
pub async fn test(state: &SharedState, channel: &ChannelRecord) -> Result<(), FleetError> {
    let now = now_unix_ms();
    let alert = message::test_alert(&channel.name, now);
    let outcome = deliver(channel, &message::render(&sender(state), "test", &alert))
        .await
        .map_err(|e| e.to_string());
    let (name, recorded) = (channel.name.clone(), outcome.clone());
    state
        .store
        .write(move |w| notify::record_attempt(w, &name, &recorded, now))
        .await?;
    outcome.map_err(|e| {
        FleetError::Unavailable(format!(
            "the test message to '{}' was not delivered: {e}",
            channel.name
        ))
    })
}

/// Sends one channel's due messages in order, stopping at the first that
/// fails (the ones after it wait for its retry).
async fn send_in_order(
    channel: ChannelRecord,
    sender: Sender,
    messages: Vec<OutboxEntry>,
) -> Vec<(OutboxEntry, Result<(), String>)> {
    let mut outcomes = Vec::new();
    for entry in messages {
        let message = message::render(&sender, &entry.event, &entry.alert);
        let outcome = deliver(&channel, &message).await.map_err(|e| e.to_string());
        match &outcome {
            Ok(()) => tracing::info!(channel = %entry.channel, alert = entry.alert.id,
                event = %entry.event, "notification delivered"),
            Err(e) => tracing::warn!(channel = %entry.channel, alert = entry.alert.id,
                attempt = entry.attempts + 1, error = %e, "notification not delivered"),
        }
        let failed = outcome.is_err();
        outcomes.push((entry, outcome));
        if failed {
            break;
        }
    }
    outcomes
}

/// One pass over the outbox: every channel sends what is due, all at once,
/// and the outcomes are recorded in one write.
async fn round(state: &SharedState) -> Result<(), FleetError> {
    let now = now_unix_ms();
    let store = state.store.clone();
    // Up to MAX_OUTBOX messages to read: off the runtime.
    let due = tokio::task::spawn_blocking(move || store.outbox())
        .await
        .map_err(|e| FleetError::Internal(format!("reading the outbox: {e}")))??;
    let due = notify::due(due, now, MESSAGES_PER_ROUND);
    if due.is_empty() {
        return Ok(());
    }
    let sender = sender(state);
    let mut channels = JoinSet::new();
    for (name, messages) in due {
        let Some(channel) = state.store.channel(&name)? else {
            continue;
        };
        channels.spawn(send_in_order(channel, sender.clone(), messages));
    }
    let mut outcomes = Vec::new();
    while let Some(done) = channels.join_next().await {
        match done {
            Ok(sent) => outcomes.extend(sent),
            Err(e) => tracing::error!(error = %e, "a notification channel's sender panicked"),
        }
    }
    let done_at = now_unix_ms();
    state
        .store
        .write(move |w| {
            for (entry, outcome) in &outcomes {
                notify::settle_message(w, entry, outcome, done_at)?;
            }
            Ok(())
        })
        .await?;
    Ok(())
}

/// Delivers queued notifications until shutdown; an attempt under way when
/// shutdown comes is abandoned and tried again after the next start.
pub async fn run(state: SharedState, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = nasfleet_common::daemon::wait_for_shutdown(&mut shutdown) => return,
        }
        tokio::select! {
            outcome = round(&state) => {
                if let Err(e) = outcome {
                    tracing::error!(error = %e, "cannot deliver notifications");
                }
            }
            _ = nasfleet_common::daemon::wait_for_shutdown(&mut shutdown) => return,
        }
    }
}
