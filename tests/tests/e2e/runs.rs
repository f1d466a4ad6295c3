//! Runs: dispatch, live watching, cancellation, offline systems, scheduled fires, and a controller killed mid-run.

use super::common::*;
use anyhow::{Context, Result, ensure};
use nasfleet_tests::{TestDir, TestPool, ensure_zfs, wait_for_status, wait_until};
use serde_json::Value;
use std::time::Duration;

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Waits until the run has logged at least one destroyed snapshot, i.e. is
/// in the middle of its retention step.
fn wait_mid_retention(controller: &nasfleet_tests::Controller, run_id: u64) -> Result<()> {
    wait_until(Duration::from_secs(60), Duration::from_millis(50), || {
        let run = run_json(controller, run_id)?;
        let destroying = run["log_tail"].as_array().is_some_and(|l| {
            l.iter()
                .any(|line| line.as_str().is_some_and(|s| s.contains("destroyed")))
        });
        Ok(destroying && run_state(&run)? == "RUNNING")
    })
    .context("run never got into its retention step")
}

#[test]
fn controller_killed_mid_run_restarts_and_the_run_ends_with_its_true_outcome() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("crash")?;
    let pool = TestPool::create(dir.path(), "crash")?;
    let data = pool.create_dataset("data")?;
    // Enough expired snapshots that retention takes seconds on zfs-fuse.
    let expired = old_auto_snapshots(&pool, "data", 400)?;
    let (mut controller, _agent) = one_system(&dir, &pool, "nas1")?;
    // Disabled: only the manual run may happen, whatever the clock does meanwhile.
    let task = create_snapshot_task(
        &controller,
        &[
            "--system",
            "nas1",
            "--dataset",
            &data,
            "--lifetime",
            "1w",
            "--disabled",
        ],
    )?;

    let run_id = start_task_run(&controller, task)?;
    wait_mid_retention(&controller, run_id)?;
    controller.kill()?;
    // The agent keeps working without its controller.
    std::thread::sleep(Duration::from_secs(3));
    controller.start()?;

    let run = wait_run_final(&controller, run_id, RUN_TIMEOUT)?;
    ensure!(run_state(&run)? == "FINISHED", "run ended {run}");
    // Its true outcome: every expired snapshot gone, exactly one new one.
    let left = snapshot_names(&pool, "data")?;
    ensure!(
        left.iter().all(|n| !expired.contains(n)),
        "expired survive: {left:?}"
    );
    ensure!(
        left.len() == 1 && left[0].starts_with("auto-"),
        "left: {left:?}"
    );
    // No duplicate run was started, by the restart or by the scheduler.
    let runs = controller.cli_json(&["run", "list", "--task", &task.to_string()])?;
    let ids: Vec<u64> = runs
        .as_array()
        .context("run list is an array")?
        .iter()
        .filter_map(|r| r["id"].as_u64())
        .collect();
    ensure!(ids == vec![run_id], "runs of the task: {runs}");
    let task_json = controller.cli_json(&["snapshot-task", "show", &task.to_string()])?;
    ensure!(task_json["status"] == "FINISHED", "{task_json}");
    Ok(())
}

#[test]
fn cancel_kills_the_work_and_watch_reports_live_and_final_state() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("cancel")?;
    let pool = TestPool::create(dir.path(), "cancel")?;
    let data = pool.create_dataset("data")?;
    let expired = old_auto_snapshots(&pool, "data", 300)?;
    let (controller, _agent) = one_system(&dir, &pool, "nas1")?;
    let task = create_snapshot_task(
        &controller,
        &["--system", "nas1", "--dataset", &data, "--disabled"],
    )?;

    // Watch in the background while the run works, then cancel it.
    let run_id = start_task_run(&controller, task)?;
    let mut watch = controller.cli_command(&["run", "watch", &run_id.to_string()])?;
    let watcher = std::thread::spawn(move || watch.output());
    wait_mid_retention(&controller, run_id)?;
    let cancelled = controller.cli_json(&["run", "cancel", &run_id.to_string()])?;
    ensure!(cancelled["id"] == run_id, "{cancelled}");

    let run = wait_run_final(&controller, run_id, RUN_TIMEOUT)?;
    ensure!(run_state(&run)? == "FAILED", "{run}");
    ensure!(str_field(&run, "reason")? == "Cancelled by admin", "{run}");
    // Cancelled part-way: some expired snapshots destroyed, not all.
    let left = snapshot_names(&pool, "data")?;
    let survivors = expired.iter().filter(|n| left.contains(n)).count();
    ensure!(
        survivors > 0 && survivors < expired.len(),
        "{survivors} of {} survive",
        expired.len()
    );

    let watched = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("watch thread panicked"))??;
    let stdout = String::from_utf8_lossy(&watched.stdout);
    let stderr = String::from_utf8_lossy(&watched.stderr);
    ensure!(!watched.status.success(), "watch of a failed run exited 0");
    ensure!(
        stdout.contains("destroyed expired snapshot"),
        "watch showed no live lines:\n{stdout}"
    );
    ensure!(
        stderr.contains("Cancelled by admin"),
        "watch stderr: {stderr}"
    );
    // A second cancel is refused: the run is over.
    let err = cli_error(&controller, &["run", "cancel", &run_id.to_string()])?;
    ensure!(err.contains("already ended"), "{err}");

    // A successful run watched from the start exits 0. The watch lasts as
    // long as the run (hundreds of destroys), not as long as a CLI call.
    let run_id = start_task_run(&controller, task)?;
    let mut watch = controller.cli_command(&["run", "watch", &run_id.to_string()])?;
    let out = nasfleet_tests::run_output(&mut watch, RUN_TIMEOUT)?;
    ensure!(
        out.status.success(),
        "watch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn runs_fail_with_actionable_reasons_and_scheduled_tasks_fire() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("reasons")?;
    let pool = TestPool::create(dir.path(), "reasons")?;
    let data = pool.create_dataset("data")?;
    let gone = pool.create_dataset("gone")?;
    let (controller, mut agent) = one_system(&dir, &pool, "nas1")?;

    // Every minute: the scheduler must fire it within about a minute.
    let every_minute = create_snapshot_task(
        &controller,
        &[
            "--system",
            "nas1",
            "--dataset",
            &data,
            "--cron",
            "* * * * *",
        ],
    )?;
    let doomed = create_snapshot_task(
        &controller,
        &["--system", "nas1", "--dataset", &gone, "--disabled"],
    )?;
    destroy_recursively(&gone)?;
    let run_id = start_task_run(&controller, doomed)?;
    let run = wait_run_final(&controller, run_id, RUN_TIMEOUT)?;
    ensure!(run_state(&run)? == "FAILED", "{run}");
    ensure!(
        str_field(&run, "reason")?.contains("Dataset not found"),
        "{run}"
    );
    let listed = controller.cli_json(&["snapshot-task", "show", &doomed.to_string()])?;
    ensure!(listed["status"] == "FAILED", "{listed}");
    ensure!(
        str_field(&listed, "last_error")?.contains("Dataset not found"),
        "{listed}"
    );

    let mut scheduled: Option<Value> = None;
    wait_until(Duration::from_secs(75), Duration::from_millis(500), || {
        let runs = controller.cli_json(&["run", "list", "--task", &every_minute.to_string()])?;
        scheduled = runs.as_array().and_then(|r| r.first().cloned());
        Ok(scheduled.is_some())
    })
    .context("the every-minute task never fired")?;
    let fired = scheduled.context("a scheduled run")?;
    ensure!(fired["trigger"] == "scheduled", "{fired}");
    let fired = wait_run_final(
        &controller,
        fired["id"].as_u64().context("id")?,
        RUN_TIMEOUT,
    )?;
    ensure!(run_state(&fired)? == "FINISHED", "{fired}");
    // The snapshot is named after the minute it was due, under the default schema.
    let names = snapshot_names(&pool, "data")?;
    ensure!(
        names.len() == 1 && names[0].starts_with("auto-"),
        "{names:?}"
    );

    // A run for an OFFLINE system fails at once, with the system named.
    controller.cli_ok(&["snapshot-task", "disable", &every_minute.to_string()])?;
    agent.stop()?;
    wait_for_status(&controller, "nas1", "OFFLINE", STATUS_TIMEOUT)?;
    let run = controller.cli_json(&["snapshot-task", "run", &every_minute.to_string()])?;
    ensure!(run_state(&run)? == "FAILED", "{run}");
    ensure!(
        str_field(&run, "reason")? == "System 'nas1' is offline",
        "{run}"
    );
    Ok(())
}
