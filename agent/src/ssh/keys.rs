//! OpenSSH public-key lines: parsed and validated (type first, one line, the data matching its type), fingerprinted as `ssh-keygen -l` prints them, and reduced to `TYPE BASE64` for known_hosts and authorized_keys.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::error::SshError;

/// Key types accepted as host keys. DSA is gone from current OpenSSH, and
/// security-key (`sk-`) types need a touch, so they cannot be host keys.
pub(super) const HOST_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
];

/// The only type of replication key nasfleet makes.
const REPLICATION_KEY_TYPE: &str = "ssh-ed25519";

/// Size of an ed25519 public key blob: string "ssh-ed25519" and 32 key bytes.
const ED25519_BLOB_LEN: usize = 4 + 11 + 4 + 32;

/// A validated public key: type and base64 data (the comment is dropped,
/// nasfleet writes its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeyLine {
    pub(super) kind: String,
    pub(super) data: String,
}

impl KeyLine {
    pub(super) fn joined(&self) -> String {
        format!("{} {}", self.kind, self.data)
    }
}

fn invalid_key(reason: impl Into<String>) -> SshError {
    SshError::InvalidKey {
        reason: reason.into(),
    }
}

/// Parses one `TYPE BASE64[ comment]` line whose type is in `allowed`.
///
/// Surrounding whitespace (a `.pub` file's final newline) is ignored, but a
/// line break or other control character inside is refused: a second line
/// smuggled into authorized_keys or known_hosts would be a second key.
/// Anything before the type, such as authorized_keys options
/// (`command="..."`, `from=...`), is refused because the type must come first.
pub(super) fn parse_key_line(text: &str, allowed: &[&str]) -> Result<KeyLine, SshError> {
    let line = text.trim();
    if line.is_empty() {
        return Err(invalid_key("it is empty"));
    }
    if line.chars().any(char::is_control) {
        return Err(invalid_key(
            "it must be a single line without control characters",
        ));
    }
    let mut words = line.split(' ').filter(|w| !w.is_empty());
    let (Some(kind), Some(data)) = (words.next(), words.next()) else {
        return Err(invalid_key("expected 'TYPE BASE64 [comment]'"));
    };
    if !allowed.contains(&kind) {
        let shown: String = kind.chars().take(40).collect();
        return Err(invalid_key(format!(
            "'{shown}' is not an accepted key type (expected {}; options before the key are not accepted)",
            allowed.join(", ")
        )));
    }
    fingerprint_public_key(&format!("{kind} {data}")).map_err(|err| match err {
        KeyParseError::BadBase64 => invalid_key("key data is not valid base64"),
        other => invalid_key(other.to_string()),
    })?;
    Ok(KeyLine {
        kind: kind.to_owned(),
        data: data.to_owned(),
    })
}

/// A replication public key: exactly one `ssh-ed25519 BASE64[ comment]`.
pub(super) fn parse_replication_key(text: &str) -> Result<KeyLine, SshError> {
    let key = parse_key_line(text, &[REPLICATION_KEY_TYPE])?;
    // The embedded type was checked; the length catches truncated or padded
    // keys that sshd would silently ignore.
    let blob_len = STANDARD.decode(&key.data).map(|b| b.len()).unwrap_or(0);
    if blob_len != ED25519_BLOB_LEN {
        return Err(invalid_key("ssh-ed25519 key data has the wrong length"));
    }
    Ok(key)
}

/// Why a public-key line could not be fingerprinted.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyParseError {
    #[error("no key line found")]
    Empty,
    #[error("expected 'TYPE BASE64 [comment]'")]
    MissingBlob,
    #[error("key data is not valid base64")]
    BadBase64,
    #[error("key data is truncated")]
    Truncated,
    #[error("line says '{declared}' but the key data is '{embedded}'")]
    TypeMismatch { declared: String, embedded: String },
}

/// Fingerprints an OpenSSH public-key line (`TYPE BASE64 [comment]`) as
/// `"TYPE SHA256:..."`: SHA-256 of the decoded key blob in unpadded
/// standard base64, exactly as `ssh-keygen -l` prints it. Blank lines and
/// `#` comments before the key are skipped.
pub fn fingerprint_public_key(text: &str) -> Result<String, KeyParseError> {
    let (declared, data) = key_words(text)?;
    let blob = STANDARD
        .decode(data)
        .map_err(|_| KeyParseError::BadBase64)?;
    // The blob starts with its own key type; a mismatch means a damaged or
    // hand-edited file, whose fingerprint would pin the wrong thing.
    let embedded = embedded_key_type(&blob)?;
    if embedded != declared {
        return Err(KeyParseError::TypeMismatch {
            declared: declared.to_owned(),
            embedded: embedded.to_owned(),
        });
    }
    let digest = Sha256::digest(&blob);
    Ok(format!(
        "{declared} SHA256:{}",
        STANDARD_NO_PAD.encode(digest)
    ))
}

/// The SSH wire-format string at the start of a key blob (u32 length, bytes).
fn embedded_key_type(blob: &[u8]) -> Result<&str, KeyParseError> {
    let len_bytes: [u8; 4] = blob
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(KeyParseError::Truncated)?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let name = blob.get(4..4 + len).ok_or(KeyParseError::Truncated)?;
    std::str::from_utf8(name).map_err(|_| KeyParseError::Truncated)
}

/// The key itself from an OpenSSH public-key line: `"TYPE BASE64"`, without
/// the comment. The comment of a host key names the machine it was made on
/// (often a stale install-time host name), which says nothing other systems
/// need, and what goes into a known_hosts file must be just type and data.
/// Validated exactly as [`fingerprint_public_key`] does.
pub fn public_key_line(text: &str) -> Result<String, KeyParseError> {
    // Validation first, so a line that cannot be fingerprinted is never
    // handed to another system to pin.
    fingerprint_public_key(text)?;
    let (kind, data) = key_words(text)?;
    Ok(format!("{kind} {data}"))
}

/// Type and base64 data of the first key line, skipping blank lines and
/// `#` comments; the comment after them is ignored.
fn key_words(text: &str) -> Result<(&str, &str), KeyParseError> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or(KeyParseError::Empty)?;
    let mut words = line.split_ascii_whitespace();
    match (words.next(), words.next()) {
        (Some(kind), Some(data)) => Ok((kind, data)),
        _ => Err(KeyParseError::MissingBlob),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::fixtures::*;

    #[test]
    fn replication_key_validation_refuses_hostile_input() {
        assert_eq!(
            parse_replication_key(&format!("{KEY}\n")).unwrap().joined(),
            KEY_NO_COMMENT
        );
        for bad in [
            format!("command=\"touch /tmp/pwned\" {KEY}"),
            format!("no-pty,{KEY}"),
            format!("{KEY}\n{KEY}"),
            format!("{KEY}\rssh-ed25519 AAAA"),
            format!("{KEY_NO_COMMENT} comment\0with nul"),
            ECDSA.to_owned(),
            "ssh-ed25519".to_owned(),
            "ssh-ed25519 AAAA".to_owned(),
            "ssh-ed25519 not-base64!".to_owned(),
            // Valid base64, valid type prefix, but padded with extra bytes.
            format!(
                "ssh-ed25519 {}",
                STANDARD
                    .encode([STANDARD.decode(&KEY_NO_COMMENT[12..]).unwrap(), vec![0; 3]].concat())
            ),
            "garbage".to_owned(),
            String::new(),
        ] {
            let err = parse_replication_key(&bad).unwrap_err();
            assert!(matches!(err, SshError::InvalidKey { .. }), "{bad:?}: {err}");
        }
        let err = parse_replication_key(&format!("command=\"x\" {KEY}")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid public key: 'command=\"x\"' is not an accepted key type (expected ssh-ed25519; options before the key are not accepted)"
        );
    }

    #[test]
    fn fingerprints_known_keys() {
        assert_eq!(
            fingerprint_public_key(FIXED_KEY).unwrap(),
            FIXED_FINGERPRINT
        );
        assert_eq!(
            fingerprint_public_key(FIXED_ECDSA).unwrap(),
            "ecdsa-sha2-nistp256 SHA256:KqasHVq7K/7eTeZ+jRgIgMWOrH+EWrhGJQUsZwbVmSA"
        );
        let with_noise = format!("\n# host key\n  {FIXED_KEY}");
        assert_eq!(
            fingerprint_public_key(&with_noise).unwrap(),
            FIXED_FINGERPRINT
        );
    }

    #[test]
    fn refuses_broken_keys() {
        assert_eq!(fingerprint_public_key(""), Err(KeyParseError::Empty));
        assert_eq!(
            fingerprint_public_key("ssh-ed25519"),
            Err(KeyParseError::MissingBlob)
        );
        assert_eq!(
            fingerprint_public_key("ssh-ed25519 !!!notbase64"),
            Err(KeyParseError::BadBase64)
        );
        assert_eq!(
            fingerprint_public_key("ssh-ed25519 AAAA"),
            Err(KeyParseError::Truncated)
        );
        let swapped = FIXED_KEY.replacen("ssh-ed25519", "ssh-rsa", 1);
        assert_eq!(
            fingerprint_public_key(&swapped),
            Err(KeyParseError::TypeMismatch {
                declared: "ssh-rsa".into(),
                embedded: "ssh-ed25519".into()
            })
        );
    }

    #[test]
    fn key_line_drops_comment_and_noise() {
        let with_noise = format!("\n# host key\n  {FIXED_KEY}");
        assert_eq!(
            public_key_line(&with_noise).unwrap(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILHk76+FWY7+2MM/cLoPnfrCUvM3deT9GCjPz+IG7LBW"
        );
        assert_eq!(
            public_key_line(FIXED_ECDSA).unwrap(),
            FIXED_ECDSA.trim_end()
        );
        assert_eq!(
            public_key_line("ssh-ed25519 AAAA"),
            Err(KeyParseError::Truncated)
        );
        assert_eq!(public_key_line("# nothing"), Err(KeyParseError::Empty));
    }
}
