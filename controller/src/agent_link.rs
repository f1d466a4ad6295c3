//! The AgentLink service: each agent's long-lived stream, its heartbeats and inventories.

use crate::auth::require_system;
use crate::runs;
use crate::state::SharedState;
use nasfleet_proto::status::now_unix_ms;
use nasfleet_proto::v1::agent_link_server::AgentLink;
use nasfleet_proto::v1::agent_message::Body as Up;
use nasfleet_proto::v1::controller_message::Body as Down;
use nasfleet_proto::v1::{AgentMessage, ControllerMessage, Inventory, Welcome};
use prost::Message;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Commands queued per agent before senders must wait.
const OUTBOUND_QUEUE: usize = 64;

pub struct AgentLinkService {
    pub state: SharedState,
    pub shutdown: watch::Receiver<bool>,
}

type DownStream = Pin<Box<dyn Stream<Item = Result<ControllerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentLink for AgentLinkService {
    type ConnectStream = DownStream;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let name = match require_system(&self.state.store, &request) {
            Ok(name) => name,
            Err(status) => {
                tracing::warn!(peer = ?request.remote_addr(), reason = %status.message(), "agent connection refused");
                return Err(status);
            }
        };
        let address = request
            .remote_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(AgentMessage {
                body: Some(Up::Hello(hello)),
            }))) => hello,
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 10s")),
            Ok(_) => return Err(Status::invalid_argument("the first message must be Hello")),
        };

        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let welcome = ControllerMessage {
            body: Some(Down::Welcome(Welcome {
                system_name: name.clone(),
                heartbeat_interval_ms: u64::try_from(
                    self.state.sessions.heartbeat_interval().as_millis(),
                )
                .unwrap_or(u64::MAX),
            })),
        };
        tx.send(Ok(welcome))
            .await
            .map_err(|_| Status::unavailable("stream closed"))?;
        let now = now_unix_ms();
        let (id, close) = self.state.sessions.register(
            &name,
            tx,
            address.clone(),
            hello.agent_version.clone(),
            now,
        );
        let recorded = self.state.store.update_system(&name, |r| {
            r.last_seen_unix_ms = now;
            r.address = address.clone();
            r.agent_version = hello.agent_version.clone();
        });
        if let Err(e) = recorded {
            tracing::error!(system = %name, error = %e, "cannot record connection");
        }
        tracing::info!(system = %name, %address, version = %hello.agent_version,
            active_runs = ?hello.active_run_ids, "system ONLINE");
        {
            let state = self.state.clone();
            let name = name.clone();
            let active = hello.active_run_ids.clone();
            tokio::spawn(async move { runs::reconcile(&state, &name, &active).await });
        }
        tokio::spawn(read_agent(
            self.state.clone(),
            name,
            id,
            inbound,
            close,
            self.shutdown.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Reads one agent's messages until the stream ends, the session is
/// replaced or expired, or the controller shuts down.
async fn read_agent(
    state: SharedState,
    name: String,
    id: u64,
    mut inbound: Streaming<AgentMessage>,
    mut close: oneshot::Receiver<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let message = tokio::select! {
            m = inbound.message() => m,
            _ = &mut close => break,
            _ = nasfleet_proto::daemon::wait_for_shutdown(&mut shutdown) => break,
        };
        match message {
            Ok(Some(AgentMessage { body: Some(body) })) => handle(&state, &name, id, body).await,
            Ok(Some(AgentMessage { body: None })) => {}
            Ok(None) => {
                tracing::debug!(system = %name, "agent closed its stream");
                break;
            }
            Err(status) => {
                tracing::info!(system = %name, reason = %status.message(), "agent stream ended");
                break;
            }
        }
    }
    if let Some(ended) = state.sessions.unregister(&name, id) {
        state.record_ended(&[ended]).await;
    }
}

async fn handle(state: &SharedState, name: &str, id: u64, body: Up) {
    let now = now_unix_ms();
    match body {
        Up::Heartbeat(_) => state.sessions.heartbeat(name, id, now),
        Up::Hello(_) => {}
        Up::Inventory(inventory) => {
            state.sessions.heartbeat(name, id, now);
            record_inventory(state, name, &inventory).await;
            state.sessions.inventory_received(name, id);
        }
        Up::RunUpdate(update) => runs::progress(state, &update),
        Up::RunResult(result) => runs::result(state, name, result).await,
        Up::Response(response) => state.sessions.response_received(response),
    }
}

async fn record_inventory(state: &SharedState, name: &str, inventory: &Inventory) {
    let pools: Vec<String> = inventory.pools.iter().map(|p| p.name.clone()).collect();
    tracing::debug!(system = %name, pools = ?pools, datasets = inventory.datasets.len(),
        snapshots = inventory.snapshots.len(), "inventory received");
    for problem in &inventory.errors {
        tracing::warn!(system = %name, problem = %problem, "agent reported an inventory problem");
    }
    let store = &state.store;
    let result = store
        .put_inventory(name, &inventory.encode_to_vec())
        .and_then(|_| {
            store.update_system(name, |r| {
                r.pools = pools.clone();
                r.agent_version = inventory.agent_version.clone();
                r.last_seen_unix_ms = now_unix_ms();
            })
        });
    if let Err(e) = result {
        tracing::error!(system = %name, error = %e, "cannot store inventory");
        return;
    }
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "store flush failed");
    }
}
