//! The web console: its own HTTPS listener, sessions for signed-in people, and TrueCommand's screens built on the engine with the same roles and audit log as the gRPC API, so the browser and the CLI can never disagree.

mod admin;
mod dashboard;
mod error;
mod events;
mod form;
mod frame;
mod layout;
mod protection;
mod replication;
mod runs;
mod session;
mod signin;
mod system;
mod task_tables;

use crate::config::WebSettings;
use crate::engine::state::SharedState;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use nasfleet_common::daemon::wait_for_shutdown;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

pub use session::Sessions;

/// A TLS handshake that has not finished by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that sends no complete request head by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests with bodies larger than this are refused (forms are small).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Debug, Error)]
pub enum WebError {
    #[error("web console certificate or key {path}: {message}")]
    Identity { path: String, message: String },
    #[error("web console TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// What every page handler is given.
pub struct Console {
    pub state: SharedState,
    pub sessions: Sessions,
    pub settings: WebSettings,
    /// Ends server-sent event streams at shutdown.
    pub shutdown: watch::Receiver<bool>,
}

pub type ConsoleState = Arc<Console>;

/// The address a request came from, for the audit log and rate limits.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// A certificate chain and its key from PEM files.
pub async fn read_identity(
    identity: (&Path, &Path),
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), WebError> {
    let (cert_path, key_path) = identity;
    let read = |path: &Path| {
        let path = path.to_owned();
        async move {
            tokio::fs::read(&path)
                .await
                .map_err(|e| WebError::Identity {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })
        }
    };
    let cert_pem = read(cert_path).await?;
    let key_pem = read(key_path).await?;
    let bad = |path: &Path, message: String| WebError::Identity {
        path: path.display().to_string(),
        message,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert_path, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(cert_path, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad(key_path, e.to_string()))?;
    Ok((chain, key))
}

/// The console's TLS settings: the configured certificate and key, else
/// the controller's own server certificate.
pub async fn tls_config(identity: (&Path, &Path)) -> Result<Arc<rustls::ServerConfig>, WebError> {
    let (chain, key) = read_identity(identity).await?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Every page and action of the console.
pub fn router(console: ConsoleState) -> Router {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/signin", get(signin::form).post(signin::password))
        .route("/signin/link", get(signin::link))
        .route("/signout", post(signin::sign_out))
        .route("/alerts/{id}/dismiss", post(dashboard::dismiss_alert))
        .route("/systems/{name}", get(system::page))
        .route("/systems/{name}/snapshots", post(system::take_snapshot))
        .route("/replication", get(replication::list))
        .route(
            "/replication/wizard",
            get(replication::wizard_start).post(replication::wizard_step),
        )
        .route("/replication/{id}/edit", get(replication::edit))
        .route("/protection", get(protection::page))
        .route("/rsync/new", get(protection::rsync_new))
        .route("/rsync/{id}/edit", get(protection::rsync_edit))
        .route("/rsync/save", post(protection::rsync_save))
        .route("/tasks/{id}/run", post(protection::run_now))
        .route("/tasks/{id}/delete", post(protection::delete))
        .route("/runs", get(runs::fleet))
        .route("/tasks/{id}/runs", get(runs::task_history))
        .route("/runs/{id}", get(runs::page))
        .route("/runs/{id}/cancel", post(runs::cancel))
        .route("/events/tasks", get(events::tasks))
        .route("/events/runs/{id}", get(events::run))
        .route("/users", get(admin::users).post(admin::create_user))
        .route("/users/{name}/remove", post(admin::remove_user))
        .route("/tokens", get(admin::tokens).post(admin::create_token))
        .route("/audit", get(admin::audit))
        .route("/static/app.css", get(layout::stylesheet))
        .route("/static/app.js", get(layout::script))
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            session::require_csrf,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console)
}

/// Headers every answer carries: no framing, no sniffing, nothing loaded
/// from anywhere but the console itself.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Serves the console on `listener` until `shutdown`, then lets open
/// requests finish for at most `grace`.
pub async fn serve(
    console: ConsoleState,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    serve_https("console", router(console), listener, tls, shutdown, grace).await
}

/// The certificate chain a client presented, leaf first, for handlers of a
/// listener that asks for one.
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// Serves `app` over HTTPS (HTTP/1.1) on `listener` until `shutdown`, then
/// lets open requests finish for at most `grace`. Each request carries the
/// client's address ([`ClientAddr`]) and, when it sent one, its
/// certificate chain ([`PeerCertificates`]). `label` names the listener in logs.
pub async fn serve_https(
    label: &'static str,
    app: Router,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors or similar: wait instead of spinning.
                    tracing::warn!(error = %e, "{label}: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = wait_for_shutdown(&mut shutdown) => break,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "{label}: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let certificates = tls.get_ref().1.peer_certificates().map(|chain| {
                PeerCertificates(Arc::new(
                    chain.iter().map(|c| c.clone().into_owned()).collect(),
                ))
            });
            let service =
                hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ClientAddr(peer));
                    if let Some(certificates) = &certificates {
                        request.extensions_mut().insert(certificates.clone());
                    }
                    app.clone().oneshot(request.map(axum::body::Body::new))
                });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %e, "{label}: connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("{label}: open requests did not finish in time; stopping anyway");
    }
}
