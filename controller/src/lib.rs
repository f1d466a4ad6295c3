//! nasfleet controller library: the fleet's domain (engine), its durable state (store), the agents' links, the API people call and the web console, behind `nasfleet-controller`.
//!
//! Arrows point down only: `server → api → engine → store`,
//! `server → web → engine` (the web words its audit entries as `api` does),
//! `server → delivery → engine` (notifications; `api` asks it for test messages), and
//! `agents::link → engine → agents::sessions`.

pub mod agents;
pub mod api;
pub mod auth;
pub mod check;
pub mod config;
pub mod delivery;
pub mod engine;
pub mod init;
pub mod memory;
pub mod metrics;
pub mod pki;
pub mod server;
pub mod sessions;
pub mod store;
pub mod web;
