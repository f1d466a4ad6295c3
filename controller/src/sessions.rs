//! The agents connected right now: their command channels, heartbeats, and who waits for their inventory.
//!
//! A system is ONLINE exactly while it has a session whose last heartbeat is
//! younger than three heartbeat intervals. Sessions are in memory only; the
//! store keeps what outlives a connection (last seen, address, version).

use nasfleet_proto::v1::controller_message::Body;
use nasfleet_proto::v1::{AgentRequest, AgentResponse, ControllerMessage, agent_request};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;

/// How long a command may wait for room in an agent's outbound queue.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a message could not be delivered to an agent.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DeliveryError {
    #[error("System '{0}' is offline")]
    Offline(String),
    #[error("system '{0}' is not taking commands (its queue stayed full for 5s)")]
    Busy(String),
    #[error("system '{system}' did not answer within {secs}s")]
    NoAnswer { system: String, secs: u64 },
}

/// One message down an agent's stream, or the status that ends it.
pub type Outbound = Result<ControllerMessage, Status>;

/// Outbound half of an agent's stream. Items are boxed: a channel allocates
/// its slots in blocks of 32 at creation, and an unboxed message is 232
/// bytes, so every connected agent would hold 7 KiB of empty slots.
pub type AgentSender = mpsc::Sender<Box<Outbound>>;

impl Session {
    fn live_at(&self, now: Instant, limit: Duration) -> Option<LiveSession> {
        (now.saturating_duration_since(self.last_heartbeat) <= limit).then(|| LiveSession {
            address: self.address.clone(),
            agent_version: self.agent_version.clone(),
            last_heartbeat_unix_ms: self.last_heartbeat_unix_ms,
        })
    }
}

struct Session {
    id: u64,
    tx: AgentSender,
    /// Dropping it tells the session's reader task to stop.
    _close: oneshot::Sender<()>,
    address: Arc<str>,
    agent_version: Arc<str>,
    last_heartbeat: Instant,
    last_heartbeat_unix_ms: i64,
    inventory_waiters: Vec<oneshot::Sender<()>>,
}

/// What callers may see of a live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    /// Shared with the session: a list of thousands copies none of them.
    pub address: Arc<str>,
    pub agent_version: Arc<str>,
    pub last_heartbeat_unix_ms: i64,
}

pub struct Sessions {
    heartbeat_interval: Duration,
    inner: Mutex<(u64, HashMap<String, Session>)>,
    /// Bumped whenever a session starts or ends: what a cached list of
    /// systems' statuses compares against.
    changes: AtomicU64,
    next_request: AtomicU64,
    /// Requests waiting for their agent's answer, by request id.
    pending: Mutex<HashMap<u64, oneshot::Sender<AgentResponse>>>,
}

/// A session that ended, for recording its last-seen time.
#[derive(Debug)]
pub struct EndedSession {
    pub name: String,
    pub last_heartbeat_unix_ms: i64,
}

impl Sessions {
    pub fn new(heartbeat_interval: Duration) -> Self {
        Sessions {
            heartbeat_interval,
            inner: Mutex::new((0, HashMap::new())),
            changes: AtomicU64::new(0),
            next_request: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Counts sessions started and ended; equal counts mean the same systems are ONLINE.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    fn liveness_limit(&self) -> Duration {
        self.heartbeat_interval * 3
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, HashMap<String, Session>)> {
        // A panic while holding this lock cannot leave the map half-updated
        // (every critical section is a single insert/remove), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new session, replacing (and closing) an older one of the
    /// same system: the newest connection is the real one after a reconnect.
    /// Returns the session id and the receiver that fires when it is closed.
    pub fn register(
        &self,
        name: &str,
        tx: AgentSender,
        address: String,
        agent_version: String,
        now_unix_ms: i64,
    ) -> (u64, oneshot::Receiver<()>) {
        let (close_tx, close_rx) = oneshot::channel();
        let mut guard = self.lock();
        guard.0 += 1;
        let id = guard.0;
        guard.1.insert(
            name.to_owned(),
            Session {
                id,
                tx,
                _close: close_tx,
                address: address.into(),
                agent_version: agent_version.into(),
                last_heartbeat: Instant::now(),
                last_heartbeat_unix_ms: now_unix_ms,
                inventory_waiters: Vec::new(),
            },
        );
        self.changed();
        (id, close_rx)
    }

    pub fn heartbeat(&self, name: &str, id: u64, now_unix_ms: i64) {
        if let Some(s) = self.lock().1.get_mut(name).filter(|s| s.id == id) {
            s.last_heartbeat = Instant::now();
            s.last_heartbeat_unix_ms = now_unix_ms;
        }
    }

    /// Ends a session if it is still the current one for `name`.
    pub fn unregister(&self, name: &str, id: u64) -> Option<EndedSession> {
        let mut guard = self.lock();
        if guard.1.get(name).is_some_and(|s| s.id == id) {
            let s = guard.1.remove(name)?;
            self.changed();
            return Some(EndedSession {
                name: name.to_owned(),
                last_heartbeat_unix_ms: s.last_heartbeat_unix_ms,
            });
        }
        None
    }

    /// Closes a system's session because its credentials are no longer good; the agent sees `reason`.
    pub fn disconnect(&self, name: &str, reason: &str) -> Option<EndedSession> {
        let session = self.lock().1.remove(name)?;
        self.changed();
        // Refused credentials: the agent stops retrying and exits.
        let _ = session
            .tx
            .try_send(Box::new(Err(Status::permission_denied(reason))));
        Some(EndedSession {
            name: name.to_owned(),
            last_heartbeat_unix_ms: session.last_heartbeat_unix_ms,
        })
    }

    /// Closes every session that missed three heartbeats.
    pub fn expire_stale(&self) -> Vec<EndedSession> {
        let limit = self.liveness_limit();
        let mut guard = self.lock();
        let stale: Vec<String> = guard
            .1
            .iter()
            .filter(|(_, s)| s.last_heartbeat.elapsed() > limit)
            .map(|(name, _)| name.clone())
            .collect();
        stale
            .into_iter()
            .filter_map(|name| {
                let s = guard.1.remove(&name)?;
                self.changed();
                let _ = s.tx.try_send(Box::new(Err(Status::deadline_exceeded(
                    "no heartbeat for three intervals; reconnect",
                ))));
                Some(EndedSession {
                    name,
                    last_heartbeat_unix_ms: s.last_heartbeat_unix_ms,
                })
            })
            .collect()
    }

    /// How many agents are connected and heartbeating now.
    pub fn connected_count(&self) -> usize {
        let limit = self.liveness_limit();
        self.lock()
            .1
            .values()
            .filter(|s| s.last_heartbeat.elapsed() <= limit)
            .count()
    }

    /// The live session of each of `names` (`None` if it is not ONLINE), in
    /// their order, read under one lock: a list of thousands of systems
    /// would otherwise take it once per system.
    pub fn live_of<'a>(&self, names: impl Iterator<Item = &'a str>) -> Vec<Option<LiveSession>> {
        let limit = self.liveness_limit();
        let guard = self.lock();
        let now = Instant::now();
        names
            .map(|name| guard.1.get(name).and_then(|s| s.live_at(now, limit)))
            .collect()
    }

    /// The live session of `name`, if it is ONLINE.
    pub fn live(&self, name: &str) -> Option<LiveSession> {
        let limit = self.liveness_limit();
        self.lock()
            .1
            .get(name)
            .and_then(|s| s.live_at(Instant::now(), limit))
    }

    /// Sends a message to a system's agent, waiting briefly if its queue is full.
    pub async fn send(&self, name: &str, message: ControllerMessage) -> Result<(), DeliveryError> {
        let tx = {
            let guard = self.lock();
            let limit = self.liveness_limit();
            guard
                .1
                .get(name)
                .filter(|s| s.last_heartbeat.elapsed() <= limit)
                .map(|s| s.tx.clone())
        };
        let tx = tx.ok_or_else(|| DeliveryError::Offline(name.to_owned()))?;
        match tx.send_timeout(Box::new(Ok(message)), SEND_TIMEOUT).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                Err(DeliveryError::Busy(name.to_owned()))
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                Err(DeliveryError::Offline(name.to_owned()))
            }
        }
    }

    /// Sends a request to a system's agent and waits for its answer.
    pub async fn request(
        &self,
        name: &str,
        body: agent_request::Body,
        timeout: Duration,
    ) -> Result<AgentResponse, DeliveryError> {
        let request_id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending_lock().insert(request_id, tx);
        let message = ControllerMessage {
            body: Some(Body::Request(AgentRequest {
                request_id,
                body: Some(body),
            })),
        };
        let answer = async {
            self.send(name, message).await?;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(response)) => Ok(response),
                // Sender dropped: the session ended before an answer.
                Ok(Err(_)) => Err(DeliveryError::Offline(name.to_owned())),
                Err(_) => Err(DeliveryError::NoAnswer {
                    system: name.to_owned(),
                    secs: timeout.as_secs(),
                }),
            }
        }
        .await;
        self.pending_lock().remove(&request_id);
        answer
    }

    fn pending_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<AgentResponse>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn response_received(&self, response: AgentResponse) {
        if let Some(waiter) = self.pending_lock().remove(&response.request_id) {
            let _ = waiter.send(response);
        }
    }

    /// Asks the agent for a fresh inventory; the receiver fires when it arrives.
    pub fn request_inventory(&self, name: &str) -> Option<oneshot::Receiver<()>> {
        let mut guard = self.lock();
        let session = guard.1.get_mut(name)?;
        let message = ControllerMessage {
            body: Some(Body::RequestInventory(Default::default())),
        };
        session.tx.try_send(Box::new(Ok(message))).ok()?;
        let (tx, rx) = oneshot::channel();
        session.inventory_waiters.push(tx);
        Some(rx)
    }

    pub fn inventory_received(&self, name: &str, id: u64) {
        if let Some(s) = self.lock().1.get_mut(name).filter(|s| s.id == id) {
            for waiter in s.inventory_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    /// Drops every session (controller shutdown); returns them for last-seen bookkeeping.
    pub fn close_all(&self) -> Vec<EndedSession> {
        self.changed();
        self.lock()
            .1
            .drain()
            .map(|(name, s)| EndedSession {
                name,
                last_heartbeat_unix_ms: s.last_heartbeat_unix_ms,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender() -> (AgentSender, mpsc::Receiver<Box<Outbound>>) {
        mpsc::channel(4)
    }

    #[tokio::test(start_paused = true)]
    async fn offline_after_three_missed_heartbeats() {
        let sessions = Sessions::new(Duration::from_secs(10));
        let (tx, _rx) = sender();
        let (id, _close) = sessions.register("nas1", tx, "127.0.0.1".into(), "1".into(), 1);
        tokio::time::advance(Duration::from_secs(25)).await;
        sessions.heartbeat("nas1", id, 2);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(sessions.live("nas1").is_some());
        assert!(sessions.expire_stale().is_empty());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(sessions.live("nas1").is_none());
        let ended = sessions.expire_stale();
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].last_heartbeat_unix_ms, 2);
    }

    #[tokio::test]
    async fn replaced_session_does_not_unregister_the_new_one() {
        let sessions = Sessions::new(Duration::from_secs(10));
        let (tx1, _rx1) = sender();
        let (tx2, _rx2) = sender();
        let (old, mut old_close) = sessions.register("nas1", tx1, "a".into(), "1".into(), 1);
        let (_new, _new_close) = sessions.register("nas1", tx2, "b".into(), "1".into(), 2);
        // The replaced session's reader is told to stop...
        assert!(matches!(
            old_close.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        // ...and its late unregister leaves the new session alone.
        assert!(sessions.unregister("nas1", old).is_none());
        assert_eq!(&*sessions.live("nas1").unwrap().address, "b");
    }

    #[tokio::test]
    async fn inventory_waiters_are_woken() {
        let sessions = Sessions::new(Duration::from_secs(10));
        let (tx, mut rx) = sender();
        let (id, _close) = sessions.register("nas1", tx, "a".into(), "1".into(), 1);
        let waiter = sessions.request_inventory("nas1").unwrap();
        assert!(matches!(
            rx.recv().await.map(|b| *b),
            Some(Ok(ControllerMessage {
                body: Some(Body::RequestInventory(_))
            }))
        ));
        sessions.inventory_received("nas1", id);
        waiter.await.unwrap();
    }
}
