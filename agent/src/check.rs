//! `nasfleet-agent check`: whether this host can do its part, for systemd and monitoring: it is enrolled, its certificate is in force, the controller answers SERVING over mutual TLS with that certificate, and `zfs` answers.

use crate::host::process;
use crate::state_dir::StateDir;
use crate::zfs::runner::ZFS;
use nasfleet_common::dial::{ClientIdentity, ServerTrust};
use nasfleet_common::health::{CHECK_TIMEOUT, controller_serving};
use nasfleet_common::identity::PeerCertificate;
use nasfleet_common::status::{now_unix_ms, rfc3339_from_unix_ms};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// One line per part checked; `Err` holds the lines too, with what failed.
/// Reads the state dir without changing it (a renewal in progress is left
/// to the running agent).
pub async fn check(state_dir: &StateDir) -> Result<Vec<String>, Vec<String>> {
    let mut lines = Vec::new();
    let mut healthy = true;
    let credentials = match state_dir.read_only().await {
        Ok(credentials) => credentials,
        Err(e) => return Err(vec![e.to_string()]),
    };
    let name = &credentials.enrollment.name;
    lines.push(format!(
        "enrolled as '{name}' with {}",
        credentials.enrollment.controller
    ));
    let certificate = CertificateDer::from_pem_slice(&credentials.cert_pem)
        .ok()
        .and_then(|der| PeerCertificate::from_der(&der).ok());
    match certificate {
        Some(cert) if cert.not_after_unix_ms <= now_unix_ms() => {
            healthy = false;
            lines.push(format!(
                "certificate: expired at {}; enroll again with a new join token",
                rfc3339_from_unix_ms(cert.not_after_unix_ms).unwrap_or_default()
            ));
        }
        Some(cert) => lines.push(format!(
            "certificate: valid until {} (renewed from {})",
            rfc3339_from_unix_ms(cert.not_after_unix_ms).unwrap_or_default(),
            rfc3339_from_unix_ms(cert.renew_at_unix_ms()).unwrap_or_default()
        )),
        None => {
            healthy = false;
            lines.push("certificate: cannot be read; enroll again".into());
        }
    }
    let identity = ClientIdentity {
        cert_pem: credentials.cert_pem.clone(),
        key_pem: credentials.key_pem.clone(),
    };
    let trust = ServerTrust::CaPem(credentials.ca_pem.clone());
    match controller_serving(&credentials.enrollment.controller, &trust, Some(&identity)).await {
        Ok(()) => lines.push(format!(
            "controller {}: SERVING",
            credentials.enrollment.controller
        )),
        Err(reason) => {
            healthy = false;
            lines.push(format!("controller: {reason}"));
        }
    }
    match process::run(ZFS, &["list", "-H", "-o", "name"], CHECK_TIMEOUT).await {
        Ok(out) => lines.push(format!(
            "zfs: answers ({} datasets)",
            String::from_utf8_lossy(&out.stdout).lines().count()
        )),
        Err(e) => {
            healthy = false;
            let first = e.to_string();
            lines.push(format!("zfs: {}", first.lines().next().unwrap_or_default()));
        }
    }
    if healthy { Ok(lines) } else { Err(lines) }
}
