//! `nasfleet-agent join`: enrollment with a join token, trusting the controller only through the pinned CA fingerprint.

use crate::state_dir::{Enrollment, StateDir, StateError};
use nasfleet_common::dial::{DialError, DialOptions, ServerTrust, dial};
use nasfleet_common::identity::{
    IdentityError, PeerCertificate, Principal, ca_fingerprint, normalize_fingerprint,
};
use nasfleet_common::names::{NameError, validate_system_name};
use nasfleet_proto::v1::JoinRequest;
use nasfleet_proto::v1::enrollment_client::EnrollmentClient;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum JoinError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("ca-fingerprint: {0}")]
    Fingerprint(IdentityError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot generate the agent key: {0}")]
    Key(#[from] rcgen::Error),
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("the controller refused the enrollment: {0}")]
    Refused(String),
    #[error("the controller's answer is not usable: {0}")]
    BadAnswer(String),
}

pub struct JoinOptions {
    pub controller: String,
    pub token: String,
    pub ca_fingerprint: String,
    pub name: String,
    pub state_dir: PathBuf,
}

/// A new key for `system:<name>` and its CSR in PEM, for enrolling and for
/// renewing the agent's certificate; the key never leaves this host.
pub fn system_csr(name: &str) -> Result<(KeyPair, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        Principal::System(name.to_owned()).common_name(),
    );
    params.distinguished_name = dn;
    let csr_pem = params.serialize_request(&key)?.pem()?;
    Ok((key, csr_pem))
}

/// Enrolls this host. Nothing is written unless the controller signs the certificate.
pub async fn join(options: &JoinOptions) -> Result<Enrollment, JoinError> {
    validate_system_name(&options.name)?;
    let fingerprint =
        normalize_fingerprint(&options.ca_fingerprint).map_err(JoinError::Fingerprint)?;
    let state = StateDir::new(&options.state_dir);
    state.ensure_not_enrolled()?;

    // The key is made here and never sent anywhere: only its CSR is.
    let (key, csr_pem) = system_csr(&options.name)?;

    let channel = dial(
        &options.controller,
        &ServerTrust::PinnedCaFingerprint(fingerprint.clone()),
        None,
        &DialOptions::default(),
    )
    .await?;
    let answer = EnrollmentClient::new(channel)
        .join(JoinRequest {
            token: options.token.clone(),
            name: options.name.clone(),
            csr_pem,
        })
        .await
        .map_err(|status| JoinError::Refused(status.message().to_owned()))?
        .into_inner();

    // Belt and braces: the CA we store must be the one we pinned, and the
    // certificate must carry the name we asked for.
    let ca_der = CertificateDer::from_pem_slice(answer.ca_certificate_pem.as_bytes())
        .map_err(|e| JoinError::BadAnswer(format!("CA certificate: {e}")))?;
    if ca_fingerprint(&ca_der) != fingerprint {
        return Err(JoinError::BadAnswer(
            "the returned CA certificate does not match the pinned fingerprint".into(),
        ));
    }
    let cert_der = CertificateDer::from_pem_slice(answer.certificate_pem.as_bytes())
        .map_err(|e| JoinError::BadAnswer(format!("certificate: {e}")))?;
    let peer =
        PeerCertificate::from_der(&cert_der).map_err(|e| JoinError::BadAnswer(e.to_string()))?;
    if peer.principal != Principal::System(options.name.clone()) {
        return Err(JoinError::BadAnswer(format!(
            "certificate was issued to {} instead of system:{}",
            peer.principal, options.name
        )));
    }

    let enrollment = Enrollment {
        controller: options.controller.clone(),
        name: options.name.clone(),
        ca_fingerprint: fingerprint,
    };
    state.save(
        &enrollment,
        &key.serialize_pem(),
        &answer.certificate_pem,
        &answer.ca_certificate_pem,
    )?;
    Ok(enrollment)
}
