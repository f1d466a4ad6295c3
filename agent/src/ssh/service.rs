//! The SSH service entry of the inventory: whether sshd answers with an SSH-2 banner, the address other systems reach it at, and its host keys with their fingerprints.
//!
//! The controller hands the host keys to a replication source, which pins
//! them in a known_hosts file (no trust on first use); the fingerprints are
//! what people compare, so they must match what `ssh-keygen -lf` and ssh's
//! own host-key check print ([`super::keys::fingerprint_public_key`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use nasfleet_proto::v1;
use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::keys::{KeyParseError, fingerprint_public_key, public_key_line};

pub const SSH_PORT: u16 = 22;
/// Where the default host public keys live (`ssh_host_*_key.pub`).
pub const HOST_KEY_DIR: &str = "/etc/ssh";
/// Limit for the TCP connect and, separately, for the server's banner.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Where sshd is probed when no address is configured: the reported address
/// uses the host name instead, which loopback would be useless as.
pub const LOCAL_PROBE_ADDRESS: &str = "127.0.0.1:22";

/// RFC 4253 allows lines before the version line; beyond this many bytes
/// without one the peer is not an SSH server worth waiting for.
const MAX_PRE_BANNER_BYTES: usize = 8192;

/// Why sshd did not count as running.
#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("connection to {address} refused (is sshd running and listening there?)")]
    Refused { address: String },
    #[error("no answer from {address} within {}s", .after.as_secs())]
    ConnectTimeout { address: String, after: Duration },
    #[error("could not connect to {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{address} accepted the connection but sent no SSH banner within {}s", .after.as_secs())]
    BannerTimeout { address: String, after: Duration },
    #[error("{address} closed the connection without sending an SSH banner")]
    Closed { address: String },
    #[error("{address} is not an SSH-2 server: it sent {line:?}")]
    NotSsh { address: String, line: String },
    #[error("reading the banner of {address} failed: {source}")]
    Read {
        address: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a host key file could not be fingerprinted.
#[derive(Debug, Error)]
pub enum HostKeyError {
    #[error("cannot read SSH host key {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("SSH host key {} is not an OpenSSH public key: {source}", .path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: KeyParseError,
    },
}

/// One host key as the inventory reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    /// `"TYPE SHA256:..."`, see [`fingerprint_public_key`].
    pub fingerprint: String,
    /// `"TYPE BASE64"`, see [`public_key_line`].
    pub key: String,
}

async fn read_key_file(path: &Path) -> Result<String, HostKeyError> {
    tokio::fs::read_to_string(path)
        .await
        .map_err(|source| HostKeyError::Read {
            path: path.to_owned(),
            source,
        })
}

fn parse_error(path: &Path) -> impl FnOnce(KeyParseError) -> HostKeyError + '_ {
    move |source| HostKeyError::Parse {
        path: path.to_owned(),
        source,
    }
}

/// Fingerprints one `.pub` host key file.
pub async fn fingerprint_file(path: &Path) -> Result<String, HostKeyError> {
    let text = read_key_file(path).await?;
    fingerprint_public_key(&text).map_err(parse_error(path))
}

/// Reads one `.pub` host key file once and returns both its fingerprint and
/// its key line, so the two inventory lists always describe the same keys.
pub async fn read_host_key(path: &Path) -> Result<HostKey, HostKeyError> {
    let text = read_key_file(path).await?;
    Ok(HostKey {
        fingerprint: fingerprint_public_key(&text).map_err(parse_error(path))?,
        key: public_key_line(&text).map_err(parse_error(path))?,
    })
}

/// Whether a file name is one of sshd's default host public keys.
fn is_host_public_key(name: &str) -> bool {
    name.len() > "ssh_host__key.pub".len()
        && name.starts_with("ssh_host_")
        && name.ends_with("_key.pub")
}

/// Every `ssh_host_*_key.pub` in `dir`, sorted so the inventory is stable.
pub async fn host_key_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut entries = tokio::fs::read_dir(dir).await?;
    let mut files = Vec::new();
    while let Some(entry) = entries.next_entry().await? {
        if entry.file_name().to_str().is_some_and(is_host_public_key) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Adds the SSH port to an address given without one (`host`, `::1`).
pub fn with_default_port(address: &str) -> String {
    if address.parse::<std::net::SocketAddr>().is_ok() {
        return address.to_owned();
    }
    if address.parse::<std::net::Ipv6Addr>().is_ok() {
        return format!("[{address}]:{SSH_PORT}");
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => {
            address.to_owned()
        }
        _ => format!("{address}:{SSH_PORT}"),
    }
}

/// Connects to `address` and returns the server's SSH-2 version line, e.g.
/// `SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3`. Nothing is sent, so the probe
/// never reaches authentication.
pub async fn probe(address: &str, timeout: Duration) -> Result<String, ProbeError> {
    let owned = || address.to_owned();
    let mut stream = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Err(_) => {
            return Err(ProbeError::ConnectTimeout {
                address: owned(),
                after: timeout,
            });
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(ProbeError::Refused { address: owned() });
        }
        Ok(Err(source)) => {
            return Err(ProbeError::Connect {
                address: owned(),
                source,
            });
        }
        Ok(Ok(stream)) => stream,
    };
    let mut buf = Vec::with_capacity(256);
    match tokio::time::timeout(timeout, read_banner(&mut stream, address, &mut buf)).await {
        Ok(result) => result,
        // Lines before the banner are allowed, but a peer that sent only
        // such lines is far more likely another service (SMTP, FTP, ...).
        Err(_) if !buf.is_empty() => Err(not_ssh(address, &first_line(&buf))),
        Err(_) => Err(ProbeError::BannerTimeout {
            address: owned(),
            after: timeout,
        }),
    }
}

async fn read_banner(
    stream: &mut TcpStream,
    address: &str,
    buf: &mut Vec<u8>,
) -> Result<String, ProbeError> {
    let mut chunk = [0u8; 512];
    let mut start = 0;
    loop {
        // Check every complete line received so far.
        while let Some(end) = buf[start..].iter().position(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(&buf[start..start + end]);
            let line = line.trim_end_matches('\r');
            if line.starts_with("SSH-") {
                // SSH-1.99 announces a server that also speaks protocol 2.
                if line.starts_with("SSH-2.0-") || line.starts_with("SSH-1.99-") {
                    return Ok(line.to_owned());
                }
                return Err(not_ssh(address, line));
            }
            start += end + 1;
        }
        if buf.len() >= MAX_PRE_BANNER_BYTES {
            return Err(not_ssh(address, &first_line(buf)));
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|source| ProbeError::Read {
                address: address.to_owned(),
                source,
            })?;
        if n == 0 {
            if buf.is_empty() {
                return Err(ProbeError::Closed {
                    address: address.to_owned(),
                });
            }
            return Err(not_ssh(address, &first_line(buf)));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn first_line(buf: &[u8]) -> String {
    let text = String::from_utf8_lossy(buf);
    text.lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_owned()
}

fn not_ssh(address: &str, line: &str) -> ProbeError {
    ProbeError::NotSsh {
        address: address.to_owned(),
        line: line.chars().take(80).collect(),
    }
}

/// Builds the `ssh` service entry.
///
/// `ssh_address` is where other systems reach sshd; when it is not
/// configured, `<hostname>:22` is reported and 127.0.0.1:22 is probed.
/// `host_key_files` empty means every `/etc/ssh/ssh_host_*_key.pub`.
/// Problems with key files go to `errors`; a service that is not running is
/// explained in its `detail` instead.
pub async fn collect(
    ssh_address: Option<&str>,
    host_key_files: &[PathBuf],
    hostname: &str,
    errors: &mut Vec<String>,
) -> v1::Service {
    let (reported, probed) = match ssh_address {
        Some(address) => {
            let address = with_default_port(address);
            (address.clone(), address)
        }
        None => (
            format!("{hostname}:{SSH_PORT}"),
            LOCAL_PROBE_ADDRESS.to_owned(),
        ),
    };
    let (running, detail) = match probe(&probed, PROBE_TIMEOUT).await {
        Ok(banner) => (true, banner),
        Err(err) => (false, err.to_string()),
    };

    let files = if host_key_files.is_empty() {
        match host_key_files_in(Path::new(HOST_KEY_DIR)).await {
            Ok(files) => {
                if files.is_empty() {
                    errors.push(format!(
                        "ssh: no ssh_host_*_key.pub files in {HOST_KEY_DIR}"
                    ));
                }
                files
            }
            Err(err) => {
                errors.push(format!(
                    "ssh: cannot list host keys in {HOST_KEY_DIR}: {err}"
                ));
                Vec::new()
            }
        }
    } else {
        host_key_files.to_vec()
    };
    // Both lists are filled from the same reads, index for index, so a
    // fingerprint shown to a person always belongs to the key that is pinned.
    let mut host_key_fingerprints = Vec::with_capacity(files.len());
    let mut host_keys = Vec::with_capacity(files.len());
    for file in &files {
        match read_host_key(file).await {
            Ok(key) => {
                host_key_fingerprints.push(key.fingerprint);
                host_keys.push(key.key);
            }
            Err(err) => errors.push(format!("ssh: {err}")),
        }
    }

    v1::Service {
        name: "ssh".to_owned(),
        running,
        address: reported,
        host_key_fingerprints,
        host_keys,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::fixtures::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// Cross-checks against ssh-keygen itself for freshly generated keys of
    /// each type (openssh-client is present wherever the agent is built).
    #[tokio::test]
    async fn matches_ssh_keygen() {
        let dir = tempfile::tempdir().unwrap();
        for kind in ["ed25519", "ecdsa", "rsa"] {
            let key = dir.path().join(format!("ssh_host_{kind}_key"));
            let status = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", kind, "-N", "", "-C", "test@host", "-f"])
                .arg(&key)
                .status()
                .unwrap();
            assert!(status.success());
            let pub_path = key.with_extension("pub");
            let listed = std::process::Command::new("ssh-keygen")
                .arg("-lf")
                .arg(&pub_path)
                .output()
                .unwrap();
            // "256 SHA256:... test@host (ED25519)"
            let listed = String::from_utf8(listed.stdout).unwrap();
            let expected = listed.split_whitespace().nth(1).unwrap().to_owned();
            let ours = fingerprint_file(&pub_path).await.unwrap();
            let (kind_word, fp) = ours.split_once(' ').unwrap();
            assert_eq!(fp, expected, "{kind}");
            assert!(
                kind_word.contains(if kind == "rsa" { "ssh-rsa" } else { kind }),
                "{ours}"
            );
        }
        let files = host_key_files_in(dir.path()).await.unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "ssh_host_ecdsa_key.pub",
                "ssh_host_ed25519_key.pub",
                "ssh_host_rsa_key.pub"
            ]
        );
    }

    #[test]
    fn recognises_host_key_file_names() {
        assert!(is_host_public_key("ssh_host_ed25519_key.pub"));
        assert!(!is_host_public_key("ssh_host_ed25519_key"));
        assert!(!is_host_public_key("ssh_host__key.pub"));
        assert!(!is_host_public_key("id_ed25519.pub"));
    }

    #[test]
    fn adds_default_port() {
        assert_eq!(with_default_port("nas1"), "nas1:22");
        assert_eq!(with_default_port("nas1:2222"), "nas1:2222");
        assert_eq!(with_default_port("127.0.0.2"), "127.0.0.2:22");
        assert_eq!(with_default_port("127.0.0.2:22"), "127.0.0.2:22");
        assert_eq!(with_default_port("::1"), "[::1]:22");
        assert_eq!(with_default_port("[::1]:2200"), "[::1]:2200");
    }

    /// A loopback server that sends `reply` and then holds the connection.
    async fn fake_server(reply: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket.write_all(reply).await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        address
    }

    #[tokio::test]
    async fn probe_reads_ssh_banner() {
        let address = fake_server(b"some greeting\r\nSSH-2.0-OpenSSH_9.2p1 Debian-2\r\n").await;
        let banner = probe(&address, Duration::from_secs(3)).await.unwrap();
        assert_eq!(banner, "SSH-2.0-OpenSSH_9.2p1 Debian-2");
    }

    #[tokio::test]
    async fn probe_refuses_other_services() {
        let address = fake_server(b"220 mail.example ESMTP\r\n").await;
        let err = probe(&address, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{address} is not an SSH-2 server: it sent \"220 mail.example ESMTP\"")
        );

        let address = fake_server(b"").await;
        let err = probe(&address, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, ProbeError::BannerTimeout { .. }), "{err}");

        let address = fake_server(b"SSH-1.5-ancient\r\n").await;
        let err = probe(&address, Duration::from_secs(3)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{address} is not an SSH-2 server: it sent \"SSH-1.5-ancient\"")
        );
    }

    #[tokio::test]
    async fn probe_explains_refused_connection() {
        // Bind and drop to find a port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let err = probe(&address, Duration::from_secs(3)).await.unwrap_err();
        assert!(matches!(err, ProbeError::Refused { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("connection to {address} refused"))
        );
    }

    #[tokio::test]
    async fn collect_reports_address_and_keys() {
        let address = fake_server(b"SSH-2.0-test\r\n").await;
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("ssh_host_ed25519_key.pub");
        std::fs::write(&good, FIXED_KEY).unwrap();
        let missing = dir.path().join("ssh_host_rsa_key.pub");
        let mut errors = Vec::new();
        let service = collect(Some(&address), &[good, missing], "nas1", &mut errors).await;
        assert_eq!(service.name, "ssh");
        assert!(service.running, "{}", service.detail);
        assert_eq!(service.address, address);
        assert_eq!(service.detail, "SSH-2.0-test");
        assert_eq!(service.host_key_fingerprints, [FIXED_FINGERPRINT]);
        assert_eq!(
            service.host_keys,
            ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILHk76+FWY7+2MM/cLoPnfrCUvM3deT9GCjPz+IG7LBW"]
        );
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("ssh_host_rsa_key.pub"), "{errors:?}");
    }
}
