//! nasfleet agent library behind `nasfleet-agent`: enrollment, the controller link, the runs, and the host tools (zfs, ssh, rsync).
//!
//! Layers, arrows pointing down only:
//!
//! - [`link`]: the stream to the controller, one handler per request kind;
//!   [`join`] enrolls; [`config`] is what `run` is started with.
//! - [`runs`]: the run journal, the run context, one module per kind of run;
//!   [`inventory`] collects what the agent reports.
//! - [`zfs`], [`ssh`], [`rsync`]: one folder per tool (names, pure argv
//!   builders, pure output parsers, a thin runner).
//! - [`host`]: child processes, the passwd database, files written
//!   atomically, paths opened without following links; [`state_dir`] keeps
//!   the enrollment.

pub mod check;
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
