//! How replication streams travel: many snapshots in one `-I` stream and a bandwidth cap (both ZFS tiers); raw sends of encrypted datasets and the bookmark cursor (OpenZFS; zfs-fuse has neither, and those tests say so).

use super::common::*;
use super::replication::{RUN_TIMEOUT, create_replication, holds_on, pair, replication_run};
use anyhow::{Context, Result, ensure};
use nasfleet_tests::{ensure_zfs, is_openzfs};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// `dd if=/dev/urandom` of `mib` MiB into `dir/name`.
fn random_file(dir: &Path, name: &str, mib: u64) -> Result<()> {
    nasfleet_tests::run_ok(
        std::process::Command::new("dd")
            .arg("if=/dev/urandom")
            .arg(format!("of={}", dir.join(name).display()))
            .args(["bs=1M", &format!("count={mib}"), "status=none"]),
    )
    .map(drop)
}

fn mountpoint(dataset: &str) -> Result<std::path::PathBuf> {
    nasfleet_tests::zfs::mounted_at(dataset)
}

/// The run's one dataset step (named `SYSTEM:SOURCE → TARGET`).
fn dataset_step(run: &Value) -> Result<Value> {
    run["steps"]
        .as_array()
        .and_then(|steps| {
            steps
                .iter()
                .find(|s| s["name"].as_str().is_some_and(|n| n.contains(" → ")))
        })
        .cloned()
        .with_context(|| format!("no dataset step in {run}"))
}

fn log_lines(run: &Value) -> Vec<String> {
    run["log_tail"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .filter_map(|l| l.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn zfs_run(args: &[&str]) -> Result<String> {
    let mut cmd = nasfleet_tests::zfs::zfs()?;
    cmd.args(args);
    let out = nasfleet_tests::run_output(&mut cmd, Duration::from_secs(120))?;
    ensure!(
        out.status.success(),
        "zfs {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Five snapshots in a row arrive in one `-I` stream, and a capped task
/// moves no faster than its cap.
#[test]
fn neighbouring_snapshots_travel_in_one_stream_at_the_capped_rate() -> Result<()> {
    ensure_zfs()?;
    let systems = pair("streams", |_, pool| {
        pool.create_dataset("data")?;
        pool.snapshot("data", "auto-2026-04-01_00-00").map(drop)
    })?;
    let (controller, pool1) = (&systems.fleet.controller, &systems.pool1);
    let data = format!("{}/data", pool1.name());
    let (source, target) = (systems.source("data"), systems.target("backup"));
    create_replication(
        controller,
        "many",
        &source,
        &target,
        &["--bandwidth-limit", "4M"],
    )?;
    let first = replication_run(controller, "many")?;
    ensure!(run_state(&first)? == "FINISHED", "{first}");

    // 24 MiB spread over four snapshots, at 4 MiB/s: at least 6 s.
    let files = mountpoint(&data)?;
    for hour in 1..=4 {
        random_file(&files, &format!("part{hour}"), 6)?;
        pool1.snapshot("data", &format!("auto-2026-04-01_0{hour}-00"))?;
    }
    let started = Instant::now();
    let run = replication_run(controller, "many")?;
    let took = started.elapsed();
    ensure!(run_state(&run)? == "FINISHED", "{run}");
    let sent = format!("{data}@auto-2026-04-01_00-00 -> @auto-2026-04-01_04-00 (4 snapshots)");
    ensure!(
        log_lines(&run).iter().any(|l| l.contains(&sent)),
        "no `{sent}` in {run}"
    );
    let step = dataset_step(&run)?;
    ensure!(
        str_field(&step, "detail")?.starts_with("4 snapshot(s), "),
        "{step}"
    );
    let moved = step["bytes"].as_u64().unwrap_or(0);
    ensure!(moved >= 24 << 20, "{step}");
    // The cap is a ceiling: the relay may not beat it (plus slack for
    // the first chunk). How close it comes is the benchmark's business.
    let ceiling = 4.0 * 1.1 * f64::from(1 << 20);
    let rate = moved as f64 / took.as_secs_f64();
    ensure!(
        rate <= ceiling,
        "{moved} bytes in {took:?}: {rate:.0} B/s, over the 4 MiB/s cap"
    );
    let names = snapshot_names_of(&systems.replica("backup", "data"))?;
    ensure!(names.len() == 5, "every snapshot arrived: {names:?}");
    Ok(())
}

fn snapshot_names_of(dataset: &str) -> Result<Vec<String>> {
    Ok(nasfleet_tests::zfs::snapshots(dataset)?
        .into_iter()
        .filter_map(|s| s.split_once('@').map(|(_, n)| n.to_owned()))
        .collect())
}

/// An encrypted dataset whose key is loaded on the source only is sent
/// raw: the target stores ciphertext (`keystatus unavailable`) and the
/// data is there once the key is loaded. `--no-raw` sends it decrypted;
/// switching a raw replica to `--no-raw` is refused with the reason.
#[test]
fn encrypted_datasets_are_sent_raw_and_stay_encrypted() -> Result<()> {
    ensure_zfs()?;
    if !is_openzfs() {
        eprintln!(
            "zfs-fuse (pool version 23) has no native encryption: raw sends are tested on OpenZFS only"
        );
        return Ok(());
    }
    let systems = pair("raw", |dir, pool| {
        let key = dir.path().join("passphrase");
        std::fs::write(&key, "correct horse battery staple")?;
        let secret = format!("{}/secret", pool.name());
        zfs_run(&[
            "create",
            "-o",
            "encryption=aes-256-gcm",
            "-o",
            "keyformat=passphrase",
            "-o",
            &format!("keylocation=file://{}", key.display()),
            &secret,
        ])?;
        std::fs::write(
            mountpoint(&secret)?.join("plans.txt"),
            "the treasure is buried here",
        )?;
        pool.snapshot("secret", "auto-2026-05-01_00-00").map(drop)
    })?;
    let key = systems.dir.path().join("passphrase");
    let (controller, pool1) = (&systems.fleet.controller, &systems.pool1);
    let secret = format!("{}/secret", pool1.name());
    let (source, target) = (systems.source("secret"), systems.target("backup"));
    create_replication(controller, "vault", &source, &target, &[])?;

    // The dry run says it goes raw.
    let shown = controller.cli_json(&["replication", "show", "vault"])?;
    let estimate = &shown["estimate"]["datasets"][0];
    ensure!(estimate["raw"] == true, "{shown}");

    let run = replication_run(controller, "vault")?;
    ensure!(run_state(&run)? == "FINISHED", "{run}");
    ensure!(
        log_lines(&run).iter().any(|l| l.contains("sent raw")),
        "{run}"
    );
    let replica = systems.replica("backup", "secret");
    let props = |dataset: &str| -> Result<(String, String)> {
        Ok((
            nasfleet_tests::zfs::get_property(dataset, "encryption")?,
            nasfleet_tests::zfs::get_property(dataset, "keystatus")?,
        ))
    };
    let (cipher, status) = props(&replica)?;
    ensure!(
        cipher.trim() == "aes-256-gcm" && status.trim() == "unavailable",
        "the replica is {cipher}/{status}"
    );

    // An incremental continues it raw, its key still not loaded there.
    std::fs::write(mountpoint(&secret)?.join("more.txt"), "and a map")?;
    pool1.snapshot("secret", "auto-2026-05-01_01-00")?;
    let run = replication_run(controller, "vault")?;
    ensure!(run_state(&run)? == "FINISHED", "{run}");

    // With the key, the data is there.
    zfs_run(&[
        "load-key",
        "-L",
        &format!("file://{}", key.display()),
        &replica,
    ])?;
    let files = mountpoint(&replica)?;
    ensure!(
        std::fs::read_to_string(files.join("plans.txt"))? == "the treasure is buried here"
            && std::fs::read_to_string(files.join("more.txt"))? == "and a map",
        "the replica's data is not the source's"
    );
    zfs_run(&["unmount", &replica])?;
    zfs_run(&["unload-key", &replica])?;

    // Switching this replica to decrypted sends is refused, with why.
    controller.cli_ok(&["replication", "edit", "vault", "--no-raw", "--yes"])?;
    pool1.snapshot("secret", "auto-2026-05-01_02-00")?;
    let refused = replication_run(controller, "vault")?;
    ensure!(run_state(&refused)? == "FAILED", "{refused}");
    let reason = str_field(&refused, "reason")?;
    ensure!(
        reason.contains("received raw") && reason.contains("without --no-raw"),
        "{refused}"
    );

    // --no-raw into a new target: decrypted, an explicit choice.
    let plain_target = systems.target("plain");
    create_replication(controller, "opened", &source, &plain_target, &["--no-raw"])?;
    let run = replication_run(controller, "opened")?;
    ensure!(run_state(&run)? == "FINISHED", "{run}");
    let opened = systems.replica("plain", "secret");
    let (cipher, _) = props(&opened)?;
    ensure!(cipher.trim() == "off", "a --no-raw replica is {cipher}");
    Ok(())
}

/// With its base snapshot destroyed on the source (its hold released
/// first), the next run still sends incrementally, from the task's
/// bookmark.
#[test]
fn the_bookmark_cursor_keeps_incrementals_going_without_the_base() -> Result<()> {
    ensure_zfs()?;
    if !is_openzfs() {
        eprintln!(
            "zfs-fuse (pool version 23) has no bookmarks: the cursor is tested on OpenZFS only"
        );
        return Ok(());
    }
    let systems = pair("cursor", |_, pool| {
        let data = pool.create_dataset("data")?;
        random_file(&mountpoint(&data)?, "bulk", 32)?;
        pool.snapshot("data", "auto-2026-06-01_00-00").map(drop)
    })?;
    let (controller, pool1) = (&systems.fleet.controller, &systems.pool1);
    let data = format!("{}/data", pool1.name());
    let (source, target) = (systems.source("data"), systems.target("backup"));
    let task = create_replication(controller, "cursor", &source, &target, &[])?;
    let run = replication_run(controller, "cursor")?;
    ensure!(run_state(&run)? == "FINISHED", "{run}");
    let bookmarks = zfs_run(&["list", "-H", "-o", "name", "-t", "bookmark", "-r", &data])?;
    let cursor = format!("{data}#nasfleet-{task}-");
    ensure!(bookmarks.starts_with(&cursor), "{bookmarks}");

    // Someone releases the hold and destroys the base on the source.
    let base = format!("{data}@auto-2026-06-01_00-00");
    zfs_run(&["release", &format!("nasfleet:{task}"), &base])?;
    ensure!(holds_on(&base)? == 0, "{base} is still held");
    zfs_run(&["destroy", &base])?;

    random_file(&mountpoint(&data)?, "small", 1)?;
    pool1.snapshot("data", "auto-2026-06-01_01-00")?;
    let shown = controller.cli_json(&["replication", "show", "cursor"])?;
    let estimate = &shown["estimate"]["datasets"][0];
    ensure!(
        estimate["base_is_bookmark"] == true
            && estimate["base"]
                .as_str()
                .is_some_and(|b| b.starts_with("#nasfleet-")),
        "{shown}"
    );
    let run = replication_run(controller, "cursor")?;
    ensure!(run_state(&run)? == "FINISHED", "{run}");
    let moved = dataset_step(&run)?["bytes"].as_u64().unwrap_or(u64::MAX);
    ensure!(
        moved < 8 << 20,
        "an incremental from the bookmark moves ~1 MiB, not the 32 MiB of a full send: {moved}"
    );
    let names = snapshot_names_of(&systems.replica("backup", "data"))?;
    ensure!(
        names.contains(&"auto-2026-06-01_01-00".to_owned()),
        "{names:?}"
    );
    // The cursor moved to the new base, and the task's deletion takes it.
    let bookmarks = zfs_run(&["list", "-H", "-o", "name", "-t", "bookmark", "-r", &data])?;
    ensure!(bookmarks.lines().count() == 1, "{bookmarks}");
    controller.cli_ok(&["replication", "delete", "cursor", "--yes"])?;
    nasfleet_tests::wait_until(RUN_TIMEOUT, Duration::from_millis(250), || {
        Ok(zfs_run(&["list", "-H", "-o", "name", "-t", "bookmark", "-r", &data])?.is_empty())
    })
    .context("the deleted task's cursor was not removed")?;
    Ok(())
}
