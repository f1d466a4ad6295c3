//! The agent's one long-lived stream to the controller: dial out, say hello, heartbeat, send inventory, reconnect with backoff.

use crate::config::RunSettings;
use crate::inventory;
use crate::runs::{AgentIdentity, JournalError, RunManager};
use crate::state_dir::{Credentials, StateDir, StateError};
use crate::zfs::Zfs;
use nasfleet_common::daemon::wait_for_shutdown;
use nasfleet_common::dial::{ClientIdentity, DialError, DialOptions, ServerTrust, dial};
use nasfleet_common::status::now_unix_ms;
use nasfleet_proto::MAX_MESSAGE_BYTES;
use nasfleet_proto::v1::agent_link_client::AgentLinkClient;
use nasfleet_proto::v1::agent_message::Body as Up;
use nasfleet_proto::v1::controller_message::Body as Down;
use nasfleet_proto::v1::{
    AgentMessage, AgentRequest, AgentResponse, Heartbeat, Hello, agent_request,
};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A session that lasted this long resets the backoff.
const STABLE_SESSION: Duration = Duration::from_secs(30);
/// How long the controller may take to answer the stream and send Welcome.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest one inventory collection may take before it is abandoned.
const INVENTORY_TIMEOUT: Duration = Duration::from_secs(120);

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
    Key(#[from] crate::ssh::SshError),
}

/// Longest a one-time request (e.g. taking a snapshot) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why one session ended.
enum SessionEnd {
    Shutdown,
    /// Worth retrying; `established` tells whether Welcome was received.
    Lost {
        reason: String,
        established: bool,
    },
    Refused(String),
}

/// Runs until shutdown; returns an error only when retrying is pointless.
pub async fn run(
    settings: RunSettings,
    zfs: Zfs,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), LinkError> {
    let credentials = StateDir::new(&settings.state_dir).load().await?;
    let settings = Arc::new(settings);
    let zfs = Arc::new(zfs);
    let replication_key =
        crate::ssh::ensure_replication_key(&settings.state_dir, &credentials.enrollment.name)
            .await?;
    let identity = AgentIdentity {
        system: credentials.enrollment.name.clone(),
        state_dir: settings.state_dir.clone(),
        replication_key,
        pools: settings.inventory.pools.clone(),
    };
    let swept =
        tokio::task::spawn_blocking(|| crate::ssh::sweep_stale_control_dirs(&std::env::temp_dir()))
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
    loop {
        let started = Instant::now();
        let end = session(&credentials, &settings, &zfs, &runs, shutdown.clone()).await;
        runs.detach();
        let delay = match end {
            SessionEnd::Shutdown => return Ok(()),
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

fn is_refusal(code: Code) -> bool {
    matches!(code, Code::PermissionDenied | Code::Unauthenticated)
}

async fn session(
    credentials: &Credentials,
    settings: &Arc<RunSettings>,
    zfs: &Arc<Zfs>,
    runs: &Arc<RunManager>,
    mut shutdown: watch::Receiver<bool>,
) -> SessionEnd {
    let lost = |reason: String| SessionEnd::Lost {
        reason,
        established: false,
    };
    let options = DialOptions {
        request_timeout: None,
        ..DialOptions::default()
    };
    let identity = ClientIdentity {
        cert_pem: credentials.cert_pem.clone(),
        key_pem: credentials.key_pem.clone(),
    };
    let trust = ServerTrust::CaPem(credentials.ca_pem.clone());
    let dialled = tokio::select! {
        d = dial(&credentials.enrollment.controller, &trust, Some(&identity), &options) => d,
        _ = wait_for_shutdown(&mut shutdown) => return SessionEnd::Shutdown,
    };
    let channel = match dialled {
        Ok(channel) => channel,
        Err(e) => return lost(format!("{e}: {}", source_chain(&e))),
    };
    let mut client = AgentLinkClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let (tx, rx) = mpsc::channel::<AgentMessage>(16);
    let hello = AgentMessage {
        body: Some(Up::Hello(Hello {
            agent_version: nasfleet_proto::VERSION.to_owned(),
            active_run_ids: runs.active_ids(),
        })),
    };
    if tx.send(hello).await.is_err() {
        return lost("outbound queue closed".into());
    }
    let opened = tokio::time::timeout(WELCOME_TIMEOUT, async {
        let mut inbound = client.connect(ReceiverStream::new(rx)).await?.into_inner();
        let first = inbound.message().await?;
        Ok::<_, tonic::Status>((inbound, first))
    });
    let (mut inbound, first) = tokio::select! {
        r = opened => match r {
            Ok(Ok(pair)) => pair,
            Ok(Err(status)) if is_refusal(status.code()) => return SessionEnd::Refused(status.message().to_owned()),
            Ok(Err(status)) => return lost(format!("{}: {}", status.code(), status.message())),
            Err(_) => return lost(format!("no answer from the controller within {}s", WELCOME_TIMEOUT.as_secs())),
        },
        _ = wait_for_shutdown(&mut shutdown) => return SessionEnd::Shutdown,
    };
    let heartbeat_every = match first.and_then(|m| m.body) {
        Some(Down::Welcome(welcome)) => {
            Duration::from_millis(welcome.heartbeat_interval_ms.max(100))
        }
        _ => return lost("the controller did not start with Welcome".into()),
    };
    tracing::info!(
        heartbeat_ms = heartbeat_every.as_millis() as u64,
        "connected to the controller"
    );
    let lost_established = |reason: String| SessionEnd::Lost {
        reason,
        established: true,
    };
    runs.attach(tx.clone()).await;

    let mut heartbeat = tokio::time::interval(heartbeat_every);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick of an interval is immediate: that is the inventory sent on connect.
    let mut inventory_tick = tokio::time::interval(settings.inventory_interval);
    inventory_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut collecting: Option<JoinHandle<()>> = None;

    let end = loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                let beat = AgentMessage { body: Some(Up::Heartbeat(Heartbeat { sent_unix_ms: now_unix_ms() })) };
                if tx.send(beat).await.is_err() {
                    break lost_established("outbound stream closed".into());
                }
            }
            _ = inventory_tick.tick() => {
                start_inventory(&mut collecting, settings, zfs, runs, &tx);
            }
            message = inbound.message() => match message {
                Ok(Some(m)) => match m.body {
                    Some(Down::RequestInventory(_)) => start_inventory(&mut collecting, settings, zfs, runs, &tx),
                    Some(Down::StartRun(work)) => runs.start(work).await,
                    Some(Down::CancelRun(cancel)) => runs.cancel(cancel.run_id, &cancel.by),
                    Some(Down::AckRunResult(ack)) => runs.ack(ack.run_id).await,
                    Some(Down::Request(request)) => answer(request, zfs.clone(), runs.clone(), settings.inventory.pools.clone(), tx.clone()),
                    Some(Down::Welcome(_)) | None => {}
                },
                Ok(None) => break lost_established("the controller closed the stream".into()),
                Err(status) if is_refusal(status.code()) => break SessionEnd::Refused(status.message().to_owned()),
                Err(status) => break lost_established(format!("{}: {}", status.code(), status.message())),
            },
            _ = wait_for_shutdown(&mut shutdown) => break SessionEnd::Shutdown,
        }
    };
    if let Some(task) = collecting {
        task.abort();
    }
    end
}

/// Collects and sends an inventory in the background, so heartbeats keep
/// flowing while zfs is slow. At most one collection runs at a time.
fn start_inventory(
    collecting: &mut Option<JoinHandle<()>>,
    settings: &Arc<RunSettings>,
    zfs: &Arc<Zfs>,
    runs: &Arc<RunManager>,
    tx: &mpsc::Sender<AgentMessage>,
) {
    if collecting.as_ref().is_some_and(|task| !task.is_finished()) {
        tracing::debug!("inventory collection already running");
        return;
    }
    let (settings, zfs, tx) = (settings.clone(), zfs.clone(), tx.clone());
    let public_key = runs.identity.replication_key.public_key.clone();
    *collecting = Some(tokio::spawn(async move {
        let collected = tokio::time::timeout(
            INVENTORY_TIMEOUT,
            inventory::collect(&settings.inventory, &zfs),
        )
        .await;
        match collected {
            Ok(mut inventory) => {
                inventory.replication_public_key = public_key;
                tracing::debug!(
                    pools = inventory.pools.len(),
                    datasets = inventory.datasets.len(),
                    snapshots = inventory.snapshots.len(),
                    "sending inventory"
                );
                let _ = tx
                    .send(AgentMessage {
                        body: Some(Up::Inventory(inventory)),
                    })
                    .await;
            }
            Err(_) => tracing::error!(
                "inventory collection took longer than {}s and was abandoned",
                INVENTORY_TIMEOUT.as_secs()
            ),
        }
    }));
}

/// Answers a controller request in the background; the answer goes up the
/// session it came on (if that session is gone, the controller times out).
fn answer(
    request: AgentRequest,
    zfs: Arc<Zfs>,
    runs: Arc<RunManager>,
    pools: Vec<String>,
    tx: mpsc::Sender<AgentMessage>,
) {
    tokio::spawn(async move {
        let request_id = request.request_id;
        let response = match request.body {
            Some(agent_request::Body::AuthorizeKey(authorize)) => {
                let outcome = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    crate::ssh::authorize_key(
                        &authorize.user,
                        &authorize.public_key,
                        &authorize.source_system,
                    ),
                )
                .await;
                let error = match outcome {
                    Ok(Ok(outcome)) => {
                        tracing::info!(user = %authorize.user, source = %authorize.source_system, ?outcome, "replication key authorized");
                        String::new()
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!(
                        "authorizing the key took longer than {}s",
                        REQUEST_TIMEOUT.as_secs()
                    ),
                };
                AgentResponse {
                    request_id,
                    error,
                    ..Default::default()
                }
            }
            Some(agent_request::Body::ValidateRsync(validate)) => {
                let spec = validate.spec.unwrap_or_default();
                let error = match crate::rsync::validate_on_host(&spec, &zfs, &pools).await {
                    Ok(()) => String::new(),
                    Err(e) => e.to_string(),
                };
                AgentResponse {
                    request_id,
                    error,
                    ..Default::default()
                }
            }
            Some(agent_request::Body::RevokeKey(revoke)) => {
                let outcome = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    crate::ssh::revoke_key(&revoke.user, &revoke.public_key),
                )
                .await;
                let error = match outcome {
                    Ok(Ok(outcome)) => {
                        tracing::info!(user = %revoke.user, ?outcome, "replication key revoked");
                        String::new()
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!(
                        "revoking the key took longer than {}s",
                        REQUEST_TIMEOUT.as_secs()
                    ),
                };
                AgentResponse {
                    request_id,
                    error,
                    ..Default::default()
                }
            }
            Some(agent_request::Body::CheckSsh(check)) => {
                let error = match check.target {
                    Some(target) => {
                        match crate::runs::replication::check_target(&runs.identity, &target).await
                        {
                            Ok(()) => String::new(),
                            Err(e) => e,
                        }
                    }
                    None => "the check names no target".into(),
                };
                AgentResponse {
                    request_id,
                    error,
                    ..Default::default()
                }
            }
            Some(agent_request::Body::CreateSnapshots(create)) => {
                let taken = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    zfs.create_snapshots(&create.names, create.recursive),
                )
                .await;
                match taken {
                    Ok(Ok(())) => {
                        tracing::info!(names = ?create.names, recursive = create.recursive, "snapshot taken");
                        AgentResponse {
                            request_id,
                            created: create.names,
                            ..Default::default()
                        }
                    }
                    Ok(Err(e)) => AgentResponse {
                        request_id,
                        error: e.to_string(),
                        ..Default::default()
                    },
                    Err(_) => AgentResponse {
                        request_id,
                        error: format!(
                            "taking the snapshot took longer than {}s",
                            REQUEST_TIMEOUT.as_secs()
                        ),
                        ..Default::default()
                    },
                }
            }
            Some(agent_request::Body::ListReplicas(list)) => AgentResponse {
                request_id,
                replicas: crate::runs::replication::list_replicas(&zfs, &list.datasets).await,
                ..Default::default()
            },
            None => AgentResponse {
                request_id,
                error: "this agent does not understand the request; upgrade it".into(),
                ..Default::default()
            },
        };
        let _ = tx
            .send(AgentMessage {
                body: Some(Up::Response(response)),
            })
            .await;
    });
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

/// Exponential backoff with jitter: each delay is drawn from the upper half
/// of the current step, so a fleet that lost its controller at the same
/// moment does not reconnect in lockstep.
struct Backoff {
    step: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            step: BACKOFF_START,
        }
    }

    fn reset(&mut self) {
        self.step = BACKOFF_START;
    }

    fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(BACKOFF_MAX);
        let half = step / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap_with_jitter() {
        let mut backoff = Backoff::new();
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(500) && delays[0] <= BACKOFF_START);
        assert!(delays[3] >= Duration::from_secs(4) && delays[3] <= Duration::from_secs(8));
        for d in &delays {
            assert!(*d <= BACKOFF_MAX);
        }
        assert!(delays[9] >= BACKOFF_MAX / 2);
        backoff.reset();
        assert!(backoff.next_delay() <= BACKOFF_START);
    }
}
