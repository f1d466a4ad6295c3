//! Renewing the agent's certificate before it expires: once less than a third of its lifetime is left, a key made here and its CSR go up the link; the certificate that comes back is saved crash-safely beside the key, and the link reconnects with it.

use crate::join::system_csr;
use crate::state_dir::{Credentials, StateDir};
use nasfleet_common::identity::PeerCertificate;
use nasfleet_common::status::now_unix_ms;
use nasfleet_proto::v1::agent_message::Body as Up;
use nasfleet_proto::v1::{AgentMessage, CertificateRenewed, RenewCertificate};
use rcgen::KeyPair;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Renewing this agent's certificate before it expires: due once less than
/// a third of its lifetime is left; the key is made here, only a CSR goes up.
pub(super) struct Renewal {
    state_dir: std::path::PathBuf,
    /// When to ask (unix ms); `None`: the certificate could not be read.
    due_unix_ms: Option<i64>,
    /// The key of a CSR sent and not yet answered, and when it was sent.
    pending: Option<(KeyPair, i64)>,
}

/// How long after a refused or failed renewal the agent asks again.
const RENEW_RETRY_MS: i64 = 60_000;

impl Renewal {
    pub(super) fn of(credentials: &Credentials, state_dir: std::path::PathBuf) -> Renewal {
        let due_unix_ms = CertificateDer::from_pem_slice(&credentials.cert_pem)
            .ok()
            .and_then(|der| PeerCertificate::from_der(&der).ok())
            .map(|cert| cert.renew_at_unix_ms());
        if due_unix_ms.is_none() {
            tracing::warn!(
                "cannot read this agent's certificate; it will not be renewed automatically"
            );
        }
        Renewal {
            state_dir,
            due_unix_ms,
            pending: None,
        }
    }

    /// The request to send now, if renewal is due and none is pending.
    pub(super) fn request(&mut self, system: &str) -> Option<AgentMessage> {
        let now = now_unix_ms();
        // An answer that never came (lost with a reply that could not be
        // delivered) does not hold renewal up for good.
        if self
            .pending
            .as_ref()
            .is_some_and(|(_, sent)| now - sent > RENEW_RETRY_MS)
        {
            self.pending = None;
        }
        if self.pending.is_some() || self.due_unix_ms.is_none_or(|due| now < due) {
            return None;
        }
        match system_csr(system) {
            Ok((key, csr_pem)) => {
                tracing::info!("certificate has less than a third of its lifetime left; renewing");
                self.pending = Some((key, now));
                Some(AgentMessage {
                    body: Some(Up::RenewCertificate(RenewCertificate { csr_pem })),
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot make a key for the certificate renewal");
                self.due_unix_ms = Some(now_unix_ms() + RENEW_RETRY_MS);
                None
            }
        }
    }

    /// Saves the renewed certificate with its key; `true` when it is in
    /// place and the agent should connect with it.
    pub(super) async fn received(&mut self, renewed: CertificateRenewed) -> bool {
        let Some((key, _)) = self.pending.take() else {
            return false;
        };
        if !renewed.error.is_empty() {
            tracing::warn!(reason = %renewed.error, "the controller refused to renew the certificate; asking again later");
            self.due_unix_ms = Some(now_unix_ms() + RENEW_RETRY_MS);
            return false;
        }
        let dir = StateDir::new(self.state_dir.clone());
        let key_pem = key.serialize_pem();
        let saved = tokio::task::spawn_blocking(move || {
            dir.save_renewed(&key_pem, &renewed.certificate_pem)
        })
        .await;
        match saved {
            Ok(Ok(())) => {
                tracing::info!(
                    expires_unix_ms = renewed.expires_unix_ms,
                    "certificate renewed; connecting with it"
                );
                true
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot save the renewed certificate; keeping the current one");
                self.due_unix_ms = Some(now_unix_ms() + RENEW_RETRY_MS);
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "saving the renewed certificate failed");
                self.due_unix_ms = Some(now_unix_ms() + RENEW_RETRY_MS);
                false
            }
        }
    }
}
