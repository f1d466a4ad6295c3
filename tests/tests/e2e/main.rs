//! End-to-end tests: the real controller, agent and CLI binaries against real zfs-fuse pools and real sshd.

mod common;
mod fleet;
mod replication;
mod rsync;
mod runs;
mod snapshots;
