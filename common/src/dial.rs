//! How agents, the CLI and tests dial the controller: gRPC over TLS with either a trusted CA or a pinned CA fingerprint.
//!
//! TLS is done here with tokio-rustls rather than tonic's `ClientTlsConfig`,
//! because enrollment must trust a server whose CA is known only by its
//! fingerprint (kubeadm style), which needs a custom certificate verifier.

use crate::identity::ca_fingerprint;
use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Debug, Error)]
pub enum DialError {
    #[error("controller URL '{url}' is not valid: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{what} is not valid PEM: {reason}")]
    BadPem { what: &'static str, reason: String },
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot reach the controller at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// How the client decides to trust the controller's certificate.
#[derive(Clone)]
pub enum ServerTrust {
    /// The fleet CA certificate(s), PEM.
    CaPem(Vec<u8>),
    /// Only the SHA-256 fingerprint of the CA, as handed out with a join token.
    /// The server must send the CA certificate in its chain.
    PinnedCaFingerprint(String),
}

/// A client certificate chain and its private key, PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// Connection settings; the defaults suit both the CLI and agents.
#[derive(Clone, Debug)]
pub struct DialOptions {
    pub connect_timeout: Duration,
    /// Limit on unary calls. Streaming calls are limited only until response headers arrive.
    pub request_timeout: Option<Duration>,
    /// HTTP/2 pings detect a controller that vanished without closing the connection.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl Default for DialOptions {
    fn default() -> Self {
        DialOptions {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Some(Duration::from_secs(60)),
            keepalive_interval: Duration::from_secs(15),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn parse_certs(what: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, DialError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DialError::BadPem {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(DialError::BadPem {
            what,
            reason: "no certificate found".into(),
        });
    }
    Ok(certs)
}

fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, DialError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| DialError::BadPem {
        what: "client private key",
        reason: e.to_string(),
    })
}

/// Builds the rustls client configuration for the given trust and identity.
pub fn client_config(
    trust: &ServerTrust,
    identity: Option<&ClientIdentity>,
) -> Result<ClientConfig, DialError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match trust {
        ServerTrust::CaPem(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in parse_certs("controller CA certificate", pem)? {
                roots.add(cert)?;
            }
            builder.with_root_certificates(roots)
        }
        ServerTrust::PinnedCaFingerprint(fingerprint) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier {
                fingerprint: fingerprint.clone(),
                provider,
            })),
    };
    let mut config = match identity {
        Some(id) => builder.with_client_auth_cert(
            parse_certs("client certificate", &id.cert_pem)?,
            parse_key(&id.key_pem)?,
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Opens a gRPC channel to `url` (`https://host:port`).
pub async fn dial(
    url: &str,
    trust: &ServerTrust,
    identity: Option<&ClientIdentity>,
    options: &DialOptions,
) -> Result<Channel, DialError> {
    let bad_url = |reason: &str| DialError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|_| bad_url("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad_url("the scheme must be https"));
    }
    let host = uri
        .host()
        .ok_or_else(|| bad_url("no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let server_name =
        ServerName::try_from(host.clone()).map_err(|_| bad_url("host is not a valid name"))?;
    let connector = TlsConnector::from(Arc::new(client_config(trust, identity)?));

    // TLS happens in the connector below, so tonic itself sees plain http.
    let endpoint_uri = format!("http://{}:{}", uri.host().unwrap_or_default(), port);
    let mut endpoint = Endpoint::from_shared(endpoint_uri)
        .map_err(|e| bad_url(&e.to_string()))?
        .connect_timeout(options.connect_timeout)
        .http2_keep_alive_interval(options.keepalive_interval)
        .keep_alive_timeout(options.keepalive_timeout)
        .keep_alive_while_idle(true);
    if let Some(timeout) = options.request_timeout {
        endpoint = endpoint.timeout(timeout);
    }
    let connect_timeout = options.connect_timeout;
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            let server_name = server_name.clone();
            let addr = (host.clone(), port);
            async move {
                let handshake = async {
                    let tcp = TcpStream::connect(addr).await?;
                    tcp.set_nodelay(true)?;
                    connector.connect(server_name, tcp).await
                };
                let tls = tokio::time::timeout(connect_timeout, handshake)
                    .await
                    .map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "TCP/TLS handshake timed out",
                        )
                    })??;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|source| DialError::Connect {
            url: url.to_owned(),
            source,
        })?;
    Ok(channel)
}

/// Trusts a server whose chain carries a CA certificate with the pinned
/// fingerprint, and whose leaf that CA signed for the dialled name.
#[derive(Debug)]
struct PinnedCaVerifier {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|c| ca_fingerprint(c) == self.fingerprint)
        else {
            let seen: Vec<String> = intermediates.iter().map(|c| ca_fingerprint(c)).collect();
            return Err(rustls::Error::General(format!(
                "CA fingerprint mismatch: expected {}, the controller presented {}",
                self.fingerprint,
                if seen.is_empty() {
                    "no CA certificate".to_owned()
                } else {
                    seen.join(", ")
                }
            )));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
