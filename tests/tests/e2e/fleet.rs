//! Foundation: enrollment, liveness, removal, restarts and the trust checks.

use super::common::*;
use anyhow::{Context, Result, bail, ensure};
use nasfleet_common::dial::ClientIdentity;
use nasfleet_tests::fleet::join_command;
use nasfleet_tests::{
    Agent, Controller, TestDir, TestPool, TestSshd, ensure_zfs, is_openzfs, run_output,
    wait_for_status,
};
use serde_json::Value;
use std::time::Duration;

#[test]
fn two_agents_join_go_online_offline_online_and_removed_one_is_refused() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("fleet")?;
    let pool1 = TestPool::create(dir.path(), "one")?;
    let pool2 = TestPool::create(dir.path(), "two")?;
    pool1.create_dataset("data")?;
    pool1.snapshot("data", "manual-2026-01-01_00-00")?;
    let sshd1 = TestSshd::start(dir.path())?;
    let sshd2 = TestSshd::start(dir.path())?;
    let mut controller = Controller::init(dir.path())?;
    controller.start()?;

    let mut nas1 = Agent::join(&controller, "nas1")?;
    let mut nas2 = Agent::join(&controller, "nas2")?;
    nas1.start(&[pool1.name()], Some(&sshd1))?;
    nas2.start(&[pool2.name()], Some(&sshd2))?;

    // Both ONLINE, each with exactly its own pool.
    for (name, pool) in [("nas1", &pool1), ("nas2", &pool2)] {
        wait_for_status(&controller, name, "ONLINE", STATUS_TIMEOUT)?;
        let mut pools = Vec::new();
        nasfleet_tests::wait_until(STATUS_TIMEOUT, Duration::from_millis(250), || {
            pools = string_array(&controller.system(name)?.context("listed")?, "pools")?;
            Ok(!pools.is_empty())
        })?;
        ensure!(
            pools == vec![pool.name().to_owned()],
            "{name} pools {pools:?}"
        );
    }
    let listed = controller.systems()?;
    ensure!(listed.len() == 2, "two systems listed: {listed:?}");
    for system in &listed {
        let last_seen = str_field(system, "last_seen")?;
        chrono::DateTime::parse_from_rfc3339(last_seen)
            .with_context(|| format!("last_seen '{last_seen}' is not RFC 3339"))?;
    }

    // SSH service: running, at the address we gave, with the host key sshd really uses.
    let services = controller.cli_json(&["system", "services", "nas1"])?;
    let ssh = services
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "ssh"))
        .with_context(|| format!("no ssh service in {services}"))?;
    ensure!(ssh["running"] == true, "ssh not running: {ssh}");
    ensure!(str_field(ssh, "state")? == "RUNNING", "{ssh}");
    ensure!(str_field(ssh, "address")? == sshd1.address(), "{ssh}");
    let fingerprints = string_array(ssh, "host_key_fingerprints")?;
    ensure!(
        fingerprints == vec![sshd1.host_key_fingerprint().to_owned()],
        "fingerprints {fingerprints:?} vs {}",
        sshd1.host_key_fingerprint()
    );

    // Details: the dataset with its snapshot, the zfs dialect of this machine.
    let shown = controller.cli_json(&["system", "show", "nas1"])?;
    let data = pool1.dataset("data");
    let dataset = shown["datasets"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == data.as_str()))
        .with_context(|| format!("{data} missing from {shown}"))?;
    ensure!(dataset["snapshot_count"] == 1, "{dataset}");
    let dialect = if is_openzfs() {
        "OpenZFS"
    } else {
        "legacy (zfs-fuse)"
    };
    ensure!(shown["zfs_dialect"] == dialect, "{shown}");
    // Pool health and capacity, as `zpool list` reports them.
    let pool = shown["pools"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == pool1.name()))
        .with_context(|| format!("{} missing from {shown}", pool1.name()))?;
    ensure!(pool["health"] == "ONLINE", "{pool}");
    let size = pool["size"].as_u64().unwrap_or(0);
    let free = pool["free"].as_u64().unwrap_or(u64::MAX);
    ensure!(size > 0 && free < size, "{pool}");
    ensure!(
        pool["capacity_percent"].as_u64().is_some_and(|c| c < 100),
        "{pool}"
    );
    let table = controller.cli_ok(&["system", "show", "nas1"])?;
    ensure!(
        table.contains(&data) && table.contains("RUNNING"),
        "{table}"
    );
    ensure!(
        table.contains("CAP") && table.contains("HEALTH") && table.contains("ONLINE"),
        "{table}"
    );

    // A snapshot taken now shows up after an on-demand refresh.
    pool1.snapshot("data", "manual-2026-01-02_00-00")?;
    let refreshed = controller.cli_json(&["system", "show", "nas1", "--refresh"])?;
    let count = refreshed["datasets"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == data.as_str()))
        .map(|d| d["snapshot_count"].clone());
    ensure!(count == Some(Value::from(2)), "after refresh: {refreshed}");

    // Stopped agent: OFFLINE with its last-seen time; restarted: ONLINE again.
    nas2.stop()?;
    let offline = wait_for_status(&controller, "nas2", "OFFLINE", STATUS_TIMEOUT)?;
    ensure!(offline["last_seen"].is_string(), "{offline}");
    let table = controller.cli_ok(&["system", "list"])?;
    ensure!(
        table
            .lines()
            .any(|l| l.starts_with("nas2") && l.contains("OFFLINE")),
        "{table}"
    );
    nas2.restart()?;
    wait_for_status(&controller, "nas2", "ONLINE", STATUS_TIMEOUT)?;

    // Removal: asks without --yes (and refuses without a terminal), then
    // revokes; the running agent is cut off and exits 78, and so does a restart.
    let refused = controller.cli(&["system", "remove", "nas1"])?;
    ensure!(
        !refused.status.success(),
        "remove without --yes must not proceed"
    );
    ensure!(controller.system("nas1")?.is_some());
    controller.cli_ok(&["system", "remove", "nas1", "--yes"])?;
    let status = nas1.wait_exit(Duration::from_secs(15))?;
    ensure!(status.code() == Some(78), "agent exit status {status:?}");
    ensure!(controller.system("nas1")?.is_none(), "nas1 still listed");
    nas1.restart()?;
    let status = nas1.wait_exit(Duration::from_secs(15))?;
    ensure!(
        status.code() == Some(78),
        "restarted agent exit status {status:?}"
    );
    ensure!(nas1.log().contains("revoked"), "{}", nas1.log());
    wait_for_status(&controller, "nas2", "ONLINE", STATUS_TIMEOUT)?;
    Ok(())
}

#[test]
fn hung_agent_goes_offline_within_three_heartbeats_and_recovers() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("hung")?;
    let pool = TestPool::create(dir.path(), "hung")?;
    let mut controller = Controller::init(dir.path())?;
    controller.start()?;
    let mut agent = Agent::join(&controller, "frozen")?;
    agent.start(&[pool.name()], None)?;
    wait_for_status(&controller, "frozen", "ONLINE", STATUS_TIMEOUT)?;

    // SIGSTOP keeps the TCP connection open but silences heartbeats: only
    // the controller's liveness check can notice.
    let pid = agent_pid(&agent)?;
    signal(pid, libc::SIGSTOP)?;
    let stopped_at = std::time::Instant::now();
    let waited = wait_for_status(&controller, "frozen", "OFFLINE", Duration::from_secs(10));
    signal(pid, libc::SIGCONT)?;
    waited?;
    // Heartbeat 1 s: OFFLINE after three missed beats, i.e. well under 5 s.
    let took = stopped_at.elapsed();
    ensure!(took < Duration::from_secs(5), "OFFLINE only after {took:?}");
    wait_for_status(&controller, "frozen", "ONLINE", STATUS_TIMEOUT)?;
    Ok(())
}

fn agent_pid(agent: &Agent) -> Result<i32> {
    // The harness owns the child; find it by its unique state dir.
    let pattern = format!(
        "nasfleet-agent run --state-dir {}",
        agent.state_dir().display()
    );
    let out = std::process::Command::new("pgrep")
        .args(["-f", &pattern])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    match pids.as_slice() {
        [pid] => Ok(*pid),
        other => bail!("expected one agent process for {pattern}, found {other:?}"),
    }
}

fn signal(pid: i32, sig: i32) -> Result<()> {
    // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
    let rc = unsafe { libc::kill(pid, sig) };
    ensure!(rc == 0, "kill({pid}, {sig}) failed");
    Ok(())
}

#[test]
fn controller_restart_keeps_systems_and_agents_reconnect() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("restart")?;
    let pool = TestPool::create(dir.path(), "rs")?;
    let mut controller = Controller::init(dir.path())?;
    controller.log_format = "json".into();
    controller.start()?;
    let mut agent = Agent::join(&controller, "survivor")?;
    agent.log_format = "json".into();
    agent.start(&[pool.name()], None)?;
    wait_for_status(&controller, "survivor", "ONLINE", STATUS_TIMEOUT)?;

    let status = controller.stop()?;
    ensure!(status.success(), "controller exit on SIGTERM: {status:?}");
    controller.start()?;
    // Stored across the restart; the agent comes back on its own.
    ensure!(controller.system("survivor")?.is_some());
    let back = wait_for_status(&controller, "survivor", "ONLINE", Duration::from_secs(45))?;
    ensure!(string_array(&back, "pools")? == vec![pool.name().to_owned()]);
    ensure!(
        agent.is_running(),
        "agent exited while the controller was away"
    );

    // --log-format json: every log line of both daemons is a JSON object.
    for (who, log) in [("controller", controller.log()), ("agent", agent.log())] {
        let lines: Vec<&str> = log.lines().filter(|l| l.starts_with('{')).collect();
        ensure!(lines.len() >= 2, "{who} wrote no JSON log lines:\n{log}");
        for line in lines {
            let parsed: Value = serde_json::from_str(line)
                .with_context(|| format!("{who} log line is not JSON: {line}"))?;
            ensure!(parsed.get("level").is_some(), "{who}: {line}");
        }
    }
    Ok(())
}

#[test]
fn enrollment_refusals_store_nothing_and_keep_the_token() -> Result<()> {
    let dir = TestDir::new("enroll")?;
    let mut controller = Controller::init(dir.path())?;
    controller.start()?;
    let token = controller.create_token()?;
    ensure!(
        token.join_command.contains(&token.token)
            && token.join_command.contains(&token.ca_fingerprint),
        "{}",
        token.join_command
    );

    let try_join = |name: &str, tok: &str, fp: &str, label: &str| -> Result<String> {
        let state = dir.path().join(format!("refused-{label}"));
        let out = run_output(
            &mut join_command(controller.url(), tok, fp, name, &state)?,
            Duration::from_secs(60),
        )?;
        ensure!(!out.status.success(), "join {label} should have failed");
        ensure!(!state.exists(), "join {label} left {}", state.display());
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    };

    let wrong_fp = format!("sha256:{}", "0".repeat(64));
    let err = try_join("nas1", &token.token, &wrong_fp, "fingerprint")?;
    ensure!(err.contains("CA fingerprint mismatch"), "{err}");
    let err = try_join("bad/name", &token.token, &token.ca_fingerprint, "name")?;
    ensure!(err.contains("name: 'bad/name'"), "{err}");
    let err = try_join("nas1", "nfj1.unknown", &token.ca_fingerprint, "unknown")?;
    ensure!(err.contains("unknown join token"), "{err}");

    // None of the refusals above used the token up.
    let agent = Agent::join_with_token(&controller, "nas1", &token)?;
    for file in ["agent.key", "enrollment.toml"] {
        let mode = mode_of(&agent.state_dir().join(file))?;
        ensure!(mode == 0o600, "{file} has mode {mode:o}");
    }
    ensure!(mode_of(agent.state_dir())? == 0o700);
    for file in ["ca.key", "server.key", "admin.key", "admin.toml"] {
        let mode = mode_of(&controller.data_dir().join(file))?;
        ensure!(mode == 0o600, "controller {file} has mode {mode:o}");
    }

    let err = try_join("nas2", &token.token, &token.ca_fingerprint, "reused")?;
    ensure!(err.contains("already used"), "{err}");
    let fresh = controller.create_token()?;
    let err = try_join("nas1", &fresh.token, &fresh.ca_fingerprint, "taken")?;
    ensure!(err.contains("already enrolled"), "{err}");
    let short = controller.create_token_with(&["--ttl", "1s"])?;
    std::thread::sleep(Duration::from_millis(1500));
    let err = try_join("nas3", &short.token, &short.ca_fingerprint, "expired")?;
    ensure!(err.contains("expired"), "{err}");
    // The fresh token survived the "name taken" refusal.
    Agent::join_with_token(&controller, "nas2", &fresh)?;
    ensure!(controller.systems()?.len() == 2);
    Ok(())
}

#[test]
fn foreign_certificates_and_missing_credentials_are_rejected() -> Result<()> {
    let dir = TestDir::new("security")?;
    let mut controller = Controller::init(dir.path())?;
    controller.start()?;
    let agent = Agent::join(&controller, "nas1")?;

    // The admin's own credentials work through the same raw client.
    let admin = ClientIdentity {
        cert_pem: std::fs::read(controller.data_dir().join("admin.crt"))?,
        key_pem: std::fs::read(controller.data_dir().join("admin.key"))?,
    };
    ensure!(matches!(list_systems_as(&controller, Some(admin))?, Ok(1)));

    // No client certificate at all.
    let status = list_systems_as(&controller, None)?
        .err()
        .context("no cert accepted")?;
    ensure!(status.code() == tonic::Code::Unauthenticated, "{status:?}");

    // A client certificate from another CA, even one claiming to be the admin.
    let (cert_pem, key_pem) = foreign_admin_certificate()?;
    let status = list_systems_as(
        &controller,
        Some(ClientIdentity {
            cert_pem: cert_pem.into_bytes(),
            key_pem: key_pem.into_bytes(),
        }),
    )?
    .err()
    .context("foreign certificate accepted")?;
    ensure!(status.code() != tonic::Code::Ok, "{status:?}");

    // An agent's certificate cannot administer the fleet.
    let agent_identity = ClientIdentity {
        cert_pem: std::fs::read(agent.state_dir().join("agent.crt"))?,
        key_pem: std::fs::read(agent.state_dir().join("agent.key"))?,
    };
    let status = list_systems_as(&controller, Some(agent_identity))?
        .err()
        .context("agent certificate accepted for admin call")?;
    ensure!(status.code() == tonic::Code::PermissionDenied, "{status:?}");

    // The CLI without any credentials: clear error, non-zero exit.
    let home = dir.path().join("empty-home");
    std::fs::create_dir_all(&home)?;
    let out = std::process::Command::new(nasfleet_tests::binary("nasfleet")?)
        .args(["system", "list"])
        .env_remove("NASFLEET_CONFIG")
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", &home)
        .output()?;
    ensure!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("no credentials"), "{err}");
    Ok(())
}
