//! Who may do what: the person (or system) behind a call, their role and the systems they see, and the checks every engine entry makes with them, whatever the transport (gRPC today, the web console next).

use crate::engine::error::FleetError;
use crate::engine::kinds::systems_named;
use nasfleet_common::roles::Role;
use nasfleet_proto::v1::Task;
use std::collections::BTreeSet;

/// What a call does, and so which role it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Look at systems, datasets, snapshots, tasks, runs and connections.
    Read,
    /// Change or run the fleet's tasks and take snapshots.
    Operate,
    /// Manage the fleet itself: users, join tokens, system removal, SSH
    /// trust, the audit log.
    Administer,
}

impl Access {
    /// The least role that may make calls of this access.
    pub fn needs(self) -> Role {
        match self {
            Access::Read => Role::Viewer,
            Access::Operate => Role::Operator,
            Access::Administer => Role::Admin,
        }
    }
}

/// The systems a person sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Systems(BTreeSet<String>),
}

/// Who makes a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Person {
        name: String,
        role: Role,
        scope: Scope,
    },
    /// The controller itself: the scheduler, start-up recovery.
    Controller,
}

impl Actor {
    /// How the audit log and a run's "started by" name the actor.
    pub fn label(&self) -> String {
        match self {
            Actor::Person { name, .. } => format!("user:{name}"),
            Actor::Controller => "controller".to_owned(),
        }
    }

    /// The person's name, or `controller`.
    pub fn name(&self) -> &str {
        match self {
            Actor::Person { name, .. } => name,
            Actor::Controller => "controller",
        }
    }

    /// Refuses a call of `access` the actor's role does not allow, naming
    /// the role it needs.
    pub fn require(&self, access: Access) -> Result<(), FleetError> {
        match self {
            Actor::Controller => Ok(()),
            Actor::Person { name, role, .. } if *role < access.needs() => {
                Err(FleetError::PermissionDenied(format!(
                    "this needs the {} role; user '{name}' is {} {role}",
                    access.needs(),
                    article(*role)
                )))
            }
            Actor::Person { .. } => Ok(()),
        }
    }

    /// Whether the actor sees `system` at all.
    pub fn sees(&self, system: &str) -> bool {
        match self {
            Actor::Controller
            | Actor::Person {
                scope: Scope::All, ..
            } => true,
            Actor::Person {
                scope: Scope::Systems(systems),
                ..
            } => systems.contains(system),
        }
    }

    /// Whether the actor sees every one of `systems` (a task is an
    /// operator's only when all its systems are).
    pub fn sees_all<'a>(&self, mut systems: impl Iterator<Item = &'a str>) -> bool {
        systems.all(|s| self.sees(s))
    }

    /// Whether the actor sees `task`: every system it names is theirs (so
    /// a replication task is an operator's when all its sources and its
    /// target are).
    pub fn sees_task(&self, task: &Task) -> bool {
        self.sees_all(systems_named(task).iter().map(String::as_str))
    }

    /// `system`, as a lookup answers one the actor does not see: not found,
    /// so that a scoped user cannot learn which names exist.
    pub fn system_visible(&self, system: &str) -> Result<(), FleetError> {
        if self.sees(system) {
            Ok(())
        } else {
            Err(not_found_system(system))
        }
    }
}

/// The answer to a lookup of a system that does not exist, or that the
/// caller does not see: the same words for both.
pub fn not_found_system(system: &str) -> FleetError {
    FleetError::NotFound(format!(
        "system '{}' is not enrolled",
        nasfleet_common::echo::echo(system)
    ))
}

fn article(role: Role) -> &'static str {
    match role {
        Role::Admin | Role::Operator => "an",
        Role::Viewer => "a",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn person(role: Role, systems: &[&str]) -> Actor {
        Actor::Person {
            name: "ann".into(),
            role,
            scope: if systems.is_empty() {
                Scope::All
            } else {
                Scope::Systems(systems.iter().map(|s| (*s).to_owned()).collect())
            },
        }
    }

    #[test]
    fn each_role_includes_the_ones_below_and_refusals_name_the_role_needed() {
        let table = [
            (Role::Viewer, [true, false, false]),
            (Role::Operator, [true, true, false]),
            (Role::Admin, [true, true, true]),
        ];
        for (role, allowed) in table {
            let actor = person(role, &[]);
            for (access, ok) in [Access::Read, Access::Operate, Access::Administer]
                .into_iter()
                .zip(allowed)
            {
                assert_eq!(actor.require(access).is_ok(), ok, "{role} {access:?}");
            }
        }
        let err = person(Role::Viewer, &[])
            .require(Access::Operate)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "this needs the operator role; user 'ann' is a viewer"
        );
        let err = person(Role::Operator, &[])
            .require(Access::Administer)
            .unwrap_err();
        assert!(
            matches!(err, FleetError::PermissionDenied(m) if m.contains("needs the admin role; user 'ann' is an operator"))
        );
        assert!(Actor::Controller.require(Access::Administer).is_ok());
    }

    #[test]
    fn a_scoped_person_sees_only_their_systems_and_others_are_not_found() {
        let scoped = person(Role::Operator, &["nas1", "nas2"]);
        assert!(scoped.sees("nas1") && !scoped.sees("nas3"));
        assert!(scoped.sees_all(["nas1", "nas2"].into_iter()));
        assert!(!scoped.sees_all(["nas1", "nas3"].into_iter()));
        assert!(matches!(
            scoped.system_visible("nas3"),
            Err(FleetError::NotFound(m)) if m == "system 'nas3' is not enrolled"
        ));
        assert!(person(Role::Viewer, &[]).sees("anything"));
        assert!(Actor::Controller.sees("anything"));
    }
}

/// What a person scoped to some systems sees through each engine entry:
/// the test matrix of the scope rule on the domain layer.
#[cfg(test)]
mod scope_matrix {
    use super::tests::person;
    use super::*;
    use crate::engine::fixtures::store;
    use crate::engine::state::test_state;
    use crate::engine::{runs, systems, tasks};
    use nasfleet_proto::v1::{
        ReplicationSource, ReplicationTaskSpec, Run, SnapshotTaskSpec, TaskKind, TaskSpec,
        task_spec,
    };

    fn snapshot_task(id: u64, system: &str) -> Task {
        Task {
            id,
            name: format!("{system}:tank"),
            kind: TaskKind::Snapshot as i32,
            spec: Some(TaskSpec {
                kind: Some(task_spec::Kind::Snapshot(SnapshotTaskSpec {
                    system: system.into(),
                    dataset: "tank".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn replication_task(id: u64, source: &str, target: &str) -> Task {
        Task {
            id,
            name: format!("to-{target}"),
            kind: TaskKind::Replication as i32,
            spec: Some(TaskSpec {
                kind: Some(task_spec::Kind::Replication(ReplicationTaskSpec {
                    name: format!("to-{target}"),
                    sources: vec![ReplicationSource {
                        system: source.into(),
                        datasets: vec!["tank".into()],
                        ..Default::default()
                    }],
                    target_system: target.into(),
                    target_dataset: "backup".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_scoped_person_sees_only_what_names_their_systems_and_the_rest_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let state = test_state(dir.path());
        store(
            &state,
            vec![
                snapshot_task(1, "nas1"),
                snapshot_task(2, "nas2"),
                // nas1 to nas2: names a system ann does not see.
                replication_task(3, "nas1", "nas2"),
            ],
            vec![("nas1", None), ("nas2", None)],
        )
        .await;
        for (n, task_id) in [(10u64, 1u64), (11, 2)] {
            let run = Run {
                id: n,
                task_id,
                system: if task_id == 1 { "nas1" } else { "nas2" }.into(),
                ..Default::default()
            };
            state.store.write(move |w| w.put_run(&run)).await.unwrap();
        }

        for role in [Role::Viewer, Role::Operator] {
            let ann = person(role, &["nas1"]);
            let listed: Vec<String> = systems::list(&state, &ann)
                .unwrap()
                .into_iter()
                .map(|s| s.name)
                .collect();
            assert_eq!(listed, ["nas1"], "{role}");
            let hidden = systems::detail(&state, &ann, "nas2", false)
                .await
                .unwrap_err();
            assert_eq!(hidden.to_string(), "system 'nas2' is not enrolled");
            let ids: Vec<u64> = tasks::list(&state, &ann, TaskKind::Unspecified)
                .unwrap()
                .iter()
                .map(|t| t.id)
                .collect();
            assert_eq!(ids, [1], "{role}");
            for (id, words) in [
                ("2", "task 2 does not exist"),
                ("3", "task 3 does not exist"),
            ] {
                let err = tasks::get(&state, &ann, id).unwrap_err();
                assert!(
                    matches!(&err, FleetError::NotFound(m) if m == words),
                    "{err}"
                );
            }
            let err = tasks::get(&state, &ann, "nas2:tank").unwrap_err();
            assert_eq!(err.to_string(), "task 'nas2:tank' does not exist");
            let runs: Vec<u64> = tasks::history(&state, &ann, "", 10)
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect();
            assert_eq!(runs, [10], "{role}");
            // The limit counts what she sees: run 11 is newer but not hers.
            let newest = tasks::history(&state, &ann, "", 1).unwrap();
            assert_eq!(newest.iter().map(|r| r.id).collect::<Vec<_>>(), [10]);
            assert!(runs::get(&state, &ann, 11).is_err());
            assert!(runs::get(&state, &ann, 10).is_ok());
            // A new task naming nas2 is refused like one naming no system at all.
            let spec = snapshot_task(0, "nas2").spec.unwrap();
            let err = tasks::check(&state, &ann, "", Some(spec))
                .await
                .unwrap_err();
            assert_eq!(err.to_string(), "system: System 'nas2' is not enrolled");
        }
        // All systems, or admin: everything.
        for everyone in [person(Role::Viewer, &[]), person(Role::Admin, &[])] {
            assert_eq!(systems::list(&state, &everyone).unwrap().len(), 2);
            assert_eq!(
                tasks::list(&state, &everyone, TaskKind::Unspecified)
                    .unwrap()
                    .len(),
                3
            );
            assert_eq!(tasks::history(&state, &everyone, "", 10).unwrap().len(), 2);
        }
        // The replication task is an operator's only with both its systems.
        let both = person(Role::Operator, &["nas1", "nas2"]);
        assert!(tasks::get(&state, &both, "3").is_ok());
    }
}
