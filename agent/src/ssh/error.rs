//! Why an SSH operation failed, worded for the person who has to fix it.

use std::io;
use std::path::{Path, PathBuf};

use crate::host::files::{self, FileError};
use crate::host::process::ProcessError;
use nasfleet_common::names::NameError;
use thiserror::Error;

/// Longest user name accepted (Linux `useradd` and FreeBSD `pw` limits).
pub(super) const MAX_USER: usize = 32;

/// Why an SSH operation failed, worded for the person who has to fix it.
#[derive(Debug, Error)]
pub enum SshError {
    /// The message is exactly TrueNAS's wording; the OS reason is the source.
    #[error("[EACCES] Unable to connect to port {port} on {host}")]
    Unreachable {
        host: String,
        port: u16,
        #[source]
        reason: io::Error,
    },
    #[error(
        "Authentication as {user} on {address} failed: the target has not authorized this system's replication key (run `nasfleet ssh-connection create SOURCE TARGET`)"
    )]
    AuthFailed { user: String, address: String },
    #[error(
        "The SSH host key of {address} does not match the host key pinned for it, so the connection was refused (no trust on first use); if that system's host keys were replaced, run `nasfleet ssh-connection create SOURCE TARGET` again once its inventory shows the new keys"
    )]
    HostKeyMismatch { address: String },
    /// An ssh call that failed for another reason: usually the remote
    /// command itself, whose stderr the message keeps; or the local ssh
    /// process timed out, was cancelled or could not start.
    #[error("{}", describe_remote(.address, .error))]
    Remote {
        address: String,
        error: ProcessError,
    },
    #[error(
        "invalid SSH user {user:?}: expected at most {MAX_USER} characters of a-z, 0-9, '_' and '-', starting with a letter or '_'"
    )]
    InvalidUser { user: String },
    #[error("invalid SSH host {host:?}: expected a DNS name, an IPv4 address or an IPv6 address")]
    InvalidHost { host: String },
    #[error("invalid SSH port 0")]
    InvalidPort,
    #[error(
        "{what} path {path:?} cannot be given to ssh: it must be absolute and contain only letters, digits and '_-./+@:,=' (ssh expands '%' and '~' and splits option values at spaces)"
    )]
    InvalidPath { what: &'static str, path: PathBuf },
    #[error("no remote command given")]
    EmptyCommand,
    #[error("remote command word {word:?} contains a NUL byte")]
    InvalidWord { word: String },
    #[error("invalid public key: {reason}")]
    InvalidKey { reason: String },
    #[error(
        "no host keys to pin for {address}: its agent reports none (is sshd running with host keys?)"
    )]
    NoHostKeys { address: String },
    #[error("invalid system name: {0}")]
    InvalidSystem(#[from] NameError),
    #[error("Provided user \"{user}\" does not exist")]
    UnknownUser { user: String },
    #[error(
        "User \"{user}\" has no usable home directory ({home}): replication to this user needs a real home directory"
    )]
    NoHome { user: String, home: String },
    #[error("cannot look up user \"{user}\": {source}")]
    UserLookup {
        user: String,
        #[source]
        source: io::Error,
    },
    #[error("refusing to use {}: {reason}", .path.display())]
    Unsafe { path: PathBuf, reason: &'static str },
    /// Reading or writing a file failed (`cannot ACTION PATH: REASON`).
    #[error(transparent)]
    File(#[from] FileError),
    #[error("could not make or read the replication key: {0}")]
    Keygen(#[source] ProcessError),
    #[error("a background file task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The rendered `ssh -i ... -o ...` command line would fill the message
/// with ssh options (and is cut before the remote command), so a remote
/// failure is told by where it ran and what the remote side said.
fn describe_remote(address: &str, error: &ProcessError) -> String {
    match error {
        ProcessError::Failed {
            code: Some(code),
            stderr,
            ..
        } if stderr.is_empty() => {
            format!("the remote command on {address} failed (exit code {code})")
        }
        ProcessError::Failed {
            code: Some(code),
            stderr,
            ..
        } => format!("the remote command on {address} failed (exit code {code}): {stderr}"),
        other => other.to_string(),
    }
}

pub(super) fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> SshError + 'a {
    move |source| SshError::File(files::io_error(action, path)(source))
}
