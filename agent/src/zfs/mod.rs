//! Every zfs and zpool command the agent runs, for both CLI dialects (zfs-fuse/pool v23 and OpenZFS 2.x), and the parsers of their output.
//!
//! One file per concern: [`dialect`] (which CLI this host speaks),
//! [`names`] (the rules a name obeys before it becomes an argument),
//! [`argv`] (pure command-line builders), [`parse`] (pure parsers of their
//! output), [`error`] (zfs's stderr turned into typed reasons) and
//! [`runner`] (the thin async layer that runs what the builders produce
//! and hands the text to the parsers). Callers use the flat `zfs::` paths
//! re-exported here.

pub mod argv;
pub mod dialect;
pub mod error;
pub mod names;
pub mod parse;
pub mod runner;

pub use argv::*;
pub use dialect::Dialect;
pub use error::{ZfsError, is_hold_absent, is_hold_present, is_missing_dataset, recv_error};
pub use names::*;
pub use parse::*;
pub use runner::{DEFAULT_TIMEOUT, Zfs, probe_dialect, probe_dialect_with_timeout};
