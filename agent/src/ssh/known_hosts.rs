//! The known_hosts file a source pins its target's host keys in (no trust on first use): exactly the keys the controller handed over, written atomically.

use std::path::Path;

use super::argv::{DEFAULT_SSH_PORT, display_address, normalize_host};
use super::error::SshError;
use super::keys::{HOST_KEY_TYPES, parse_key_line};
use crate::host::files::write_atomic;

/// The host field of a known_hosts line, as ssh looks it up: `host` for
/// port 22, `[host]:port` otherwise.
fn known_hosts_name(host: &str, port: u16) -> String {
    if port == DEFAULT_SSH_PORT {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The known_hosts text for `host_keys` (validated) of `host:port`.
fn known_hosts_text(host: &str, port: u16, host_keys: &[String]) -> Result<String, SshError> {
    let host = normalize_host(host)?;
    if port == 0 {
        return Err(SshError::InvalidPort);
    }
    if host_keys.is_empty() {
        return Err(SshError::NoHostKeys {
            address: display_address(&host, port),
        });
    }
    let name = known_hosts_name(&host, port);
    let mut text = String::new();
    let mut seen = Vec::new();
    for key in host_keys {
        let key = parse_key_line(key, HOST_KEY_TYPES)?;
        if !seen.contains(&key) {
            text.push_str(&format!("{name} {}\n", key.joined()));
            seen.push(key);
        }
    }
    Ok(text)
}

/// Writes a known_hosts file holding exactly `host_keys` for `host:port`
/// (`[host]:port TYPE BASE64`, or `host TYPE BASE64` for port 22), mode
/// 0600, atomically. Every key must be `TYPE BASE64[ comment]` with a known
/// host key type; comments are not written.
pub async fn write_known_hosts(
    path: &Path,
    host: &str,
    port: u16,
    host_keys: &[String],
) -> Result<(), SshError> {
    let text = known_hosts_text(host, port, host_keys)?;
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || write_atomic(&path, text.as_bytes(), 0o600)).await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::fixtures::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn known_hosts_for_port_22_and_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let keys = vec![
            KEY.to_owned(),
            format!("{ECDSA}\n"),
            KEY_NO_COMMENT.to_owned(),
        ];
        write_known_hosts(&path, "127.0.0.3", 22, &keys)
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("127.0.0.3 {KEY_NO_COMMENT}\n127.0.0.3 {ECDSA}\n")
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        write_known_hosts(&path, "NAS2.example", 2222, &keys[..1])
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("[nas2.example]:2222 {KEY_NO_COMMENT}\n")
        );
        write_known_hosts(&path, "::1", 2222, &keys[..1])
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("[::1]:2222 {KEY_NO_COMMENT}\n")
        );
        // Only the file itself is left: no temporary siblings.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn known_hosts_refuses_bad_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        for bad in [
            format!("command=\"x\" {KEY}"),
            format!("@cert-authority * {KEY}"),
            format!("{KEY}\n127.0.0.9 {KEY}"),
            "ssh-dss AAAAB3NzaC1kc3MAAACBAP".to_owned(),
            "ssh-ed25519 !!!".to_owned(),
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAILHk76+FWY7+2MM/cLoPnfrCUvM3deT9GCjPz+IG7LBW"
                .to_owned(),
            "garbage".to_owned(),
            String::new(),
        ] {
            let err = write_known_hosts(&path, "127.0.0.3", 22, std::slice::from_ref(&bad))
                .await
                .unwrap_err();
            assert!(matches!(err, SshError::InvalidKey { .. }), "{bad:?}: {err}");
        }
        let err = write_known_hosts(&path, "127.0.0.3", 22, &[])
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no host keys to pin for 127.0.0.3:22: its agent reports none (is sshd running with host keys?)"
        );
        let err = write_known_hosts(&path, "-oX", 22, &[KEY.to_owned()])
            .await
            .unwrap_err();
        assert!(matches!(err, SshError::InvalidHost { .. }));
        assert!(!path.exists());
    }
}
