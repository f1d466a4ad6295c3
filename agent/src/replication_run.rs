//! One replication run on a source system: pre-flight checks of the target, the optional snapshot, then every dataset (and child) replicated as a step of its own.

use crate::replication::{self, LocalZfs, ReplicateOptions, ZfsHost};
use crate::runs::{AgentIdentity, RunContext, RunFailure};
use crate::ssh::{self, SshTarget};
use crate::zfs::{Dialect, SnapshotInfo, Zfs, ZfsError};
use nasfleet_common::names::validate_system_name;
use nasfleet_common::naming::NamingSchema;
use nasfleet_proto::v1::{
    Progress, ReplicaListing, ReplicaSnapshot, ReplicationDataset, ReplicationTarget,
    ReplicationWork, RunUpdate,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const REACH_TIMEOUT: Duration = Duration::from_secs(10);
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
const MASTER_TIMEOUT: Duration = Duration::from_secs(15);
/// How long after a run starts the target agent's listing (taken at
/// dispatch) may stand in for a listing over ssh; later steps list anew.
/// Short: the listing should be about as fresh as one taken at the step.
const TARGET_LISTING_FRESH: Duration = Duration::from_secs(10);
/// Most datasets a target's agent lists for one dispatch (the controller
/// asks for at most as many), and the time it may spend on them: the
/// controller stops waiting after 10 s.
const MAX_LISTED_REPLICAS: usize = 256;
const REPLICA_LISTING_BUDGET: Duration = Duration::from_secs(8);

/// zfs on the target, reached through ssh with the pinned host keys.
struct RemoteZfs {
    target: SshTarget,
    /// The run's shared connection, if it came up; closed with this value.
    _master: Option<ssh::SshMaster>,
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

/// Runs one replication work item; returns nothing but records bytes and steps in `ctx`.
pub(crate) async fn replication_run(
    ctx: &mut RunContext<'_>,
    work: &ReplicationWork,
) -> Result<(), RunFailure> {
    let target = work.target.as_ref().ok_or_else(|| {
        RunFailure::Failed("The controller sent replication work without a target".into())
    })?;
    let started = Instant::now();
    let listed_by_target: HashMap<&str, &ReplicaListing> = work
        .target_replicas
        .iter()
        .map(|listing| (listing.dataset.as_str(), listing))
        .collect();
    let zfs = ctx.manager.zfs();
    // Every source system of a run reports its steps into one list, so
    // each name carries the system, as the dataset steps' names do.
    let system = ctx.manager.identity.system.clone();
    let (host, target_dialect): (Box<dyn ZfsHost>, Dialect) = if target.ssh_host.is_empty() {
        (Box::new(LocalZfs), zfs.dialect)
    } else {
        let step = format!("{system} pre-flight");
        ctx.begin(&step)?;
        let outcome = preflight(ctx, target).await;
        let (remote, dialect) = ctx.end(&step, outcome)?;
        (Box::new(remote), dialect)
    };

    if !work.pre_snapshot_name.is_empty() {
        let step = format!("{system} snapshot");
        ctx.begin(&step)?;
        let outcome = pre_snapshot(ctx, &zfs, work).await;
        ctx.end(&step, outcome)?;
    }

    let mut first_failure: Option<RunFailure> = None;
    for dataset in &work.datasets {
        for (source, destination) in dataset_pairs(&zfs, dataset).await? {
            ctx.check_cancelled()?;
            let step = format!("{system}:{source} → {destination}");
            ctx.begin(&step)?;
            let target_listing = listed_by_target
                .get(destination.as_str())
                .filter(|_| started.elapsed() < TARGET_LISTING_FRESH)
                .map(|listing| snapshots_of(listing));
            let outcome = replicate_one(
                ctx,
                dataset,
                &source,
                &destination,
                host.as_ref(),
                zfs.dialect,
                target_dialect,
                work.allow_overwrite,
                target_listing,
            )
            .await;
            if let Err(failure) = ctx.end(&step, outcome) {
                if matches!(failure, RunFailure::Cancelled(_)) {
                    return Err(failure);
                }
                ctx.log(format!("FAILED {source}: {failure}"));
                first_failure.get_or_insert(failure);
            }
        }
    }
    match first_failure {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}

/// The target side of a replication run's dispatch: the snapshots of each
/// of `datasets` on this system. A dataset that cannot be listed (or is
/// over the limits) is left out; its source lists it over ssh.
pub async fn list_replicas(zfs: &Zfs, datasets: &[String]) -> Vec<ReplicaListing> {
    let started = Instant::now();
    let mut replicas = Vec::new();
    for dataset in datasets.iter().take(MAX_LISTED_REPLICAS) {
        if started.elapsed() > REPLICA_LISTING_BUDGET {
            tracing::info!(
                listed = replicas.len(),
                asked = datasets.len(),
                "listing replicas took too long; the sources list the rest over ssh"
            );
            break;
        }
        match replication::local_snapshots(zfs.dialect, dataset, zfs.timeout).await {
            Ok(snapshots) => replicas.push(listing_of(dataset, snapshots)),
            Err(err) => tracing::info!(%dataset, %err, "replica not listed"),
        }
    }
    replicas
}

fn listing_of(dataset: &str, snapshots: Option<Vec<SnapshotInfo>>) -> ReplicaListing {
    ReplicaListing {
        dataset: dataset.to_owned(),
        exists: snapshots.is_some(),
        snapshots: snapshots
            .unwrap_or_default()
            .into_iter()
            .map(|s| ReplicaSnapshot {
                name: s.name,
                guid: s.guid,
                creation_unix: s.creation,
                createtxg: s.createtxg,
            })
            .collect(),
    }
}

/// What [`listing_of`] packed: `None` when the dataset did not exist.
fn snapshots_of(listing: &ReplicaListing) -> Option<Vec<SnapshotInfo>> {
    listing.exists.then(|| {
        listing
            .snapshots
            .iter()
            .map(|s| SnapshotInfo {
                name: s.name.clone(),
                guid: s.guid,
                creation: s.creation_unix,
                createtxg: s.createtxg,
            })
            .collect()
    })
}

/// Can the target be reached and logged in to, with the pinned host keys?
/// Also settles the target's zfs dialect: from its inventory, as the
/// controller sent it, or probed over the run's connection when unknown.
async fn preflight(
    ctx: &mut RunContext<'_>,
    target: &ReplicationTarget,
) -> Result<((RemoteZfs, Dialect), String), RunFailure> {
    let remote = connect(&ctx.manager.identity, target, true)
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
    match crate::host::process::run(&program, &args, PROBE_TIMEOUT).await {
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

/// Takes this run's snapshot of every source dataset (`--create-snapshot-task`).
async fn pre_snapshot(
    ctx: &mut RunContext<'_>,
    zfs: &Zfs,
    work: &ReplicationWork,
) -> Result<((), String), RunFailure> {
    let (mut taken, mut there) = (0, 0);
    for dataset in &work.datasets {
        let name = format!("{}@{}", dataset.source, work.pre_snapshot_name);
        match zfs
            .create_snapshots(std::slice::from_ref(&name), work.pre_snapshot_recursive)
            .await
        {
            Ok(()) => {
                taken += 1;
                ctx.log(format!("created snapshot {name}"));
            }
            // Taken already this minute (e.g. by the companion snapshot task): that is the one we want.
            Err(ZfsError::SnapshotExists { .. }) => {
                there += 1;
                ctx.log(format!("snapshot {name} exists already; kept"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let detail = match there {
        0 => format!("@{}: {taken} taken", work.pre_snapshot_name),
        _ => format!(
            "@{}: {taken} taken, {there} there already (taken earlier this minute, e.g. by its snapshot task)",
            work.pre_snapshot_name
        ),
    };
    Ok(((), detail))
}

/// The (source, target) dataset pairs of one replication dataset: itself,
/// and every descendant when recursive, parents first.
async fn dataset_pairs(
    zfs: &Zfs,
    dataset: &ReplicationDataset,
) -> Result<Vec<(String, String)>, RunFailure> {
    if !dataset.recursive {
        return Ok(vec![(dataset.source.clone(), dataset.target.clone())]);
    }
    let pool = dataset.source.split('/').next().unwrap_or_default();
    let listing = zfs.list_datasets_and_snapshots(pool).await?;
    let prefix = format!("{}/", dataset.source);
    let mut pairs: Vec<(String, String)> = listing
        .datasets
        .iter()
        .filter(|d| d.name == dataset.source || d.name.starts_with(&prefix))
        .map(|d| {
            let suffix = &d.name[dataset.source.len()..];
            (d.name.clone(), format!("{}{suffix}", dataset.target))
        })
        .collect();
    if pairs.is_empty() {
        return Err(RunFailure::Failed(format!(
            "Dataset not found: '{}'",
            dataset.source
        )));
    }
    // "a" sorts before "a/b": parents are received before their children.
    pairs.sort();
    Ok(pairs)
}

#[allow(clippy::too_many_arguments)]
async fn replicate_one(
    ctx: &mut RunContext<'_>,
    dataset: &ReplicationDataset,
    source: &str,
    destination: &str,
    host: &dyn ZfsHost,
    source_dialect: Dialect,
    target_dialect: Dialect,
    allow_overwrite: bool,
    target_listing: Option<Option<Vec<SnapshotInfo>>>,
) -> Result<((), String), RunFailure> {
    let schemas: Vec<NamingSchema> = dataset
        .naming_schemas
        .iter()
        .map(|s| {
            NamingSchema::new(s).map_err(|e| RunFailure::Failed(format!("naming schema: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let matching = move |name: &str| schemas.iter().any(|s| s.parse(name).is_some());
    let mut options = ReplicateOptions::new(source_dialect, target_dialect);
    options.allow_overwrite = allow_overwrite;
    options.target_listing = target_listing;

    let manager = ctx.manager;
    let run_id = ctx.run_id;
    let bytes_before = ctx.bytes;
    let started = Instant::now();
    let step = source.to_owned();
    let mut progress = move |bytes: u64, label: &str| {
        let secs = started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            (bytes as f64 / secs) as u64
        } else {
            0
        };
        manager.send_update(RunUpdate {
            run_id,
            progress: Some(Progress {
                phase: format!("sending {label}"),
                bytes_done: bytes_before + bytes,
                bytes_total: 0,
                bytes_per_second: rate,
                step: step.clone(),
            }),
            ..Default::default()
        });
    };
    let mut cancel = ctx.cancel_flag.clone();
    let result = replication::replicate_dataset(
        source,
        destination,
        &matching,
        host,
        &options,
        &mut progress,
        &mut cancel,
    )
    .await;
    match result {
        Ok(outcome) => {
            ctx.bytes += outcome.bytes;
            for transfer in &outcome.transferred {
                ctx.log(format!("sent {} to {destination}", transfer.label(source)));
            }
            let detail = if outcome.up_to_date {
                "up to date".to_owned()
            } else {
                format!(
                    "{} snapshot(s), {} bytes",
                    outcome.transferred.len(),
                    outcome.bytes
                )
            };
            Ok(((), detail))
        }
        Err(replication::ReplicationError::Cancelled { .. }) => {
            ctx.check_cancelled()?;
            Err(RunFailure::Failed(format!(
                "replication of '{source}' was cancelled"
            )))
        }
        Err(e) => Err(RunFailure::Failed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_listings_travel_intact() {
        let snapshots = vec![
            SnapshotInfo {
                name: "auto-2026-01-01_00-00".into(),
                guid: 18_000_000_000_000_000_000,
                creation: 1_767_225_600,
                createtxg: 12,
            },
            SnapshotInfo {
                name: "with space".into(),
                guid: 7,
                creation: 1_767_225_660,
                createtxg: 13,
            },
        ];
        let listing = listing_of("backup/nas1/tank a", Some(snapshots.clone()));
        assert_eq!(listing.dataset, "backup/nas1/tank a");
        assert!(listing.exists);
        assert_eq!(snapshots_of(&listing), Some(snapshots));

        let absent = listing_of("backup/nas1/gone", None);
        assert!(!absent.exists);
        assert_eq!(snapshots_of(&absent), None);
        // An existing dataset without snapshots is not an absent one.
        let empty = listing_of("backup/nas1/empty", Some(Vec::new()));
        assert_eq!(snapshots_of(&empty), Some(Vec::new()));
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
