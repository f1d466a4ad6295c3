//! The controller's private CA: creating it, issuing the server and user certificates, and signing agents' CSRs.
//!
//! Agents and people are told apart by the certificate common name
//! (`system:<name>` / `user:<name>`); the serial number is the key under
//! which the store records every issued certificate, so revoking one is a
//! store update and no CRL has to be distributed.

use nasfleet_common::identity::{Principal, ca_fingerprint};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use std::net::IpAddr;
use thiserror::Error;
use time::{Duration, OffsetDateTime};

/// How long the CA is valid. Rotation of the CA is a later feature; 20 years
/// keeps a fleet from silently expiring in the meantime.
const CA_VALIDITY: Duration = Duration::days(20 * 365);
/// How long server, agent and user certificates are valid unless the
/// controller's `cert_lifetime` says otherwise.
pub const LEAF_VALIDITY: Duration = Duration::days(5 * 365);
/// Allow for clocks a little behind ours.
const BACKDATE: Duration = Duration::minutes(10);

#[derive(Debug, Error)]
pub enum PkiError {
    #[error("certificate operation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("csr: the certificate signing request is not valid: {0}")]
    BadCsr(rcgen::Error),
    #[error(
        "controller name '{0}' is not a valid DNS name or IP address for the server certificate"
    )]
    BadServerName(String),
}

/// The CA's certificate and key in PEM, as kept in the data dir.
pub struct CaMaterial {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A freshly issued certificate.
pub struct IssuedCertificate {
    pub cert_pem: String,
    /// Lower-case hex of the serial, as `PeerCertificate::serial_hex` reads it back.
    pub serial_hex: String,
    /// Present when the controller generated the key (server certificates
    /// and the first admin's).
    pub key_pem: Option<String>,
    /// When the certificate stops being valid.
    pub expires_unix_ms: i64,
}

/// The CA as loaded for signing.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    fingerprint: String,
    /// Lifetime of the agent and user certificates it signs from now on.
    leaf_validity: Duration,
}

fn random_serial() -> (SerialNumber, String) {
    let mut bytes: [u8; 16] = rand::random();
    // A positive DER integer without a leading zero byte: the encoded bytes
    // equal these bytes, so the hex read back from a peer certificate matches.
    bytes[0] = (bytes[0] & 0x7f).max(1);
    (SerialNumber::from_slice(&bytes), hex::encode(bytes))
}

fn validity(params: &mut CertificateParams, length: Duration) -> i64 {
    let now = OffsetDateTime::now_utc();
    // A tenth of a short lifetime at most: agents renew at a third of the
    // span left, so a long backdate would make a short-lived certificate
    // due for renewal as soon as it is issued.
    params.not_before = now - BACKDATE.min(length / 10);
    params.not_after = now + length;
    i64::try_from(params.not_after.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn common_name(cn: &str, organizational_unit: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "nasfleet");
    if let Some(ou) = organizational_unit {
        dn.push(DnType::OrganizationalUnitName, ou);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

impl CertificateAuthority {
    /// Creates a new CA; `name` labels it so several fleets can be told apart.
    pub fn create(name: &str) -> Result<(Self, CaMaterial), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(&format!("nasfleet CA {name}"), None);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial().0);
        validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        let material = CaMaterial {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        let ca = Self::load(&material)?;
        Ok((ca, material))
    }

    pub fn load(material: &CaMaterial) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(&material.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&material.cert_pem, key)?;
        let der = pem_to_der(&material.cert_pem)?;
        Ok(CertificateAuthority {
            issuer,
            cert_pem: material.cert_pem.clone(),
            fingerprint: ca_fingerprint(&der),
            leaf_validity: LEAF_VALIDITY,
        })
    }

    /// How long the agent and user certificates it signs are valid, in ms.
    pub fn leaf_lifetime_ms(&self) -> i64 {
        i64::try_from(self.leaf_validity.whole_milliseconds()).unwrap_or(i64::MAX)
    }

    /// Agent and user certificates signed from now on are valid for
    /// `lifetime` (at least 30 s).
    pub fn with_leaf_validity(mut self, lifetime: std::time::Duration) -> Self {
        let secs = i64::try_from(lifetime.as_secs())
            .unwrap_or(i64::MAX)
            .max(30);
        self.leaf_validity = Duration::seconds(secs);
        self
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// `sha256:<hex>` of the CA certificate, as printed with join tokens.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The controller's TLS server certificate, valid for `hosts` (DNS names or IP addresses).
    pub fn issue_server(&self, hosts: &[String]) -> Result<IssuedCertificate, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name("nasfleet controller", None);
        for host in hosts {
            let san = match host.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    host.as_str()
                        .try_into()
                        .map_err(|_| PkiError::BadServerName(host.clone()))?,
                ),
            };
            if !params.subject_alt_names.contains(&san) {
                params.subject_alt_names.push(san);
            }
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        self.sign(params, &key, Some(key.serialize_pem()))
    }

    /// A person's client certificate; the role is recorded in the store and shown in the OU.
    pub fn issue_user(&self, user: &str, role: &str) -> Result<IssuedCertificate, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(
            &Principal::User(user.to_owned()).common_name(),
            Some(&format!("role:{role}")),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        self.sign(params, &key, Some(key.serialize_pem()))
    }

    /// Signs an agent's CSR for `system:<name>`. Only the public key is taken
    /// from the request; subject, usages and validity are ours, so an agent
    /// cannot ask for a different identity or a CA certificate.
    pub fn sign_system_csr(
        &self,
        system: &str,
        csr_pem: &str,
    ) -> Result<IssuedCertificate, PkiError> {
        self.sign_csr(&Principal::System(system.to_owned()), csr_pem)
    }

    /// Signs a person's CSR for `user:<name>` (`nasfleet login`), on the
    /// same terms: the key is theirs, everything else ours.
    pub fn sign_user_csr(&self, user: &str, csr_pem: &str) -> Result<IssuedCertificate, PkiError> {
        self.sign_csr(&Principal::User(user.to_owned()), csr_pem)
    }

    fn sign_csr(
        &self,
        principal: &Principal,
        csr_pem: &str,
    ) -> Result<IssuedCertificate, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(PkiError::BadCsr)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(&principal.common_name(), None);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, &csr.public_key, None)
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        public_key: &impl PublicKeyData,
        key_pem: Option<String>,
    ) -> Result<IssuedCertificate, PkiError> {
        let (serial, serial_hex) = random_serial();
        params.serial_number = Some(serial);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let expires_unix_ms = validity(&mut params, self.leaf_validity);
        let cert = params.signed_by(public_key, &self.issuer)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            serial_hex,
            key_pem,
            expires_unix_ms,
        })
    }
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|der| der.to_vec())
        .map_err(|_| PkiError::Rcgen(rcgen::Error::CouldNotParseCertificate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nasfleet_common::identity::PeerCertificate;

    fn der(pem: &str) -> Vec<u8> {
        pem_to_der(pem).unwrap()
    }

    #[test]
    fn csr_signing_uses_our_subject_and_records_serial() {
        let (ca, _) = CertificateAuthority::create("test").unwrap();
        let agent_key = KeyPair::generate().unwrap();
        let mut req = CertificateParams::default();
        // The agent asks to be an admin; the CA must ignore that.
        req.distinguished_name = common_name("user:admin", None);
        let csr = req.serialize_request(&agent_key).unwrap().pem().unwrap();
        let issued = ca.sign_system_csr("nas1", &csr).unwrap();
        let peer = PeerCertificate::from_der(&der(&issued.cert_pem)).unwrap();
        assert_eq!(peer.principal, Principal::System("nas1".into()));
        assert_eq!(peer.serial_hex, issued.serial_hex);
        assert!(issued.key_pem.is_none());
    }

    #[test]
    fn garbage_csr_is_refused() {
        let (ca, _) = CertificateAuthority::create("test").unwrap();
        let err = ca.sign_system_csr("nas1", "not a csr").err().unwrap();
        assert!(err.to_string().starts_with("csr:"), "{err}");
    }

    #[test]
    fn reload_keeps_fingerprint() {
        let (ca, material) = CertificateAuthority::create("test").unwrap();
        let again = CertificateAuthority::load(&material).unwrap();
        assert_eq!(ca.fingerprint(), again.fingerprint());
        assert!(ca.fingerprint().starts_with("sha256:"));
        let user = ca.issue_user("admin", "admin").unwrap();
        let peer = PeerCertificate::from_der(&der(&user.cert_pem)).unwrap();
        assert_eq!(peer.principal, Principal::User("admin".into()));
    }
}
