//! The agent's state dir: its private key (0600), certificate, the fleet CA, and where to find the controller.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use thiserror::Error;

use crate::host::files::{FileError, io_error, write_atomic};

#[derive(Debug, Error)]
pub enum StateError {
    #[error(transparent)]
    Io(#[from] FileError),
    #[error("{path} is not a valid enrollment record: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{0} is not enrolled yet; run `nasfleet-agent join` with a token from `nasfleet token create`"
    )]
    NotEnrolled(PathBuf),
    #[error(
        "{dir} already holds the enrollment of system '{name}'; remove that directory to enroll again"
    )]
    AlreadyEnrolled { dir: PathBuf, name: String },
}

/// What `join` learned and `run` needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    pub controller: String,
    pub name: String,
    pub ca_fingerprint: String,
}

/// Credentials loaded from the state dir.
pub struct Credentials {
    pub enrollment: Enrollment,
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }
    pub fn key(&self) -> PathBuf {
        self.root.join("agent.key")
    }
    pub fn cert(&self) -> PathBuf {
        self.root.join("agent.crt")
    }
    pub fn ca(&self) -> PathBuf {
        self.root.join("ca.crt")
    }
    pub fn enrollment(&self) -> PathBuf {
        self.root.join("enrollment.toml")
    }

    /// Refuses to overwrite an existing enrollment.
    pub fn ensure_not_enrolled(&self) -> Result<(), StateError> {
        match self.read_enrollment() {
            Ok(e) => Err(StateError::AlreadyEnrolled {
                dir: self.root.clone(),
                name: e.name,
            }),
            Err(StateError::NotEnrolled(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn read_enrollment(&self) -> Result<Enrollment, StateError> {
        let path = self.enrollment();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotEnrolled(self.root.clone()));
            }
            Err(e) => return Err(io_error("read", &path)(e).into()),
        };
        toml::from_str(&text).map_err(|e| StateError::Corrupt {
            path,
            reason: e.to_string(),
        })
    }

    /// A renewed certificate and key, written beside the current ones
    /// before they take their place (see [`StateDir::save_renewed`]).
    fn next_key(&self) -> PathBuf {
        self.root.join("agent.next.key")
    }
    fn next_cert(&self) -> PathBuf {
        self.root.join("agent.next.crt")
    }

    /// Puts a renewed certificate and its key in place of the current ones
    /// so that a crash at any point leaves a usable pair: both are written
    /// beside the current ones (the certificate last: its presence means
    /// the pair is complete), then renamed over them, key first;
    /// [`StateDir::finish_renewal`] completes what a crash interrupted.
    pub fn save_renewed(&self, key_pem: &str, cert_pem: &str) -> Result<(), StateError> {
        write_atomic(&self.next_key(), key_pem.as_bytes(), 0o600)?;
        write_atomic(&self.next_cert(), cert_pem.as_bytes(), 0o644)?;
        self.finish_renewal()
    }

    /// Completes a renewal that was written in full: after a crash between
    /// the two renames, the key in place is the new one and the new
    /// certificate still waits beside it.
    fn finish_renewal(&self) -> Result<(), StateError> {
        if !self.next_cert().exists() {
            // Not complete: the current pair stays; a half-written key goes.
            let _ = std::fs::remove_file(self.next_key());
            return Ok(());
        }
        if self.next_key().exists() {
            std::fs::rename(self.next_key(), self.key())
                .map_err(io_error("rename", &self.next_key()))?;
        }
        std::fs::rename(self.next_cert(), self.cert())
            .map_err(io_error("rename", &self.next_cert()))?;
        Ok(())
    }

    /// The credentials, after finishing a renewal an earlier run left
    /// half done.
    pub async fn load(&self) -> Result<Credentials, StateError> {
        self.read_enrollment()?;
        let finishing = StateDir::new(self.root.clone());
        tokio::task::spawn_blocking(move || finishing.finish_renewal())
            .await
            .map_err(|e| StateError::Corrupt {
                path: self.root.clone(),
                reason: format!("renewal check failed: {e}"),
            })??;
        self.read_only().await
    }

    /// The credentials as they are on disk, without finishing a renewal:
    /// for `check`, which must not change what the running agent uses.
    pub async fn read_only(&self) -> Result<Credentials, StateError> {
        let enrollment = self.read_enrollment()?;
        let read = |path: PathBuf| async move {
            tokio::fs::read(&path)
                .await
                .map_err(io_error("read", &path))
        };
        Ok(Credentials {
            enrollment,
            ca_pem: read(self.ca()).await?,
            cert_pem: read(self.cert()).await?,
            key_pem: read(self.key()).await?,
        })
    }

    /// Writes all enrollment files; the directory is 0700 and the key 0600 from creation on.
    pub fn save(
        &self,
        enrollment: &Enrollment,
        key_pem: &str,
        cert_pem: &str,
        ca_pem: &str,
    ) -> Result<(), StateError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(io_error("create", &self.root))?;
        let record = toml::to_string(enrollment).map_err(|e| StateError::Corrupt {
            path: self.enrollment(),
            reason: e.to_string(),
        })?;
        write_file(&self.key(), key_pem.as_bytes(), 0o600)?;
        write_file(&self.cert(), cert_pem.as_bytes(), 0o644)?;
        write_file(&self.ca(), ca_pem.as_bytes(), 0o644)?;
        // Written last: its presence means the enrollment is complete.
        write_file(&self.enrollment(), record.as_bytes(), 0o600)
    }
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), StateError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io_error("write", path))?;
    // A file left over from an earlier attempt keeps its old mode on open; set it explicitly.
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io_error("set permissions of", path))?;
    }
    file.write_all(contents).map_err(io_error("write", path))?;
    file.sync_all().map_err(io_error("write", path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrolled(dir: &Path) -> StateDir {
        let state = StateDir::new(dir);
        let enrollment = Enrollment {
            controller: "https://127.0.0.1:1".into(),
            name: "nas1".into(),
            ca_fingerprint: "sha256:00".into(),
        };
        state
            .save(&enrollment, "old key", "old cert", "ca")
            .unwrap();
        state
    }

    #[tokio::test]
    async fn a_renewal_interrupted_anywhere_leaves_a_matching_pair() {
        // Written in full: the new pair replaces the old one.
        let dir = tempfile::tempdir().unwrap();
        let state = enrolled(dir.path());
        state.save_renewed("new key", "new cert").unwrap();
        let loaded = state.load().await.unwrap();
        assert_eq!(
            (&loaded.key_pem[..], &loaded.cert_pem[..]),
            (&b"new key"[..], &b"new cert"[..])
        );
        assert!(!state.next_cert().exists() && !state.next_key().exists());

        // Crash after the key's rename: the certificate beside it completes the pair.
        let dir = tempfile::tempdir().unwrap();
        let state = enrolled(dir.path());
        std::fs::write(state.key(), "new key").unwrap();
        std::fs::write(state.next_cert(), "new cert").unwrap();
        let loaded = state.load().await.unwrap();
        assert_eq!(
            (&loaded.key_pem[..], &loaded.cert_pem[..]),
            (&b"new key"[..], &b"new cert"[..])
        );

        // Crash before the certificate was written: the old pair stays.
        let dir = tempfile::tempdir().unwrap();
        let state = enrolled(dir.path());
        std::fs::write(state.next_key(), "new key").unwrap();
        let loaded = state.load().await.unwrap();
        assert_eq!(
            (&loaded.key_pem[..], &loaded.cert_pem[..]),
            (&b"old key"[..], &b"old cert"[..])
        );
        assert!(!state.next_key().exists());
    }
}
