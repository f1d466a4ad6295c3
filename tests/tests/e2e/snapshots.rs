//! Snapshots across the fleet: one-time snapshots, listings, periodic snapshot tasks, their validation and retention.

use super::common::*;
use anyhow::{Context, Result, ensure};
use nasfleet_tests::{TestDir, TestPool, ensure_zfs};
use serde_json::Value;
use std::time::Duration;

fn names_in(listing: &Value) -> Vec<String> {
    listing
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn one_time_snapshots_and_listings() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("snap")?;
    let pool = TestPool::create(dir.path(), "snap")?;
    let data = pool.create_dataset("data")?;
    let child = pool.create_dataset("data/child")?;
    let (controller, _agent) = one_system(&dir, &pool, "nas1")?;

    // Default schema manual-%Y-%m-%d_%H-%M, rendered now.
    let created = controller.cli_json(&["snapshot", "create", "nas1", &data])?;
    let first = created["created"][0]
        .as_str()
        .context("created name")?
        .to_owned();
    let (dataset, name) = first.split_once('@').context("full name")?;
    ensure!(dataset == data && name.starts_with("manual-"), "{first}");
    let parsed = chrono::NaiveDateTime::parse_from_str(name, "manual-%Y-%m-%d_%H-%M")
        .with_context(|| format!("{name} does not follow the default schema"))?;
    let age = chrono::Local::now().naive_local() - parsed;
    ensure!(
        age < chrono::Duration::minutes(2) && age > chrono::Duration::minutes(-1),
        "{name}"
    );
    ensure!(pool.snapshots("data")?.contains(&first));

    // Same schema in the same minute: the snapshot exists already.
    let again = cli_error(&controller, &["snapshot", "create", "nas1", &data])?;
    ensure!(again.contains("already exists"), "{again}");
    // Recursive, with a custom schema.
    let rec = controller.cli_json(&[
        "snapshot",
        "create",
        "nas1",
        &data,
        "--recursive",
        "--naming-schema",
        "nightly-%Y%m%d-%H%M",
    ])?;
    let rec_name = rec["created"][0].as_str().context("created")?.to_owned();
    let snap = rec_name.split_once('@').context("full name")?.1.to_owned();
    ensure!(
        pool.snapshots("data/child")?
            .contains(&format!("{child}@{snap}")),
        "child missing {snap}"
    );

    // Refusals, each with its reason, nothing created.
    let before = pool.snapshots("data")?.len();
    let err = cli_error(
        &controller,
        &[
            "snapshot",
            "create",
            "nas1",
            &format!("{}/nope", pool.name()),
        ],
    )?;
    ensure!(err.contains("Dataset not found"), "{err}");
    let err = cli_error(
        &controller,
        &[
            "snapshot",
            "create",
            "nas1",
            &data,
            "--naming-schema",
            "snap-%Y-%m-%d",
        ],
    )?;
    ensure!(
        err.contains("%H must be present in snapshot naming schema"),
        "{err}"
    );
    let err = cli_error(
        &controller,
        &[
            "snapshot",
            "create",
            "nas1",
            &data,
            "--naming-schema",
            "a/%Y%m%d%H%M",
        ],
    )?;
    ensure!(
        err.contains("'/' is not an allowed character in ZFS snapshot name"),
        "{err}"
    );
    ensure!(pool.snapshots("data")?.len() == before);

    // Listing: JSON fields, dataset filter, recursion.
    let listed = controller.cli_json(&["snapshot", "list", "nas1", &data, "--refresh"])?;
    let names = names_in(&listed);
    ensure!(
        names.contains(&first) && names.contains(&rec_name),
        "{listed}"
    );
    ensure!(
        !names.iter().any(|n| n.starts_with(&child)),
        "non-recursive list has children"
    );
    let entry = listed
        .as_array()
        .and_then(|a| a.first())
        .context("an entry")?;
    for field in ["name", "dataset", "guid", "creation"] {
        ensure!(!entry[field].is_null(), "{field} missing in {entry}");
    }
    let guid = str_field(entry, "guid")?;
    let zfs_guid = nasfleet_tests::zfs::get_property(str_field(entry, "name")?, "guid")?;
    ensure!(guid == zfs_guid.trim(), "guid {guid} vs zfs {zfs_guid}");
    let recursive = controller.cli_json(&["snapshot", "list", "nas1", &data, "--recursive"])?;
    ensure!(
        names_in(&recursive)
            .iter()
            .any(|n| n.starts_with(&format!("{child}@")))
    );
    let table = controller.cli_ok(&["snapshot", "list", "nas1", &data])?;
    ensure!(table.contains(&first), "{table}");

    // The explorer view: counts, newest snapshot, covering tasks.
    let task = create_snapshot_task(
        &controller,
        &[
            "--system",
            "nas1",
            "--dataset",
            &data,
            "--recursive",
            "--disabled",
        ],
    )?;
    let datasets = controller.cli_json(&["dataset", "list", "nas1"])?;
    let row = datasets
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == data.as_str()))
        .with_context(|| format!("{data} not in {datasets}"))?;
    ensure!(row["snapshot_count"] == 2, "{row}");
    let child_row = datasets
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == child.as_str()))
        .context("child row")?;
    let covering = string_array(child_row, "snapshot_tasks")?;
    ensure!(
        covering.len() == 1,
        "recursive task should cover the child: {child_row}"
    );
    controller.cli_ok(&["snapshot-task", "delete", &task.to_string(), "--yes"])?;
    Ok(())
}

#[test]
fn snapshot_task_validation_refuses_with_each_message_and_saves_nothing() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("validate")?;
    let pool = TestPool::create(dir.path(), "val")?;
    let data = pool.create_dataset("data")?;
    let (controller, _agent) = one_system(&dir, &pool, "nas1")?;
    let other = format!("{}/other", pool.name());

    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--dataset".into(), format!("{}/missing", pool.name())],
            "Dataset not found",
        ),
        (
            vec![
                "--dataset".into(),
                data.clone(),
                "--exclude".into(),
                format!("{data}/x"),
            ],
            "Excluding datasets is not necessary for non-recursive periodic snapshot tasks",
        ),
        (
            vec![
                "--dataset".into(),
                data.clone(),
                "--recursive".into(),
                "--exclude".into(),
                other,
            ],
            "Excluded dataset should be a child or other descendant of the selected dataset",
        ),
        (
            vec![
                "--dataset".into(),
                data.clone(),
                "--naming-schema".into(),
                "auto-%m-%d_%H-%M".into(),
            ],
            "%Y must be present in snapshot naming schema",
        ),
        (
            vec![
                "--dataset".into(),
                data.clone(),
                "--naming-schema".into(),
                "auto@%Y-%m-%d_%H-%M".into(),
            ],
            "'@' is not an allowed character in ZFS snapshot name",
        ),
        (
            vec![
                "--dataset".into(),
                data.clone(),
                "--lifetime".into(),
                "soon".into(),
            ],
            "lifetime",
        ),
        (
            vec![
                "--dataset".into(),
                data.clone(),
                "--cron".into(),
                "0 24 * * *".into(),
            ],
            "hour",
        ),
        (
            vec![
                "--dataset".into(),
                data.clone(),
                "--cron".into(),
                "0 0 * * *".into(),
                "--schedule".into(),
                "daily".into(),
            ],
            "--schedule",
        ),
    ];
    for (extra, message) in cases {
        let mut args: Vec<&str> = vec!["snapshot-task", "create", "--system", "nas1"];
        args.extend(extra.iter().map(String::as_str));
        let err = cli_error(&controller, &args)?;
        ensure!(err.contains(message), "`{}` said: {err}", args.join(" "));
    }
    let err = cli_error(
        &controller,
        &[
            "snapshot-task",
            "create",
            "--system",
            "ghost",
            "--dataset",
            &data,
        ],
    )?;
    ensure!(err.contains("ghost"), "{err}");
    let listed = controller.cli_ok(&["snapshot-task", "list"])?;
    ensure!(
        listed.contains("No periodic snapshot tasks configured"),
        "{listed}"
    );

    // Defaults as TrueNAS, and edits keep what they do not change.
    let id = create_snapshot_task(&controller, &["--system", "nas1", "--dataset", &data])?;
    let task = controller.cli_json(&["snapshot-task", "show", &id.to_string()])?;
    ensure!(
        task["recursive"] == false && task["lifetime"] == "2w",
        "{task}"
    );
    ensure!(task["naming_schema"] == "auto-%Y-%m-%d_%H-%M", "{task}");
    ensure!(
        task["schedule"] == "0 * * * *" && task["enabled"] == true,
        "{task}"
    );
    ensure!(
        task["status"] == "PENDING" && task["next_run"].is_string(),
        "{task}"
    );
    controller.cli_ok(&[
        "snapshot-task",
        "edit",
        &id.to_string(),
        "--period",
        "weekly",
        "--day",
        "sat",
        "--at",
        "03:30",
    ])?;
    let task = controller.cli_json(&["snapshot-task", "show", &id.to_string()])?;
    ensure!(
        task["schedule"] == "30 3 * * sat" && task["lifetime"] == "2w",
        "{task}"
    );
    controller.cli_ok(&["snapshot-task", "disable", &id.to_string()])?;
    let task = controller.cli_json(&["snapshot-task", "show", &id.to_string()])?;
    ensure!(
        task["enabled"] == false && task["next_run"].is_null(),
        "{task}"
    );
    Ok(())
}

#[test]
fn retention_destroys_exactly_the_expired_snapshots_of_the_task() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("retention")?;
    let pool = TestPool::create(dir.path(), "ret")?;
    let data = pool.create_dataset("data")?;
    let kept_child = pool.create_dataset("data/keep")?;
    pool.create_dataset("data/sub")?;
    pool.create_dataset("sibling")?;
    let (controller, _agent) = one_system(&dir, &pool, "nas1")?;

    let now = chrono::Local::now().naive_local();
    let auto = |t: chrono::NaiveDateTime| t.format("auto-%Y-%m-%d_%H-%M").to_string();
    let expired = auto(now - chrono::Duration::days(10));
    let fresh = auto(now - chrono::Duration::days(2));
    for (dataset, snap) in [
        ("data", expired.as_str()),
        ("data", fresh.as_str()),
        ("data/sub", expired.as_str()),
        // Excluded from the task: never touched.
        ("data/keep", expired.as_str()),
        // Another dataset, another schema, a name the schema does not parse.
        ("sibling", expired.as_str()),
        ("data", "manual-2020-01-01_00-00"),
        ("data", "auto-2020-01-01_00-00-extra"),
    ] {
        pool.snapshot(dataset, snap)?;
    }
    let task = create_snapshot_task(
        &controller,
        &[
            "--system",
            "nas1",
            "--dataset",
            &data,
            "--recursive",
            "--exclude",
            &kept_child,
            "--lifetime",
            "1w",
            "--disabled",
        ],
    )?;
    let run_id = start_task_run(&controller, task)?;
    let run = wait_run_final(&controller, run_id, Duration::from_secs(60))?;
    ensure!(run_state(&run)? == "FINISHED", "{run}");

    let data_left = snapshot_names(&pool, "data")?;
    ensure!(
        !data_left.contains(&expired),
        "expired survived: {data_left:?}"
    );
    for survivor in [
        fresh.as_str(),
        "manual-2020-01-01_00-00",
        "auto-2020-01-01_00-00-extra",
    ] {
        ensure!(
            data_left.iter().any(|n| n == survivor),
            "{survivor} destroyed: {data_left:?}"
        );
    }
    ensure!(
        !snapshot_names(&pool, "data/sub")?.contains(&expired),
        "covered child kept its expired snapshot"
    );
    ensure!(
        snapshot_names(&pool, "data/keep")?.contains(&expired),
        "excluded child lost its snapshot"
    );
    ensure!(
        snapshot_names(&pool, "sibling")?.contains(&expired),
        "sibling lost its snapshot"
    );
    // The run took one new snapshot on the dataset and the covered child, not the excluded one.
    let taken: Vec<String> = data_left
        .iter()
        .filter(|n| n.starts_with("auto-") && **n != fresh && !n.ends_with("-extra"))
        .cloned()
        .collect();
    ensure!(taken.len() == 1, "new snapshots on data: {taken:?}");
    ensure!(snapshot_names(&pool, "data/sub")?.contains(&taken[0]));
    ensure!(!snapshot_names(&pool, "data/keep")?.contains(&taken[0]));
    let steps = run["steps"].as_array().context("steps")?;
    ensure!(steps.len() == 2, "{run}");
    Ok(())
}
