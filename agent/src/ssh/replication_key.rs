//! This agent's replication keypair: made once in the state dir with `ssh-keygen` (the private half never leaves the host), loaded afterwards, its public half derived again when missing or damaged.

use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nasfleet_common::names::validate_system_name;

use super::error::{SshError, io_error};
use super::keys::{KeyLine, parse_replication_key};
use crate::host::files::{temp_sibling, write_atomic};
use crate::host::process;

/// The replication private key, in the agent's state dir (`.pub` next to it).
pub const REPLICATION_KEY_FILE: &str = "replication_ed25519";

/// Limit for `ssh-keygen` making or reading the replication key.
pub const KEYGEN_TIMEOUT: Duration = Duration::from_secs(30);

/// This agent's replication keypair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationKey {
    /// The private key file (0600); it never leaves this host.
    pub private_key: PathBuf,
    /// One line: `ssh-ed25519 AAAA... nasfleet-replication@NAME`.
    pub public_key: String,
}

fn key_comment(system_name: &str) -> String {
    format!("nasfleet-replication@{system_name}")
}

fn public_path(private_key: &Path) -> PathBuf {
    let mut name = private_key.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Creates the replication keypair in `state_dir` on first use
/// (`ssh-keygen -q -t ed25519 -N '' -C nasfleet-replication@NAME`), else
/// loads it.
///
/// A new key is generated under a temporary name and claimed with a hard
/// link, which fails if the key already exists: of two tasks racing
/// here exactly one key wins, and nobody ever sees a half-written pair. The
/// public half is derived again from the private key (`ssh-keygen -y`) if
/// its file is missing or damaged.
pub async fn ensure_replication_key(
    state_dir: &Path,
    system_name: &str,
) -> Result<ReplicationKey, SshError> {
    validate_system_name(system_name)?;
    let private_key = state_dir.join(REPLICATION_KEY_FILE);
    let comment = key_comment(system_name);

    let exists = match tokio::fs::symlink_metadata(&private_key).await {
        Ok(meta) if meta.is_file() => true,
        Ok(_) => {
            return Err(SshError::Unsafe {
                path: private_key,
                reason: "the replication key is not a regular file",
            });
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => false,
        Err(err) => return Err(io_error("inspect", &private_key)(err)),
    };
    if !exists {
        generate_key(&private_key, &comment).await?;
    }
    restrict_private_key(&private_key).await?;

    let public_file = public_path(&private_key);
    let key = match tokio::fs::read_to_string(&public_file).await {
        Ok(text) => parse_replication_key(&text).ok(),
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(err) => return Err(io_error("read", &public_file)(err)),
    };
    let key = match key {
        Some(key) => key,
        None => {
            let key = derive_public_key(&private_key).await?;
            let line = format!("{} {comment}\n", key.joined());
            let path = public_file.clone();
            tokio::task::spawn_blocking(move || write_atomic(&path, line.as_bytes(), 0o644))
                .await??;
            key
        }
    };
    Ok(ReplicationKey {
        private_key,
        public_key: format!("{} {comment}", key.joined()),
    })
}

async fn generate_key(private_key: &Path, comment: &str) -> Result<(), SshError> {
    let tmp = temp_sibling(private_key);
    let tmp_pub = public_path(&tmp);
    let args: [&OsStr; 9] = [
        "-q".as_ref(),
        "-t".as_ref(),
        "ed25519".as_ref(),
        "-N".as_ref(),
        "".as_ref(),
        "-C".as_ref(),
        comment.as_ref(),
        "-f".as_ref(),
        tmp.as_os_str(),
    ];
    let made = process::run("ssh-keygen", &args, KEYGEN_TIMEOUT).await;
    let claimed = match made {
        Ok(_) => match tokio::fs::hard_link(&tmp, private_key).await {
            Ok(()) => Ok(true),
            // Someone else's key won; ours is thrown away below.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(err) => Err(io_error("create", private_key)(err)),
        },
        Err(err) => Err(SshError::Keygen(err)),
    };
    let _ = tokio::fs::remove_file(&tmp).await;
    if matches!(claimed, Ok(true)) {
        let public_file = public_path(private_key);
        if let Err(err) = tokio::fs::rename(&tmp_pub, &public_file).await {
            // Not fatal: the public half is derived from the private key.
            tracing::warn!(path = %public_file.display(), %err, "could not store the replication public key");
        }
    }
    let _ = tokio::fs::remove_file(&tmp_pub).await;
    claimed.map(|_| ())
}

/// ssh refuses private keys others can read; ssh-keygen makes them 0600,
/// but a restored backup or a copied state dir may not be.
async fn restrict_private_key(private_key: &Path) -> Result<(), SshError> {
    let meta = tokio::fs::metadata(private_key)
        .await
        .map_err(io_error("inspect", private_key))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tokio::fs::set_permissions(private_key, std::fs::Permissions::from_mode(0o600))
            .await
            .map_err(io_error("restrict permissions of", private_key))?;
    }
    Ok(())
}

async fn derive_public_key(private_key: &Path) -> Result<KeyLine, SshError> {
    let args: [&OsStr; 3] = ["-y".as_ref(), "-f".as_ref(), private_key.as_os_str()];
    let out = process::run("ssh-keygen", &args, KEYGEN_TIMEOUT)
        .await
        .map_err(SshError::Keygen)?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_replication_key(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::fixtures::*;

    #[tokio::test]
    async fn replication_key_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let key = ensure_replication_key(dir.path(), "nas1").await.unwrap();
        assert_eq!(key.private_key, dir.path().join(REPLICATION_KEY_FILE));
        assert_eq!(mode_of(&key.private_key), 0o600);
        assert!(
            key.public_key
                .starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA")
        );
        assert!(key.public_key.ends_with(" nasfleet-replication@nas1"));
        assert_eq!(key.public_key.lines().count(), 1);
        parse_replication_key(&key.public_key).unwrap();

        let again = ensure_replication_key(dir.path(), "nas1").await.unwrap();
        assert_eq!(again, key);

        // A lost public half is derived from the private key again, and
        // loose permissions are tightened.
        std::fs::remove_file(public_path(&key.private_key)).unwrap();
        std::fs::set_permissions(&key.private_key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let again = ensure_replication_key(dir.path(), "nas1").await.unwrap();
        assert_eq!(again, key);
        assert_eq!(mode_of(&key.private_key), 0o600);
        // Only the pair is left behind.
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["replication_ed25519", "replication_ed25519.pub"]);

        let err = ensure_replication_key(dir.path(), "bad name")
            .await
            .unwrap_err();
        assert!(matches!(err, SshError::InvalidSystem(_)), "{err}");
    }

    #[tokio::test]
    async fn concurrent_first_use_agrees_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = tokio::join!(
            ensure_replication_key(dir.path(), "nas1"),
            ensure_replication_key(dir.path(), "nas1")
        );
        assert_eq!(a.unwrap(), b.unwrap());
    }
}
