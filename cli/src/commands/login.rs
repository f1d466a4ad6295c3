//! `nasfleet login`: a person's sign-in on their own machine; the key is generated here, only a CSR is sent, the controller is trusted through the pinned CA fingerprint, and the CLI config is written (0600) beside the key.

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use nasfleet_common::cli_config::CliConfig;
use nasfleet_common::dial::{DialOptions, ServerTrust, dial};
use nasfleet_common::identity::{
    PeerCertificate, Principal, ca_fingerprint, normalize_fingerprint,
};
use nasfleet_proto::v1::LoginRequest;
use nasfleet_proto::v1::enrollment_client::EnrollmentClient;
use rcgen::{CertificateParams, KeyPair};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::credentials::default_config_path;
use crate::output::{OutputFormat, human_time, print_json};

#[derive(Args)]
pub struct LoginArgs {
    /// The controller, as `nasfleet user create` printed it (https://host:port).
    #[arg(long)]
    pub controller: String,
    /// The single-use sign-in token from `nasfleet user create`.
    #[arg(long)]
    pub token: String,
    /// The fleet CA's fingerprint (sha256:...), as printed with the token.
    #[arg(long)]
    pub ca_fingerprint: String,
    /// Replace an existing CLI config at that place.
    #[arg(long)]
    pub force: bool,
}

impl LoginArgs {
    pub fn precheck(&self) -> anyhow::Result<()> {
        normalize_fingerprint(&self.ca_fingerprint)
            .map_err(|e| anyhow!("--ca-fingerprint: {e}"))?;
        if self.token.trim().is_empty() {
            bail!("--token: must not be empty");
        }
        if !self.controller.starts_with("https://") {
            bail!("--controller: must be an https:// URL, as `nasfleet user create` printed it");
        }
        Ok(())
    }

    /// Logs in and writes the config to `config` (else the default place).
    pub async fn run(self, config: Option<PathBuf>, output: OutputFormat) -> anyhow::Result<()> {
        self.precheck().map_err(crate::failure::invalid_input)?;
        let path = match config {
            Some(path) => path,
            None => default_config_path()
                .ok_or_else(|| anyhow!("no home directory: pass --config FILE"))?,
        };
        if path.exists() && !self.force {
            bail!(
                "{} exists already; pass --force to replace it, or --config FILE for another place",
                path.display()
            );
        }
        let fingerprint = normalize_fingerprint(&self.ca_fingerprint)
            .map_err(|e| anyhow!("--ca-fingerprint: {e}"))?;
        // The key is made here and never sent anywhere: only its CSR is.
        let key = KeyPair::generate().context("cannot generate a key")?;
        let csr_pem = CertificateParams::default()
            .serialize_request(&key)
            .and_then(|csr| csr.pem())
            .context("cannot make the certificate request")?;
        let channel = dial(
            &self.controller,
            &ServerTrust::PinnedCaFingerprint(fingerprint.clone()),
            None,
            &DialOptions::default(),
        )
        .await?;
        let answer = EnrollmentClient::new(channel)
            .login(LoginRequest {
                token: self.token.trim().to_owned(),
                csr_pem,
            })
            .await
            .map_err(super::status_error)?
            .into_inner();
        // The CA we store must be the one we pinned, and the certificate
        // must speak for the user the controller says it does.
        let ca_der = CertificateDer::from_pem_slice(answer.ca_certificate_pem.as_bytes())
            .map_err(|e| anyhow!("the controller's CA certificate is not usable: {e}"))?;
        if ca_fingerprint(&ca_der) != fingerprint {
            bail!("the controller's CA certificate does not match the pinned fingerprint");
        }
        let cert_der = CertificateDer::from_pem_slice(answer.certificate_pem.as_bytes())
            .map_err(|e| anyhow!("the issued certificate is not usable: {e}"))?;
        let peer = PeerCertificate::from_der(&cert_der)?;
        if peer.principal != Principal::User(answer.user.clone()) {
            bail!(
                "the certificate was issued to {} instead of user:{}",
                peer.principal,
                answer.user
            );
        }
        // Files, fsyncs and renames: off the runtime.
        let key_pem = key.serialize_pem();
        let (controller, saved) = (self.controller.clone(), answer.clone());
        let written = tokio::task::spawn_blocking(move || {
            write_config(&path, &controller, &saved.user, &key_pem, &saved)
        })
        .await
        .context("writing the CLI config stopped")??;
        match output {
            OutputFormat::Json => print_json(&serde_json::json!({
                "user": answer.user,
                "role": answer.role,
                "config": written.display().to_string(),
                "certificate_expires": nasfleet_common::status::rfc3339_from_unix_ms(answer.expires_unix_ms),
            })),
            OutputFormat::Table => {
                outln!("Logged in as {} ({}).", answer.user, answer.role)?;
                outln!(
                    "Certificate expires {}.",
                    human_time(answer.expires_unix_ms)
                )?;
                outln!("CLI config: {}", written.display())?;
                Ok(())
            }
        }
    }
}

/// Writes the key (0600), certificate, CA and config (0600) next to each
/// other; returns the config's absolute path.
fn write_config(
    path: &Path,
    controller: &str,
    user: &str,
    key_pem: &str,
    answer: &nasfleet_proto::v1::LoginResponse,
) -> anyhow::Result<PathBuf> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    let key = dir.join(format!("{user}.key"));
    let cert = dir.join(format!("{user}.crt"));
    let ca = dir.join("ca.crt");
    write_file(&key, key_pem.as_bytes(), 0o600)?;
    write_file(&cert, answer.certificate_pem.as_bytes(), 0o644)?;
    write_file(&ca, answer.ca_certificate_pem.as_bytes(), 0o644)?;
    let config = CliConfig {
        controller: controller.to_owned(),
        ca,
        cert,
        key,
    };
    let text = toml::to_string(&config).context("cannot encode the CLI config")?;
    write_file(path, text.as_bytes(), 0o600)?;
    Ok(std::path::absolute(path).unwrap_or_else(|_| path.to_owned()))
}

/// Writes `path` through a temporary sibling made with `mode` from the
/// start (a key is never readable by others, not even briefly), then
/// renames it into place.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}
