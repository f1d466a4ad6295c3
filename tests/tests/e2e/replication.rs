//! Replication: SSH trust set up by the controller, several sources to one target over real sshd and locally, incrementals by GUID, divergence, failures.

use super::common::*;
use anyhow::{Context, Result, ensure};
use nasfleet_tests::{
    Agent, Controller, TestDir, TestPool, TestSshd, ensure_zfs, is_openzfs, wait_for_status,
};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

pub(super) const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// The agents authorize keys for root in root's real authorized_keys (as on
/// a NAS). This guard removes exactly the keys of this test's agents again.
struct AuthorizedKeysCleanup {
    keys: Vec<String>,
}

impl Drop for AuthorizedKeysCleanup {
    fn drop(&mut self) {
        let path = PathBuf::from("/root/.ssh/authorized_keys");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        let kept: Vec<&str> = text
            .lines()
            .filter(|line| {
                !self
                    .keys
                    .iter()
                    .any(|k| !k.is_empty() && line.contains(k.as_str()))
            })
            .collect();
        let mut out = kept.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = std::fs::write(&path, out);
    }
}

/// The base64 part of an agent's replication public key.
fn replication_key_body(agent: &Agent) -> String {
    std::fs::read_to_string(agent.state_dir().join("replication_ed25519.pub"))
        .ok()
        .and_then(|line| line.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_default()
}

pub(super) struct Fleet {
    pub(super) controller: Controller,
    pub(super) nas1: Agent,
    pub(super) nas2: Agent,
    _cleanup: AuthorizedKeysCleanup,
}

pub(super) fn two_systems(
    dir: &TestDir,
    pool1: &TestPool,
    sshd1: &TestSshd,
    pool2: &TestPool,
    sshd2: &TestSshd,
) -> Result<Fleet> {
    let mut controller = Controller::init(dir.path())?;
    controller.start()?;
    let mut nas1 = Agent::join(&controller, "nas1")?;
    let mut nas2 = Agent::join(&controller, "nas2")?;
    nas1.start(&[pool1.name()], Some(sshd1))?;
    nas2.start(&[pool2.name()], Some(sshd2))?;
    for (name, pool) in [("nas1", pool1), ("nas2", pool2)] {
        wait_for_status(&controller, name, "ONLINE", STATUS_TIMEOUT)?;
        // Tasks are checked against the reported inventory, which comes
        // a moment after ONLINE (seconds in the emulated guest).
        nasfleet_tests::wait_until(STATUS_TIMEOUT, Duration::from_millis(200), || {
            let shown = controller.cli_json(&["system", "show", name])?;
            Ok(shown["pools"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["name"] == pool.name())))
        })
        .with_context(|| format!("{name} never reported pool {}", pool.name()))?;
    }
    // Wait until the replication keys exist (made at agent start) and are reported.
    nasfleet_tests::wait_until(STATUS_TIMEOUT, Duration::from_millis(200), || {
        Ok(!replication_key_body(&nas1).is_empty() && !replication_key_body(&nas2).is_empty())
    })?;
    let cleanup = AuthorizedKeysCleanup {
        keys: vec![replication_key_body(&nas1), replication_key_body(&nas2)],
    };
    Ok(Fleet {
        controller,
        nas1,
        nas2,
        _cleanup: cleanup,
    })
}

/// Two systems in a test dir of their own, each with a pool and an sshd,
/// and the fleet of both; dropped in that order (agents before pools).
pub(super) struct Pair {
    pub(super) fleet: Fleet,
    pub(super) pool1: TestPool,
    pub(super) pool2: TestPool,
    _sshds: [TestSshd; 2],
    pub(super) dir: TestDir,
}

impl Pair {
    /// `nas1:` and the source pool's `dataset`, as tasks name a source.
    pub(super) fn source(&self, dataset: &str) -> String {
        format!("nas1:{}/{dataset}", self.pool1.name())
    }

    /// `nas2:` and the target pool's `dataset`.
    pub(super) fn target(&self, dataset: &str) -> String {
        format!("nas2:{}/{dataset}", self.pool2.name())
    }

    /// Where `dataset` of the source pool lands under `root` of the target pool.
    pub(super) fn replica(&self, root: &str, dataset: &str) -> String {
        format!(
            "{}/{root}/nas1/{}/{dataset}",
            self.pool2.name(),
            self.pool1.name()
        )
    }
}

/// A [`Pair`] named `name` whose source pool `prepare` fills before the
/// agents start (their first inventory then has it).
pub(super) fn pair(
    name: &str,
    prepare: impl FnOnce(&TestDir, &TestPool) -> Result<()>,
) -> Result<Pair> {
    let dir = TestDir::new(name)?;
    let pool1 = TestPool::create(dir.path(), &format!("{name}s"))?;
    let pool2 = TestPool::create(dir.path(), &format!("{name}d"))?;
    let sshds = [TestSshd::start(dir.path())?, TestSshd::start(dir.path())?];
    prepare(&dir, &pool1)?;
    let fleet = two_systems(&dir, &pool1, &sshds[0], &pool2, &sshds[1])?;
    Ok(Pair {
        fleet,
        pool1,
        pool2,
        _sshds: sshds,
        dir,
    })
}

pub(super) fn replication_run(controller: &Controller, name: &str) -> Result<Value> {
    let run = controller.cli_json(&["replication", "run", name])?;
    let id = run["id"]
        .as_u64()
        .with_context(|| format!("no run id in {run}"))?;
    wait_run_final(controller, id, RUN_TIMEOUT)
}

/// `replication create NAME --source SOURCE --target TARGET --disabled
/// --yes` plus `extra` flags; the task's id.
pub(super) fn create_replication(
    controller: &Controller,
    name: &str,
    source: &str,
    target: &str,
    extra: &[&str],
) -> Result<u64> {
    let mut args = vec![
        "replication",
        "create",
        name,
        "--source",
        source,
        "--target",
        target,
        "--disabled",
        "--yes",
    ];
    args.extend_from_slice(extra);
    controller.cli_ok(&args)?;
    task_json(controller, name)?["id"]
        .as_u64()
        .with_context(|| format!("task {name} has no id"))
}

pub(super) fn task_json(controller: &Controller, name: &str) -> Result<Value> {
    let list = controller.cli_json(&["replication", "list"])?;
    list.as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == name).cloned())
        .with_context(|| format!("{name} not in {list}"))
}

#[test]
fn two_sources_replicate_to_one_target_incrementally_and_divergence_is_refused() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("repl")?;
    let pool1 = TestPool::create(dir.path(), "rsrc")?;
    let pool2 = TestPool::create(dir.path(), "rdst")?;
    let sshd1 = TestSshd::start(dir.path())?;
    let sshd2 = TestSshd::start(dir.path())?;
    let data = pool1.create_dataset("data")?;
    let child = pool1.create_dataset("data/child")?;
    let local = pool2.create_dataset("local")?;
    pool1.write_file("data", "a.txt", b"first")?;
    for (pool, dataset) in [(&pool1, "data"), (&pool1, "data/child"), (&pool2, "local")] {
        pool.snapshot(dataset, "auto-2026-01-01_00-00")?;
        pool.snapshot(dataset, "manual-2026-01-01_00-30")?;
        pool.snapshot(dataset, "auto-2026-01-01_01-00")?;
    }
    let fleet = two_systems(&dir, &pool1, &sshd1, &pool2, &sshd2)?;
    let controller = &fleet.controller;
    let backup = format!("{}/backup", pool2.name());

    // Dry run: the summary shows where every source lands; nothing saved.
    let source1 = format!("nas1:{data}");
    let source2 = format!("nas2:{local}");
    let target = format!("nas2:{backup}");
    let args = [
        "replication",
        "create",
        "offsite",
        "--source",
        &source1,
        "--source",
        &source2,
        "--target",
        &target,
        "--recursive",
        "--disabled",
    ];
    let mut dry: Vec<&str> = args.to_vec();
    dry.push("--dry-run");
    let summary = controller.cli_ok(&dry)?;
    ensure!(
        summary.contains(&format!("{backup}/nas1/{data}")),
        "{summary}"
    );
    ensure!(
        summary.contains(&format!("{backup}/nas2/{local}")),
        "{summary}"
    );
    ensure!(summary.contains("weekly (Sunday at 00:00)"), "{summary}");
    // ...and what a run would send now: two matching snapshots of each of
    // the three datasets (the manual one is not replicated). Only OpenZFS
    // can say how many bytes (`zfs send -n -P`).
    ensure!(summary.contains("A run now would send:"), "{summary}");
    ensure!(summary.contains("Total: 6 snapshot(s), "), "{summary}");
    ensure!(
        summary.contains("Sizes marked unknown") != is_openzfs(),
        "{summary}"
    );
    dry.splice(0..0, ["-o", "json"]);
    let dry_json: Value = serde_json::from_str(&controller.cli_ok(&dry)?)?;
    let estimates = dry_json["estimate"]["datasets"]
        .as_array()
        .with_context(|| format!("{dry_json}"))?;
    ensure!(estimates.len() == 3, "{dry_json}");
    for estimate in estimates {
        ensure!(estimate["snapshots"] == 2, "{estimate}");
        ensure!(
            estimate["base"].is_null(),
            "a first run is full: {estimate}"
        );
        ensure!(
            estimate["bytes"].as_u64().is_some_and(|b| b > 0) == is_openzfs(),
            "{estimate}"
        );
    }
    let listed = controller.cli_ok(&["replication", "list"])?;
    ensure!(
        listed.contains("No replication tasks configured"),
        "{listed}"
    );
    // Without a terminal it must be confirmed with --yes.
    let err = cli_error(controller, &args)?;
    ensure!(err.contains("--yes"), "{err}");
    let mut create: Vec<&str> = args.to_vec();
    create.push("--yes");
    controller.cli_ok(&create)?;
    let err = cli_error(controller, &create)?;
    ensure!(
        err.contains("Object with this name already exists"),
        "{err}"
    );

    // First run: full of the oldest matching snapshot, then incrementals; locally for nas2.
    let run = replication_run(controller, "offsite")?;
    ensure!(run_state(&run)? == "FINISHED", "{run}");
    let remote_target = format!("{backup}/nas1/{data}");
    let remote_child = format!("{backup}/nas1/{child}");
    let local_target = format!("{backup}/nas2/{local}");
    for target in [&remote_target, &remote_child, &local_target] {
        let snaps = nasfleet_tests::zfs::snapshots(target)?;
        let names: Vec<&str> = snaps
            .iter()
            .filter_map(|s| s.split_once('@').map(|p| p.1))
            .collect();
        ensure!(
            names == ["auto-2026-01-01_00-00", "auto-2026-01-01_01-00"],
            "{target}: {names:?}"
        );
        let readonly = nasfleet_tests::zfs::get_property(target, "readonly")?;
        ensure!(
            readonly.trim() == "on" || target_is_read_only(target)?,
            "{target} readonly={readonly}"
        );
    }
    ensure!(run["bytes"].as_u64().unwrap_or(0) > 0, "{run}");
    let connections = controller.cli_json(&["ssh-connection", "list"])?;
    ensure!(
        connections
            .as_array()
            .is_some_and(|c| c.len() == 1 && c[0]["source"] == "nas1" && c[0]["target"] == "nas2"),
        "{connections}"
    );
    ensure!(
        connections[0]["address"] == sshd2.address(),
        "{connections}"
    );

    // Nothing new: up to date. Then two new matching snapshots go incrementally, by GUID.
    let again = replication_run(controller, "offsite")?;
    ensure!(run_state(&again)? == "FINISHED", "{again}");
    let steps = again["steps"].to_string();
    ensure!(steps.contains("up to date"), "{steps}");
    pool1.write_file("data", "b.txt", b"second")?;
    pool1.snapshot("data", "auto-2026-01-01_02-00")?;
    pool1.snapshot("data", "auto-2026-01-01_03-00")?;
    // `show` says what the next run would send: the two new snapshots of
    // nas1's dataset, nothing of the others.
    let shown = controller.cli_json(&["replication", "show", "offsite"])?;
    let estimate = |source: &str| -> Result<Value> {
        shown["estimate"]["datasets"]
            .as_array()
            .and_then(|all| all.iter().find(|e| e["source"] == source).cloned())
            .with_context(|| format!("{source} not in {shown}"))
    };
    ensure!(estimate(&source1)?["snapshots"] == 2, "{shown}");
    ensure!(
        estimate(&source1)?["base"] == "auto-2026-01-01_01-00"
            && estimate(&source1)?["base_guid"]
                .as_u64()
                .is_some_and(|g| g > 0),
        "{shown}"
    );
    ensure!(
        estimate(&format!("nas1:{child}"))?["snapshots"] == 0,
        "{shown}"
    );
    ensure!(estimate(&source2)?["snapshots"] == 0, "{shown}");
    if is_openzfs() {
        ensure!(
            estimate(&source1)?["bytes"].as_u64().is_some_and(|b| b > 0),
            "{shown}"
        );
    }
    // A renamed common snapshot on the target is still the base (matched by GUID).
    nasfleet_tests::run_ok(std::process::Command::new("zfs").args([
        "rename",
        &format!("{remote_target}@auto-2026-01-01_01-00"),
        &format!("{remote_target}@renamed-base"),
    ]))?;
    let incremental = replication_run(controller, "offsite")?;
    ensure!(run_state(&incremental)? == "FINISHED", "{incremental}");
    let names = nasfleet_tests::zfs::snapshots(&remote_target)?;
    ensure!(
        names.iter().any(|n| n.ends_with("@auto-2026-01-01_03-00")),
        "{names:?}"
    );
    ensure!(
        names.iter().any(|n| n.ends_with("@auto-2026-01-01_02-00")),
        "{names:?}"
    );
    let b = nasfleet_tests::zfs::mounted_at(&remote_target)?;
    let copied = std::fs::read_to_string(b.join("b.txt")).unwrap_or_default();
    ensure!(copied == "second", "b.txt on the target: {copied:?}");

    // Divergence: a snapshot made on the target after the base. Refused, named.
    nasfleet_tests::run_ok(
        std::process::Command::new("zfs").args(["snapshot", &format!("{remote_target}@rogue")]),
    )?;
    pool1.snapshot("data", "auto-2026-01-01_04-00")?;
    let refused = replication_run(controller, "offsite")?;
    ensure!(run_state(&refused)? == "FAILED", "{refused}");
    let reason = str_field(&refused, "reason")?;
    ensure!(
        reason.contains("nas1") && reason.contains(&remote_target) && reason.contains("rogue"),
        "{reason}"
    );
    let shown = task_json(controller, "offsite")?;
    ensure!(shown["status"] == "FAILED", "{shown}");
    ensure!(
        str_field(&shown, "last_error")?.contains("rogue"),
        "{shown}"
    );
    ensure!(
        nasfleet_tests::zfs::snapshots(&remote_target)?
            .iter()
            .any(|n| n.ends_with("@rogue"))
    );

    // With --allow-overwrite the target follows the source again.
    controller.cli_ok(&[
        "replication",
        "edit",
        "offsite",
        "--allow-overwrite",
        "--yes",
    ])?;
    let forced = replication_run(controller, "offsite")?;
    ensure!(run_state(&forced)? == "FINISHED", "{forced}");
    let names = nasfleet_tests::zfs::snapshots(&remote_target)?;
    ensure!(!names.iter().any(|n| n.ends_with("@rogue")), "{names:?}");
    ensure!(
        names.iter().any(|n| n.ends_with("@auto-2026-01-01_04-00")),
        "{names:?}"
    );

    let listed = task_json(controller, "offsite")?;
    for field in ["name", "status", "last_error", "next_run", "schedule"] {
        ensure!(listed.get(field).is_some(), "{field} missing: {listed}");
    }
    ensure!(
        listed["status"] == "FINISHED" && listed["schedule"] == "0 0 * * sun",
        "{listed}"
    );

    // A system that a task still uses is not removed; once it is free, its
    // replication key stops logging in to the target and its connection goes.
    let err = cli_error(controller, &["system", "remove", "nas1", "--yes"])?;
    ensure!(err.contains("replication task 'offsite'"), "{err}");
    ensure!(task_json(controller, "offsite").is_ok(), "task lost");
    let nas1_key = replication_key_body(&fleet.nas1);
    let authorized = || std::fs::read_to_string("/root/.ssh/authorized_keys").unwrap_or_default();
    ensure!(
        authorized().contains(&nas1_key),
        "nas1's key was never authorized"
    );
    controller.cli_ok(&["replication", "delete", "offsite", "--yes"])?;
    controller.cli_ok(&["system", "remove", "nas1", "--yes"])?;
    ensure!(
        !authorized().contains(&nas1_key),
        "the removed system's key still logs in to nas2"
    );
    let connections = controller.cli_json(&["ssh-connection", "list"])?;
    ensure!(
        connections.as_array().is_some_and(Vec::is_empty),
        "{connections}"
    );
    drop(fleet.nas1);
    drop(fleet.nas2);
    Ok(())
}

#[test]
fn replication_failures_and_validation_give_actionable_reasons() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("replfail")?;
    let pool1 = TestPool::create(dir.path(), "fsrc")?;
    let pool2 = TestPool::create(dir.path(), "fdst")?;
    let mut sshd1 = TestSshd::start(dir.path())?;
    let mut sshd2 = TestSshd::start(dir.path())?;
    let empty = pool1.create_dataset("empty")?;
    let data = pool1.create_dataset("data")?;
    pool1.snapshot("data", "auto-2026-02-01_00-00")?;
    let fleet = two_systems(&dir, &pool1, &sshd1, &pool2, &sshd2)?;
    let controller = &fleet.controller;
    let target = format!("nas2:{}/backup", pool2.name());

    // Validation: each refusal names its field and saves nothing.
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--target".into(), target.clone()],
            "At least one source is required",
        ),
        (
            vec!["--source".into(), format!("nas1:{data}")],
            "Destination is required",
        ),
        (
            vec![
                "--source".into(),
                format!("nas1:{}/nope", pool1.name()),
                "--target".into(),
                target.clone(),
            ],
            "Dataset not found",
        ),
        (
            vec![
                "--source".into(),
                format!("nas1:{data}"),
                "--target".into(),
                format!("nas1:{data}/inside"),
            ],
            "must not be inside source dataset",
        ),
        (
            vec![
                "--source".into(),
                format!("nas1:{data},{data}"),
                "--target".into(),
                target.clone(),
            ],
            "both land on",
        ),
        (
            vec![
                "--source".into(),
                format!("nas1:{data}"),
                "--target".into(),
                target.clone(),
                "--naming-schema".into(),
                "x-%Y".into(),
            ],
            "must be present in snapshot naming schema",
        ),
        (
            vec![
                "--source".into(),
                format!("ghost:{data}"),
                "--target".into(),
                target.clone(),
            ],
            "ghost",
        ),
    ];
    for (extra, message) in cases {
        let mut args: Vec<&str> = vec!["replication", "create", "bad", "--yes"];
        args.extend(extra.iter().map(String::as_str));
        let err = cli_error(controller, &args)?;
        ensure!(err.contains(message), "`{}` said: {err}", args.join(" "));
    }
    ensure!(
        controller
            .cli_ok(&["replication", "list"])?
            .contains("No replication tasks configured")
    );

    // No matching snapshots: named dataset, named system.
    let empty_source = format!("nas1:{empty}");
    controller.cli_ok(&[
        "replication",
        "create",
        "empty",
        "--source",
        &empty_source,
        "--target",
        &target,
        "--disabled",
        "--yes",
    ])?;
    let run = replication_run(controller, "empty")?;
    ensure!(run_state(&run)? == "FAILED", "{run}");
    let reason = str_field(&run, "reason")?;
    ensure!(
        reason.contains(&format!(
            "Dataset '{empty}' does not have any matching snapshots to replicate"
        )) && reason.starts_with("nas1"),
        "{reason}"
    );

    // The target's sshd is down: the pre-flight says so, in TrueNAS's words.
    let data_source = format!("nas1:{data}");
    controller.cli_ok(&[
        "replication",
        "create",
        "down",
        "--source",
        &data_source,
        "--target",
        &target,
        "--disabled",
        "--yes",
    ])?;
    let ok = replication_run(controller, "down")?;
    ensure!(run_state(&ok)? == "FINISHED", "{ok}");
    sshd2.stop()?;
    let run = replication_run(controller, "down")?;
    ensure!(run_state(&run)? == "FAILED", "{run}");
    let reason = str_field(&run, "reason")?;
    let expected = format!(
        "[EACCES] Unable to connect to port {} on {}",
        sshd2.port(),
        sshd2.host()
    );
    ensure!(reason.contains(&expected), "{reason}");
    sshd2.restart()?;
    sshd1.stop()?;
    // The source's own sshd does not matter for pushing.
    let run = replication_run(controller, "down")?;
    ensure!(run_state(&run)? == "FINISHED", "{run}");
    sshd1.restart()?;

    // Deleting the connection revokes the key on the target; creating it
    // again authorizes it again (and checks the login from the source).
    let key = replication_key_body(&fleet.nas1);
    let authorized = || std::fs::read_to_string("/root/.ssh/authorized_keys").unwrap_or_default();
    ensure!(authorized().contains(&key), "key of nas1 not authorized");
    controller.cli_ok(&["ssh-connection", "delete", "nas1", "nas2", "--yes"])?;
    ensure!(
        !authorized().contains(&key),
        "key of nas1 still authorized after delete"
    );
    let listed = controller.cli_json(&["ssh-connection", "list"])?;
    ensure!(listed.as_array().is_some_and(|a| a.is_empty()), "{listed}");
    let created = controller.cli_json(&["ssh-connection", "create", "nas1", "nas2"])?;
    ensure!(created["address"] == sshd2.address(), "{created}");
    ensure!(authorized().contains(&key));
    let run = replication_run(controller, "down")?;
    ensure!(run_state(&run)? == "FINISHED", "{run}");
    Ok(())
}

#[test]
fn spaces_travel_as_data_snapshot_tasks_follow_and_retention_keeps_the_base() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("replname")?;
    let pool1 = TestPool::create(dir.path(), "nsrc")?;
    let pool2 = TestPool::create(dir.path(), "ndst")?;
    let sshd1 = TestSshd::start(dir.path())?;
    let sshd2 = TestSshd::start(dir.path())?;
    let spaced = pool1.create_dataset("my data")?;
    let fresh = pool1.create_dataset("fresh")?;
    // Two expired snapshots (2020) under a schema with a space in it.
    pool1.snapshot("my data", "auto 2020-01-01_00-00")?;
    pool1.snapshot("my data", "auto 2020-01-01_01-00")?;
    let fleet = two_systems(&dir, &pool1, &sshd1, &pool2, &sshd2)?;
    let controller = &fleet.controller;
    let target = format!("nas2:{}/backup", pool2.name());

    // Hostile names never reach a shell: refused before anything runs.
    let canary = dir.path().join("pwned");
    let hostile = format!("nas1:{}/x$(touch {})", pool1.name(), canary.display());
    let err = cli_error(
        controller,
        &[
            "replication",
            "create",
            "evil",
            "--source",
            &hostile,
            "--target",
            &target,
            "--yes",
        ],
    )?;
    ensure!(err.contains("source"), "{err}");
    let hostile_target = format!("nas2:{}/b;touch {}", pool2.name(), canary.display());
    let spaced_source = format!("nas1:{spaced}");
    let err = cli_error(
        controller,
        &[
            "replication",
            "create",
            "evil",
            "--source",
            &spaced_source,
            "--target",
            &hostile_target,
            "--yes",
        ],
    )?;
    ensure!(err.contains("target"), "{err}");
    ensure!(!canary.exists(), "a hostile name ran a command");

    controller.cli_ok(&[
        "replication",
        "create",
        "spaced",
        "--source",
        &spaced_source,
        "--target",
        &target,
        "--naming-schema",
        "auto %Y-%m-%d_%H-%M",
        "--disabled",
        "--yes",
    ])?;
    let run = replication_run(controller, "spaced")?;
    ensure!(run_state(&run)? == "FINISHED", "{run}");
    let landed = format!("{}/backup/nas1/{spaced}", pool2.name());
    let names = nasfleet_tests::zfs::snapshots(&landed)?;
    ensure!(
        names.len() == 2 && names[1].ends_with("@auto 2020-01-01_01-00"),
        "{names:?}"
    );
    ensure!(!canary.exists());

    // Retention of a snapshot task on the source keeps the replication base
    // (the newest snapshot both sides have), destroys the other expired one.
    for system in ["nas1", "nas2"] {
        controller.cli_ok(&["system", "show", system, "--refresh"])?;
    }
    let task = create_snapshot_task(
        controller,
        &[
            "--system",
            "nas1",
            "--dataset",
            &spaced,
            "--naming-schema",
            "auto %Y-%m-%d_%H-%M",
            "--lifetime",
            "1w",
            "--disabled",
        ],
    )?;
    let run_id = start_task_run(controller, task)?;
    let run = wait_run_final(controller, run_id, RUN_TIMEOUT)?;
    ensure!(run_state(&run)? == "FINISHED", "{run}");
    let left = snapshot_names(&pool1, "my data")?;
    ensure!(
        left.iter().any(|n| n == "auto 2020-01-01_01-00"),
        "base destroyed: {left:?}"
    );
    ensure!(
        !left.iter().any(|n| n == "auto 2020-01-01_00-00"),
        "expired kept: {left:?}"
    );

    // --create-snapshot-task: a companion snapshot task on the replication's
    // schedule, and a snapshot taken right before each run.
    let fresh_source = format!("nas1:{fresh}");
    controller.cli_ok(&[
        "replication",
        "create",
        "withsnap",
        "--source",
        &fresh_source,
        "--target",
        &target,
        "--create-snapshot-task",
        "--cron",
        "15 3 * * *",
        "--disabled",
        "--yes",
    ])?;
    let tasks = controller.cli_json(&["snapshot-task", "list"])?;
    let companion = tasks
        .as_array()
        .and_then(|t| t.iter().find(|t| t["dataset"] == fresh.as_str()))
        .with_context(|| format!("no companion snapshot task in {tasks}"))?;
    ensure!(
        companion["schedule"] == "15 3 * * *"
            && companion["naming_schema"] == "auto-%Y-%m-%d_%H-%M",
        "{companion}"
    );
    let run = replication_run(controller, "withsnap")?;
    ensure!(run_state(&run)? == "FINISHED", "{run}");
    // Each source system's steps carry its name (a run's steps are one list).
    let steps = run["steps"].as_array().cloned().unwrap_or_default();
    let taken = steps
        .iter()
        .find(|s| s["name"] == "nas1 snapshot")
        .with_context(|| format!("no step 'nas1 snapshot' in {run}"))?;
    ensure!(
        str_field(taken, "detail")?.ends_with(": 1 taken"),
        "{taken}"
    );
    ensure!(
        steps.iter().any(|s| s["name"] == "nas1 pre-flight"),
        "{run}"
    );
    let landed = format!("{}/backup/nas1/{fresh}", pool2.name());
    let names = nasfleet_tests::zfs::snapshots(&landed)?;
    ensure!(names.len() == 1 && names[0].contains("@auto-"), "{names:?}");
    Ok(())
}

/// On OpenZFS the cut-off receive is resumed where it stopped (`receive
/// -s`, `send -t`): 1 GiB cut at about 60 %, the next run moves the rest
/// only. zfs-fuse has no resumable receives: it sends the snapshot again
/// (300 MiB, to keep the host tier quick).
#[test]
fn an_agent_killed_mid_transfer_recovers_on_the_next_run() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("replkill")?;
    let mib: u64 = if is_openzfs() { 1024 } else { 300 };
    let pool_size = (mib + 700) * 1024 * 1024;
    let pool1 = TestPool::create_sized(dir.path(), "ksrc", pool_size)?;
    let pool2 = TestPool::create_sized(dir.path(), "kdst", pool_size)?;
    let sshd1 = TestSshd::start(dir.path())?;
    let sshd2 = TestSshd::start(dir.path())?;
    let data = pool1.create_dataset("data")?;
    pool1.snapshot("data", "auto-2026-03-01_00-00")?;
    let mut fleet = two_systems(&dir, &pool1, &sshd1, &pool2, &sshd2)?;
    let target = format!("nas2:{}/backup", pool2.name());
    let source = format!("nas1:{data}");
    fleet.controller.cli_ok(&[
        "replication",
        "create",
        "big",
        "--source",
        &source,
        "--target",
        &target,
        "--disabled",
        "--yes",
    ])?;
    let first = replication_run(&fleet.controller, "big")?;
    ensure!(run_state(&first)? == "FINISHED", "{first}");

    // Incompressible data: seconds to send, time to be killed.
    let mountpoint = nasfleet_tests::zfs::get_property(&data, "mountpoint")?;
    let file = PathBuf::from(mountpoint.trim()).join("big.bin");
    nasfleet_tests::run_ok(
        std::process::Command::new("dd")
            .arg("if=/dev/urandom")
            .arg(format!("of={}", file.display()))
            .args(["bs=1M", &format!("count={mib}"), "status=none"]),
    )?;
    pool1.snapshot("data", "auto-2026-03-01_01-00")?;

    let run = fleet.controller.cli_json(&["replication", "run", "big"])?;
    let run_id = run["id"].as_u64().context("run id")?;
    let mut progress = Value::Null;
    // zfs-fuse: cut as soon as bytes move. OpenZFS: at about 60 % of
    // what the step knows it will move in all (`zfs send -n -P`).
    let cut_at = if is_openzfs() {
        (mib << 20) * 6 / 10
    } else {
        1
    };
    // The emulated guest has moved as little as 3.5 MB/s here.
    let transfer_timeout = Duration::from_secs(600);
    nasfleet_tests::wait_until(transfer_timeout, Duration::from_millis(20), || {
        progress = run_json(&fleet.controller, run_id)?["progress"].clone();
        Ok(progress["bytes_done"].as_u64().unwrap_or(0) >= cut_at)
    })
    .with_context(|| format!("the transfer never reached {cut_at} bytes: {progress}"))?;
    if is_openzfs() {
        // Random data, so a little more than the file.
        let total = progress["bytes_total"].as_u64().unwrap_or(0);
        ensure!(
            (mib << 20..=(mib << 20) * 11 / 10).contains(&total),
            "estimate {total}: {progress}"
        );
    }
    fleet.nas1.kill()?;
    let landed = format!("{}/backup/nas1/{data}", pool2.name());
    // The target keeps its last good state.
    let names = nasfleet_tests::zfs::snapshots(&landed)?;
    ensure!(
        names.iter().any(|n| n.ends_with("@auto-2026-03-01_00-00")),
        "{names:?}"
    );

    // The restarted agent reports the cut-off run as failed, truthfully.
    fleet.nas1.restart()?;
    let cut = wait_run_final(&fleet.controller, run_id, RUN_TIMEOUT)?;
    ensure!(run_state(&cut)? == "FAILED", "{cut}");
    ensure!(str_field(&cut, "reason")?.contains("restarted"), "{cut}");
    wait_for_status(&fleet.controller, "nas1", "ONLINE", STATUS_TIMEOUT)?;

    // The next run goes on from the newest common snapshot, on OpenZFS
    // from where the cut-off receive stopped.
    let next = fleet.controller.cli_json(&["replication", "run", "big"])?;
    let next_id = next["id"].as_u64().context("run id")?;
    let next = wait_run_final(&fleet.controller, next_id, transfer_timeout)?;
    ensure!(run_state(&next)? == "FINISHED", "{next}");
    let names = nasfleet_tests::zfs::snapshots(&landed)?;
    ensure!(
        names.iter().any(|n| n.ends_with("@auto-2026-03-01_01-00")),
        "{names:?}"
    );
    let step = next["steps"]
        .as_array()
        .and_then(|steps| {
            steps
                .iter()
                .find(|s| s["name"].as_str().is_some_and(|n| n.contains(" → ")))
        })
        .with_context(|| format!("no dataset step in {next}"))?;
    let moved = step["bytes"].as_u64().unwrap_or(u64::MAX);
    let detail = str_field(step, "detail")?;
    if is_openzfs() {
        ensure!(detail.contains("resumed at "), "{step}");
        ensure!(
            moved < (mib << 20) / 2,
            "the resumed run moved {moved} bytes of {} MiB: {step}",
            mib
        );
        let shown = fleet
            .controller
            .cli_ok(&["run", "show", &next["id"].to_string()])?;
        ensure!(shown.contains("resumed at "), "{shown}");
    } else {
        ensure!(moved >= mib << 20, "zfs-fuse sends it all again: {step}");
    }
    let target_mount = nasfleet_tests::zfs::mounted_at(&landed)?;
    let copied = target_mount.join("big.bin");
    ensure!(
        std::fs::metadata(&copied)?.len() == mib << 20,
        "big.bin on the target has the wrong size"
    );
    ensure!(
        sha256_of(&file)? == sha256_of(&copied)?,
        "big.bin differs between source and target"
    );
    Ok(())
}

/// `sha256sum FILE`'s digest.
pub(super) fn sha256_of(file: &std::path::Path) -> Result<String> {
    let out = nasfleet_tests::run_output(
        std::process::Command::new("sha256sum").arg(file),
        Duration::from_secs(300),
    )?;
    ensure!(out.status.success(), "sha256sum {}", file.display());
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// The key a source's agent installs on its target runs the agent's gate,
/// which admits only replication commands below that source's targets.
#[test]
fn a_replication_key_can_only_replicate_below_its_targets() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("gate")?;
    let pool1 = TestPool::create(dir.path(), "gsrc")?;
    let pool2 = TestPool::create(dir.path(), "gdst")?;
    let sshd1 = TestSshd::start(dir.path())?;
    let sshd2 = TestSshd::start(dir.path())?;
    let data = pool1.create_dataset("data")?;
    let other = pool2.create_dataset("other")?;
    pool1.snapshot("data", "auto-2026-01-01_00-00")?;
    let fleet = two_systems(&dir, &pool1, &sshd1, &pool2, &sshd2)?;
    let controller = &fleet.controller;
    let source = format!("nas1:{data}");
    let target = format!("nas2:{}/backup", pool2.name());
    controller.cli_ok(&[
        "replication",
        "create",
        "gated",
        "--source",
        &source,
        "--target",
        &target,
        "--yes",
    ])?;
    let run = replication_run(controller, "gated")?;
    ensure!(run_state(&run)? == "FINISHED", "through the gate: {run}");
    // The dataset's step says what it moved, and the run adds it up.
    let steps = run["steps"].as_array().context("steps in run show")?;
    let moved: u64 = steps
        .iter()
        .filter(|s| s["name"].as_str().is_some_and(|n| n.contains('→')))
        .filter_map(|s| s["bytes"].as_u64())
        .sum();
    ensure!(moved > 0 && run["bytes"].as_u64() == Some(moved), "{run}");

    // The line on the target runs the gate, restricted.
    let body = replication_key_body(&fleet.nas1);
    let keys = std::fs::read_to_string("/root/.ssh/authorized_keys")?;
    let line = keys
        .lines()
        .find(|l| l.contains(&body))
        .context("nas1's key is authorized")?;
    ensure!(
        line.starts_with("command=\"")
            && line.contains(" ssh-gate --source nas1 ")
            && line.contains(",restrict "),
        "{line}"
    );

    let identity = fleet.nas1.state_dir().join("replication_ed25519");
    let attempt = |words: &[&str]| -> Result<(Option<i32>, String)> {
        let mut cmd = sshd2.ssh_command(&identity)?;
        cmd.args(words);
        let out = nasfleet_tests::run_output(&mut cmd, Duration::from_secs(30))?;
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let refused = |words: &[&str]| -> Result<String> {
        let (code, stderr) = attempt(words)?;
        ensure!(
            code == Some(126) && stderr.contains("nasfleet gate: refused"),
            "`{}` was not refused: {code:?} {stderr}",
            words.join(" ")
        );
        Ok(stderr)
    };
    refused(&["id"])?;
    refused(&["cat", "/etc/shadow"])?;
    // No command: what a login shell would get.
    let stderr = refused(&[])?;
    ensure!(stderr.contains("no interactive login"), "{stderr}");
    refused(&["zfs", "destroy", "-r", &other])?;
    refused(&["zfs", "destroy", "-r", &format!("{}/backup", pool2.name())])?;
    let stderr = refused(&["zfs", "receive", "-u", "--", &format!("{other}/planted")])?;
    ensure!(
        stderr.contains("outside the datasets nas1 may replicate to"),
        "{stderr}"
    );
    refused(&["zfs", "list", "-H", "-o", "name", "--", &other, ";", "id"])?;
    ensure!(
        nasfleet_tests::zfs::dataset_exists(&other)?,
        "a refused destroy destroyed something"
    );
    // What a replication needs still passes.
    let (code, stderr) = attempt(&[
        "zfs",
        "list",
        "-H",
        "-o",
        "name",
        "--",
        &format!("{}/backup/nas1/{data}", pool2.name()),
    ])?;
    ensure!(code == Some(0), "listing the replica: {code:?} {stderr}");

    // No forwarding: a remote forward is refused and ssh gives up on it.
    // (ssh_command puts the destination last; options go before it.)
    let mut forward = std::process::Command::new("ssh");
    forward
        .arg("-i")
        .arg(&identity)
        .args(["-p", &sshd2.port().to_string()])
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .args(["-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10"])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            sshd2.dir().join("known_hosts").display()
        ))
        .args([
            "-o",
            "ExitOnForwardFailure=yes",
            "-N",
            "-R",
            "0:127.0.0.1:22",
        ])
        .arg(format!("root@{}", sshd2.ip()));
    let out = nasfleet_tests::run_output(&mut forward, Duration::from_secs(30))?;
    ensure!(
        !out.status.success(),
        "remote forwarding was allowed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every refusal is logged on the target.
    let log = std::fs::read_to_string(fleet.nas2.state_dir().join("gate/refused.log"))?;
    ensure!(
        log.contains("source=nas1") && log.contains("refused"),
        "{log}"
    );
    Ok(())
}

/// The number of holds on `snapshot` (`userrefs`; zfs-fuse has no `zfs holds`).
pub(super) fn holds_on(snapshot: &str) -> Result<u64> {
    let refs = nasfleet_tests::zfs::get_property(snapshot, "userrefs")?;
    refs.trim()
        .parse()
        .with_context(|| format!("userrefs of {snapshot}: {refs:?}"))
}

/// The base of the next incremental is held on both sides, so neither a
/// person nor retention can destroy it; the hold moves with each run and
/// deleting the task releases it.
#[test]
fn the_base_is_held_on_both_sides_until_the_task_is_deleted() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("holds")?;
    let pool1 = TestPool::create(dir.path(), "hsrc")?;
    let pool2 = TestPool::create(dir.path(), "hdst")?;
    let sshd1 = TestSshd::start(dir.path())?;
    let sshd2 = TestSshd::start(dir.path())?;
    let data = pool1.create_dataset("data")?;
    pool1.snapshot("data", "auto-2026-01-01_00-00")?;
    pool1.snapshot("data", "auto-2026-01-01_01-00")?;
    let mut fleet = two_systems(&dir, &pool1, &sshd1, &pool2, &sshd2)?;
    let controller = &fleet.controller;
    let source = format!("nas1:{data}");
    let target = format!("nas2:{}/backup", pool2.name());
    controller.cli_ok(&[
        "replication",
        "create",
        "held",
        "--source",
        &source,
        "--target",
        &target,
        "--disabled",
        "--yes",
    ])?;
    let run = replication_run(controller, "held")?;
    ensure!(run_state(&run)? == "FINISHED", "{run}");
    let replica = format!("{}/backup/nas1/{data}", pool2.name());
    let both = |snapshot: &str| {
        [
            format!("{data}@{snapshot}"),
            format!("{replica}@{snapshot}"),
        ]
    };

    // The newest common snapshot is held on both sides, the older one not.
    for held in both("auto-2026-01-01_01-00") {
        ensure!(holds_on(&held)? == 1, "{held} is not held");
        let out = nasfleet_tests::run_output(
            nasfleet_tests::zfs::zfs()?.args(["destroy", &held]),
            Duration::from_secs(60),
        )?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // zfs-fuse: "dataset is busy"; OpenZFS: "it's being held".
        ensure!(
            !out.status.success()
                && (stderr.contains("dataset is busy") || stderr.contains("being held")),
            "destroying the held base {held}: {stderr}"
        );
    }
    for free in both("auto-2026-01-01_00-00") {
        ensure!(holds_on(&free)? == 0, "{free} is held");
    }
    // `snapshot list` shows it.
    let listed = controller.cli_json(&["snapshot", "list", "nas1", &data, "--refresh"])?;
    let held_in_list = listed
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|s| s["snapshot"] == "auto-2026-01-01_01-00")
                .map(|s| s["holds"].clone())
        })
        .with_context(|| format!("{listed}"))?;
    ensure!(held_in_list == 1, "{listed}");

    // The next run moves the hold to the new base and releases the old.
    pool1.snapshot("data", "auto-2026-01-01_02-00")?;
    let run = replication_run(controller, "held")?;
    ensure!(run_state(&run)? == "FINISHED", "{run}");
    for held in both("auto-2026-01-01_02-00") {
        ensure!(holds_on(&held)? == 1, "{held} is not held");
    }
    for released in both("auto-2026-01-01_01-00") {
        ensure!(holds_on(&released)? == 0, "{released} is still held");
    }

    // Deleting the task releases its holds on both systems, also on one
    // that is away while the controller restarts: the release is stored
    // with the deletion and made when the system is back.
    fleet.nas2.stop()?;
    fleet
        .controller
        .cli_ok(&["replication", "delete", "held", "--yes"])?;
    fleet.controller.restart()?;
    fleet.nas2.restart()?;
    nasfleet_tests::wait_until(RUN_TIMEOUT, Duration::from_millis(250), || {
        let mut total = 0;
        for snapshot in both("auto-2026-01-01_02-00") {
            total += holds_on(&snapshot)?;
        }
        Ok(total == 0)
    })
    .context("the deleted task's holds were not released")?;
    Ok(())
}
