//! nasfleet agent library: enrollment, the controller link, and the host tools (zfs, ssh) behind `nasfleet-agent`.

pub mod config;
pub mod host;
pub mod inventory;
pub mod join;
pub mod link;
pub mod rsync;
pub mod runs;
pub mod ssh;
pub mod state_dir;
pub mod zfs;

/// Exit status when the controller refuses this agent for good (removed or
/// revoked). systemd units use `RestartPreventExitStatus=78` so a revoked
/// agent does not hammer the controller.
pub const EXIT_REFUSED: u8 = 78;
