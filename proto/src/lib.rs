//! The nasfleet contract: generated gRPC code plus the small vocabulary that controller, agent and CLI must agree on.

pub mod cli_config;
pub mod daemon;
pub mod dataset_names;
pub mod dial;
pub mod duration;
pub mod echo;
pub mod identity;
pub mod names;
pub mod naming;
pub mod rsync_aux;
pub mod schedule;
pub mod status;

/// Generated messages and services of `nasfleet.v1`.
pub mod v1 {
    tonic::include_proto!("nasfleet.v1");
}

/// Largest gRPC message either side accepts: an inventory of a NAS with tens
/// of thousands of snapshots is several megabytes, far above tonic's 4 MiB default.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Version string every binary reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
