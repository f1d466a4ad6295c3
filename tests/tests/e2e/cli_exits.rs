//! The CLI's exits: quiet success when its reader goes away, a distinct status per kind of failure, a clear word on refused certificates, and `run watch` saying each step once.

use super::common::*;
use anyhow::{Context, Result, bail, ensure};
use nasfleet_tests::{Agent, Controller, TestDir, TestPool, ensure_zfs};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The documented exit statuses (`nasfleet --help`).
const INVALID: i32 = 2;
const UNREACHABLE: i32 = 3;
const CREDENTIALS_REFUSED: i32 = 4;
const PERMISSION_DENIED: i32 = 5;
const NOT_FOUND: i32 = 6;
const RUN_FAILED: i32 = 7;

/// Runs `cmd` with stdout a pipe whose reader is already closed, as in
/// `nasfleet ... | head -0`; returns the exit status and stderr.
fn with_reader_gone(cmd: &mut Command) -> Result<(ExitStatus, String)> {
    let (reader, writer) = std::io::pipe().context("creating a pipe")?;
    drop(reader);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting nasfleet")?;
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .context("stderr pipe")?
        .read_to_string(&mut stderr)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((status, stderr));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            bail!("nasfleet did not exit; stderr: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A CLI config naming `controller` and the given CA and client files.
fn write_config(
    dir: &Path,
    name: &str,
    controller: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<PathBuf> {
    let path = dir.join(name);
    let text = format!(
        "controller = {controller:?}\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        ca.display().to_string(),
        cert.display().to_string(),
        key.display().to_string()
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `nasfleet --config CONFIG ARGS`: exit code and stderr.
fn cli_as(config: &Path, args: &[&str]) -> Result<(Option<i32>, String)> {
    let mut cmd = Command::new(nasfleet_tests::binary("nasfleet")?);
    cmd.arg("--config").arg(config).args(args);
    let out = nasfleet_tests::run_output(&mut cmd, Duration::from_secs(60))?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn code_of(controller: &Controller, args: &[&str]) -> Result<(Option<i32>, String)> {
    cli_as(&controller.admin_config(), args)
}

#[test]
fn every_command_exits_quietly_when_its_reader_goes_away() -> Result<()> {
    let dir = TestDir::new("readergone")?;
    let mut controller = Controller::init(dir.path())?;
    controller.start()?;
    for args in [
        &["system", "list"][..],
        &["-o", "json", "system", "list"],
        &["run", "list"],
        &["-o", "json", "token", "create"],
        &["snapshot-task", "list"],
        &["--help"],
    ] {
        let mut cmd = controller.cli_command(args)?;
        let (status, stderr) = with_reader_gone(&mut cmd)?;
        ensure!(
            status.code() == Some(0) && stderr.is_empty(),
            "`nasfleet {}` with its reader gone: {status}, stderr: {stderr}",
            args.join(" ")
        );
    }
    Ok(())
}

#[test]
fn failures_exit_with_their_documented_status() -> Result<()> {
    let dir = TestDir::new("exitcodes")?;
    let mut controller = Controller::init(dir.path())?;
    controller.start()?;

    let (code, err) = code_of(&controller, &["run", "show", "999999"])?;
    ensure!(code == Some(NOT_FOUND), "{code:?}: {err}");

    // Refused by the CLI itself, by clap, and by the controller.
    let (code, err) = code_of(
        &controller,
        &["snapshot-task", "edit", "3", "--cron", "61 * * * *"],
    )?;
    ensure!(code == Some(INVALID), "{code:?}: {err}");
    let (code, err) = code_of(&controller, &["no-such-command"])?;
    ensure!(code == Some(INVALID), "{code:?}: {err}");
    let (code, err) = code_of(&controller, &["token", "create", "--ttl", "0s"])?;
    ensure!(code == Some(INVALID), "{code:?}: {err}");

    // Nothing listens on a port that was just free.
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let closed = format!("https://127.0.0.1:{}", nasfleet_tests::free_port(ip)?);
    let data = controller.data_dir();
    let config = write_config(
        dir.path(),
        "closed.toml",
        &closed,
        &data.join("ca.crt"),
        &data.join("admin.crt"),
        &data.join("admin.key"),
    )?;
    let (code, err) = cli_as(&config, &["system", "list"])?;
    ensure!(code == Some(UNREACHABLE), "{code:?}: {err}");
    ensure!(
        err.contains(&format!("cannot reach the controller at {closed}")),
        "{err}"
    );
    ensure!(err.matches("Connection refused").count() == 1, "{err}");
    Ok(())
}

#[test]
fn refused_certificates_are_named_with_what_to_check() -> Result<()> {
    let dir = TestDir::new("refusedcert")?;
    let mut controller = Controller::init(dir.path())?;
    controller.start()?;
    let data = controller.data_dir().to_path_buf();

    // Another fleet's CA: the controller ends the handshake.
    let (cert_pem, key_pem) = foreign_admin_certificate()?;
    let cert = dir.path().join("foreign.crt");
    let key = dir.path().join("foreign.key");
    std::fs::write(&cert, cert_pem)?;
    std::fs::write(&key, key_pem)?;
    let config = write_config(
        dir.path(),
        "foreign.toml",
        controller.url(),
        &data.join("ca.crt"),
        &cert,
        &key,
    )?;
    // Whether the refusal or the closed connection reaches the call first
    // varies; every attempt must tell the same.
    for _ in 0..5 {
        let (code, err) = cli_as(&config, &["system", "list"])?;
        ensure!(code == Some(CREDENTIALS_REFUSED), "{code:?}: {err}");
        ensure!(
            err.contains("the controller refused this client's certificate"),
            "{err}"
        );
        ensure!(err.contains(&config.display().to_string()), "{err}");
        ensure!(err.contains("sha256:"), "{err}");
        ensure!(!err.contains("transport error"), "{err}");
    }

    // An enrolled system's certificate is good credentials without the
    // right to administer the fleet.
    let agent = Agent::join(&controller, "gone1")?;
    let state = agent.state_dir();
    let config = write_config(
        dir.path(),
        "agent.toml",
        controller.url(),
        &data.join("ca.crt"),
        &state.join("agent.crt"),
        &state.join("agent.key"),
    )?;
    let (code, err) = cli_as(&config, &["system", "list"])?;
    ensure!(code == Some(PERMISSION_DENIED), "{code:?}: {err}");

    // Once the system is removed its certificate is revoked, which the
    // controller says as such: refused credentials, like a foreign one.
    controller.cli_ok(&["system", "remove", "gone1", "--yes"])?;
    let (code, err) = cli_as(&config, &["system", "list"])?;
    ensure!(code == Some(CREDENTIALS_REFUSED), "{code:?}: {err}");
    ensure!(err.contains("revoked"), "{err}");
    Ok(())
}

#[test]
fn watch_says_each_step_once_and_a_failed_run_exits_with_its_status() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("watchsteps")?;
    let pool = TestPool::create(dir.path(), "watchsteps")?;
    let data = pool.create_dataset("data")?;
    let gone = pool.create_dataset("gone")?;
    let (controller, _agent) = one_system(&dir, &pool, "nas1")?;

    let task = create_snapshot_task(
        &controller,
        &["--system", "nas1", "--dataset", &data, "--disabled"],
    )?;
    let out = controller.cli_ok(&["snapshot-task", "run", &task.to_string(), "--watch"])?;
    for step in ["snapshot", "retention"] {
        let ends: Vec<&str> = out
            .lines()
            .filter(|l| l.contains(&format!("] {step} ")) && !l.ends_with(" started"))
            .collect();
        ensure!(
            ends.len() == 1 && ends[0].contains(&format!("] {step} FINISHED")),
            "step {step} should end in one line:\n{out}"
        );
        let starts = out
            .lines()
            .filter(|l| l.ends_with(&format!("] {step} started")))
            .count();
        ensure!(starts <= 1, "step {step} started twice:\n{out}");
        ensure!(!out.contains(&format!("{step} ({step})")), "{out}");
    }

    let doomed = create_snapshot_task(
        &controller,
        &["--system", "nas1", "--dataset", &gone, "--disabled"],
    )?;
    destroy_recursively(&gone)?;
    let run_id = start_task_run(&controller, doomed)?;
    let (code, err) = code_of(&controller, &["run", "watch", &run_id.to_string()])?;
    ensure!(code == Some(RUN_FAILED), "{code:?}: {err}");
    ensure!(err.contains(&format!("Run {run_id} FAILED")), "{err}");
    let run = wait_run_final(&controller, run_id, RUN_TIMEOUT)?;
    ensure!(run_state(&run)? == "FAILED", "{run}");
    Ok(())
}
