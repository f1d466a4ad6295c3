//! Pre-flight checks before a replication uses ssh (TCP reachable, login accepted) and the classification of ssh's own failures into reasons a person can act on.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

use super::argv::{SshTarget, normalize_host, ssh_args};
use super::error::SshError;
use crate::host::process::{self, ProcessError};
use crate::host::time::display_duration;

/// Pre-flight: can a TCP connection to `host:port` be made within `timeout`?
pub async fn check_reachable(host: &str, port: u16, timeout: Duration) -> Result<(), SshError> {
    let host = normalize_host(host)?;
    if port == 0 {
        return Err(SshError::InvalidPort);
    }
    let connect = TcpStream::connect((host.as_str(), port));
    let reason = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(_stream)) => return Ok(()),
        Ok(Err(err)) => err,
        Err(_) => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {}", display_duration(timeout)),
        ),
    };
    Err(SshError::Unreachable { host, port, reason })
}

/// Pre-flight: log in and run `true`. Fails with [`SshError::Unreachable`],
/// [`SshError::AuthFailed`] or [`SshError::HostKeyMismatch`] where ssh says
/// so, [`SshError::Remote`] otherwise.
pub async fn check_login(target: &SshTarget, timeout: Duration) -> Result<(), SshError> {
    let args = ssh_args(target, &["true".to_owned()])?;
    match process::run("ssh", &args, timeout).await {
        Ok(_) => Ok(()),
        // `true` takes no time: a login that hangs is a network or sshd
        // that does not answer.
        Err(ProcessError::TimedOut { after, .. }) => Err(SshError::Unreachable {
            host: normalize_host(&target.host).unwrap_or_else(|_| target.host.clone()),
            port: target.port,
            reason: io::Error::new(
                io::ErrorKind::TimedOut,
                format!("ssh did not log in within {}", display_duration(after)),
            ),
        }),
        Err(err) => Err(classify(target, err)),
    }
}

/// What ssh itself (not the remote command) reported.
#[derive(Debug, PartialEq, Eq)]
enum SshFailure {
    Auth,
    HostKey,
    Unreachable(io::ErrorKind, String),
}

/// Recognises ssh's own messages in stderr (OpenSSH wording, `LC_ALL=C`).
fn ssh_failure(stderr: &str) -> Option<SshFailure> {
    const HOST_KEY: &[&str] = &[
        "Host key verification failed",
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
        // "No ED25519 host key is known for ... and you have requested
        // strict checking": the server offers no key type that is pinned.
        "host key is known for",
    ];
    const AUTH: &[&str] = &["Permission denied (", "Too many authentication failures"];
    const UNREACHABLE: &[(&str, io::ErrorKind)] = &[
        ("Connection refused", io::ErrorKind::ConnectionRefused),
        ("Connection timed out", io::ErrorKind::TimedOut),
        ("Operation timed out", io::ErrorKind::TimedOut),
        ("No route to host", io::ErrorKind::Other),
        ("Network is unreachable", io::ErrorKind::Other),
        ("Could not resolve hostname", io::ErrorKind::NotFound),
        ("Name or service not known", io::ErrorKind::NotFound),
    ];
    if HOST_KEY.iter().any(|p| stderr.contains(p)) {
        return Some(SshFailure::HostKey);
    }
    if AUTH.iter().any(|p| stderr.contains(p)) {
        return Some(SshFailure::Auth);
    }
    for (pattern, kind) in UNREACHABLE {
        if let Some(line) = stderr.lines().find(|l| l.contains(pattern)) {
            return Some(SshFailure::Unreachable(*kind, line.trim().to_owned()));
        }
    }
    None
}

/// Maps a failed ssh call to a reason a person can act on: unreachable,
/// authentication or host key problems when ssh itself says so, else the
/// error as it is ([`SshError::Remote`], keeping the remote stderr).
///
/// Only exit status 255 is ssh's own; any other status belongs to the
/// remote command, whose stderr might mention "Permission denied" for
/// reasons of its own.
pub fn classify(target: &SshTarget, err: ProcessError) -> SshError {
    let failure = match &err {
        ProcessError::Failed {
            code: Some(255),
            stderr,
            ..
        } => ssh_failure(stderr),
        _ => None,
    };
    let host = || normalize_host(&target.host).unwrap_or_else(|_| target.host.clone());
    match failure {
        Some(SshFailure::Auth) => SshError::AuthFailed {
            user: target.user.clone(),
            address: target.address(),
        },
        Some(SshFailure::HostKey) => SshError::HostKeyMismatch {
            address: target.address(),
        },
        Some(SshFailure::Unreachable(kind, line)) => SshError::Unreachable {
            host: host(),
            port: target.port,
            reason: io::Error::new(kind, line),
        },
        None => SshError::Remote {
            address: target.address(),
            error: err,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::fixtures::*;
    use crate::ssh::known_hosts::write_known_hosts;

    fn failed(code: i32, stderr: &str) -> ProcessError {
        ProcessError::Failed {
            command: "ssh ...".into(),
            code: Some(code),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn classifies_ssh_failures() {
        let mut t = target();
        t.port = 2222;
        let err = classify(
            &t,
            failed(255, "root@127.0.0.3: Permission denied (publickey)."),
        );
        assert_eq!(
            err.to_string(),
            "Authentication as root on 127.0.0.3:2222 failed: the target has not authorized this system's replication key (run `nasfleet ssh-connection create SOURCE TARGET`)"
        );
        for stderr in [
            "Host key verification failed.",
            "No ED25519 host key is known for [127.0.0.3]:2222 and you have requested strict checking.\nHost key verification failed.",
            "@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@@@",
        ] {
            let err = classify(&t, failed(255, stderr));
            assert!(matches!(err, SshError::HostKeyMismatch { .. }), "{stderr}");
            assert!(
                err.to_string().starts_with(
                    "The SSH host key of 127.0.0.3:2222 does not match the host key pinned for it"
                ),
                "{err}"
            );
        }
        let err = classify(
            &t,
            failed(
                255,
                "ssh: connect to host 127.0.0.3 port 2222: Connection refused",
            ),
        );
        assert_eq!(
            err.to_string(),
            "[EACCES] Unable to connect to port 2222 on 127.0.0.3"
        );
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert_eq!(
            source,
            "ssh: connect to host 127.0.0.3 port 2222: Connection refused"
        );
        let err = classify(
            &t,
            failed(
                255,
                "ssh: connect to host 127.0.0.3 port 2222: Connection timed out",
            ),
        );
        assert!(matches!(err, SshError::Unreachable { .. }));

        // The remote command's own failures keep their text.
        let err = classify(
            &t,
            failed(1, "cannot open 'tank/x': Permission denied (publickey)"),
        );
        assert!(matches!(err, SshError::Remote { .. }));
        let err = classify(&t, failed(1, "cannot receive: destination exists"));
        assert_eq!(
            err.to_string(),
            "the remote command on 127.0.0.3:2222 failed (exit code 1): cannot receive: destination exists"
        );
        let err = classify(
            &t,
            ProcessError::TimedOut {
                command: "ssh ...".into(),
                after: Duration::from_secs(5),
            },
        );
        assert_eq!(err.to_string(), "`ssh ...` timed out after 5s");
    }

    /// A loopback port that stays closed while the socket lives: bound
    /// but not listening, so connecting is refused and no parallel test's
    /// listener can take the port meanwhile.
    fn closed_port() -> (tokio::net::TcpSocket, u16) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        (socket, port)
    }

    #[tokio::test]
    async fn reachability() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        check_reachable("127.0.0.1", port, Duration::from_secs(3))
            .await
            .unwrap();
        let (_closed, port) = closed_port();
        let err = check_reachable("127.0.0.1", port, Duration::from_secs(3))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("[EACCES] Unable to connect to port {port} on 127.0.0.1")
        );
        match err {
            SshError::Unreachable { reason, .. } => {
                assert_eq!(reason.kind(), io::ErrorKind::ConnectionRefused)
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn login_to_nothing_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let known_hosts = dir.path().join("known_hosts");
        let (_closed, port) = closed_port();
        write_known_hosts(&known_hosts, "127.0.0.1", port, &[KEY.to_owned()])
            .await
            .unwrap();
        let t = SshTarget {
            user: "root".into(),
            host: "127.0.0.1".into(),
            port,
            identity: dir.path().join("id"),
            known_hosts,
            control_path: None,
        };
        let err = check_login(&t, Duration::from_secs(20)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("[EACCES] Unable to connect to port {port} on 127.0.0.1"),
            "{err:?}"
        );
    }
}
