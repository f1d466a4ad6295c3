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

/// Every system a task names: where its runs take part and, for a
/// replication, its target.
pub fn systems_named(task: &Task) -> Vec<String> {
    let mut systems = systems_of(task);
    if let Some(task_spec::Kind::Replication(r)) = task.spec.as_ref().and_then(|s| s.kind.as_ref())
        && !systems.contains(&r.target_system)
    {
        systems.push(r.target_system.clone());
    }
    systems
}

pub use nasfleet_common::status::run_state_word as state_word;
