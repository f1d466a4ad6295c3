//! What a task is, in the words every part of the engine uses: its kind, the systems its runs take part on, and how a run state is spelled.

use nasfleet_proto::v1::{Task, TaskKind, task_spec};

/// The kind of task a spec describes.
pub fn kind_of(kind: &task_spec::Kind) -> TaskKind {
    match kind {
        task_spec::Kind::Snapshot(_) => TaskKind::Snapshot,
        task_spec::Kind::Replication(_) => TaskKind::Replication,
        task_spec::Kind::Rsync(_) => TaskKind::Rsync,
    }
}

/// The systems a task's runs take part on, in order, without repeats.
pub fn systems_of(task: &Task) -> Vec<String> {
    match task.spec.as_ref().and_then(|s| s.kind.as_ref()) {
        Some(task_spec::Kind::Snapshot(s)) => vec![s.system.clone()],
        Some(task_spec::Kind::Rsync(r)) => vec![r.system.clone()],
        Some(task_spec::Kind::Replication(r)) => {
            let mut systems: Vec<String> = Vec::new();
            for source in &r.sources {
                if !systems.contains(&source.system) {
                    systems.push(source.system.clone());
                }
            }
            systems
        }
        None => Vec::new(),
    }
}

pub use nasfleet_common::status::run_state_word as state_word;
