//! Alert kinds end to end, each raised from a real condition and cleared when it goes: a system certificate about to expire (cleared by the agent's own renewal), a DEGRADED pool (cleared when the pool is ONLINE again), and a replicating system whose sshd is down (cleared when sshd is back).

use super::alerts::{ALERT_TIMEOUT, alerts, id_of, wait_cleared, wait_raised};
use super::common::*;
use super::replication::{create_replication, two_systems};
use anyhow::{Context, Result, ensure};
use nasfleet_tests::{Agent, Controller, TestDir, TestPool, TestSshd, run_ok, wait_for_status};
use serde_json::Value;
use std::time::Duration;

/// How often the controller evaluates alerts in these tests.
const ALERT_INTERVAL: &str = "1s";

/// A controller in `dir` that evaluates alerts every second, with `keys`
/// written into its controller.toml; not started yet.
fn controller_with(dir: &TestDir, keys: &[(&str, &str)]) -> Result<Controller> {
    let mut controller = Controller::init(dir.path())?;
    controller.extra_run_args = vec!["--alert-interval".into(), ALERT_INTERVAL.into()];
    let config_path = controller.data_dir().join("controller.toml");
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let mut config: toml::Table = toml::from_str(&text)?;
    for (key, value) in keys {
        config.insert((*key).into(), (*value).into());
    }
    std::fs::write(&config_path, toml::to_string(&config)?)
        .with_context(|| format!("writing {}", config_path.display()))?;
    Ok(controller)
}

/// Active alerts of `kind`.
fn active_of_kind(controller: &Controller, kind: &str) -> Result<Vec<Value>> {
    Ok(alerts(controller, false)?
        .into_iter()
        .filter(|a| a["kind"] == kind)
        .collect())
}

/// `system show NAME --refresh`: the inventory its agent sends now.
fn refreshed(controller: &Controller, name: &str) -> Result<Value> {
    controller.cli_json(&["system", "show", name, "--refresh"])
}

/// The health of pool `pool` in a `system show` answer.
fn pool_health(shown: &Value, pool: &str) -> Result<String> {
    let entry = shown["pools"]
        .as_array()
        .and_then(|pools| pools.iter().find(|p| p["name"] == pool))
        .with_context(|| format!("no pool {pool} in {shown}"))?;
    Ok(str_field(entry, "health")?.to_owned())
}

/// Whether the ssh service in a `system show` answer is running.
fn ssh_running(shown: &Value) -> Result<bool> {
    shown["services"]
        .as_array()
        .and_then(|services| services.iter().find(|s| s["name"] == "ssh"))
        .and_then(|ssh| ssh["running"].as_bool())
        .with_context(|| format!("no ssh service in {shown}"))
}

fn text_of(alert: &Value) -> &str {
    alert["text"].as_str().unwrap_or_default()
}

/// Agents renew with a third of the certificate's span left (its
/// not-before is backdated by a tenth of the lifetime): with a 60 s
/// lifetime that is 22 s before expiry, 38 s after issue. A 40 s warning
/// raises the alert 20 s after issue, well before; the renewed certificate
/// is in force (promoted) once the agent reconnects with it, 60 s from
/// expiry again, which clears the alert. (It is raised again 20 s later:
/// another occurrence, with another id.)
#[test]
fn certificate_expiring_is_raised_and_cleared_by_renewal() -> Result<()> {
    let dir = TestDir::new("alertcert")?;
    let pool = TestPool::create(dir.path(), "acrt")?;
    let mut controller = controller_with(
        &dir,
        &[("cert_lifetime", "60s"), ("certificate_warning", "40s")],
    )?;
    controller.start()?;
    let mut agent = Agent::join(&controller, "nas1")?;
    agent.start(&[pool.name()], None)?;
    wait_for_status(&controller, "nas1", "ONLINE", STATUS_TIMEOUT)?;
    let before = controller.cli_json(&["system", "show", "nas1"])?;
    let serial = str_field(&before, "certificate_serial")?.to_owned();
    let expires = str_field(&before, "certificate_expires")?.to_owned();
    ensure!(
        active_of_kind(&controller, "certificate-expiring")?.is_empty(),
        "a fresh certificate is expiring: {:?}",
        alerts(&controller, true)
    );

    let expiring = wait_raised(&controller, "certificate-expiring", "nas1")?;
    ensure!(expiring["level"] == "warning", "{expiring}");
    ensure!(expiring["object"] == "certificate of nas1", "{expiring}");
    let words = text_of(&expiring);
    ensure!(
        words.contains("the certificate of nas1 expires at") && words.contains("renews it"),
        "{words}"
    );
    // Raised before the renewal: the certificate is still the first one.
    let shown = controller.cli_json(&["system", "show", "nas1"])?;
    ensure!(shown["certificate_serial"] == serial.as_str(), "{shown}");

    let cleared = wait_cleared(&controller, id_of(&expiring)?)?;
    ensure!(cleared["object"] == "certificate of nas1", "{cleared}");
    // Cleared by the renewal: another certificate, expiring later.
    let after = controller.cli_json(&["system", "show", "nas1"])?;
    let renewed_serial = str_field(&after, "certificate_serial")?;
    let renewed_expires = str_field(&after, "certificate_expires")?;
    ensure!(renewed_serial != serial, "not renewed: {after}");
    let parse = |at: &str| {
        chrono::DateTime::parse_from_rfc3339(at).with_context(|| format!("not RFC 3339: {at}"))
    };
    ensure!(
        parse(renewed_expires)? > parse(&expires)?,
        "renewed certificate expires {renewed_expires}, the first {expires}"
    );
    ensure!(
        agent.log().contains("certificate renewed"),
        "the agent did not log its renewal"
    );
    Ok(())
}

#[test]
fn pool_health_is_raised_when_degraded_and_cleared_when_online() -> Result<()> {
    let dir = TestDir::new("alerthealth")?;
    let (pool, second) = TestPool::create_mirror(dir.path(), "ahlth")?;
    let mut controller = controller_with(&dir, &[])?;
    controller.start()?;
    let mut agent = Agent::join(&controller, "nas1")?;
    agent.start(&[pool.name()], None)?;
    wait_for_status(&controller, "nas1", "ONLINE", STATUS_TIMEOUT)?;
    let shown = refreshed(&controller, "nas1")?;
    ensure!(pool_health(&shown, pool.name())? == "ONLINE", "{shown}");
    ensure!(
        active_of_kind(&controller, "pool-health")?.is_empty(),
        "{:?}",
        alerts(&controller, true)
    );

    // One side of the mirror offline: the pool is DEGRADED.
    run_ok(
        nasfleet_tests::zfs::zpool()?
            .args(["offline", pool.name()])
            .arg(&second),
    )?;
    let shown = refreshed(&controller, "nas1")?;
    ensure!(pool_health(&shown, pool.name())? == "DEGRADED", "{shown}");
    let degraded = wait_raised(&controller, "pool-health", "nas1")?;
    ensure!(degraded["level"] == "critical", "{degraded}");
    let object = format!("pool '{}' of nas1", pool.name());
    ensure!(degraded["object"] == object.as_str(), "{degraded}");
    let words = text_of(&degraded);
    ensure!(
        words.contains(&format!("{object} is DEGRADED"))
            && words.contains(&format!("zpool status {}", pool.name())),
        "{words}"
    );

    // Back online (a quick resilver): ONLINE, and the alert clears.
    run_ok(
        nasfleet_tests::zfs::zpool()?
            .args(["online", pool.name()])
            .arg(&second),
    )?;
    let mut last = Value::Null;
    nasfleet_tests::wait_until(ALERT_TIMEOUT, Duration::from_millis(500), || {
        last = refreshed(&controller, "nas1")?;
        Ok(pool_health(&last, pool.name())? == "ONLINE")
    })
    .with_context(|| format!("the pool is not ONLINE again: {last}"))?;
    let cleared = wait_cleared(&controller, id_of(&degraded)?)?;
    ensure!(cleared["object"] == object.as_str(), "{cleared}");
    ensure!(
        active_of_kind(&controller, "pool-health")?.is_empty(),
        "{:?}",
        alerts(&controller, true)
    );
    agent.stop()?;
    controller.stop()?;
    pool.destroy()
}

#[test]
fn ssh_not_running_is_raised_for_a_replicating_system_and_cleared_when_sshd_is_back() -> Result<()>
{
    let dir = TestDir::new("alertssh")?;
    let pool1 = TestPool::create(dir.path(), "asshs")?;
    let pool2 = TestPool::create(dir.path(), "asshd")?;
    let sshd1 = TestSshd::start(dir.path())?;
    let mut sshd2 = TestSshd::start(dir.path())?;
    let data = pool1.create_dataset("data")?;
    let mut fleet = two_systems(&dir, &pool1, &sshd1, &pool2, &sshd2)?;
    // The fleet's controller evaluates alerts every 30 s; every second here.
    fleet.controller.extra_run_args = vec!["--alert-interval".into(), ALERT_INTERVAL.into()];
    fleet.controller.restart()?;
    let controller = &fleet.controller;
    for name in ["nas1", "nas2"] {
        wait_for_status(controller, name, "ONLINE", STATUS_TIMEOUT)?;
    }

    // A system that no replication task uses may run without sshd.
    sshd2.stop()?;
    let shown = refreshed(controller, "nas2")?;
    ensure!(!ssh_running(&shown)?, "{shown}");
    std::thread::sleep(Duration::from_secs(3));
    ensure!(
        active_of_kind(controller, "ssh-not-running")?.is_empty(),
        "ssh alert without a replication task: {:?}",
        alerts(controller, true)
    );
    sshd2.restart()?;
    let shown = refreshed(controller, "nas2")?;
    ensure!(ssh_running(&shown)?, "{shown}");

    let source = format!("nas1:{data}");
    let target = format!("nas2:{}/backup", pool2.name());
    create_replication(controller, "offsite", &source, &target, &[])?;
    std::thread::sleep(Duration::from_secs(2));
    ensure!(
        active_of_kind(controller, "ssh-not-running")?.is_empty(),
        "ssh alert while both sshd run: {:?}",
        alerts(controller, true)
    );

    // The target's sshd down: an alert about the target, not the source.
    sshd2.stop()?;
    let shown = refreshed(controller, "nas2")?;
    ensure!(!ssh_running(&shown)?, "{shown}");
    let down = wait_raised(controller, "ssh-not-running", "nas2")?;
    ensure!(down["level"] == "critical", "{down}");
    ensure!(down["object"] == "SSH service of nas2", "{down}");
    ensure!(
        text_of(&down).contains("sshd is not running on nas2"),
        "{down}"
    );
    let about: Vec<Value> = active_of_kind(controller, "ssh-not-running")?;
    ensure!(
        about.len() == 1 && about[0]["systems"] == serde_json::json!(["nas2"]),
        "{about:?}"
    );

    // Back up: cleared once the agent reports it running.
    sshd2.restart()?;
    let shown = refreshed(controller, "nas2")?;
    ensure!(ssh_running(&shown)?, "{shown}");
    wait_cleared(controller, id_of(&down)?)?;
    ensure!(
        active_of_kind(controller, "ssh-not-running")?.is_empty(),
        "{:?}",
        alerts(controller, true)
    );
    Ok(())
}

/// A snapshot task with no snapshot of its own, and an rsync task with no
/// successful run, both for longer than their `--stale-after`, are stale;
/// the snapshot task's first snapshot and the rsync task's first success
/// clear them. (Replication's per-dataset staleness is in alerts.rs.)
#[test]
fn snapshot_and_rsync_tasks_go_stale_and_recover() -> Result<()> {
    use super::alerts::{create_rsync_task, run_rsync_task};
    let dir = TestDir::new("alertstale")?;
    let pool = TestPool::create(dir.path(), "astl")?;
    let module = dir.path().join("module");
    let rsyncd = nasfleet_tests::TestRsyncd::start(dir.path(), &[("mod", &module)])?;
    let mut controller = controller_with(&dir, &[])?;
    controller.start()?;
    let mut agent = Agent::join(&controller, "nas1")?;
    agent.start(&[pool.name()], None)?;
    wait_for_status(&controller, "nas1", "ONLINE", STATUS_TIMEOUT)?;
    let dataset = pool.create_dataset("data")?;
    let path = pool.dataset_mountpoint("data")?;
    std::fs::write(path.join("a.txt"), b"kept")?;
    let path = path.to_str().context("mountpoint")?.to_owned();
    refreshed(&controller, "nas1")?;

    let snapshot_task = create_snapshot_task(
        &controller,
        &[
            "--system",
            "nas1",
            "--dataset",
            &dataset,
            "--stale-after",
            "15s",
        ],
    )?;
    let shown = controller.cli_ok(&["snapshot-task", "show", &snapshot_task.to_string()])?;
    ensure!(shown.contains("Stale after:    15s"), "{shown}");
    let closed = nasfleet_tests::free_port(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))?;
    let rsync_task = create_rsync_task(&controller, &path, "127.0.0.1", closed)?;
    controller.cli_ok(&["rsync", "edit", &rsync_task, "--stale-after", "15s"])?;
    ensure!(run_rsync_task(&controller, &rsync_task)? == "FAILED");

    let mut found: Vec<Value> = Vec::new();
    nasfleet_tests::wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
        found = active_of_kind(&controller, "stale-protection")?;
        Ok(found.len() == 2)
    })
    .with_context(|| format!("two stale-protection alerts expected: {found:?}"))?;
    let about = |word: &str| {
        found
            .iter()
            .find(|a| a["object"].as_str().unwrap_or_default().contains(word))
            .cloned()
            .with_context(|| format!("no stale alert about {word}: {found:?}"))
    };
    let snapshots = about("snapshot task")?;
    let rsync = about("rsync task")?;
    ensure!(
        snapshots["object"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("nas1:{dataset}"))
            && text_of(&snapshots).contains("there is none")
            && text_of(&snapshots).contains("stale after 15 s"),
        "{snapshots}"
    );
    ensure!(
        rsync["object"]
            .as_str()
            .unwrap_or_default()
            .contains("offsite-copy")
            && text_of(&rsync).contains("never"),
        "{rsync}"
    );

    // The task's first snapshot, and a successful rsync run, clear them.
    let run = start_task_run(&controller, snapshot_task)?;
    let run = wait_run_final(&controller, run, Duration::from_secs(60))?;
    ensure!(run_state(&run)? == "FINISHED", "{run}");
    refreshed(&controller, "nas1")?;
    let port = rsyncd.port().to_string();
    controller.cli_ok(&[
        "rsync",
        "edit",
        &rsync_task,
        "--remote-host",
        &rsyncd.host(),
        "--remote-port",
        &port,
    ])?;
    ensure!(run_rsync_task(&controller, &rsync_task)? == "SUCCESS");
    wait_cleared(&controller, id_of(&snapshots)?)?;
    wait_cleared(&controller, id_of(&rsync)?)?;
    Ok(())
}
