//! The nasfleet contract: the messages and services of `nasfleet.proto`, generated, and the limits both ends of a connection must agree on.

pub mod codec;
mod list_systems;

/// Generated messages and services of `nasfleet.v1`.
pub mod v1 {
    tonic::include_proto!("nasfleet.v1");
    pub use crate::list_systems::ListSystemsResponse;
}

/// Largest gRPC message either side accepts: an inventory of a NAS with tens
/// of thousands of snapshots is several megabytes, far above tonic's 4 MiB default.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Snapshots per `InventoryPage`: about 1 MiB of protobuf, so a system with
/// millions of snapshots sends many small messages instead of one too big.
pub const INVENTORY_PAGE_SNAPSHOTS: usize = 10_000;

/// Version string every binary reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
