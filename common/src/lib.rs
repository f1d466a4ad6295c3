//! What controller, agent and CLI share beyond the contract: the rules every input is checked by (one home each), names, roles, schedules and naming schemas, transfer rates, how statuses are spelled, TLS dialing, daemon start-up and the CLI config.

pub mod cli_config;
pub mod daemon;
pub mod dataset_names;
pub mod dial;
pub mod duration;
pub mod echo;
pub mod enroll_lines;
pub mod health;
pub mod histogram;
pub mod identity;
pub mod names;
pub mod naming;
pub mod rate;
pub mod replication_rules;
pub mod replication_summary;
pub mod roles;
pub mod rsync_aux;
pub mod rsync_rules;
pub mod schedule;
pub mod status;
