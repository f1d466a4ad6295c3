//! One session with the controller: dial with the agent's certificate, say hello, wait for Welcome, then heartbeat, send inventories, renew the certificate when a third of its lifetime is left, and hand what comes down to the runs and the request handlers until the stream ends.

use super::inventory::start_inventory;
use super::renewal::Renewal;
use super::requests::{Handlers, answer};
use crate::config::RunSettings;
use crate::runs::RunManager;
use crate::state_dir::Credentials;
use crate::zfs::Zfs;
use nasfleet_common::daemon::wait_for_shutdown;
use nasfleet_common::dial::{ClientIdentity, DialOptions, ServerTrust, dial};
use nasfleet_common::status::now_unix_ms;
use nasfleet_proto::MAX_MESSAGE_BYTES;
use nasfleet_proto::v1::agent_link_client::AgentLinkClient;
use nasfleet_proto::v1::agent_message::Body as Up;
use nasfleet_proto::v1::controller_message::Body as Down;
use nasfleet_proto::v1::{AgentMessage, ControllerMessage, Heartbeat, Hello};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

/// How long the controller may take to answer the stream and send Welcome.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(15);

/// Why one session ended.
pub(super) enum SessionEnd {
    Shutdown,
    /// The certificate was renewed and saved: connect again with it at
    /// once. The old stream is kept open until the new one is welcomed,
    /// so the controller never sees this system go away.
    Renewed(Box<OpenStream>),
    /// Worth retrying; `established` tells whether Welcome was received.
    Lost {
        reason: String,
        established: bool,
    },
    Refused(String),
}

fn lost(reason: String) -> SessionEnd {
    SessionEnd::Lost {
        reason,
        established: false,
    }
}

fn lost_established(reason: String) -> SessionEnd {
    SessionEnd::Lost {
        reason,
        established: true,
    }
}

fn is_refusal(code: Code) -> bool {
    matches!(code, Code::PermissionDenied | Code::Unauthenticated)
}

/// An open stream, kept only so that it is not closed yet.
pub(super) struct OpenStream {
    _inbound: Streaming<ControllerMessage>,
    _tx: mpsc::Sender<AgentMessage>,
}

/// A stream the controller welcomed.
struct Welcomed {
    inbound: Streaming<ControllerMessage>,
    tx: mpsc::Sender<AgentMessage>,
    heartbeat_every: Duration,
}

/// One session, from dialling to its end.
pub(super) async fn session(
    credentials: &Credentials,
    settings: &Arc<RunSettings>,
    zfs: &Arc<Zfs>,
    runs: &Arc<RunManager>,
    previous: Option<Box<OpenStream>>,
    mut shutdown: watch::Receiver<bool>,
) -> SessionEnd {
    let welcomed = match open(credentials, runs, &mut shutdown).await {
        Ok(welcomed) => welcomed,
        Err(end) => return end,
    };
    // Welcomed on the new stream: the one before can go.
    drop(previous);
    tracing::info!(
        heartbeat_ms = welcomed.heartbeat_every.as_millis() as u64,
        "connected to the controller"
    );
    runs.attach(welcomed.tx.clone()).await;
    let renewal = Renewal::of(credentials, settings.state_dir.clone());
    serve(welcomed, settings, zfs, runs, renewal, shutdown).await
}

/// Dials the controller, says hello (with the runs under way) and waits
/// for Welcome, which sets the heartbeat.
async fn open(
    credentials: &Credentials,
    runs: &RunManager,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Welcomed, SessionEnd> {
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
        _ = wait_for_shutdown(shutdown) => return Err(SessionEnd::Shutdown),
    };
    let channel = dialled.map_err(|e| lost(format!("{e}: {}", source_chain(&e))))?;
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
        return Err(lost("outbound queue closed".into()));
    }
    let opened = tokio::time::timeout(WELCOME_TIMEOUT, async {
        let mut inbound = client.connect(ReceiverStream::new(rx)).await?.into_inner();
        let first = inbound.message().await?;
        Ok::<_, tonic::Status>((inbound, first))
    });
    let (inbound, first) = tokio::select! {
        r = opened => match r {
            Ok(Ok(pair)) => pair,
            Ok(Err(status)) if is_refusal(status.code()) => return Err(SessionEnd::Refused(status.message().to_owned())),
            Ok(Err(status)) => return Err(lost(format!("{}: {}", status.code(), status.message()))),
            Err(_) => return Err(lost(format!("no answer from the controller within {}s", WELCOME_TIMEOUT.as_secs()))),
        },
        _ = wait_for_shutdown(shutdown) => return Err(SessionEnd::Shutdown),
    };
    let heartbeat_every = match first.and_then(|m| m.body) {
        Some(Down::Welcome(welcome)) => {
            Duration::from_millis(welcome.heartbeat_interval_ms.max(100))
        }
        _ => return Err(lost("the controller did not start with Welcome".into())),
    };
    Ok(Welcomed {
        inbound,
        tx,
        heartbeat_every,
    })
}

/// The welcomed session until it ends: heartbeats, inventories (one on
/// connect, then every interval or when asked), and every message from the
/// controller handed on.
async fn serve(
    welcomed: Welcomed,
    settings: &Arc<RunSettings>,
    zfs: &Arc<Zfs>,
    runs: &Arc<RunManager>,
    mut renewal: Renewal,
    mut shutdown: watch::Receiver<bool>,
) -> SessionEnd {
    let Welcomed {
        mut inbound,
        tx,
        heartbeat_every,
    } = welcomed;
    let mut heartbeat = tokio::time::interval(heartbeat_every);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick of an interval is immediate: that is the inventory sent on connect.
    let mut inventory_tick = tokio::time::interval(settings.inventory_interval);
    inventory_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut collecting: Option<JoinHandle<()>> = None;
    let public_key = &runs.identity.replication_key.public_key;

    let end = loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                let beat = AgentMessage { body: Some(Up::Heartbeat(Heartbeat { sent_unix_ms: now_unix_ms() })) };
                if tx.send(beat).await.is_err() {
                    break lost_established("outbound stream closed".into());
                }
                if let Some(request) = renewal.request(&runs.identity.system)
                    && tx.send(request).await.is_err()
                {
                    break lost_established("outbound stream closed".into());
                }
            }
            _ = inventory_tick.tick() => {
                start_inventory(&mut collecting, settings, zfs, public_key.clone(), &tx);
            }
            message = inbound.message() => match message {
                Ok(Some(m)) => match m.body {
                    Some(Down::RequestInventory(_)) => start_inventory(&mut collecting, settings, zfs, public_key.clone(), &tx),
                    Some(Down::StartRun(work)) => runs.start(work).await,
                    Some(Down::CancelRun(cancel)) => runs.cancel(cancel.run_id, &cancel.by),
                    Some(Down::AckRunResult(ack)) => runs.ack(ack.run_id).await,
                    Some(Down::Request(request)) => {
                        let handlers = Handlers {
                            zfs: zfs.clone(),
                            runs: runs.clone(),
                            pools: settings.inventory.pools.clone(),
                        };
                        answer(request, handlers, tx.clone());
                    }
                    Some(Down::CertificateRenewed(renewed)) => {
                        if renewal.received(renewed).await {
                            break SessionEnd::Renewed(Box::new(OpenStream { _inbound: inbound, _tx: tx }));
                        }
                    }
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

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}
