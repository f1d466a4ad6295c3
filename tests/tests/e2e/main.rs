//! End-to-end tests: the real controller, agent and CLI binaries against real ZFS (zfs-fuse on the host, OpenZFS in the guest tier) and real sshd.

mod alert_kinds;
mod alerts;
mod cli_exits;
mod common;
mod console;
mod fleet;
mod fleet_storm;
mod health;
mod hostile_input;
mod notify;
mod replication;
mod replication_hints;
mod replication_streams;
mod rsync;
mod runs;
mod snapshots;
mod store;
mod users;
