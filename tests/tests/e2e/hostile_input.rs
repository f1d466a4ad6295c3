//! Hostile input straight at the controller's API (no CLI pre-checks): dataset names and bandwidth limits checked at create, echoes bounded, system names unique regardless of case.

use super::common::*;
use anyhow::{Context, Result, ensure};
use nasfleet_common::dial::{ClientIdentity, DialOptions, ServerTrust, dial};
use nasfleet_proto::v1::fleet_client::FleetClient;
use nasfleet_proto::v1::{
    CreateSnapshotRequest, ReplicationSource, ReplicationTaskSpec, SnapshotTaskSpec, TaskSpec,
    task_spec,
};
use nasfleet_tests::{Agent, Controller, TestDir, TestPool, ensure_zfs};

/// Sends each spec to CreateTask as the admin and returns the refusals.
fn create_as_admin(controller: &Controller, specs: Vec<TaskSpec>) -> Result<Vec<tonic::Status>> {
    let ca = std::fs::read(controller.data_dir().join("ca.crt"))?;
    let admin = ClientIdentity {
        cert_pem: std::fs::read(controller.data_dir().join("admin.crt"))?,
        key_pem: std::fs::read(controller.data_dir().join("admin.key"))?,
    };
    runtime()?.block_on(async {
        let channel = dial(
            controller.url(),
            &ServerTrust::CaPem(ca),
            Some(&admin),
            &DialOptions::default(),
        )
        .await?;
        let mut client = FleetClient::new(channel);
        let mut refusals = Vec::new();
        for spec in specs {
            match client.create_task(spec).await {
                Ok(task) => anyhow::bail!("accepted: {:?}", task.into_inner()),
                Err(status) => refusals.push(status),
            }
        }
        // A manual snapshot of a hostile dataset name.
        let status = client
            .create_snapshot(CreateSnapshotRequest {
                system: "nas1".into(),
                dataset: "tank/../etc".into(),
                ..Default::default()
            })
            .await
            .err()
            .context("a snapshot of 'tank/../etc' was accepted")?;
        refusals.push(status);
        Ok(refusals)
    })
}

fn snapshot_spec(dataset: &str) -> TaskSpec {
    TaskSpec {
        kind: Some(task_spec::Kind::Snapshot(SnapshotTaskSpec {
            system: "nas1".into(),
            dataset: dataset.into(),
            ..Default::default()
        })),
        enabled: true,
        ..Default::default()
    }
}

fn replication_spec(source_dataset: &str, target_dataset: &str) -> TaskSpec {
    TaskSpec {
        kind: Some(task_spec::Kind::Replication(ReplicationTaskSpec {
            name: "hostile".into(),
            sources: vec![ReplicationSource {
                system: "nas1".into(),
                datasets: vec![source_dataset.into()],
                ..Default::default()
            }],
            target_system: "nas1".into(),
            target_dataset: target_dataset.into(),
            ..Default::default()
        })),
        enabled: true,
        ..Default::default()
    }
}

/// The spec with a bandwidth limit the CLI would have refused.
fn limited(mut spec: TaskSpec, bytes_per_second: u64) -> TaskSpec {
    if let Some(task_spec::Kind::Replication(r)) = spec.kind.as_mut() {
        r.bandwidth_limit = bytes_per_second;
    }
    spec
}

#[test]
fn the_controller_refuses_hostile_dataset_names_and_echoes_at_most_100_characters() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("hostile")?;
    let pool = TestPool::create(dir.path(), "hostile")?;
    pool.create_dataset("data")?;
    let (controller, _agent) = one_system(&dir, &pool, "nas1")?;
    let data = format!("{}/data", pool.name());
    let huge = format!("{}/{}", pool.name(), "x".repeat(1_000_000));
    let refusals = create_as_admin(
        &controller,
        vec![
            replication_spec(&data, "$(touch x)"),
            replication_spec(&data, &format!("{}/a/../b", pool.name())),
            replication_spec(&format!("{data}/;id"), &format!("{}/backup", pool.name())),
            limited(
                replication_spec(&data, &format!("{}/backup", pool.name())),
                1,
            ),
            snapshot_spec("-rf"),
            snapshot_spec(&huge),
        ],
    )?;
    let fields = [
        "target",
        "target",
        "sources",
        "bandwidth_limit",
        "dataset",
        "dataset",
        "dataset",
    ];
    for (status, field) in refusals.iter().zip(fields) {
        ensure!(
            status.code() == tonic::Code::InvalidArgument,
            "{field}: {status:?}"
        );
        ensure!(
            status.message().starts_with(&format!("{field}: ")),
            "the refusal names the field {field}: {}",
            status.message()
        );
        ensure!(
            status.message().len() < 400,
            "the refusal echoes too much ({} bytes)",
            status.message().len()
        );
    }
    ensure!(
        refusals[3]
            .message()
            .contains("1 bytes per second is out of range"),
        "{}",
        refusals[3].message()
    );
    ensure!(
        refusals[5].message().contains("more characters"),
        "{}",
        refusals[5].message()
    );
    // Nothing was stored.
    let tasks = controller.cli_json(&["snapshot-task", "list"])?;
    ensure!(
        tasks.as_array().is_some_and(Vec::is_empty),
        "tasks stored: {tasks}"
    );
    Ok(())
}

#[test]
fn a_system_name_differing_only_in_case_is_taken() -> Result<()> {
    let dir = TestDir::new("case")?;
    let mut controller = Controller::init(dir.path())?;
    controller.start()?;
    Agent::join(&controller, "nas1")?;
    let token = controller.create_token()?;
    let refused = Agent::join_with_token(&controller, "NAS1", &token)
        .err()
        .context("NAS1 was enrolled beside nas1")?;
    ensure!(
        format!("{refused:#}").contains("'nas1' is already enrolled"),
        "{refused:#}"
    );
    // The refusal did not burn the token.
    Agent::join_with_token(&controller, "nas2", &token)?;
    Ok(())
}
