//! The fleet's domain: who may do what, users and the audit log, tasks and their validation, runs, the scheduler, SSH trust between systems and replication holds; typed errors, no transport types.

pub mod access;
pub mod alerts;
pub mod audit;
pub mod error;
#[cfg(test)]
pub mod fixtures;
pub mod holds;
pub mod kinds;
pub mod membership;
pub mod notify;
pub mod run_hub;
pub mod runs;
pub mod scheduler;
pub mod signin;
pub mod signins;
pub mod ssh_trust;
pub mod state;
pub mod summaries;
pub mod systems;
pub mod tasks;
pub mod users;
