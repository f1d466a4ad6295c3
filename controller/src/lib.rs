//! nasfleet controller library: PKI, store, fleet state and the gRPC services behind `nasfleet-controller`.

pub mod agent_link;
pub mod auth;
pub mod config;
pub mod enrollment;
pub mod fleet_api;
pub mod init;
pub mod pki;
pub mod runs;
pub mod scheduler;
pub mod server;
pub mod sessions;
pub mod ssh_connections;
pub mod state;
pub mod store;
pub mod tasks;
