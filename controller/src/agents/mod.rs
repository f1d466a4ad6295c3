//! The agents' edge: enrollment with a join token and each agent's long-lived link (the sessions they open live in `crate::sessions`, below the engine that sends on them).

pub mod enrollment;
pub mod inventory;
pub mod link;
