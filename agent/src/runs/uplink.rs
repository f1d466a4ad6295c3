//! The current way up to the controller: the session's outbound queue while connected, nothing while not.

use nasfleet_proto::v1::agent_message::Body as Up;
use nasfleet_proto::v1::{AgentMessage, RunResult, RunUpdate};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::mpsc;

#[derive(Debug, Default)]
pub(crate) struct Uplink {
    /// `None` while disconnected.
    tx: Mutex<Option<mpsc::Sender<AgentMessage>>>,
}

impl Uplink {
    fn lock(&self) -> MutexGuard<'_, Option<mpsc::Sender<AgentMessage>>> {
        self.tx.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session started (`Some`) or ended (`None`).
    pub(crate) fn set(&self, tx: Option<mpsc::Sender<AgentMessage>>) {
        *self.lock() = tx;
    }

    /// Progress is best effort: dropped while disconnected or when the queue is full.
    pub(crate) fn send_update(&self, update: RunUpdate) {
        if let Some(tx) = self.lock().as_ref() {
            let _ = tx.try_send(AgentMessage {
                body: Some(Up::RunUpdate(update)),
            });
        }
    }

    /// A result waits for room in the queue; while disconnected it stays
    /// in the journal and goes up when the next session attaches.
    pub(crate) async fn send_result(&self, result: RunResult) {
        let tx = self.lock().clone();
        if let Some(tx) = tx {
            let _ = tx
                .send(AgentMessage {
                    body: Some(Up::RunResult(result)),
                })
                .await;
        }
    }
}
