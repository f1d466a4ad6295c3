//! The thin async layer over zfs and zpool: probe the dialect once, then run what the builders in [`super::argv`] produce with a timeout and hand the text to [`super::parse`].

use std::time::Duration;

use super::argv::*;
use super::dialect::Dialect;
use super::error::{ZfsError, without_usage};
use super::parse::*;
use crate::host::process;
use nasfleet_proto::v1;

/// Default limit for one zfs/zpool call. Listing tens of thousands of
/// snapshots takes seconds, not minutes; anything slower is a hung pool.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) const ZFS: &str = "zfs";
const ZPOOL: &str = "zpool";

/// What the zfs CLI of this host is, probed once at start (the CLI does not
/// change under a running agent) and passed to everything that runs zfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zfs {
    pub dialect: Dialect,
    /// Human-readable version, e.g. `zfs-2.2.4-1` or `zfs-fuse (pool version 23)`.
    pub version: String,
    /// Limit for each zfs/zpool call.
    pub timeout: Duration,
}

/// Probes which CLI dialect this host has. Never fails: a host whose zfs
/// cannot even be asked is treated as legacy with an unknown version, and
/// the calls that follow report the real problem.
pub async fn probe_dialect() -> Zfs {
    probe_dialect_with_timeout(DEFAULT_TIMEOUT).await
}

/// [`probe_dialect`] with a chosen per-call timeout, kept for later calls.
pub async fn probe_dialect_with_timeout(timeout: Duration) -> Zfs {
    match process::run(ZFS, &version_args(), timeout).await {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(version) = parse_openzfs_version(&text) {
                return Zfs {
                    dialect: Dialect::OpenZfs,
                    version,
                    timeout,
                };
            }
        }
        Err(err) => {
            // zfs-fuse follows its refusal with sixty lines of usage; the first line says it all.
            let text = err.to_string();
            let first = text.lines().next().unwrap_or_default();
            tracing::debug!(err = %first, "`zfs version` failed; assuming the legacy dialect");
        }
    }
    let version = match process::run(ZPOOL, &pool_version_args(), timeout).await {
        Ok(out) => parse_legacy_version(&String::from_utf8_lossy(&out.stdout)),
        Err(err) => {
            tracing::warn!(%err, "could not determine the zfs version");
            None
        }
    };
    Zfs {
        dialect: Dialect::Legacy,
        version: version.unwrap_or_else(|| "unknown".to_owned()),
        timeout,
    }
}

impl Zfs {
    /// A handle for a known dialect, e.g. from configuration or in tests.
    pub fn new(dialect: Dialect, version: impl Into<String>) -> Zfs {
        Zfs {
            dialect,
            version: version.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Every pool on the host, with parse problems of individual lines.
    pub async fn list_pools(&self) -> Result<(Vec<v1::Pool>, Vec<String>), ZfsError> {
        let out = process::run(ZPOOL, &list_pools_args(self.dialect), self.timeout)
            .await
            .map_err(|e| ZfsError::Process(without_usage(e)))?;
        Ok(parse_pool_list(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Every dataset and snapshot of `pool`, in one zfs call.
    pub async fn list_datasets_and_snapshots(
        &self,
        pool: &str,
    ) -> Result<DatasetListing, ZfsError> {
        let args = list_datasets_and_snapshots_args(pool)?;
        let out = process::run(ZFS, &args, self.timeout)
            .await
            .map_err(|e| ZfsError::from_process(e, pool))?;
        Ok(parse_datasets_and_snapshots(&String::from_utf8_lossy(
            &out.stdout,
        )))
    }

    /// Snapshots of `dataset` (and of its descendants if `recursive`).
    pub async fn list_snapshots(
        &self,
        dataset: &str,
        recursive: bool,
    ) -> Result<(Vec<v1::Snapshot>, Vec<String>), ZfsError> {
        let args = list_snapshots_args(self.dialect, dataset, recursive)?;
        let out = process::run(ZFS, &args, self.timeout)
            .await
            .map_err(|e| ZfsError::from_process(e, dataset))?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(parse_snapshot_list(self.dialect, dataset, recursive, &text))
    }

    /// Takes the snapshots `names` (full `dataset@snapshot` names, one pool,
    /// at most one per dataset), each recursively if `recursive`.
    ///
    /// All or none: OpenZFS takes them atomically in one call. zfs-fuse
    /// takes one per call, so there they are taken one by one and, if one
    /// fails, those this call already took are destroyed again (best
    /// effort; a failure to do so is logged) before the error is returned.
    pub async fn create_snapshots(
        &self,
        names: &[String],
        recursive: bool,
    ) -> Result<(), ZfsError> {
        let commands = create_snapshots_commands(self.dialect, names, recursive)?;
        let mut taken: Vec<&String> = Vec::new();
        for (command, name) in commands.iter().zip(names) {
            if let Err(err) = process::run(ZFS, command, self.timeout).await {
                let err = ZfsError::from_snapshot_process(err, &names[taken.len()..]);
                for done in taken {
                    self.roll_back_snapshot(done, recursive).await;
                }
                return Err(err);
            }
            taken.push(name);
        }
        Ok(())
    }

    /// Destroys what one `zfs snapshot [-r] name` of
    /// [`create_snapshots`](Zfs::create_snapshots) took. After `-r`, every
    /// descendant's snapshot of that name is ours: `-r` fails as a whole
    /// when any of them already exists.
    async fn roll_back_snapshot(&self, full_name: &str, recursive: bool) {
        let Some((dataset, snapshot)) = full_name.split_once('@') else {
            return;
        };
        let mut doomed = vec![full_name.to_owned()];
        if recursive {
            match self.list_snapshots(dataset, true).await {
                Ok((snapshots, _)) => {
                    let suffix = format!("@{snapshot}");
                    doomed = snapshots
                        .into_iter()
                        .map(|s| s.name)
                        .filter(|n| n.ends_with(&suffix))
                        .collect();
                }
                Err(err) => {
                    tracing::warn!(%full_name, %err, "could not list snapshots to roll back");
                }
            }
        }
        for name in doomed {
            if let Err(err) = self.destroy_snapshot(&name).await {
                tracing::warn!(%name, %err, "could not roll back a snapshot taken by a failed call");
            }
        }
    }

    /// Destroys one snapshot. Only ever a snapshot: a name without '@' is
    /// refused before zfs runs.
    pub async fn destroy_snapshot(&self, full_name: &str) -> Result<(), ZfsError> {
        let args = destroy_snapshot_args(full_name)?;
        process::run(ZFS, &args, self.timeout)
            .await
            .map_err(|e| ZfsError::from_destroy_process(e, full_name))?;
        Ok(())
    }
}
