//! Finding and loading the CLI's credentials (`--config`, else `NASFLEET_CONFIG`, else the user's config dir), and telling when the controller refuses them.

use crate::failure::{self, CertificateRefused, Exit};
use anyhow::{Context, bail};
use nasfleet_common::cli_config::CliConfig;
use nasfleet_common::dial::{ClientIdentity, DialOptions, ServerTrust, client_config, dial};
use nasfleet_common::identity::ca_fingerprint;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Uri};

/// The user's default config file: `$XDG_CONFIG_HOME/nasfleet/config.toml` or `~/.config/nasfleet/config.toml`.
pub fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("nasfleet").join("config.toml"))
}

/// Picks the config file by precedence; errors name every place looked at.
/// Also says where the path came from, for messages about the credentials.
pub fn locate(flag: Option<&Path>) -> anyhow::Result<(PathBuf, &'static str)> {
    if let Some(path) = flag {
        return Ok((path.to_owned(), "from --config"));
    }
    if let Some(env) = std::env::var_os("NASFLEET_CONFIG").filter(|v| !v.is_empty()) {
        return Ok((PathBuf::from(env), "from NASFLEET_CONFIG"));
    }
    match default_config_path() {
        Some(path) if path.exists() => Ok((path, "the default")),
        other => bail!(
            "no credentials: pass --config FILE, set NASFLEET_CONFIG, or copy the admin.toml written by `nasfleet-controller init` to {}",
            other
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "~/.config/nasfleet/config.toml".into())
        ),
    }
}

fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

async fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    tokio::fs::read(path)
        .await
        .with_context(|| format!("cannot read the {what} {}", path.display()))
}

/// The CLI's credentials as loaded from its config file.
pub struct Credentials {
    pub path: PathBuf,
    /// `from --config`, `from NASFLEET_CONFIG` or `the default`.
    pub origin: &'static str,
    pub controller: String,
    pub cert_path: PathBuf,
    ca_pem: Vec<u8>,
    identity: ClientIdentity,
}

/// How long the diagnosis of a failed call waits for the controller's verdict.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

impl Credentials {
    /// Finds and reads the config and the files it names.
    pub async fn load(flag: Option<&Path>) -> anyhow::Result<Credentials> {
        let (path, origin) = locate(flag)?;
        let text = tokio::fs::read_to_string(&path)
            .await
            .with_context(|| format!("cannot read the CLI config {}", path.display()))?;
        let config: CliConfig = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid nasfleet CLI config", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let cert_path = resolve(base, &config.cert);
        Ok(Credentials {
            ca_pem: read(&resolve(base, &config.ca), "CA certificate").await?,
            identity: ClientIdentity {
                cert_pem: read(&cert_path, "client certificate").await?,
                key_pem: read(&resolve(base, &config.key), "client key").await?,
            },
            controller: config.controller,
            cert_path,
            path,
            origin,
        })
    }

    fn trust(&self) -> ServerTrust {
        ServerTrust::CaPem(self.ca_pem.clone())
    }

    /// Opens an authenticated channel to the controller.
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        Ok(dial(
            &self.controller,
            &self.trust(),
            Some(&self.identity),
            &DialOptions::default(),
        )
        .await?)
    }

    /// Explains a failed command when the cause is this client's
    /// certificate. With TLS 1.3 the controller refuses a certificate only
    /// after the handshake looks complete to the client, so the first call
    /// fails either with the controller's alert or, when the connection
    /// closed first, with a bare "connection closed". In the second case one
    /// more handshake, followed by a read that waits for the verdict, tells;
    /// `probe` allows it (pointless when not even the first handshake worked).
    pub async fn explain(&self, error: anyhow::Error, probe: bool) -> anyhow::Error {
        let alert = match error.chain().find_map(failure::tls_refusal) {
            Some(alert) => Some(alert),
            None if probe && failure::exit_for(&error) == Exit::Unreachable => self.probe().await,
            None => None,
        };
        match alert {
            Some(alert) => anyhow::Error::new(CertificateRefused {
                alert,
                config: self.path.clone(),
                config_origin: self.origin,
                cert: self.cert_path.clone(),
                ca_fingerprint: CertificateDer::pem_slice_iter(&self.ca_pem)
                    .next()
                    .and_then(Result::ok)
                    .map(|der| ca_fingerprint(&der)),
            }),
            None => error,
        }
    }

    /// The TLS alert with which the controller refuses this client's
    /// certificate, if it does; `None` also when it cannot be reached.
    async fn probe(&self) -> Option<String> {
        let uri: Uri = self.controller.parse().ok()?;
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(host.to_owned()).ok()?;
        let config = client_config(&self.trust(), Some(&self.identity)).ok()?;
        let verdict = async {
            let tcp = TcpStream::connect((host, uri.port_u16().unwrap_or(443))).await?;
            let mut tls = TlsConnector::from(Arc::new(config))
                .connect(server_name, tcp)
                .await?;
            // A controller that accepts us waits for the HTTP/2 preface; one
            // that refuses us sends its alert.
            tls.read(&mut [0u8; 1]).await
        };
        match tokio::time::timeout(PROBE_TIMEOUT, verdict).await {
            Ok(Err(e)) => failure::tls_refusal(&e),
            Ok(Ok(_)) | Err(_) => None,
        }
    }
}
