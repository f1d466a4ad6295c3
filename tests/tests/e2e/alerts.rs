//! Alerts end to end: raised by the controller from what it already knows and cleared when the condition goes — a system offline past the grace, a pool over its capacity threshold, a task whose latest run failed (cleared by its next success) — dismissed by an operator, and shown only to people who see the system.

use super::common::*;
use super::users::{cli_at, create_user, login};
use anyhow::{Context, Result, ensure};
use nasfleet_tests::{
    Agent, Controller, TestDir, TestPool, TestRsyncd, ensure_zfs, wait_for_status,
};
use serde_json::Value;
use std::time::Duration;

/// Alerts are evaluated every second here; a condition shows within a few.
pub(super) const ALERT_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn alerts(controller: &Controller, all: bool) -> Result<Vec<Value>> {
    let mut args = vec!["alert", "list"];
    if all {
        args.push("--all");
    }
    let list = controller.cli_json(&args)?;
    list.as_array()
        .cloned()
        .with_context(|| format!("alert list is not a list: {list}"))
}

/// Waits for an active alert of `kind` about `system`; returns it.
pub(super) fn wait_raised(controller: &Controller, kind: &str, system: &str) -> Result<Value> {
    let mut found = None;
    nasfleet_tests::wait_until(ALERT_TIMEOUT, Duration::from_millis(250), || {
        found = alerts(controller, false)?.into_iter().find(|a| {
            a["kind"] == kind
                && a["systems"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|n| n == system))
        });
        Ok(found.is_some())
    })
    .with_context(|| {
        format!(
            "no {kind} alert for {system}; alerts: {:?}",
            alerts(controller, true)
        )
    })?;
    found.context("alert")
}

/// Waits until alert `id` has cleared; returns it.
pub(super) fn wait_cleared(controller: &Controller, id: u64) -> Result<Value> {
    let mut found = None;
    nasfleet_tests::wait_until(ALERT_TIMEOUT, Duration::from_millis(250), || {
        found = alerts(controller, true)?
            .into_iter()
            .find(|a| a["id"] == id && a["cleared"].is_string());
        Ok(found.is_some())
    })
    .with_context(|| format!("alert {id} never cleared: {:?}", alerts(controller, true)))?;
    found.context("alert")
}

/// An rsync task on nas1 pushing `path` to module `mod` at HOST:PORT, named
/// `offsite-copy`; its id.
pub(super) fn create_rsync_task(
    controller: &Controller,
    path: &str,
    host: &str,
    port: u16,
) -> Result<String> {
    let port = port.to_string();
    let task = controller.cli_json(&[
        "rsync",
        "create",
        "--system",
        "nas1",
        "--path",
        path,
        "--user",
        "root",
        "--direction",
        "push",
        "--remote-host",
        host,
        "--remote-port",
        &port,
        "--remote-module",
        "mod",
        "--description",
        "offsite-copy",
    ])?;
    Ok(task["id"].as_u64().context("task id")?.to_string())
}

/// Runs task `id` now and waits for the run's end; its state.
pub(super) fn run_rsync_task(controller: &Controller, id: &str) -> Result<String> {
    let run = controller.cli_json(&["rsync", "run", id])?;
    let run = wait_run_final(
        controller,
        run["id"].as_u64().context("run id")?,
        Duration::from_secs(60),
    )?;
    run_state(&run)
}

pub(super) fn id_of(alert: &Value) -> Result<u64> {
    alert["id"]
        .as_u64()
        .with_context(|| format!("no id in {alert}"))
}

#[test]
fn alerts_are_raised_and_cleared_from_what_the_controller_knows() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("alerts")?;
    let pool = TestPool::create(dir.path(), "alrt")?;
    let module = dir.path().join("module");
    let rsyncd = TestRsyncd::start(dir.path(), &[("mod", &module)])?;
    let mut controller = Controller::init(dir.path())?;
    controller.extra_run_args = ["--alert-interval", "1s", "--offline-grace", "3s"]
        .map(String::from)
        .to_vec();
    // A test pool is small, and OpenZFS keeps at least 128 MiB of it back
    // (slop space): thresholds within reach of what can be written.
    let config_path = controller.data_dir().join("controller.toml");
    let mut config: toml::Table = toml::from_str(&std::fs::read_to_string(&config_path)?)?;
    config.insert("pool_capacity_warning".into(), 30.into());
    config.insert("pool_capacity_critical".into(), 95.into());
    std::fs::write(&config_path, toml::to_string(&config)?)?;
    controller.start()?;
    let mut agent = Agent::join(&controller, "nas1")?;
    agent.start(&[pool.name()], None)?;
    wait_for_status(&controller, "nas1", "ONLINE", STATUS_TIMEOUT)?;
    pool.create_dataset("data")?;
    let data = pool.dataset_mountpoint("data")?;
    std::fs::write(data.join("a.txt"), b"protected")?;
    let data = data.to_str().context("mountpoint")?.to_owned();
    ensure!(
        alerts(&controller, false)?.is_empty(),
        "alerts on a healthy fleet"
    );
    let text = controller.cli_ok(&["alert", "list"])?;
    ensure!(text.contains("No active alerts."), "{text}");

    // A system unheard of past the grace is OFFLINE, and clears on return.
    agent.stop()?;
    let offline = wait_raised(&controller, "system-offline", "nas1")?;
    ensure!(offline["level"] == "critical", "{offline}");
    let words = offline["text"].as_str().unwrap_or_default();
    ensure!(
        words.contains("nas1 is OFFLINE") && words.contains("nasfleet-agent"),
        "{words}"
    );
    agent.restart()?;
    wait_for_status(&controller, "nas1", "ONLINE", STATUS_TIMEOUT)?;
    wait_cleared(&controller, id_of(&offline)?)?;

    // A failed latest run raises, its next success clears.
    let closed = nasfleet_tests::free_port(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))?;
    let task_id = create_rsync_task(&controller, &data, "127.0.0.1", closed)?;
    let state = run_rsync_task(&controller, &task_id)?;
    ensure!(state == "FAILED", "{state}");
    let failed = wait_raised(&controller, "task-failed", "nas1")?;
    ensure!(failed["level"] == "warning", "{failed}");
    let words = failed["text"].as_str().unwrap_or_default();
    ensure!(
        words.contains("offsite-copy") && words.contains("FAILED"),
        "{words}"
    );

    // A viewer of nas1 sees it but may not dismiss it; an operator may.
    let vic = create_user(
        &controller,
        "vic",
        &["--role", "viewer", "--system", "nas1"],
    )?;
    let (vic_home, vic_config) = login(&dir, &vic)?;
    let (code, out, err) = cli_at(
        &vic_home,
        Some(&vic_config),
        &["-o", "json", "alert", "list"],
    )?;
    ensure!(
        code == Some(0) && out.contains("offsite-copy"),
        "{code:?} {out} {err}"
    );
    let failed_id = id_of(&failed)?.to_string();
    let (code, _, err) = cli_at(
        &vic_home,
        Some(&vic_config),
        &["alert", "dismiss", &failed_id],
    )?;
    ensure!(
        code == Some(5) && err.contains("operator"),
        "{code:?} {err}"
    );
    let dismissed = controller.cli_json(&["alert", "dismiss", &failed_id])?;
    ensure!(dismissed["dismissed_by"] == "user:admin", "{dismissed}");
    let listed = controller.cli_ok(&["alert", "list"])?;
    ensure!(listed.contains("DISMISSED"), "{listed}");

    let port = rsyncd.port().to_string();
    controller.cli_ok(&[
        "rsync",
        "edit",
        &task_id,
        "--remote-host",
        &rsyncd.host(),
        "--remote-port",
        &port,
    ])?;
    let state = run_rsync_task(&controller, &task_id)?;
    ensure!(state == "SUCCESS", "{state}");
    wait_cleared(&controller, id_of(&failed)?)?;

    // A pool past its warning threshold raises, and clears once space is free.
    let fill = pool.create_dataset("fill")?;
    let big = pool.dataset_mountpoint("fill")?.join("big.bin");
    // Up to 40 % of the pool as the agent reports it: past the 30 % warning
    // set above, short of the space OpenZFS keeps back and of 95 %.
    let shown = controller.cli_json(&["system", "show", "nas1", "--refresh"])?;
    let reported = shown["pools"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == pool.name()))
        .with_context(|| format!("no pool {} in {shown}", pool.name()))?;
    let size = reported["size"].as_u64().context("pool size")?;
    let free = reported["free"].as_u64().context("pool free")?;
    let to_write_mib = (size * 40 / 100).saturating_sub(size - free) / (1 << 20) + 1;
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&big)?;
        // Pseudo-random bytes (xorshift), so compression cannot shrink them.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..to_write_mib {
            for word in block.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                word.copy_from_slice(&x.to_le_bytes());
            }
            file.write_all(&block)?;
        }
        file.sync_all()?;
    }
    let mut full = None;
    nasfleet_tests::wait_until(ALERT_TIMEOUT, Duration::from_millis(500), || {
        controller.cli_ok(&["system", "show", "nas1", "--refresh"])?;
        full = alerts(&controller, false)?
            .into_iter()
            .find(|a| a["kind"] == "pool-capacity");
        Ok(full.is_some())
    })
    .with_context(|| {
        format!(
            "no pool-capacity alert; pools: {}",
            controller
                .cli_ok(&["system", "show", "nas1"])
                .unwrap_or_default()
        )
    })?;
    let full = full.context("alert")?;
    ensure!(
        full["object"]
            .as_str()
            .unwrap_or_default()
            .contains(pool.name()),
        "{full}"
    );
    std::fs::remove_file(&big)?;
    {
        // zfs-fuse frees an unlinked file's blocks only once the kernel lets
        // go of it; unmounting makes it (OpenZFS frees them anyway).
        let _lock = nasfleet_tests::zfs::MountLock::take()?;
        nasfleet_tests::run_ok(nasfleet_tests::zfs::zfs()?.args(["umount", "-f", &fill]))?;
    }
    nasfleet_tests::wait_until(ALERT_TIMEOUT, Duration::from_millis(500), || {
        controller.cli_ok(&["system", "show", "nas1", "--refresh"])?;
        Ok(alerts(&controller, false)?
            .iter()
            .all(|a| a["kind"] != "pool-capacity"))
    })
    .context("the pool-capacity alert did not clear")?;

    // Cleared alerts stay listed with --all.
    eprintln!("{}", controller.cli_ok(&["alert", "list", "--all"])?);
    let all = alerts(&controller, true)?;
    ensure!(
        all.iter().filter(|a| a["cleared"].is_string()).count() >= 3,
        "{all:?}"
    );

    Ok(())
}

/// Host tier only (deploy/test.sh skips it in the OpenZFS guest, which has
/// no promtool): the live `/metrics` and the example rules pass promtool.
#[test]
fn metrics_are_prometheus_text_that_promtool_accepts() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("metrics")?;
    let pool = TestPool::create(dir.path(), "mtrc")?;
    let module = dir.path().join("module");
    let rsyncd = TestRsyncd::start(dir.path(), &[("mod", &module)])?;
    let (controller, _agent) = one_system(&dir, &pool, "nas1")?;
    pool.create_dataset("data")?;
    let data = pool.dataset_mountpoint("data")?;
    std::fs::write(data.join("a.txt"), b"measured")?;
    let data = data.to_str().context("mountpoint")?.to_owned();
    let task_id = create_rsync_task(&controller, &data, &rsyncd.host(), rsyncd.port())?;
    let state = run_rsync_task(&controller, &task_id)?;
    ensure!(state == "SUCCESS", "{state}");

    // /metrics: text that promtool accepts, with the fleet in it.
    let text = http_get(&controller.metrics_url())?;
    for expected in [
        "nasfleet_systems{status=\"online\"} 1",
        "nasfleet_agents_connected 1",
        &format!(
            "nasfleet_pool_healthy{{system=\"nas1\",pool=\"{}\",health=\"ONLINE\"}} 1",
            pool.name()
        ),
        "nasfleet_task_last_success_timestamp_seconds{task=\"offsite-copy\",kind=\"rsync\"}",
        "nasfleet_task_last_run_state{task=\"offsite-copy\",kind=\"rsync\",state=\"SUCCESS\"} 1",
        "nasfleet_alerts{level=\"critical\"} 0",
        "nasfleet_task_runs_total{task=\"offsite-copy\",kind=\"rsync\",state=\"SUCCESS\"} 1",
        "nasfleet_store_write_seconds_bucket{le=\"+Inf\"}",
        "nasfleet_store_write_seconds_count",
        "# TYPE nasfleet_scheduler_lag_seconds histogram",
    ] {
        ensure!(text.contains(expected), "{expected} not in:\n{text}");
    }
    promtool(&["check", "metrics"], Some(&text))?;
    let rules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/nasfleet-alerts.rules.yml"
    );
    promtool(&["check", "rules", rules], None)?;
    Ok(())
}

/// Host tier only, like the test above (it needs curl): with `metrics_tls`,
/// `/metrics` answers only clients with a certificate of a user who sees
/// every system.
#[test]
fn metrics_behind_mutual_tls_need_a_fleet_wide_user_certificate() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("metrics-tls")?;
    let pool = TestPool::create(dir.path(), "mtls")?;
    let mut controller = Controller::init(dir.path())?;
    let config_path = controller.data_dir().join("controller.toml");
    let mut config: toml::Table = toml::from_str(&std::fs::read_to_string(&config_path)?)?;
    config.insert("metrics_tls".into(), true.into());
    std::fs::write(&config_path, toml::to_string(&config)?)?;
    controller.start()?;
    let mut agent = Agent::join(&controller, "nas1")?;
    agent.start(&[pool.name()], None)?;
    wait_for_status(&controller, "nas1", "ONLINE", STATUS_TIMEOUT)?;
    let url = controller.metrics_url().replace("http://", "https://");
    let data = controller.data_dir();
    let ca = data.join("ca.crt");
    let curl =
        |cert: Option<(&std::path::Path, &std::path::Path)>| -> Result<(Option<i32>, String)> {
            let mut cmd = std::process::Command::new("curl");
            cmd.args([
                "-sS",
                "--max-time",
                "20",
                "-w",
                "\n%{http_code}",
                "--cacert",
            ])
            .arg(&ca);
            if let Some((cert, key)) = cert {
                cmd.arg("--cert").arg(cert).arg("--key").arg(key);
            }
            let out = nasfleet_tests::run_output(cmd.arg(&url), Duration::from_secs(30))?;
            Ok((
                out.status.code(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ))
        };
    let (code, text) = curl(Some((&data.join("admin.crt"), &data.join("admin.key"))))?;
    ensure!(
        code == Some(0)
            && text.ends_with("200")
            && text.contains("nasfleet_systems{status=\"online\"} 1"),
        "{code:?} {text}"
    );
    // No certificate: the handshake itself is refused.
    let (code, text) = curl(None)?;
    ensure!(code != Some(0), "{code:?} {text}");
    // A certificate of another CA: refused too.
    let (foreign_cert, foreign_key) = foreign_admin_certificate()?;
    let (fc, fk) = (
        dir.path().join("foreign.crt"),
        dir.path().join("foreign.key"),
    );
    std::fs::write(&fc, foreign_cert)?;
    std::fs::write(&fk, foreign_key)?;
    let (code, text) = curl(Some((&fc, &fk)))?;
    ensure!(code != Some(0), "{code:?} {text}");
    // A viewer of one system: known, but the metrics cover every system.
    let vic = create_user(
        &controller,
        "vic",
        &["--role", "viewer", "--system", "nas1"],
    )?;
    let (_, vic_config) = login(&dir, &vic)?;
    let vic_toml: toml::Table = toml::from_str(&std::fs::read_to_string(&vic_config)?)?;
    let path_of = |key: &str| -> Result<std::path::PathBuf> {
        let value = vic_toml
            .get(key)
            .and_then(|v| v.as_str())
            .with_context(|| format!("no {key} in {vic_toml}"))?;
        Ok(vic_config.parent().context("config dir")?.join(value))
    };
    let (code, text) = curl(Some((&path_of("cert")?, &path_of("key")?)))?;
    ensure!(
        code == Some(0) && text.ends_with("403") && text.contains("sees only some systems"),
        "{code:?} {text}"
    );
    Ok(())
}

/// The body of a plain HTTP GET of `url` (`http://HOST:PORT/PATH`).
fn http_get(url: &str) -> Result<String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").context("an http:// URL")?;
    let (host, path) = rest.split_once('/').context("a path")?;
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").context("an HTTP answer")?;
    ensure!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    ensure!(
        head.to_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    Ok(body.to_owned())
}

/// Runs promtool (from Debian's prometheus package), `stdin` fed from a
/// file, for at most a minute, and fails with what it said.
fn promtool(args: &[&str], stdin: Option<&str>) -> Result<()> {
    use std::process::{Command, Stdio};
    let mut input = tempfile::tempfile()?;
    {
        use std::io::{Seek, Write};
        input.write_all(stdin.unwrap_or_default().as_bytes())?;
        input.rewind()?;
    }
    let out = tempfile::NamedTempFile::new()?;
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::from(input))
        .stdout(Stdio::from(out.reopen()?))
        .stderr(Stdio::from(out.reopen()?))
        .spawn()
        .context(
            "promtool is missing: deploy/install-deps.sh installs Debian's prometheus package",
        )?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("promtool {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let said = std::fs::read_to_string(out.path())?;
    ensure!(status.success(), "promtool {args:?} ({status}): {said}");
    Ok(())
}

/// A fan-in replication whose one target dataset cannot be written (a
/// quota far below its data) goes stale after the task's `--stale-after`,
/// and the alert names that dataset, not the one that replicates; freeing
/// the target clears it on the next successful run.
#[test]
fn a_stuck_dataset_of_a_fan_in_replication_goes_stale_by_name() -> Result<()> {
    use super::replication::{create_replication, replication_run, two_systems};
    ensure_zfs()?;
    let dir = TestDir::new("stale")?;
    let pool1 = TestPool::create(dir.path(), "stls")?;
    let pool2 = TestPool::create(dir.path(), "stld")?;
    let sshd1 = nasfleet_tests::TestSshd::start(dir.path())?;
    let sshd2 = nasfleet_tests::TestSshd::start(dir.path())?;
    let data = pool1.create_dataset("data")?;
    pool1.write_file("data", "a.txt", b"small")?;
    let local = pool2.create_dataset("local")?;
    // 8 MiB that no compression shrinks, against a 1 MiB quota.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let noise: Vec<u8> = (0..(8 << 20) / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    pool2.write_file("local", "big.bin", &noise)?;
    pool2.create_dataset("backup")?;
    let stuck_parent = pool2.create_dataset("backup/nas2")?;
    nasfleet_tests::run_ok(nasfleet_tests::zfs::zfs()?.args(["set", "quota=1M", &stuck_parent]))?;
    let mut fleet = two_systems(&dir, &pool1, &sshd1, &pool2, &sshd2)?;
    fleet.controller.extra_run_args = ["--alert-interval", "1s"].map(String::from).to_vec();
    fleet.controller.restart()?;
    let controller = &fleet.controller;
    for name in ["nas1", "nas2"] {
        wait_for_status(controller, name, "ONLINE", STATUS_TIMEOUT)?;
    }
    let source1 = format!("nas1:{data}");
    let source2 = format!("nas2:{local}");
    let target = format!("nas2:{}/backup", pool2.name());
    create_replication(
        controller,
        "fan-in",
        &source1,
        &target,
        &[
            "--source",
            &source2,
            "--stale-after",
            "25s",
            "--create-snapshot-task",
        ],
    )?;
    controller.cli_ok(&["replication", "enable", "fan-in"])?;
    let shown = controller.cli_ok(&["replication", "show", "fan-in"])?;
    ensure!(
        shown.contains("Stale after:") && shown.contains("25s"),
        "{shown}"
    );
    let started = std::time::Instant::now();
    let run = replication_run(controller, "fan-in")?;
    ensure!(run_state(&run)? == "FAILED", "{run}");
    // A second run keeps nas1's dataset fresh well past nas2's deadline.
    std::thread::sleep(Duration::from_secs(12).saturating_sub(started.elapsed()));
    replication_run(controller, "fan-in")?;
    let stuck = format!("nas2:{local}");
    let mut stale = None;
    nasfleet_tests::wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
        stale = alerts(controller, false)?
            .into_iter()
            .find(|a| a["kind"] == "stale-protection");
        Ok(stale.is_some())
    })
    .context("no stale-protection alert")?;
    let stale = stale.context("alert")?;
    let object = stale["object"].as_str().unwrap_or_default();
    ensure!(
        object.starts_with(&stuck) && object.contains("fan-in"),
        "{stale}"
    );
    let fresh = format!("nas1:{data}");
    let active = alerts(controller, false)?;
    ensure!(
        !active.iter().any(|a| a["kind"] == "stale-protection"
            && a["object"].as_str().unwrap_or_default().starts_with(&fresh)),
        "the dataset that replicates is called stale too: {active:?}"
    );
    let words = stale["text"].as_str().unwrap_or_default();
    ensure!(
        words.contains("never") && words.contains("stale after"),
        "{words}"
    );

    nasfleet_tests::run_ok(nasfleet_tests::zfs::zfs()?.args(["set", "quota=none", &stuck_parent]))?;
    let run = replication_run(controller, "fan-in")?;
    ensure!(run_state(&run)? == "FINISHED", "{run}");
    wait_cleared(controller, id_of(&stale)?)?;
    Ok(())
}
