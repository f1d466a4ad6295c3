//! How one dataset's replication is asked for and how it fails: [`ReplicateOptions`] and [`ReplicationError`], shared by the transfer, the resume of a partial receive and the estimate.

use std::time::Duration;

use thiserror::Error;

use super::plan::PlanError;
use super::stream::StreamRefusal;
use crate::host::pipe::PipeError;
use crate::zfs::{self, Dialect, SnapshotListing, ZfsError};

/// Default for [`ReplicateOptions::idle_timeout`]: a stream that moves no
/// byte for this long is stuck (a hung ssh, a suspended pool), not slow.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How [`super::transfer::replicate_dataset`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicateOptions {
    /// Overwrite a target that has diverged or has no snapshot in common
    /// with the source (destroying its newer or all snapshots, `recv -F`).
    pub allow_overwrite: bool,
    /// A transfer that moves no byte for this long is stopped.
    pub idle_timeout: Duration,
    pub dialect_source: Dialect,
    pub dialect_target: Dialect,
    /// Limit for each zfs call around the transfers (listings, create,
    /// destroy, set); over ssh this includes the connection.
    pub command_timeout: Duration,
    /// The target dataset as the target's agent listed it moments ago
    /// (`Some(None)`: it did not exist), to plan from without listing the
    /// target over ssh. `None`: list it.
    pub target_listing: Option<Option<SnapshotListing>>,
    /// The task: after each dataset, its newest common snapshot is held
    /// with the task's tag ([`nasfleet_common::names::replication_hold_tag`]) on both sides and
    /// older holds are released, and on an OpenZFS source it is the
    /// task's bookmark ([`super::cursor`]). `None`: neither.
    pub task_id: Option<u64>,
    /// Send an encrypted source raw (`-w`): the target keeps ciphertext.
    /// `false` is the task's `--no-raw`.
    pub raw: bool,
    /// Bytes per second the relay moves at most; `None`: no cap.
    pub rate_limit: Option<u64>,
}

impl ReplicateOptions {
    /// Defaults: no overwriting, [`DEFAULT_IDLE_TIMEOUT`],
    /// [`zfs::DEFAULT_TIMEOUT`] per zfs call, raw sends, no rate cap.
    pub fn new(dialect_source: Dialect, dialect_target: Dialect) -> ReplicateOptions {
        ReplicateOptions {
            allow_overwrite: false,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            dialect_source,
            dialect_target,
            command_timeout: zfs::DEFAULT_TIMEOUT,
            target_listing: None,
            task_id: None,
            raw: true,
            rate_limit: None,
        }
    }
}

/// Why replicating one dataset failed. Every variant names a dataset.
#[derive(Debug, Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Stream(#[from] StreamRefusal),
    /// A zfs call failed, on either side; known zfs messages (diverged
    /// target, existing target, missing dataset) are typed.
    #[error(transparent)]
    Zfs(#[from] ZfsError),
    #[error("Replication of {transfer} to '{target_dataset}' failed: {cause}")]
    Transfer {
        target_dataset: String,
        /// [`super::plan::Transfer::label`] of the transfer that failed.
        transfer: String,
        #[source]
        cause: PipeError,
    },
    #[error("Replication of '{dataset}' was cancelled")]
    Cancelled { dataset: String },
}
