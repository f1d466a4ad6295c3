//! Runs on this agent: [`manager`] (starting, cancelling and reporting runs, surviving disconnects and restarts), [`journal`] (the durable record of each run), `uplink` (the way up to the controller), [`context`] (what one run reports through) and one module per kind of run: [`snapshot`] (with [`retention`]), [`replication`] and [`rsync`].
//!
//! Arrows point down: the manager starts the kinds, the kinds report
//! through the context, and the context sends through the uplink; nothing
//! below the manager knows it.

pub mod context;
pub mod journal;
pub mod manager;
pub mod replication;
pub mod retention;
pub mod rsync;
pub mod snapshot;
mod uplink;

pub use context::AgentIdentity;
pub use journal::JournalError;
pub use manager::RunManager;
