//! What the agent needs from its own host, below every tool: child processes (process groups, timeouts, kill on drop, `zfs send | zfs recv` relays), the passwd database, writing files atomically, opening paths without following links, and how durations read.

pub mod files;
pub mod nofollow;
pub mod passwd;
pub mod pipe;
pub mod process;
#[cfg(test)]
mod test_support;
pub mod time;
