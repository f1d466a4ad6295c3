//! SSH between NAS systems for replication: this agent's replication keypair, the `ssh` command lines (with shell-quoted remote words and a pinned known_hosts file), pre-flight checks with reasons a person can act on, and, on the target side, authorizing a source's key; plus the local sshd the inventory reports.
//!
//! Trust is never established by ssh itself: the controller tells the source
//! which host keys to expect (written with [`write_known_hosts`] and used
//! with `StrictHostKeyChecking=yes`, so there is no trust on first use), and
//! asks the target's agent to [`authorize_key`] the source's public key. The
//! private key is made on the host that uses it and never leaves it.
//!
//! The local side never goes through a shell (`ssh` gets one argv entry per
//! argument), but the remote side of ssh *is* a shell: every remote word is
//! quoted with [`shell_quote`], so dataset names and paths stay data.
//!
//! One file per concern: [`error`], [`keys`] (public-key lines),
//! [`replication_key`], [`quote`], [`argv`] (targets and command lines,
//! pure), [`master`] (the shared connection), [`known_hosts`],
//! [`preflight`], [`authorized_keys`] (the target side) and [`service`]
//! (this host's sshd, for the inventory). Callers use the flat `ssh::`
//! paths re-exported here.

pub mod argv;
pub mod authorized_keys;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod gate;
pub mod keys;
pub mod known_hosts;
pub mod master;
pub mod preflight;
pub mod quote;
pub mod replication_key;
pub mod service;

pub use argv::{
    DEFAULT_SSH_PORT, SshTarget, normalize_host, ssh_args, ssh_args_chain, validate_user,
};
pub use authorized_keys::{
    AuthorizeOutcome, RevokeOutcome, authorize_in_home, authorize_key, revoke_in_home, revoke_key,
};
pub use error::SshError;
pub use known_hosts::write_known_hosts;
pub use master::{SshMaster, start_master, sweep_stale_control_dirs};
pub use preflight::{check_login, check_reachable, classify};
pub use quote::{remote_command, shell_quote};
pub use replication_key::{
    KEYGEN_TIMEOUT, REPLICATION_KEY_FILE, ReplicationKey, ensure_replication_key,
};
