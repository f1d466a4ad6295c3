//! Checking a task spec completely before anything is stored: every field's rule, the systems and datasets it names, and for rsync the checks on the task's own system.

use super::{DEFAULT_LIFETIME, invalid};
use crate::engine::error::FleetError;
use crate::engine::state::SharedState;
use crate::engine::systems::{dataset_exists, inventory_header, require_enrolled};
use nasfleet_common::dataset_names::validate_dataset_name;
use nasfleet_common::duration::{parse_duration, parse_lifetime};
use nasfleet_common::echo::echo;
use nasfleet_common::names::is_below;
use nasfleet_common::naming::NamingSchema;
use nasfleet_common::replication_rules;
use nasfleet_common::rsync_rules;
use nasfleet_common::schedule::Schedule;
use nasfleet_common::status::now_unix_ms;
use nasfleet_proto::v1::{AgentErrorKind, TaskKind};
use nasfleet_proto::v1::{
    ReplicationTaskSpec, RsyncDirection, RsyncMode, RsyncTaskSpec, SnapshotTaskSpec, Task,
    TaskSpec, ValidateRsync, agent_request, task_spec,
};
use std::time::Duration;

/// Host-side checks of an rsync task (incl. --validate-remote-path's 5 s).
const RSYNC_VALIDATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks a spec completely and returns the task to store. Nothing is
/// written here: a refused spec changes nothing.
pub async fn validate(
    state: &SharedState,
    mut spec: TaskSpec,
    existing: Option<&Task>,
) -> Result<Task, FleetError> {
    let (kind, name, default_schedule) = match spec.kind.as_mut() {
        Some(task_spec::Kind::Snapshot(snapshot)) => {
            validate_snapshot(state, snapshot).await?;
            (
                TaskKind::Snapshot,
                format!("{}:{}", snapshot.system, snapshot.dataset),
                Schedule::hourly(),
            )
        }
        Some(task_spec::Kind::Replication(replication)) => {
            validate_replication(state, replication, existing.map(|t| t.id)).await?;
            (
                TaskKind::Replication,
                replication.name.clone(),
                Schedule::weekly(),
            )
        }
        Some(task_spec::Kind::Rsync(rsync)) => {
            validate_rsync(state, rsync).await?;
            let name = if rsync.description.trim().is_empty() {
                format!(
                    "{}:{} {} {}",
                    rsync.system,
                    rsync.path,
                    arrow(rsync),
                    rsync.remote_host
                )
            } else {
                rsync.description.trim().to_owned()
            };
            (TaskKind::Rsync, name, Schedule::hourly())
        }
        None => {
            return Err(invalid("kind", "a task needs a kind (e.g. snapshot)"));
        }
    };
    let schedule = if spec.schedule.trim().is_empty() {
        default_schedule
    } else {
        Schedule::parse(&spec.schedule).map_err(|e| FleetError::invalid_message(&e.to_string()))?
    };
    spec.schedule = schedule.expression().to_owned();
    spec.stale_after = spec.stale_after.trim().to_owned();
    if !spec.stale_after.is_empty() {
        parse_duration("stale_after", &spec.stale_after)
            .map_err(|e| FleetError::invalid_message(&e.to_string()))?;
    }
    // A new task gets its id when it is saved, so checks use up none.
    let (id, created) = match existing {
        Some(task) => (task.id, task.created_unix_ms),
        None => (0, now_unix_ms()),
    };
    Ok(Task {
        id,
        kind: kind.into(),
        name,
        spec: Some(spec),
        schedule: schedule.expression().to_owned(),
        schedule_description: schedule.describe(),
        created_unix_ms: created,
        ..Default::default()
    })
}

async fn validate_snapshot(
    state: &SharedState,
    spec: &mut SnapshotTaskSpec,
) -> Result<(), FleetError> {
    if spec.system.is_empty() {
        return Err(invalid("system", "System is required"));
    }
    require_enrolled(state, "system", &spec.system)?;
    spec.dataset = spec.dataset.trim_end_matches('/').to_owned();
    if spec.dataset.is_empty() {
        return Err(invalid("dataset", "Dataset is required"));
    }
    validate_dataset_name(&spec.dataset).map_err(|e| invalid("dataset", e))?;
    for excluded in &spec.exclude {
        validate_dataset_name(excluded).map_err(|e| invalid("exclude", e))?;
    }
    if spec.naming_schema.is_empty() {
        spec.naming_schema = nasfleet_common::naming::DEFAULT_PERIODIC_SCHEMA.into();
    }
    NamingSchema::new(&spec.naming_schema).map_err(|e| invalid("naming_schema", e))?;
    if spec.lifetime.is_empty() {
        spec.lifetime = DEFAULT_LIFETIME.into();
    }
    parse_lifetime("lifetime", &spec.lifetime)
        .map_err(|e| FleetError::invalid_message(&e.to_string()))?;
    if !spec.exclude.is_empty() && !spec.recursive {
        return Err(invalid(
            "exclude",
            "Excluding datasets is not necessary for non-recursive periodic snapshot tasks",
        ));
    }
    for excluded in &spec.exclude {
        if !is_below(excluded, &spec.dataset) {
            return Err(invalid(
                "exclude",
                "Excluded dataset should be a child or other descendant of the selected dataset",
            ));
        }
    }
    if !dataset_exists(state, &spec.system, &spec.dataset).await? {
        return Err(invalid(
            "dataset",
            format!(
                "Dataset not found: '{}' on system '{}'",
                echo(&spec.dataset),
                spec.system
            ),
        ));
    }
    Ok(())
}

async fn validate_replication(
    state: &SharedState,
    spec: &mut ReplicationTaskSpec,
    own_id: Option<u64>,
) -> Result<(), FleetError> {
    // Every rule that needs no store: the same function the CLI's pre-check calls.
    replication_rules::normalize(spec);
    replication_rules::check_spec(spec).map_err(|e| invalid(e.field(), rule_of(&e)))?;
    let taken =
        state.store.tasks()?.into_iter().any(|t| {
            t.kind() == TaskKind::Replication && t.name == spec.name && Some(t.id) != own_id
        });
    if taken {
        return Err(invalid("name", "Object with this name already exists"));
    }
    require_enrolled(state, "target", &spec.target_system)?;
    let pool = spec.target_dataset.split('/').next().unwrap_or_default();
    let target_pools = inventory_header(state, &spec.target_system)?
        .map(|i| i.pools)
        .unwrap_or_default();
    if !target_pools.iter().any(|p| p.name == pool) {
        return Err(invalid(
            "target",
            format!("Pool '{pool}' not found on system '{}'", spec.target_system),
        ));
    }
    for source in &spec.sources {
        require_enrolled(state, "sources", &source.system)?;
        for dataset in &source.datasets {
            if !dataset_exists(state, &source.system, dataset).await? {
                return Err(invalid(
                    "sources",
                    format!(
                        "Dataset not found: '{}' on system '{}'",
                        echo(dataset),
                        source.system
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A shared rule's message without its `field: ` prefix.
fn rule_of(error: &replication_rules::ReplicationRuleError) -> String {
    let text = error.to_string();
    match text.strip_prefix(&format!("{}: ", error.field())) {
        Some(rule) => rule.to_owned(),
        None => text,
    }
}

fn arrow(spec: &RsyncTaskSpec) -> &'static str {
    match spec.direction() {
        RsyncDirection::Pull => "<-",
        _ => "->",
    }
}

/// Field rules first, then everything that needs the task's host, checked
/// there by its agent (path, user, key, and the remote path when asked).
async fn validate_rsync(state: &SharedState, spec: &mut RsyncTaskSpec) -> Result<(), FleetError> {
    if spec.system.is_empty() {
        return Err(invalid("system", "System is required"));
    }
    require_enrolled(state, "system", &spec.system)?;
    if spec.mode() == RsyncMode::Unspecified {
        spec.set_mode(RsyncMode::Module);
    }
    spec.remote_port = rsync_rules::effective_port(spec);
    // Every rule that needs no host, in the controller whoever calls (the
    // auxiliary allow-list among them, so a task that would hand rsync a
    // program to run or a file to read is never stored); the rest on the
    // task's system.
    rsync_rules::check_fields(spec).map_err(|e| FleetError::invalid_message(&e.to_string()))?;
    let answer = state
        .sessions
        .request(
            &spec.system,
            agent_request::Body::ValidateRsync(ValidateRsync {
                spec: Some(spec.clone()),
            }),
            RSYNC_VALIDATE_TIMEOUT,
        )
        .await
        .map_err(|e| {
            FleetError::Conflict(format!(
                "system: {e}; rsync tasks are checked on their system"
            ))
        })?;
    if !answer.error.is_empty() {
        return Err(match answer.error_kind() {
            // The agent words its refusals as `field: rule`.
            AgentErrorKind::Invalid => FleetError::invalid_message(&answer.error),
            AgentErrorKind::TimedOut => FleetError::TimedOut(answer.error),
            AgentErrorKind::AlreadyExists | AgentErrorKind::Unspecified => {
                FleetError::Conflict(answer.error)
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fixtures::{enroll, inventory_of};
    use crate::engine::state::test_state;

    /// A state with nas1 owning `tank/data` and its child `tank/data/tmp`.
    async fn fleet(dir: &std::path::Path) -> SharedState {
        let state = test_state(dir);
        enroll(
            &state,
            "nas1",
            &inventory_of(&["tank", "tank/data", "tank/data/tmp"], Vec::new()),
        )
        .await;
        state
    }

    fn snapshot_task(edit: impl FnOnce(&mut SnapshotTaskSpec)) -> TaskSpec {
        let mut spec = SnapshotTaskSpec {
            system: "nas1".into(),
            dataset: "tank/data".into(),
            ..Default::default()
        };
        edit(&mut spec);
        TaskSpec {
            kind: Some(task_spec::Kind::Snapshot(spec)),
            enabled: true,
            ..Default::default()
        }
    }

    /// The field and rule of a refusal; anything else fails the test.
    fn refusal(result: Result<Task, FleetError>) -> (String, String) {
        match result {
            Err(FleetError::Invalid { field, rule }) => (field, rule),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_valid_snapshot_task_gets_truenas_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let state = fleet(dir.path()).await;
        let task = validate(&state, snapshot_task(|_| {}), None).await.unwrap();
        assert_eq!(
            (task.kind(), task.name.as_str()),
            (TaskKind::Snapshot, "nas1:tank/data")
        );
        assert_eq!(task.schedule, Schedule::hourly().expression());
        let Some(task_spec::Kind::Snapshot(spec)) = task.spec.and_then(|s| s.kind) else {
            panic!("not a snapshot task");
        };
        assert_eq!(spec.naming_schema, "auto-%Y-%m-%d_%H-%M");
        assert_eq!(spec.lifetime, DEFAULT_LIFETIME);
    }

    #[tokio::test]
    async fn every_snapshot_task_rule_names_its_field() {
        let dir = tempfile::tempdir().unwrap();
        let state = fleet(dir.path()).await;
        let cases: Vec<(TaskSpec, &str, &str)> = vec![
            (
                snapshot_task(|s| s.system.clear()),
                "system",
                "System is required",
            ),
            (
                snapshot_task(|s| s.system = "nas9".into()),
                "system",
                "System 'nas9' is not enrolled",
            ),
            (
                snapshot_task(|s| s.dataset = "/".into()),
                "dataset",
                "Dataset is required",
            ),
            (
                snapshot_task(|s| s.dataset = "tank/../etc".into()),
                "dataset",
                "dataset name 'tank/../etc' has a '.' or '..' component",
            ),
            (
                snapshot_task(|s| s.naming_schema = "no-date".into()),
                "naming_schema",
                "",
            ),
            (
                snapshot_task(|s| s.lifetime = "forever".into()),
                "lifetime",
                "",
            ),
            (
                snapshot_task(|s| s.exclude = vec!["tank/data/tmp".into()]),
                "exclude",
                "Excluding datasets is not necessary for non-recursive periodic snapshot tasks",
            ),
            (
                snapshot_task(|s| {
                    s.recursive = true;
                    s.exclude = vec!["tank/other".into()];
                }),
                "exclude",
                "Excluded dataset should be a child or other descendant of the selected dataset",
            ),
            (
                snapshot_task(|s| s.dataset = "tank/gone".into()),
                "dataset",
                "Dataset not found: 'tank/gone' on system 'nas1'",
            ),
            (
                TaskSpec {
                    schedule: "61 * * * *".into(),
                    ..snapshot_task(|_| {})
                },
                "schedule",
                "",
            ),
            (
                TaskSpec::default(),
                "kind",
                "a task needs a kind (e.g. snapshot)",
            ),
        ];
        for (spec, field, rule) in cases {
            let (got_field, got_rule) = refusal(validate(&state, spec, None).await);
            assert_eq!(got_field, field, "{got_rule}");
            assert!(got_rule.starts_with(rule), "{field}: {got_rule}");
        }
    }

    fn rsync_task(edit: impl FnOnce(&mut RsyncTaskSpec)) -> TaskSpec {
        let mut spec = RsyncTaskSpec {
            system: "nas1".into(),
            path: "/tank/data".into(),
            user: "root".into(),
            remote_host: "127.0.0.1".into(),
            remote_module: "backup".into(),
            ..Default::default()
        };
        spec.set_direction(RsyncDirection::Push);
        edit(&mut spec);
        TaskSpec {
            kind: Some(task_spec::Kind::Rsync(spec)),
            enabled: true,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn rsync_tasks_are_refused_in_the_controller_before_their_system_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let state = fleet(dir.path()).await;
        let cases: Vec<(TaskSpec, &str, &str)> = vec![
            (
                rsync_task(|s| s.system.clear()),
                "system",
                "System is required",
            ),
            (
                rsync_task(|s| s.system = "nas9".into()),
                "system",
                "System 'nas9' is not enrolled",
            ),
            (
                rsync_task(|s| s.auxiliary = vec!["-ave/tmp/x.sh".into()]),
                "auxiliary",
                "",
            ),
            (rsync_task(|s| s.path = "tank/data".into()), "path", ""),
            (
                rsync_task(|s| s.remote_host.clear()),
                "remote_host",
                "Remote host is required",
            ),
            (
                rsync_task(|s| s.remote_port = 70_000),
                "remote_port",
                "Port must be between 1 and 65535",
            ),
        ];
        for (spec, field, rule) in cases {
            let (got_field, got_rule) = refusal(validate(&state, spec, None).await);
            assert_eq!(got_field, field, "{got_rule}");
            assert!(got_rule.starts_with(rule), "{field}: {got_rule}");
        }
        // Everything else is checked on the task's system, which is offline here.
        let offline = validate(&state, rsync_task(|_| {}), None).await;
        assert!(
            matches!(&offline, Err(FleetError::Conflict(m)) if m.contains("rsync tasks are checked on their system")),
            "{offline:?}"
        );
    }

    fn replication_task(edit: impl FnOnce(&mut ReplicationTaskSpec)) -> TaskSpec {
        let mut spec = ReplicationTaskSpec {
            name: "offsite".into(),
            sources: vec![nasfleet_proto::v1::ReplicationSource {
                system: "nas1".into(),
                datasets: vec!["tank/data/".into()],
                ..Default::default()
            }],
            target_system: "nas1".into(),
            target_dataset: "tank/backup".into(),
            ..Default::default()
        };
        edit(&mut spec);
        TaskSpec {
            kind: Some(task_spec::Kind::Replication(spec)),
            enabled: true,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn replication_rules_shared_with_the_cli_then_the_store_backed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let state = fleet(dir.path()).await;
        let task = validate(&state, replication_task(|_| {}), None)
            .await
            .unwrap();
        assert_eq!(task.schedule, Schedule::weekly().expression());
        let Some(task_spec::Kind::Replication(spec)) = task.spec.and_then(|s| s.kind) else {
            panic!("not a replication task");
        };
        // Normalised as the CLI does: trailing '/', default schema.
        assert_eq!(spec.sources[0].datasets, vec!["tank/data".to_owned()]);
        assert_eq!(
            spec.sources[0].naming_schemas,
            vec!["auto-%Y-%m-%d_%H-%M".to_owned()]
        );

        let cases: Vec<(TaskSpec, &str, &str)> = vec![
            (replication_task(|s| s.name = " ".into()), "name", ""),
            (
                replication_task(|s| s.target_dataset = "$(touch x)".into()),
                "target",
                "",
            ),
            (
                replication_task(|s| s.target_dataset = "tank/data/inner".into()),
                "target",
                "",
            ),
            (
                replication_task(|s| s.target_system = "nas9".into()),
                "target",
                "System 'nas9' is not enrolled",
            ),
            (
                replication_task(|s| s.target_dataset = "other/backup".into()),
                "target",
                "Pool 'other' not found on system 'nas1'",
            ),
            (
                replication_task(|s| s.sources[0].datasets = vec!["tank/gone".into()]),
                "sources",
                "Dataset not found: 'tank/gone' on system 'nas1'",
            ),
        ];
        for (spec, field, rule) in cases {
            let (got_field, got_rule) = refusal(validate(&state, spec, None).await);
            assert_eq!(got_field, field, "{got_rule}");
            assert!(got_rule.starts_with(rule), "{field}: {got_rule}");
            assert!(
                !got_rule.starts_with(&format!("{field}:")),
                "field named twice: {got_rule}"
            );
        }

        // A name is taken by another replication task, not by the task itself.
        let mut stored = validate(&state, replication_task(|_| {}), None)
            .await
            .unwrap();
        stored.id = 5;
        crate::engine::fixtures::store(&state, vec![stored.clone()], Vec::new()).await;
        let (field, rule) = refusal(validate(&state, replication_task(|_| {}), None).await);
        assert_eq!(
            (field.as_str(), rule.as_str()),
            ("name", "Object with this name already exists")
        );
        assert!(
            validate(&state, replication_task(|_| {}), Some(&stored))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_bandwidth_limit_out_of_range_is_refused_on_create_and_edit() {
        let dir = tempfile::tempdir().unwrap();
        let state = fleet(dir.path()).await;
        let mut stored = validate(&state, replication_task(|_| {}), None)
            .await
            .unwrap();
        stored.id = 5;
        crate::engine::fixtures::store(&state, vec![stored.clone()], Vec::new()).await;
        // Straight from the wire, as a client without the CLI's pre-check sends it.
        for limit in [1, 65_535, (1 << 40) + 1, u64::MAX] {
            for existing in [None, Some(&stored)] {
                let spec = replication_task(|s| {
                    s.name = "limited".into();
                    s.bandwidth_limit = limit;
                });
                let (field, rule) = refusal(validate(&state, spec, existing).await);
                assert_eq!(field, "bandwidth_limit", "{limit}: {rule}");
                assert_eq!(
                    rule,
                    format!(
                        "{limit} bytes per second is out of range; the limit must be {}",
                        replication_rules::bandwidth_limit_rule()
                    )
                );
            }
        }
        // No limit, the bounds and no_raw are kept as given.
        for limit in [0, 65_536, 50 << 20, 1 << 40] {
            let spec = replication_task(|s| {
                s.bandwidth_limit = limit;
                s.no_raw = true;
            });
            let task = validate(&state, spec, Some(&stored)).await.unwrap();
            let Some(task_spec::Kind::Replication(spec)) = task.spec.and_then(|s| s.kind) else {
                panic!("not a replication task");
            };
            assert_eq!((spec.bandwidth_limit, spec.no_raw), (limit, true));
        }
    }
}
