//! SSH trust between systems: the target's agent authorizes the source's replication key, and the source gets the target's host keys pinned.
//!
//! No person copies keys and nothing is trusted on first use: the host keys
//! come from the target's own inventory (reported by its agent over mutual
//! TLS) and are recorded when the connection is made.

use crate::engine::access::Actor;
use crate::engine::error::FleetError;
use crate::engine::state::SharedState;
use crate::engine::systems;
use crate::store::SshConnectionRecord;
use nasfleet_common::echo::echo;
use nasfleet_common::status::now_unix_ms;
use nasfleet_proto::v1::{
    AllowReplication, AuthorizeKey, CheckSsh, ReplicationTarget, ReplicationTaskSpec, RevokeKey,
    SshConnection, agent_request, task_spec,
};
use std::time::Duration;

/// The user replication logs in as on targets.
pub const REPLICATION_USER: &str = "root";
const AUTHORIZE_TIMEOUT: Duration = Duration::from_secs(30);
/// Reachability, login and a zfs probe from the source.
const CHECK_TIMEOUT: Duration = Duration::from_secs(90);

/// The connections `actor` sees: both of their systems are theirs.
pub fn list(state: &SharedState, actor: &Actor) -> Result<Vec<SshConnectionRecord>, FleetError> {
    Ok(state
        .store
        .ssh_connections()?
        .into_iter()
        .filter(|c| actor.sees(&c.source) && actor.sees(&c.target))
        .collect())
}

pub fn to_proto(record: &SshConnectionRecord) -> SshConnection {
    SshConnection {
        source: record.source.clone(),
        target: record.target.clone(),
        address: record.address.clone(),
        user: record.user.clone(),
        host_key_fingerprints: record.host_key_fingerprints.clone(),
        created_unix_ms: record.created_unix_ms,
    }
}

/// The connection from `source` to `target`, made now if there is none.
pub async fn ensure(
    state: &SharedState,
    source: &str,
    target: &str,
) -> Result<SshConnectionRecord, FleetError> {
    if let Some(record) = state.store.ssh_connection(source, target)? {
        return Ok(record);
    }
    create(state, source, target).await
}

/// Makes (or renews) the connection: the target's agent authorizes the
/// source's key (idempotent) and the target's current host keys are pinned.
pub async fn create(
    state: &SharedState,
    source: &str,
    target: &str,
) -> Result<SshConnectionRecord, FleetError> {
    if source == target {
        return Err(FleetError::invalid(
            "target",
            "a system replicates to itself locally and needs no SSH connection",
        ));
    }
    systems::require_enrolled(state, "source", source)?;
    systems::require_enrolled(state, "target", target)?;
    let public_key = systems::inventory_header(state, source)?
        .map(|i| i.replication_public_key)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            FleetError::Conflict(format!(
                "System '{source}' has not reported a replication key yet; is its agent online?"
            ))
        })?;
    let ssh = systems::inventory_header(state, target)?
        .and_then(|i| i.services.into_iter().find(|s| s.name == "ssh"))
        .filter(|s| !s.address.is_empty() && !s.host_keys.is_empty())
        .ok_or_else(|| {
            FleetError::Conflict(format!(
                "System '{target}' reports no SSH address and host keys; set ssh_address (and ssh_host_keys) in its agent config"
            ))
        })?;
    authorize_on_target(state, source, target, &public_key).await?;
    allow(state, source, target).await?;
    let record = SshConnectionRecord {
        source: source.into(),
        target: target.into(),
        address: ssh.address,
        user: REPLICATION_USER.into(),
        host_keys: ssh.host_keys,
        host_key_fingerprints: ssh.host_key_fingerprints,
        public_key,
        created_unix_ms: now_unix_ms(),
    };
    check_from_source(state, &record).await?;
    let stored = record.clone();
    state
        .store
        .write(move |w| w.put_ssh_connection(&stored))
        .await?;
    tracing::info!(source, target, address = %record.address, "SSH connection made");
    Ok(record)
}

/// Has the target's agent authorize the source's replication key.
async fn authorize_on_target(
    state: &SharedState,
    source: &str,
    target: &str,
    public_key: &str,
) -> Result<(), FleetError> {
    let answer = state
        .sessions
        .request(
            target,
            agent_request::Body::AuthorizeKey(AuthorizeKey {
                user: REPLICATION_USER.into(),
                public_key: public_key.to_owned(),
                source_system: source.into(),
            }),
            AUTHORIZE_TIMEOUT,
        )
        .await
        .map_err(|e| {
            FleetError::Unavailable(format!("cannot authorize {source} on {target}: {e}"))
        })?;
    if !answer.error.is_empty() {
        return Err(FleetError::Conflict(format!(
            "System '{target}' could not authorize the key of '{source}': {}",
            answer.error
        )));
    }
    Ok(())
}

/// Proves a connection from the source's side before it is recorded:
/// reachable, pinned host key matches, authorized key accepted.
async fn check_from_source(
    state: &SharedState,
    record: &SshConnectionRecord,
) -> Result<(), FleetError> {
    let (source, target) = (&record.source, &record.target);
    let check = state
        .sessions
        .request(
            source,
            agent_request::Body::CheckSsh(CheckSsh {
                target: Some(replication_target(record)),
            }),
            CHECK_TIMEOUT,
        )
        .await
        .map_err(|e| {
            FleetError::Unavailable(format!("cannot check the connection from {source}: {e}"))
        })?;
    if !check.error.is_empty() {
        return Err(FleetError::Conflict(format!(
            "System '{source}' cannot log in to '{target}': {}",
            check.error
        )));
    }
    Ok(())
}

/// Has the target's agent remove the source's key from the replication
/// user's authorized_keys. The target must be online for that.
pub async fn revoke(state: &SharedState, record: &SshConnectionRecord) -> Result<(), FleetError> {
    let answer = state
        .sessions
        .request(
            &record.target,
            agent_request::Body::RevokeKey(RevokeKey {
                user: record.user.clone(),
                public_key: record.public_key.clone(),
            }),
            AUTHORIZE_TIMEOUT,
        )
        .await
        .map_err(|e| {
            FleetError::Unavailable(format!(
                "cannot revoke the key of '{}' on '{}' ({e}); the connection is kept until it can be",
                record.source, record.target
            ))
        })?;
    if !answer.error.is_empty() {
        return Err(FleetError::Conflict(format!(
            "System '{}' could not revoke the key of '{}': {}",
            record.target, record.source, answer.error
        )));
    }
    tracing::info!(source = %record.source, target = %record.target, "replication key revoked on the target");
    Ok(())
}

/// Ends every SSH connection of a system leaving the fleet. Where it is
/// the source, its key is revoked on the target first, and the system
/// stays until that succeeds (a removed system's key must not keep
/// logging in). Where it is the target, the sources' keys are revoked on
/// it if it still answers; either way it is not the fleet's any more.
pub async fn forget_system(state: &SharedState, system: &str) -> Result<(), FleetError> {
    let connections = state.store.ssh_connections()?;
    for record in connections.iter().filter(|c| c.source == system) {
        revoke(state, record)
            .await
            .map_err(|e| e.adding(&format!("; system '{system}' stays enrolled")))?;
        forget(state, record).await?;
    }
    for record in connections.iter().filter(|c| c.target == system) {
        if let Err(e) = revoke(state, record).await {
            tracing::warn!(source = %record.source, target = %system, reason = %e, "key left on a system leaving the fleet");
        }
        forget(state, record).await?;
    }
    Ok(())
}

/// Drops a connection's record (durably); its key must be dealt with first.
pub async fn forget(state: &SharedState, record: &SshConnectionRecord) -> Result<(), FleetError> {
    let (source, target) = (record.source.clone(), record.target.clone());
    state
        .store
        .write(move |w| w.delete_ssh_connection(&source, &target))
        .await?;
    Ok(())
}

/// The datasets below which `source`'s key may receive on `target`:
/// `TARGET/<source>` of every replication task from it to there.
pub fn allowed_roots(
    state: &SharedState,
    source: &str,
    target: &str,
) -> Result<Vec<String>, FleetError> {
    let mut roots: Vec<String> = Vec::new();
    for task in state.store.tasks()? {
        let Some(task_spec::Kind::Replication(spec)) = task.spec.and_then(|s| s.kind) else {
            continue;
        };
        if spec.target_system != target || !spec.sources.iter().any(|s| s.system == source) {
            continue;
        }
        let root = format!("{}/{source}", spec.target_dataset);
        if !roots.contains(&root) {
            roots.push(root);
        }
    }
    Ok(roots)
}

/// Tells `target`'s agent which datasets `source`'s key may receive below
/// (the gate in front of the key reads it). Called when the connection is
/// made, when a task that uses it changes, and before each run.
pub async fn allow(state: &SharedState, source: &str, target: &str) -> Result<(), FleetError> {
    let roots = allowed_roots(state, source, target)?;
    let key = state.store.ssh_connection(source, target)?;
    let answer = state
        .sessions
        .request(
            target,
            agent_request::Body::AllowReplication(AllowReplication {
                source_system: source.to_owned(),
                roots,
                user: key.as_ref().map(|k| k.user.clone()).unwrap_or_default(),
                public_key: key.map(|k| k.public_key).unwrap_or_default(),
            }),
            AUTHORIZE_TIMEOUT,
        )
        .await?;
    if !answer.error.is_empty() {
        return Err(FleetError::Conflict(format!(
            "System '{target}' could not update what '{source}' may replicate to: {}",
            answer.error
        )));
    }
    Ok(())
}

/// [`allow`] for every remote source of a replication task (as it was and
/// as it is now), in the background: an offline target keeps its last
/// list and gets the new one before the next run.
pub fn allow_in_background(state: &SharedState, specs: &[&ReplicationTaskSpec]) {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for spec in specs {
        for source in &spec.sources {
            let pair = (source.system.clone(), spec.target_system.clone());
            if source.system != spec.target_system && !pairs.contains(&pair) {
                pairs.push(pair);
            }
        }
    }
    for (source, target) in pairs {
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = allow(&state, &source, &target).await {
                tracing::warn!(%source, %target, error = %e, "replication allow-list not updated now; it will be before the next run");
            }
        });
    }
}

/// Ends the connection from `source` to `target`: the key must stop
/// working, not just be forgotten here, so the target revokes it first and
/// the record goes only when that succeeded.
pub async fn delete(
    state: &SharedState,
    source: &str,
    target: &str,
) -> Result<SshConnectionRecord, FleetError> {
    let record = state.store.ssh_connection(source, target)?.ok_or_else(|| {
        FleetError::NotFound(format!(
            "no SSH connection from '{}' to '{}'",
            echo(source),
            echo(target)
        ))
    })?;
    revoke(state, &record).await?;
    forget(state, &record).await?;
    Ok(record)
}

/// How a source reaches its target through a connection.
pub fn replication_target(record: &SshConnectionRecord) -> ReplicationTarget {
    let (host, port) = split_address(&record.address);
    ReplicationTarget {
        ssh_host: host,
        ssh_port: u32::from(port),
        ssh_user: record.user.clone(),
        host_keys: record.host_keys.clone(),
        system: record.target.clone(),
        // Unspecified: filled in from the target's inventory for a run.
        zfs_dialect: 0,
    }
}

/// Splits "host:port" (IPv6 as "[::1]:22"); a missing port means 22.
pub fn split_address(address: &str) -> (String, u16) {
    if let Some(rest) = address.strip_prefix('[')
        && let Some((host, port)) = rest.split_once("]:")
    {
        return (host.to_owned(), port.parse().unwrap_or(22));
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host.to_owned(), port.parse().unwrap_or(22)),
        _ => (address.to_owned(), 22),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(split_address("127.0.0.2:2222"), ("127.0.0.2".into(), 2222));
        assert_eq!(split_address("nas1.example"), ("nas1.example".into(), 22));
        assert_eq!(split_address("[::1]:2200"), ("::1".into(), 2200));
    }

    #[tokio::test]
    async fn a_source_may_write_below_target_slash_source_of_its_tasks_only() {
        use crate::engine::fixtures::store;
        use nasfleet_proto::v1::{ReplicationSource, Task, TaskSpec};
        let dir = tempfile::tempdir().unwrap();
        let state = crate::engine::state::test_state(dir.path());
        let task = |id: u64, sources: &[&str], target: &str, dataset: &str| Task {
            id,
            spec: Some(TaskSpec {
                kind: Some(task_spec::Kind::Replication(ReplicationTaskSpec {
                    name: format!("r{id}"),
                    sources: sources
                        .iter()
                        .map(|s| ReplicationSource {
                            system: (*s).into(),
                            datasets: vec!["tank/a".into()],
                            ..Default::default()
                        })
                        .collect(),
                    target_system: target.into(),
                    target_dataset: dataset.into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        store(
            &state,
            vec![
                task(1, &["nas1", "nas3"], "nas2", "backup"),
                task(2, &["nas1"], "nas2", "offsite/copies"),
                task(3, &["nas1"], "nas4", "elsewhere"),
                task(4, &["nas1", "nas1"], "nas2", "backup"),
            ],
            Vec::new(),
        )
        .await;
        assert_eq!(
            allowed_roots(&state, "nas1", "nas2").unwrap(),
            vec!["backup/nas1", "offsite/copies/nas1"]
        );
        assert_eq!(
            allowed_roots(&state, "nas3", "nas2").unwrap(),
            vec!["backup/nas3"]
        );
        assert!(allowed_roots(&state, "nas9", "nas2").unwrap().is_empty());
    }
}
