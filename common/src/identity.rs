//! Who is on the other end of a connection: certificate common names, CA fingerprints, and reading a peer certificate.

use sha2::{Digest, Sha256};
use thiserror::Error;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A principal as named in a certificate's common name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An enrolled NAS agent, `system:<name>`.
    System(String),
    /// A person using the CLI, `user:<name>`.
    User(String),
}

impl Principal {
    /// The certificate common name for this principal.
    pub fn common_name(&self) -> String {
        match self {
            Principal::System(name) => format!("system:{name}"),
            Principal::User(name) => format!("user:{name}"),
        }
    }

    pub fn parse(common_name: &str) -> Result<Self, IdentityError> {
        if let Some(name) = common_name.strip_prefix("system:") {
            return Ok(Principal::System(name.to_owned()));
        }
        if let Some(name) = common_name.strip_prefix("user:") {
            return Ok(Principal::User(name.to_owned()));
        }
        Err(IdentityError::UnknownPrincipal(common_name.to_owned()))
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.common_name())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("certificate common name '{0}' is neither system:<name> nor user:<name>")]
    UnknownPrincipal(String),
    #[error("certificate could not be parsed: {0}")]
    BadCertificate(String),
    #[error("certificate has no common name")]
    NoCommonName,
    #[error(
        "'{0}' is not a CA fingerprint; expected sha256: followed by 64 hex digits (as printed by `nasfleet token create`)"
    )]
    BadFingerprint(String),
}

/// What the controller needs from a client certificate to authorise a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// Serial number in lower-case hex, the key under which the controller records issued certificates.
    pub serial_hex: String,
    pub principal: Principal,
    /// Validity, unix milliseconds.
    pub not_before_unix_ms: i64,
    pub not_after_unix_ms: i64,
}

impl PeerCertificate {
    /// When a certificate should be renewed: once less than a third of its
    /// lifetime is left.
    pub fn renew_at_unix_ms(&self) -> i64 {
        let lifetime = self.not_after_unix_ms - self.not_before_unix_ms;
        self.not_after_unix_ms - lifetime / 3
    }

    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or(IdentityError::NoCommonName)?;
        let validity = cert.validity();
        Ok(PeerCertificate {
            serial_hex: hex::encode(cert.raw_serial()),
            principal: Principal::parse(common_name)?,
            not_before_unix_ms: validity.not_before.timestamp() * 1000,
            not_after_unix_ms: validity.not_after.timestamp() * 1000,
        })
    }
}

/// Fingerprint of a CA certificate as people see it: `sha256:<64 hex digits>` of the DER bytes.
pub fn ca_fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// Accepts `sha256:<hex>` or bare hex, with or without colons between bytes, any case.
pub fn normalize_fingerprint(input: &str) -> Result<String, IdentityError> {
    let trimmed = input.trim();
    let hex_part = trimmed
        .strip_prefix("sha256:")
        .or_else(|| trimmed.strip_prefix("SHA256:"))
        .unwrap_or(trimmed);
    let digits: String = hex_part.chars().filter(|c| *c != ':').collect();
    if digits.len() != 64 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(IdentityError::BadFingerprint(input.to_owned()));
    }
    Ok(format!("sha256:{}", digits.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_round_trip() {
        for p in [
            Principal::System("nas1".into()),
            Principal::User("admin".into()),
        ] {
            assert_eq!(Principal::parse(&p.common_name()), Ok(p));
        }
        assert_eq!(
            Principal::parse("admin"),
            Err(IdentityError::UnknownPrincipal("admin".into()))
        );
    }

    #[test]
    fn fingerprint_forms_normalise() {
        let fp = ca_fingerprint(b"x");
        assert_eq!(normalize_fingerprint(&fp), Ok(fp.clone()));
        let bare = fp.trim_start_matches("sha256:").to_ascii_uppercase();
        assert_eq!(normalize_fingerprint(&bare), Ok(fp.clone()));
        assert_eq!(
            normalize_fingerprint("sha256:abcd"),
            Err(IdentityError::BadFingerprint("sha256:abcd".into()))
        );
    }
}
