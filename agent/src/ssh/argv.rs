//! Where and as whom ssh logs in ([`SshTarget`]), the checks of user, host and the paths given to ssh, and the `ssh` argv that runs quoted remote commands with pinned host keys (pure).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use super::error::{MAX_USER, SshError};
use super::quote::remote_command;

/// The port sshd listens on unless told otherwise; known_hosts entries for
/// it are written without a port.
pub const DEFAULT_SSH_PORT: u16 = 22;

/// Longest DNS name (RFC 1035).
const MAX_HOST: usize = 253;

/// Where and as whom a replication source logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub user: String,
    pub host: String,
    pub port: u16,
    /// This system's replication private key.
    pub identity: PathBuf,
    /// A known_hosts file holding exactly the target's pinned host keys
    /// (see [`super::known_hosts::write_known_hosts`]).
    pub known_hosts: PathBuf,
    /// The control socket of a master connection ([`super::master::start_master`]) to
    /// share, so the many short zfs commands of a run skip a TCP connect,
    /// key exchange and login each.
    pub control_path: Option<PathBuf>,
}

impl SshTarget {
    /// `host:port` (`[v6]:port`) for messages.
    pub fn address(&self) -> String {
        let host = normalize_host(&self.host).unwrap_or_else(|_| self.host.clone());
        display_address(&host, self.port)
    }
}

pub(super) fn display_address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Checks a login name: `[a-z_][a-z0-9_-]*[$]?`, at most 32 characters (the
/// `useradd` rule; `$` ends Samba machine accounts). Never starts with `-`,
/// so it cannot become an ssh option.
pub fn validate_user(user: &str) -> Result<(), SshError> {
    let body = user.strip_suffix('$').unwrap_or(user);
    let ok = !body.is_empty()
        && user.len() <= MAX_USER
        && body.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && body
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SshError::InvalidUser {
            user: user.to_owned(),
        })
    }
}

/// Checks a host and returns it as ssh will use it: IPv4 as is, IPv6
/// without brackets (`root@[::1]` would make ssh look up the name
/// `[::1]`), DNS names lowercased (ssh lowercases them, and the
/// known_hosts entry must match what ssh looks up). Nothing that starts
/// with `-` or holds spaces, `@`, `%` or shell characters gets through.
pub fn normalize_host(host: &str) -> Result<String, SshError> {
    let invalid = || SshError::InvalidHost {
        host: host.to_owned(),
    };
    let unbracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    if let Some(inner) = unbracketed {
        return inner
            .parse::<Ipv6Addr>()
            .map(|_| inner.to_ascii_lowercase())
            .map_err(|_| invalid());
    }
    if host.parse::<Ipv6Addr>().is_ok() {
        return Ok(host.to_ascii_lowercase());
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(host.to_owned());
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            // '_' is not DNS, but common in /etc/hosts and mDNS names.
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.len() <= MAX_HOST && host.split('.').all(label_ok) {
        Ok(host.to_ascii_lowercase())
    } else {
        Err(invalid())
    }
}

/// A path handed to ssh in an option. ssh expands `%` tokens and `~` in
/// IdentityFile and UserKnownHostsFile, and splits the latter at spaces,
/// so only plain absolute paths are passed.
fn ssh_path(what: &'static str, path: &Path) -> Result<String, SshError> {
    let invalid = || SshError::InvalidPath {
        what,
        path: path.to_owned(),
    };
    let text = path.to_str().ok_or_else(invalid)?;
    let ok = text.starts_with('/')
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./+@:,=".contains(&b));
    if ok {
        Ok(text.to_owned())
    } else {
        Err(invalid())
    }
}

/// argv (after the program name `ssh`) that runs `remote_words` on the
/// target, each word quoted for the remote shell:
///
/// `-i IDENTITY -p PORT -o BatchMode=yes -o StrictHostKeyChecking=yes
/// -o UserKnownHostsFile=KNOWN_HOSTS -o GlobalKnownHostsFile=/dev/null
/// -o IdentitiesOnly=yes -o ConnectTimeout=10 -o ServerAliveInterval=15
/// -o ServerAliveCountMax=4 -o LogLevel=ERROR -- USER@HOST COMMAND`
///
/// BatchMode: never prompt (there is nobody to answer). Strict checking
/// against only our known_hosts file: the pinned keys, nothing learnt on
/// the way. IdentitiesOnly: only the replication key, not whatever an
/// ssh-agent offers. The keepalives notice a dead peer within a minute
/// instead of leaving a `zfs send` blocked for hours. No HostKeyAlias: the
/// known_hosts entry is written for the host and port ssh looks up.
pub fn ssh_args(target: &SshTarget, remote_words: &[String]) -> Result<Vec<String>, SshError> {
    ssh_args_chain(target, &[remote_words.to_vec()])
}

/// Like [`ssh_args`], for several remote commands run one after the other
/// in one session, each only if the one before succeeded (`A && B`, which
/// every common login shell understands). One session instead of several
/// saves a round trip and a login shell start per command.
pub fn ssh_args_chain(
    target: &SshTarget,
    remote_commands: &[Vec<String>],
) -> Result<Vec<String>, SshError> {
    validate_user(&target.user)?;
    let host = normalize_host(&target.host)?;
    if target.port == 0 {
        return Err(SshError::InvalidPort);
    }
    let identity = ssh_path("identity", &target.identity)?;
    let known_hosts = ssh_path("known_hosts", &target.known_hosts)?;
    if remote_commands.is_empty() || remote_commands.iter().any(Vec::is_empty) {
        return Err(SshError::EmptyCommand);
    }
    // A NUL cannot travel in argv; refusing here beats a spawn error.
    if let Some(word) = remote_commands.iter().flatten().find(|w| w.contains('\0')) {
        return Err(SshError::InvalidWord { word: word.clone() });
    }
    let mut args: Vec<String> = vec!["-i".into(), identity, "-p".into(), target.port.to_string()];
    if let Some(control) = &target.control_path {
        // Use the run's master if it is there, never become one.
        let control = ssh_path("control_path", control)?;
        args.extend(["-o".into(), format!("ControlPath={control}")]);
        args.extend(["-o".into(), "ControlMaster=no".into()]);
    }
    for option in [
        "BatchMode=yes".to_owned(),
        "StrictHostKeyChecking=yes".to_owned(),
        format!("UserKnownHostsFile={known_hosts}"),
        "GlobalKnownHostsFile=/dev/null".to_owned(),
        "IdentitiesOnly=yes".to_owned(),
        "ConnectTimeout=10".to_owned(),
        "ServerAliveInterval=15".to_owned(),
        "ServerAliveCountMax=4".to_owned(),
        "LogLevel=ERROR".to_owned(),
    ] {
        args.push("-o".into());
        args.push(option);
    }
    args.push("--".into());
    args.push(format!("{}@{host}", target.user));
    let line: Vec<String> = remote_commands.iter().map(|c| remote_command(c)).collect();
    args.push(line.join(" && "));
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::fixtures::*;

    #[test]
    fn chained_commands_are_quoted_one_by_one_and_joined_by_and() {
        let create = vec![
            "zfs".into(),
            "create".into(),
            "-p".into(),
            "--".into(),
            "b/n; x".into(),
        ];
        let recv = vec![
            "zfs".into(),
            "receive".into(),
            "--".into(),
            "b/n; x/$(id)".into(),
        ];
        let args = ssh_args_chain(&target(), &[create, recv.clone()]).unwrap();
        assert_eq!(
            args.last().map(String::as_str),
            Some("zfs create -p -- 'b/n; x' && zfs receive -- 'b/n; x/$(id)'")
        );
        // One command is exactly what ssh_args builds.
        assert_eq!(
            ssh_args_chain(&target(), std::slice::from_ref(&recv)).unwrap(),
            ssh_args(&target(), &recv).unwrap()
        );
        assert!(matches!(
            ssh_args_chain(&target(), &[]),
            Err(SshError::EmptyCommand)
        ));
        assert!(matches!(
            ssh_args_chain(&target(), &[recv, Vec::new()]),
            Err(SshError::EmptyCommand)
        ));
        let nul = vec!["zfs".into(), "list".into(), "a\0b".into()];
        assert!(matches!(
            ssh_args_chain(&target(), &[nul]),
            Err(SshError::InvalidWord { .. })
        ));
    }

    #[test]
    fn ssh_args_shape() {
        let words = vec![
            "zfs".to_owned(),
            "list".to_owned(),
            "tank/my data".to_owned(),
        ];
        let args = ssh_args(&target(), &words).unwrap();
        assert_eq!(
            args,
            [
                "-i",
                "/var/lib/nasfleet-agent/replication_ed25519",
                "-p",
                "22",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "UserKnownHostsFile=/var/lib/nasfleet-agent/known_hosts/nas2",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "ServerAliveInterval=15",
                "-o",
                "ServerAliveCountMax=4",
                "-o",
                "LogLevel=ERROR",
                "--",
                "root@127.0.0.3",
                "zfs list 'tank/my data'",
            ]
        );

        let mut v6 = target();
        v6.host = "[FE80::1]".into();
        v6.port = 2222;
        let args = ssh_args(&v6, &["true".to_owned()]).unwrap();
        assert_eq!(args[3], "2222");
        assert_eq!(args[args.len() - 2], "root@fe80::1");
        let mut named = target();
        named.host = "NAS2.Example.com".into();
        named.user = "repl_user-1".into();
        let args = ssh_args(&named, &["true".to_owned()]).unwrap();
        assert_eq!(args[args.len() - 2], "repl_user-1@nas2.example.com");
    }

    #[test]
    fn ssh_args_refuse_bad_input() {
        let words = vec!["true".to_owned()];
        for user in [
            "",
            "-oProxyCommand=touch",
            "Root",
            "a b",
            "root@x",
            "a;b",
            "1abc",
            "$",
            &"a".repeat(33),
        ] {
            let mut t = target();
            t.user = user.to_owned();
            let err = ssh_args(&t, &words).unwrap_err();
            assert!(
                matches!(err, SshError::InvalidUser { .. }),
                "{user:?}: {err}"
            );
        }
        for user in ["root", "_x", "machine$", &"a".repeat(32)] {
            let mut t = target();
            t.user = user.to_owned();
            assert!(ssh_args(&t, &words).is_ok(), "{user:?}");
        }
        for host in [
            "",
            "-oProxyCommand=touch /tmp/x",
            "-host",
            "a b",
            "host;rm",
            "ex..ample",
            "[::1",
            "[127.0.0.1]",
            "user@host",
            "host:22",
            "fe80::1%eth0",
            "a.-b",
            "$(x)",
            &format!("{}.com", "a".repeat(64)),
        ] {
            let mut t = target();
            t.host = host.to_owned();
            let err = ssh_args(&t, &words).unwrap_err();
            assert!(
                matches!(err, SshError::InvalidHost { .. }),
                "{host:?}: {err}"
            );
        }
        let mut t = target();
        t.port = 0;
        assert!(matches!(ssh_args(&t, &words), Err(SshError::InvalidPort)));
        for path in [
            "relative/key",
            "/tmp/a b",
            "/tmp/%h",
            "~/.ssh/id",
            "/tmp/\"x",
        ] {
            let mut t = target();
            t.known_hosts = path.into();
            assert!(
                matches!(ssh_args(&t, &words), Err(SshError::InvalidPath { .. })),
                "{path}"
            );
            let mut t = target();
            t.identity = path.into();
            assert!(
                matches!(ssh_args(&t, &words), Err(SshError::InvalidPath { .. })),
                "{path}"
            );
        }
        assert!(matches!(
            ssh_args(&target(), &[]),
            Err(SshError::EmptyCommand)
        ));
        assert!(matches!(
            ssh_args(&target(), &["a\0b".to_owned()]),
            Err(SshError::InvalidWord { .. })
        ));
    }
}
