//! The agents: enrollment with a join token, each agent's long-lived link, and the sessions of the agents connected now.

pub mod enrollment;
pub mod link;
pub mod sessions;
