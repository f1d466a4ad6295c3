//! The agent's one long-lived stream to the controller: dial out, keep a session going, reconnect with backoff until shutdown or a refusal.
//!
//! `session` is one connection (hello, heartbeats, the messages coming
//! down); `requests` answers the controller's one-time requests, one
//! handler per kind; `inventory` collects and sends the inventory in the
//! background; `renewal` renews the agent's certificate in time; `backoff`
//! spaces reconnects.

mod backoff;
mod inventory;
mod renewal;
mod requests;
mod session;

use crate::config::RunSettings;
use crate::runs::{AgentIdentity, JournalError, RunManager};
use crate::ssh::{SshError, ensure_replication_key, sweep_stale_control_dirs};
use crate::state_dir::{StateDir, StateError};
use crate::zfs::Zfs;
use backoff::Backoff;
use nasfleet_common::daemon::wait_for_shutdown;
use nasfleet_common::dial::DialError;
use session::SessionEnd;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;

/// A session that lasted this long resets the backoff.
const STABLE_SESSION: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum LinkError {
    #[error(transparent)]
    State(#[from] StateError),
    /// The controller no longer accepts this agent (removed or revoked):
    /// retrying cannot help, the host must be enrolled again.
    #[error(
        "the controller refused this agent: {0}; enroll again with `nasfleet-agent join` after removing the state dir"
    )]
    Refused(String),
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("replication key: {0}")]
    Key(#[from] SshError),
}

/// Runs until shutdown; returns an error only when retrying is pointless.
pub async fn run(
    settings: RunSettings,
    zfs: Zfs,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), LinkError> {
    let mut credentials = StateDir::new(&settings.state_dir).load().await?;
    let settings = Arc::new(settings);
    let zfs = Arc::new(zfs);
    let replication_key =
        ensure_replication_key(&settings.state_dir, &credentials.enrollment.name).await?;
    let identity = AgentIdentity {
        system: credentials.enrollment.name.clone(),
        state_dir: settings.state_dir.clone(),
        replication_key,
        pools: settings.inventory.pools.clone(),
    };
    let swept = tokio::task::spawn_blocking(|| sweep_stale_control_dirs(&std::env::temp_dir()))
        .await
        .unwrap_or(0);
    if swept > 0 {
        tracing::info!(
            count = swept,
            "removed SSH control directories of agents no longer running"
        );
    }
    let runs = RunManager::open(identity, zfs.clone()).await?;
    tracing::info!(system = %credentials.enrollment.name, controller = %credentials.enrollment.controller,
        pools = ?settings.inventory.pools, "agent starting");
    let mut backoff = Backoff::new();
    let mut previous = None;
    loop {
        let started = Instant::now();
        let end = session::session(
            &credentials,
            &settings,
            &zfs,
            &runs,
            previous.take(),
            shutdown.clone(),
        )
        .await;
        runs.detach();
        let delay = match end {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::Renewed(open) => {
                credentials = StateDir::new(&settings.state_dir).load().await?;
                previous = Some(open);
                continue;
            }
            SessionEnd::Refused(reason) => return Err(LinkError::Refused(reason)),
            SessionEnd::Lost {
                reason,
                established,
            } => {
                if established && started.elapsed() >= STABLE_SESSION {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::warn!(%reason, retry_in_ms = delay.as_millis() as u64, "controller link lost");
                delay
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = wait_for_shutdown(&mut shutdown) => return Ok(()),
        }
    }
}
