//! Reaching a replication target: its host keys pinned, reachability and login checked with reasons a person can act on, one shared ssh connection per run, and its zfs dialect settled.

use super::zfs_host::{RemoteZfs, ZfsHost};
use crate::host::process;
use crate::runs::context::{AgentIdentity, RunContext, RunFailure};
use crate::ssh::{self, SshTarget};
use crate::zfs::Dialect;
use nasfleet_common::names::validate_system_name;
use nasfleet_proto::v1::ReplicationTarget;
use std::time::Duration;

const REACH_TIMEOUT: Duration = Duration::from_secs(10);
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
const MASTER_TIMEOUT: Duration = Duration::from_secs(15);

/// Can the target be reached and logged in to, with the pinned host keys?
/// Also settles the target's zfs dialect: from its inventory, as the
/// controller sent it, or probed over the run's connection when unknown.
pub(super) async fn preflight(
    ctx: &mut RunContext<'_>,
    target: &ReplicationTarget,
) -> Result<((RemoteZfs, Dialect), String), RunFailure> {
    let remote = connect(ctx.identity, target, true)
        .await
        .map_err(RunFailure::Failed)?;
    let dialect = match Dialect::from_proto(target.zfs_dialect) {
        Some(dialect) => dialect,
        None => probe_dialect(&remote).await,
    };
    let detail = format!(
        "{} reachable, logged in, zfs {:?}",
        remote.describe(),
        dialect
    );
    ctx.log(format!("pre-flight: {detail}"));
    Ok(((remote, dialect), detail))
}

/// `nasfleet ssh-connection create` asks the source to check its new connection.
pub async fn check_target(
    identity: &AgentIdentity,
    target: &ReplicationTarget,
) -> Result<(), String> {
    connect(identity, target, false).await.map(|_| ())
}

/// The target's zfs dialect, when its inventory did not say: `zfs version`
/// exists only on OpenZFS (zfs-fuse vs OpenZFS).
async fn probe_dialect(remote: &RemoteZfs) -> Dialect {
    let (program, args) = remote.command(crate::zfs::version_args());
    match process::run(&program, &args, PROBE_TIMEOUT).await {
        Ok(_) => Dialect::OpenZfs,
        Err(_) => Dialect::Legacy,
    }
}

/// Pins the target's host keys, checks it answers and accepts our key.
/// Errors are reasons a person can act on.
async fn connect(
    identity: &AgentIdentity,
    target: &ReplicationTarget,
    share: bool,
) -> Result<RemoteZfs, String> {
    validate_system_name(&target.system).map_err(|e| e.to_string())?;
    let port = u16::try_from(target.ssh_port)
        .ok()
        .filter(|p| *p != 0)
        .unwrap_or(ssh::DEFAULT_SSH_PORT);
    let known_hosts = identity.state_dir.join("known_hosts").join(&target.system);
    if let Some(dir) = known_hosts.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    ssh::write_known_hosts(&known_hosts, &target.ssh_host, port, &target.host_keys)
        .await
        .map_err(|e| e.to_string())?;
    ssh::check_reachable(&target.ssh_host, port, REACH_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let ssh_target = SshTarget {
        user: target.ssh_user.clone(),
        host: target.ssh_host.clone(),
        port,
        identity: identity.replication_key.private_key.clone(),
        known_hosts,
        control_path: None,
    };
    let remote = if share {
        // One connection for all of the run's zfs commands; without it each
        // pays a TCP connect, key exchange and login. Its own login proves
        // the host key and our key, so no separate check is needed.
        match ssh::start_master(&ssh_target, MASTER_TIMEOUT).await {
            Ok((master, shared)) => RemoteZfs {
                target: shared,
                _master: Some(master),
            },
            Err(e) => {
                // The master says little; a plain login says why, in words a person can act on.
                ssh::check_login(&ssh_target, LOGIN_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::warn!(error = %e, "no shared SSH connection; each command connects on its own");
                RemoteZfs {
                    target: ssh_target,
                    _master: None,
                }
            }
        }
    } else {
        ssh::check_login(&ssh_target, LOGIN_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        RemoteZfs {
            target: ssh_target,
            _master: None,
        }
    };
    Ok(remote)
}
