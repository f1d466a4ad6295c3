//! Replication runs: [`plan`](mod@plan) (what to send, by snapshot GUID, pure), [`options`] (what a dataset's replication is asked to do and how it fails), [`transfer`] (carrying a plan out for one dataset: `zfs send | [ssh target] zfs recv`), [`zfs_host`] (where a zfs command runs: here or over ssh), [`target`] (reaching the target: pinned host keys, pre-flight, one shared connection), [`replicas`] (the target side of a dispatch: this system's listing), [`estimate`] (a dry run: what a run would send now), [`holds`] (the task's hold on each base), [`cursor`] (its bookmark of each base), [`stream`] (which stream features a dataset is sent with), [`resume`] (continuing an interrupted receive) and [`run`](mod@run) (one run of a task, dataset by dataset).
//!
//! Transport is kept apart from replication logic, as in zrepl: planning
//! and transfers see only a [`ZfsHost`].

pub mod cursor;
pub mod estimate;
pub mod holds;
pub mod options;
pub mod plan;
pub mod replicas;
pub mod resume;
pub mod run;
pub mod stream;
pub mod target;
pub mod transfer;
pub mod zfs_host;

pub use crate::zfs::SnapshotInfo;
pub use estimate::estimate_replication;
pub use options::{DEFAULT_IDLE_TIMEOUT, ReplicateOptions, ReplicationError};
pub use plan::{Plan, PlanError, Transfer, plan};
pub use replicas::list_replicas;
pub(crate) use run::run;
pub use target::check_target;
pub use transfer::{
    DatasetEstimate, DatasetOutcome, estimate_dataset, local_snapshots, replicate_dataset,
};
pub use zfs_host::{LocalZfs, ZfsHost};
