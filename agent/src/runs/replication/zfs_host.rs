//! Where a zfs command of a replication runs: [`LocalZfs`] on this system, [`RemoteZfs`] on the target through ssh with the pinned host keys (every word quoted for the remote shell).

use crate::ssh::{self, SshTarget};

/// Where a zfs command runs: locally, or on the target through ssh.
/// Implemented by the caller; the arguments come from the pure builders in
/// [`crate::zfs`] and must reach zfs as one word each (an ssh wrapper
/// shell-quotes every one of them).
pub trait ZfsHost: Send + Sync {
    /// The program and arguments that run `zfs <zfs_args>` there.
    fn command(&self, zfs_args: Vec<String>) -> (String, Vec<String>);
    /// Where that is, for messages (`this system`, `nas2 (127.0.0.3)`).
    fn describe(&self) -> String;
    /// Whether [`ZfsHost::chain`] runs several zfs commands in one call.
    fn can_chain(&self) -> bool {
        false
    }
    /// The program and arguments that run several zfs commands in one
    /// call, each only if the one before succeeded; `None` where a call
    /// costs too little to bother (locally), and the caller runs them one
    /// by one. Over ssh each call is a session with a login shell.
    fn chain(&self, _commands: Vec<Vec<String>>) -> Option<(String, Vec<String>)> {
        None
    }
}

/// zfs on this system, no shell, no ssh.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalZfs;

impl ZfsHost for LocalZfs {
    fn command(&self, zfs_args: Vec<String>) -> (String, Vec<String>) {
        ("zfs".to_owned(), zfs_args)
    }

    fn describe(&self) -> String {
        "this system".to_owned()
    }
}

/// zfs on the target, reached through ssh with the pinned host keys.
pub struct RemoteZfs {
    pub(super) target: SshTarget,
    /// The run's shared connection, if it came up; closed with this value.
    pub(super) _master: Option<ssh::SshMaster>,
}

impl RemoteZfs {
    /// ssh running `commands` (each zfs arguments) in one session, each
    /// only if the one before succeeded.
    fn ssh_zfs(&self, commands: Vec<Vec<String>>) -> (String, Vec<String>) {
        let commands: Vec<Vec<String>> = commands
            .into_iter()
            .map(|zfs_args| {
                let mut words = vec!["zfs".to_owned()];
                words.extend(zfs_args);
                words
            })
            .collect();
        // The target was checked by `ssh_args` in pre-flight (check_login),
        // so building its argv again cannot fail; an empty argv would only
        // make ssh fail loudly.
        (
            "ssh".to_owned(),
            ssh::ssh_args_chain(&self.target, &commands).unwrap_or_default(),
        )
    }
}

impl ZfsHost for RemoteZfs {
    fn command(&self, zfs_args: Vec<String>) -> (String, Vec<String>) {
        self.ssh_zfs(vec![zfs_args])
    }

    fn describe(&self) -> String {
        format!("{}@{}", self.target.user, self.target.address())
    }

    fn can_chain(&self) -> bool {
        true
    }

    fn chain(&self, commands: Vec<Vec<String>>) -> Option<(String, Vec<String>)> {
        Some(self.ssh_zfs(commands))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_host_runs_zfs_directly() {
        let (program, args) = LocalZfs.command(vec!["list".into()]);
        assert_eq!(program, "zfs");
        assert_eq!(args, ["list"]);
    }

    #[test]
    fn remote_zfs_commands_go_through_ssh_with_quoted_words() {
        let remote = RemoteZfs {
            _master: None,
            target: SshTarget {
                user: "root".into(),
                host: "127.0.0.3".into(),
                port: 2222,
                identity: "/var/lib/nasfleet-agent/replication_ed25519".into(),
                known_hosts: "/var/lib/nasfleet-agent/known_hosts/nas2".into(),
                control_path: None,
            },
        };
        let (program, args) = remote.command(vec![
            "receive".into(),
            "-F".into(),
            "backup/nas1/tank a".into(),
        ]);
        assert_eq!(program, "ssh");
        assert_eq!(
            args.last().map(String::as_str),
            Some("zfs receive -F 'backup/nas1/tank a'")
        );
        assert!(args.contains(&"StrictHostKeyChecking=yes".to_owned()));
    }
}
