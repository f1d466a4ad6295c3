//! The controller's shared state handed to every service and task: store, CA, live sessions, settings.

use crate::pki::CertificateAuthority;
use crate::runs::RunHub;
use crate::sessions::{EndedSession, Sessions};
use crate::store::Store;
use std::sync::Arc;
use tokio::sync::Notify;

pub struct ControllerState {
    pub store: Store,
    pub ca: CertificateAuthority,
    pub sessions: Sessions,
    /// URL agents and the CLI dial, as printed in join commands.
    pub url: String,
    /// Zone schedules are evaluated in and snapshot names are rendered in.
    pub timezone: chrono_tz::Tz,
    pub runs: RunHub,
    /// Runs kept per task.
    pub history_limit: usize,
    /// Tells the scheduler that tasks changed.
    pub scheduler_wake: Arc<Notify>,
}

pub type SharedState = Arc<ControllerState>;

impl ControllerState {
    /// Records when ended sessions were last heard from, so OFFLINE systems show a true "last seen".
    pub async fn record_ended(&self, ended: &[EndedSession]) {
        for session in ended {
            tracing::info!(system = %session.name, "system OFFLINE");
            let at = session.last_heartbeat_unix_ms;
            if let Err(e) = self.store.update_system(&session.name, |r| {
                r.last_seen_unix_ms = r.last_seen_unix_ms.max(at);
            }) {
                tracing::error!(system = %session.name, error = %e, "cannot record last-seen time");
            }
        }
        if !ended.is_empty()
            && let Err(e) = self.store.flush().await
        {
            tracing::error!(error = %e, "store flush failed");
        }
    }
}
