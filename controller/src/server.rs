//! Serving: loads the data dir, binds the listener, runs the gRPC services over mutual TLS until shutdown.

use crate::agents::enrollment::EnrollmentService;
use crate::agents::link::AgentLinkService;
use crate::api::FleetService;
use crate::config::{ControllerConfig, DataDir};
use crate::engine::run_hub::RunHub;
use crate::engine::scheduler::{Scheduler, StoreBackend, SystemClock};
use crate::engine::state::{ControllerState, SharedState};
use crate::pki::{CaMaterial, CertificateAuthority, PkiError};
use crate::sessions::Sessions;
use crate::store::{Store, StoreError};
use crate::web;
use nasfleet_common::daemon::wait_for_shutdown;
use nasfleet_proto::MAX_MESSAGE_BYTES;
use nasfleet_proto::v1::agent_link_server::AgentLinkServer;
use nasfleet_proto::v1::enrollment_server::EnrollmentServer;
use nasfleet_proto::v1::fleet_server::FleetServer;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

/// How long in-flight calls get to finish after the shutdown signal.
/// With the three limits below, a stop takes at most 8 s: within the 10 s
/// that service managers and administrators are promised.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long recording the last-seen times of closed sessions may take.
const RECORD_ENDED_DEADLINE: Duration = Duration::from_secs(1);
/// How long the watchdog and the scheduler get to finish what they are doing.
const WORKER_DEADLINE: Duration = Duration::from_secs(1);
/// How long queued store writes get to become durable at the end.
const STORE_CLOSE_DEADLINE: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS configuration is invalid: {0}")]
    Tls(#[source] tonic::transport::Error),
    #[error("gRPC server failed: {0}")]
    Serve(#[source] tonic::transport::Error),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("heartbeat_interval: {0}")]
    Heartbeat(String),
    #[error("{0}")]
    Config(String),
}

async fn read(path: &Path) -> Result<String, ServerError> {
    tokio::fs::read_to_string(path)
        .await
        .map_err(|source| ServerError::Read {
            path: path.to_owned(),
            source,
        })
}

/// Binds the configured address. Separate from `serve` so callers learn of
/// a taken port before anything else happens.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Runs the controller until `shutdown` flips to true, then stops within
/// [`SHUTDOWN_GRACE`] + [`WORKER_DEADLINE`] + the store's close deadline.
pub async fn serve(
    data_dir: &DataDir,
    config: &ControllerConfig,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let (state, tls) = load_state(data_dir, config).await?;
    let local = listener.local_addr().ok();
    tracing::info!(listen = ?local, url = %config.url, fingerprint = %state.ca.fingerprint(),
        heartbeat_ms = state.sessions.heartbeat_interval().as_millis() as u64, "controller serving");
    let mut workers = start_workers(&state, &shutdown);
    let alerts = crate::engine::alerts::AlertSettings {
        started_unix_ms: nasfleet_common::status::now_unix_ms(),
        ..config.alerts().map_err(ServerError::Config)?
    };
    tracing::info!(
        interval_secs = alerts.interval.as_secs(),
        offline_grace_secs = alerts.offline_grace.as_secs(),
        "alerts evaluating"
    );
    workers.push((
        "alerts",
        tokio::spawn(crate::engine::alerts::run(
            state.clone(),
            alerts,
            crate::engine::notify::queue_changes,
            shutdown.clone(),
        )),
    ));
    workers.push((
        "notifications",
        tokio::spawn(crate::delivery::run(state.clone(), shutdown.clone())),
    ));
    if let Some(console) = start_console(data_dir, config, &state, &shutdown).await? {
        workers.push(("console", console));
    }
    if let Some(addr) = config.metrics_listen {
        let listener = bind(addr).await?;
        let served = if config.metrics_tls {
            let tls = crate::metrics::tls_config(data_dir)
                .await
                .map_err(ServerError::Config)?;
            tracing::info!(listen = ?listener.local_addr().ok(), "metrics serving on https /metrics (client certificates required)");
            tokio::spawn(crate::metrics::serve_tls(
                state.clone(),
                listener,
                tls,
                shutdown.clone(),
                SHUTDOWN_GRACE,
            ))
        } else {
            tracing::info!(listen = ?listener.local_addr().ok(), "metrics serving on /metrics");
            tokio::spawn(crate::metrics::serve(
                state.clone(),
                listener,
                shutdown.clone(),
            ))
        };
        workers.push(("metrics", served));
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<FleetServer<FleetService>>().await;
    health
        .set_serving::<AgentLinkServer<AgentLinkService>>()
        .await;
    let server = grpc_server(&state, tls, listener, &shutdown, health_service)?;
    tokio::pin!(server);
    let mut signal = shutdown.clone();
    let result = tokio::select! {
        r = &mut server => r,
        _ = wait_for_shutdown(&mut signal) => {
            // Checks during the stop already see it stopping.
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            // Agent streams are endless: close them so graceful shutdown can finish.
            let ended = state.sessions.close_all();
            if tokio::time::timeout(RECORD_ENDED_DEADLINE, state.record_ended(&ended)).await.is_err() {
                tracing::warn!("last-seen times of closed sessions not recorded in time");
            }
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("in-flight calls did not finish within {}s; stopping anyway", SHUTDOWN_GRACE.as_secs());
                    Ok(())
                }
            }
        }
    };
    stop_workers(workers).await;
    // Queued writes are made durable and answered; later ones are refused.
    if !state.store.close(STORE_CLOSE_DEADLINE).await {
        tracing::warn!(
            "the store did not finish its queued writes within {}s; stopping anyway",
            STORE_CLOSE_DEADLINE.as_secs()
        );
    }
    tracing::info!("controller stopped");
    result.map_err(ServerError::Serve)
}

/// The controller's state from its data dir and config, and the TLS
/// settings of its listener.
async fn load_state(
    data_dir: &DataDir,
    config: &ControllerConfig,
) -> Result<(SharedState, ServerTlsConfig), ServerError> {
    let heartbeat = config.heartbeat().map_err(ServerError::Heartbeat)?;
    let ca = CertificateAuthority::load(&CaMaterial {
        cert_pem: read(&data_dir.ca_cert()).await?,
        key_pem: read(&data_dir.ca_key()).await?,
    })?
    .with_leaf_validity(config.cert_lifetime().map_err(ServerError::Config)?);
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read(&data_dir.server_chain()).await?,
            read(&data_dir.server_key()).await?,
        ))
        .client_ca_root(Certificate::from_pem(ca.cert_pem()))
        // Enrollment runs before the agent has a certificate; every other
        // call checks for one in `auth`.
        .client_auth_optional(true);
    let store_path = data_dir.store();
    let store = tokio::task::spawn_blocking(move || Store::open(&store_path))
        .await
        .map_err(|e| {
            ServerError::Store(StoreError::Sled(sled::Error::ReportableBug(e.to_string())))
        })??;
    let state = Arc::new(ControllerState {
        store,
        ca,
        sessions: Sessions::new(heartbeat),
        url: config.url.clone(),
        timezone: config.timezone().map_err(ServerError::Config)?,
        runs: RunHub::default(),
        history_limit: config.run_history,
        scheduler_wake: Arc::new(Notify::new()),
        grace: config.grace().map_err(ServerError::Config)?,
        audit_retention: config.audit_retention().map_err(ServerError::Config)?,
        signins: Default::default(),
        console_url: config
            .web()
            .map_err(ServerError::Config)?
            .map(|web| web.url),
        scheduler_lag: Default::default(),
        system_summaries: Default::default(),
    });
    Ok((state, tls))
}

/// The background workers: the OFFLINE watchdog, the scheduler and the
/// heap trimmer. Each stops at the shutdown signal.
fn start_workers(
    state: &SharedState,
    shutdown: &watch::Receiver<bool>,
) -> Vec<(&'static str, JoinHandle<()>)> {
    let scheduler = Scheduler {
        backend: Arc::new(StoreBackend {
            state: state.clone(),
        }),
        clock: SystemClock,
        timezone: state.timezone,
        grace: state.grace,
        wake: state.scheduler_wake.clone(),
    };
    tracing::info!(timezone = %state.timezone.name(), grace_secs = state.grace.as_secs(), "scheduler starting");
    // Holds that deleted or edited tasks left to release before a restart.
    crate::engine::holds::resume_pending(state);
    vec![
        (
            "watchdog",
            tokio::spawn(expire_stale_sessions(state.clone(), shutdown.clone())),
        ),
        ("scheduler", tokio::spawn(scheduler.run(shutdown.clone()))),
        (
            "memory",
            tokio::spawn(crate::memory::trim_periodically(shutdown.clone())),
        ),
    ]
}

/// The web console on its own listener, when `web_listen` is set; it stops
/// at the shutdown signal, letting open requests finish within the grace.
async fn start_console(
    data_dir: &DataDir,
    config: &ControllerConfig,
    state: &SharedState,
    shutdown: &watch::Receiver<bool>,
) -> Result<Option<JoinHandle<()>>, ServerError> {
    let Some(settings) = config.web().map_err(ServerError::Config)? else {
        return Ok(None);
    };
    let (cert, key) = settings
        .identity
        .clone()
        .unwrap_or_else(|| (data_dir.server_chain(), data_dir.server_key()));
    let tls = web::tls_config((&cert, &key))
        .await
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let listener = bind(settings.listen).await?;
    tracing::info!(url = %settings.url, listen = ?listener.local_addr().ok(), "web console serving");
    let console = Arc::new(web::Console {
        state: state.clone(),
        sessions: web::Sessions::new(settings.idle_timeout, settings.session_lifetime),
        settings,
        shutdown: shutdown.clone(),
    });
    Ok(Some(tokio::spawn(web::serve(
        console,
        listener,
        tls,
        shutdown.clone(),
        SHUTDOWN_GRACE,
    ))))
}

/// Waits for the workers to finish what they are doing (a scheduled fire
/// being recorded), at most [`WORKER_DEADLINE`] in all; a worker still
/// busy then is stopped.
async fn stop_workers(workers: Vec<(&'static str, JoinHandle<()>)>) {
    let until = tokio::time::Instant::now() + WORKER_DEADLINE;
    for (name, mut worker) in workers {
        if tokio::time::timeout_at(until, &mut worker).await.is_err() {
            tracing::warn!(
                worker = name,
                "still busy at the shutdown deadline; stopped"
            );
            worker.abort();
        }
    }
}

/// The three gRPC services over mutual TLS on `listener`, ending at the
/// shutdown signal.
fn grpc_server(
    state: &SharedState,
    tls: ServerTlsConfig,
    listener: TcpListener,
    shutdown: &watch::Receiver<bool>,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> Result<impl Future<Output = Result<(), tonic::transport::Error>>, ServerError> {
    let enrollment = EnrollmentServer::new(EnrollmentService {
        state: state.clone(),
    });
    let agent_link = AgentLinkServer::new(AgentLinkService {
        state: state.clone(),
        shutdown: shutdown.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let fleet = FleetServer::new(FleetService {
        state: state.clone(),
        shutdown: shutdown.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);

    // The builder's TCP options apply only to listeners it binds itself;
    // without TCP_NODELAY every small message (a StartRun, an answer) can
    // wait out the peer's delayed ACK, 40 ms on Linux.
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    let mut signal = shutdown.clone();
    Ok(Server::builder()
        .tls_config(tls)
        .map_err(ServerError::Tls)?
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(enrollment)
        .add_service(agent_link)
        .add_service(fleet)
        .add_service(health)
        .serve_with_incoming_shutdown(incoming, async move {
            wait_for_shutdown(&mut signal).await;
        }))
}

/// Marks systems OFFLINE once they miss three heartbeats, even when their
/// TCP connection lingers (a hung agent or a silent network).
async fn expire_stale_sessions(state: SharedState, mut shutdown: watch::Receiver<bool>) {
    let period = (state.sessions.heartbeat_interval() / 2).max(Duration::from_millis(100));
    let mut ticker = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = wait_for_shutdown(&mut shutdown) => return,
        }
        let ended = state.sessions.expire_stale();
        for session in &ended {
            tracing::warn!(system = %session.name, "missed three heartbeats");
        }
        state.record_ended(&ended).await;
    }
}
