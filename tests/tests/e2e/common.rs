//! Helpers shared by the end-to-end tests.

use anyhow::{Context, Result, ensure};
use nasfleet_common::dial::{ClientIdentity, DialOptions, ServerTrust, dial};
use nasfleet_proto::v1::ListSystemsRequest;
use nasfleet_proto::v1::fleet_client::FleetClient;
use nasfleet_tests::{Agent, Controller, TestDir, TestPool, wait_for_status};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

/// Generous bound for a status change the controller should see within
/// about three 1 s heartbeats (plus reconnect backoff where relevant).
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(20);

pub fn mode_of(path: &Path) -> Result<u32> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .permissions()
        .mode()
        & 0o777)
}

pub fn str_field<'a>(value: &'a Value, field: &str) -> Result<&'a str> {
    value
        .get(field)
        .and_then(Value::as_str)
        .with_context(|| format!("no string field '{field}' in {value}"))
}

pub fn string_array(value: &Value, field: &str) -> Result<Vec<String>> {
    value
        .get(field)
        .and_then(Value::as_array)
        .with_context(|| format!("no array field '{field}' in {value}"))?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .with_context(|| format!("non-string in '{field}': {value}"))
        })
        .collect()
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a tokio runtime")
}

/// Calls ListSystems on the controller with the given client identity (or none).
pub fn list_systems_as(
    controller: &Controller,
    identity: Option<ClientIdentity>,
) -> Result<std::result::Result<usize, tonic::Status>> {
    let ca = std::fs::read(controller.data_dir().join("ca.crt"))?;
    runtime()?.block_on(async {
        let channel = dial(
            controller.url(),
            &ServerTrust::CaPem(ca),
            identity.as_ref(),
            &DialOptions::default(),
        )
        .await;
        let channel = match channel {
            Ok(c) => c,
            // A handshake refused by the server surfaces as a failed dial.
            Err(e) => return Ok(Err(tonic::Status::unavailable(format!("{e:#}")))),
        };
        Ok(FleetClient::new(channel)
            .list_systems(ListSystemsRequest {})
            .await
            .map(|r| r.into_inner().systems.len()))
    })
}

/// A started controller with one started agent owning `pool`.
pub fn one_system(dir: &TestDir, pool: &TestPool, name: &str) -> Result<(Controller, Agent)> {
    let mut controller = Controller::init(dir.path())?;
    controller.start()?;
    let mut agent = Agent::join(&controller, name)?;
    agent.start(&[pool.name()], None)?;
    wait_for_status(&controller, name, "ONLINE", STATUS_TIMEOUT)?;
    Ok((controller, agent))
}

/// `run show ID -o json`.
pub fn run_json(controller: &Controller, id: u64) -> Result<Value> {
    controller.cli_json(&["run", "show", &id.to_string()])
}

pub fn run_state(run: &Value) -> Result<String> {
    Ok(str_field(run, "state")?.to_owned())
}

/// Polls a run until it is in a final state; returns it.
pub fn wait_run_final(controller: &Controller, id: u64, timeout: Duration) -> Result<Value> {
    let mut last = Value::Null;
    nasfleet_tests::wait_until(timeout, Duration::from_millis(200), || {
        last = run_json(controller, id)?;
        Ok(!matches!(run_state(&last)?.as_str(), "RUNNING" | "PENDING"))
    })
    .with_context(|| format!("run {id} did not end; last seen {last}"))?;
    Ok(last)
}

/// Creates a snapshot task from CLI flags and returns its id.
pub fn create_snapshot_task(controller: &Controller, args: &[&str]) -> Result<u64> {
    let mut full = vec!["snapshot-task", "create"];
    full.extend_from_slice(args);
    let task = controller.cli_json(&full)?;
    task["id"]
        .as_u64()
        .with_context(|| format!("no id in {task}"))
}

/// Starts a task run through the CLI and returns the run id.
pub fn start_task_run(controller: &Controller, task_id: u64) -> Result<u64> {
    let run = controller.cli_json(&["snapshot-task", "run", &task_id.to_string()])?;
    run["id"]
        .as_u64()
        .with_context(|| format!("no run id in {run}"))
}

/// The CLI's stderr for a command that must fail.
pub fn cli_error(controller: &Controller, args: &[&str]) -> Result<String> {
    let out = controller.cli(args)?;
    ensure!(
        !out.status.success(),
        "`nasfleet {}` should have failed; stdout: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Snapshot names (after '@') of a dataset, read from zfs directly.
pub fn snapshot_names(pool: &TestPool, dataset: &str) -> Result<Vec<String>> {
    Ok(pool
        .snapshots(dataset)?
        .into_iter()
        .filter_map(|s| s.split_once('@').map(|(_, n)| n.to_owned()))
        .collect())
}

/// Creates `count` snapshots named under `auto-%Y-%m-%d_%H-%M` in 2020, all
/// long expired under any lifetime.
pub fn old_auto_snapshots(pool: &TestPool, dataset: &str, count: usize) -> Result<Vec<String>> {
    let mut names = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!(
            "auto-2020-{:02}-{:02}_{:02}-00",
            1 + i / (28 * 24) % 12,
            1 + (i / 24) % 28,
            i % 24
        );
        pool.snapshot(dataset, &name)?;
        names.push(name);
    }
    Ok(names)
}

/// zfs-fuse reports `readonly` of a mounted dataset from its FUSE mount
/// (always rw); the truth is whether a write is refused.
pub fn target_is_read_only(dataset: &str) -> Result<bool> {
    let mountpoint = nasfleet_tests::zfs::get_property(dataset, "mountpoint")?;
    let probe = std::path::PathBuf::from(mountpoint.trim()).join(".nasfleet-write-probe");
    match std::fs::write(&probe, b"x") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Ok(false)
        }
        Err(_) => Ok(true),
    }
}

/// zfs-fuse answers "dataset is busy" to the first destroy of a mounted
/// dataset (it unmounts it then); the next attempt goes through.
pub fn destroy_recursively(name: &str) -> Result<()> {
    nasfleet_tests::wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let mut destroy = std::process::Command::new("zfs");
        destroy.args(["destroy", "-r", name]);
        Ok(
            nasfleet_tests::run_output(&mut destroy, Duration::from_secs(60))?
                .status
                .success(),
        )
    })
    .with_context(|| format!("destroying {name}"))
}

/// A CA of our own and a `user:admin` certificate it signs.
pub fn foreign_admin_certificate() -> Result<(String, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "impostor CA");
    ca_params.distinguished_name = dn;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "user:admin");
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A CA of our own and a server certificate for 127.0.0.1 it signs, written
/// to `dir` as `loopback-ca.crt`, `loopback.crt` and `loopback.key`; their
/// paths in that order.
pub fn loopback_server_certificate(
    dir: &std::path::Path,
) -> Result<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "test relay CA");
    ca_params.distinguished_name = dn;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned()])?;
    let cert = params.signed_by(&key, &issuer)?;
    let paths = (
        dir.join("loopback-ca.crt"),
        dir.join("loopback.crt"),
        dir.join("loopback.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem())?;
    std::fs::write(&paths.1, cert.pem())?;
    std::fs::write(&paths.2, key.serialize_pem())?;
    Ok(paths)
}
