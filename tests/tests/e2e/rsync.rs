//! Rsync tasks: push and pull against a real rsync daemon and a real sshd, run as the task's user, TrueNAS's flags, auxiliary words as data and their allow-list, failure reasons, create-time refusals, runs that links swapped in later cannot redirect, and cancels that leave no process behind.

use super::common::*;
use anyhow::{Context, Result, bail, ensure};
use nasfleet_common::dial::{ClientIdentity, DialOptions, ServerTrust, dial};
use nasfleet_proto::v1::fleet_client::FleetClient;
use nasfleet_proto::v1::{
    RsyncDirection, RsyncMode, RsyncTaskSpec, TaskSpec, UpdateTaskRequest, task_spec,
};
use nasfleet_tests::{
    Agent, Controller, TestDir, TestPool, TestRsyncd, TestSshd, TestUser, ensure_zfs, free_port,
    next_loopback_ip, run_ok, run_output,
};
use serde_json::Value;
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Every run here moves a few hundred KiB over loopback.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// `--validate-remote-path` gives up after 5 s on the agent; with the
/// CLI, controller and agent round trip a refusal must come well within this.
const VALIDATE_BOUND: Duration = Duration::from_secs(15);

/// An mtime far from "now", so a copy that did not preserve it shows.
const OLD_MTIME: i64 = 1_577_923_200; // 2020-01-02T00:00:00Z

/// `rsync create ARGS -o json`: the created task.
fn create_task(controller: &Controller, args: &[&str]) -> Result<Value> {
    let mut full = vec!["rsync", "create"];
    full.extend_from_slice(args);
    controller.cli_json(&full)
}

fn task_id(task: &Value) -> Result<u64> {
    task["id"]
        .as_u64()
        .with_context(|| format!("no id in {task}"))
}

/// `rsync show ID -o json`.
fn show_task(controller: &Controller, id: u64) -> Result<Value> {
    controller.cli_json(&["rsync", "show", &id.to_string()])
}

/// `rsync list -o json`.
fn list_tasks(controller: &Controller) -> Result<Vec<Value>> {
    match controller.cli_json(&["rsync", "list"])? {
        Value::Array(tasks) => Ok(tasks),
        other => bail!("`rsync list -o json` printed no array: {other}"),
    }
}

/// `rsync run ID -o json`, then waits for the run's end; returns the run.
fn run_task(controller: &Controller, id: u64) -> Result<Value> {
    let run = controller.cli_json(&["rsync", "run", &id.to_string()])?;
    let run_id = run["id"]
        .as_u64()
        .with_context(|| format!("no run id in {run}"))?;
    wait_run_final(controller, run_id, RUN_TIMEOUT)
}

/// A run that must have ended SUCCESS.
fn run_ok_task(controller: &Controller, id: u64) -> Result<Value> {
    let run = run_task(controller, id)?;
    ensure!(
        run_state(&run)? == "SUCCESS",
        "rsync run did not succeed: {run}"
    );
    Ok(run)
}

/// Writes a file (parents created) and returns its path.
fn write(path: &Path, contents: &[u8]) -> Result<PathBuf> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_path_buf())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// `n` bytes that compress badly (an LCG), different per `seed`.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

fn set_mtime(path: &Path, unix: i64) -> Result<()> {
    run_ok(
        Command::new("touch")
            .arg("-m")
            .arg("-d")
            .arg(format!("@{unix}"))
            .arg("--")
            .arg(path),
    )
    .map(drop)
}

fn chmod(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

fn meta(path: &Path) -> Result<fs::Metadata> {
    fs::metadata(path).with_context(|| format!("stat {}", path.display()))
}

/// Checks that `copy` has the bytes of `original`.
fn same_content(original: &Path, copy: &Path) -> Result<()> {
    ensure!(
        read(original)? == read(copy)?,
        "{} differs from {}",
        copy.display(),
        original.display()
    );
    Ok(())
}

/// `getfattr --only-values -n NAME PATH`, None if the file has no such attribute.
fn xattr(path: &Path, name: &str) -> Result<Option<String>> {
    let out = run_output(
        Command::new("getfattr")
            .args(["--only-values", "-n", name, "--"])
            .arg(path),
        Duration::from_secs(30),
    )?;
    if out.status.success() {
        return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(stderr.contains("No such attribute"), "getfattr: {stderr}");
    Ok(None)
}

fn set_xattr(path: &Path, name: &str, value: &str) -> Result<()> {
    run_ok(
        Command::new("setfattr")
            .args(["-n", name, "-v", value, "--"])
            .arg(path),
    )
    .map(drop)
}

/// [`TestPool::create`] (which takes the harness's mount lock).
fn create_pool(dir: &TestDir, prefix: &str) -> Result<TestPool> {
    TestPool::create(dir.path(), prefix)
}

/// The directory of a dataset of `pool`, created if needed.
fn dataset_dir(pool: &TestPool, rel: &str) -> Result<PathBuf> {
    pool.create_dataset(rel)?;
    pool.dataset_mountpoint(rel)
}

/// `rsync create` flags of an SSH-mode task on nas1 run as `user`.
fn ssh_task_flags<'a>(
    path: &'a Path,
    user: &'a str,
    direction: &'a str,
    remote_host: &'a str,
    remote_port: &'a str,
    remote_path: &'a Path,
) -> Result<Vec<&'a str>> {
    Ok(vec![
        "--system",
        "nas1",
        "--path",
        path_arg(path)?,
        "--user",
        user,
        "--direction",
        direction,
        "--mode",
        "ssh",
        "--remote-host",
        remote_host,
        "--remote-port",
        remote_port,
        "--remote-path",
        path_arg(remote_path)?,
    ])
}

/// `rsync create` flags of a MODULE-mode task on nas1 run as `user`, created disabled.
fn module_task_flags<'a>(
    path: &'a Path,
    user: &'a str,
    direction: &'a str,
    remote_host: &'a str,
    remote_port: &'a str,
    module: &'a str,
) -> Result<Vec<&'a str>> {
    Ok(vec![
        "--system",
        "nas1",
        "--path",
        path_arg(path)?,
        "--user",
        user,
        "--direction",
        direction,
        "--remote-host",
        remote_host,
        "--remote-port",
        remote_port,
        "--remote-module",
        module,
        "--disabled",
    ])
}

fn path_arg(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("non-UTF-8 path {}", path.display()))
}

/// A plain directory bind-mounted onto a directory inside a pool, unmounted
/// on drop (declare it after the pool: it must go before the pool does).
///
/// zfs-fuse datasets refuse extended attributes (setfattr: "Operation not
/// supported", whatever `zfs get xattr` says), so a task path that must hold
/// user xattrs is a plain (ext4) directory mounted inside the pool's
/// mountpoint: to the agent it is a path within a pool mount point, to the
/// kernel a file system with xattrs.
struct BindMount {
    target: PathBuf,
}

impl BindMount {
    fn new(source: &Path, target: &Path) -> Result<BindMount> {
        fs::create_dir_all(source).with_context(|| format!("creating {}", source.display()))?;
        fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
        run_ok(Command::new("mount").arg("--bind").arg(source).arg(target))?;
        Ok(BindMount {
            target: target.to_path_buf(),
        })
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        for attempt in 0..5 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500));
            }
            let done = run_output(
                Command::new("umount").arg(&self.target),
                Duration::from_secs(30),
            );
            if done.is_ok_and(|o| o.status.success()) {
                return;
            }
        }
        // Still busy: detach it so the pool can go.
        if let Err(e) = run_ok(Command::new("umount").arg("-l").arg(&self.target)) {
            eprintln!("cleanup: unmounting {}: {e:#}", self.target.display());
        }
    }
}

/// One system (nas1) on a fresh pool, a task user, and an rsync daemon
/// with the modules `push` and `pull`. Fields drop in order: the fleet
/// before the pool, the pool before the directory that holds it.
struct PushPullFleet {
    controller: Controller,
    _agent: Agent,
    rsyncd: TestRsyncd,
    user: TestUser,
    push_module: PathBuf,
    pull_module: PathBuf,
    pool: TestPool,
    dir: TestDir,
}

impl PushPullFleet {
    fn start(label: &str, pool_prefix: &str) -> Result<PushPullFleet> {
        ensure_zfs()?;
        let dir = TestDir::new(label)?;
        let pool = create_pool(&dir, pool_prefix)?;
        let user = TestUser::create(dir.path())?;
        let push_module = dir.path().join("module-push");
        let pull_module = dir.path().join("module-pull");
        let rsyncd = TestRsyncd::start(
            dir.path(),
            &[("push", &push_module), ("pull", &pull_module)],
        )?;
        let (controller, agent) = one_system(&dir, &pool, "nas1")?;
        Ok(PushPullFleet {
            controller,
            _agent: agent,
            rsyncd,
            user,
            push_module,
            pull_module,
            pool,
            dir,
        })
    }
}

#[test]
fn module_mode_push_and_pull_run_as_the_tasks_user_with_truenas_flags() -> Result<()> {
    let fleet = PushPullFleet::start("rsyncmod", "rsmod")?;
    let PushPullFleet {
        controller,
        rsyncd,
        user,
        push_module,
        pull_module,
        pool,
        ..
    } = &fleet;
    let port = rsyncd.port().to_string();
    let host = rsyncd.host();

    // Nothing configured yet: people and scripts both see it.
    let table = controller.cli_ok(&["rsync", "list"])?;
    ensure!(table.contains("No Rsync Tasks configured"), "{table}");
    ensure!(list_tasks(controller)?.is_empty());

    // PUSH with the task defaults (-z --delay-updates -r -t) and an exclude.
    let out = dataset_dir(pool, "out")?;
    let a = write(&out.join("a.txt"), b"alpha\n")?;
    let b = write(&out.join("sub/b.bin"), &noise(256 * 1024, 1))?;
    write(&out.join("scratch.tmp"), b"never copied")?;
    set_mtime(&a, OLD_MTIME)?;
    set_mtime(&b, OLD_MTIME + 60)?;
    let push = create_task(
        controller,
        &[
            "--system",
            "nas1",
            "--path",
            path_arg(&out)?,
            "--user",
            user.name(),
            "--direction",
            "push",
            "--remote-host",
            &host,
            "--remote-port",
            &port,
            "--remote-module",
            "push",
            "--aux",
            "--exclude=*.tmp",
            "--disabled",
        ],
    )?;
    let push_id = task_id(&push)?;
    ensure!(push["system"] == "nas1", "{push}");
    ensure!(push["path"] == path_arg(&out)?, "{push}");
    ensure!(push["user"] == user.name(), "{push}");
    ensure!(push["direction"] == "PUSH", "{push}");
    ensure!(push["mode"] == "MODULE", "{push}");
    ensure!(push["remote_port"] == rsyncd.port(), "{push}");
    ensure!(push["status"] == "PENDING", "{push}");
    ensure!(push["last_error"].is_null(), "{push}");
    ensure!(
        string_array(&push, "auxiliary")? == ["--exclude=*.tmp"],
        "{push}"
    );
    // TrueNAS's defaults: recursive, times, compress, delay updates on; the rest off.
    for on in ["recursive", "times", "compress", "delay_updates"] {
        ensure!(push[on] == true, "{on} should default on: {push}");
    }
    for off in [
        "archive",
        "delete",
        "quiet",
        "preserve_permissions",
        "preserve_xattrs",
    ] {
        ensure!(push[off] == false, "{off} should default off: {push}");
    }

    let run = run_ok_task(controller, push_id)?;
    let logged = string_array(&run, "log_tail")?;
    ensure!(
        logged.iter().any(|l| l.starts_with("rsync ")
            && l.contains(" -z ")
            && l.contains(" --delay-updates ")
            && l.contains(" -r ")
            && l.contains(" -t ")
            && l.contains(" --exclude=*.tmp ")),
        "the run's log does not show the rsync command line: {logged:?}"
    );
    same_content(&a, &push_module.join("a.txt"))?;
    same_content(&b, &push_module.join("sub/b.bin"))?;
    ensure!(
        !push_module.join("scratch.tmp").exists(),
        "--aux --exclude=*.tmp was not honoured"
    );
    // Times are preserved by default.
    ensure!(meta(&push_module.join("a.txt"))?.mtime() == OLD_MTIME);
    ensure!(meta(&push_module.join("sub/b.bin"))?.mtime() == OLD_MTIME + 60);
    // --delay-updates leaves no staging dirs behind.
    ensure!(!push_module.join(".~tmp~").exists());
    let shown = show_task(controller, push_id)?;
    ensure!(shown["status"] == "SUCCESS", "{shown}");
    ensure!(shown["last_error"].is_null(), "{shown}");

    // PULL into a dataset the user owns, with --delete and --preserve-permissions.
    let x = write(&pull_module.join("x.txt"), b"xray\n")?;
    let y = write(&pull_module.join("deep/y.bin"), &noise(128 * 1024, 2))?;
    chmod(&x, 0o640)?;
    chmod(&y, 0o600)?;
    chmod(&pull_module.join("deep"), 0o750)?;
    set_mtime(&x, OLD_MTIME + 120)?;
    let into = dataset_dir(pool, "in")?;
    let stale = write(&into.join("stale.txt"), b"not on the source")?;
    user.chown_tree(&into)?;
    let pull = create_task(
        controller,
        &[
            "--system",
            "nas1",
            "--path",
            path_arg(&into)?,
            "--user",
            user.name(),
            "--direction",
            "pull",
            "--remote-host",
            &host,
            "--remote-port",
            &port,
            "--remote-module",
            "pull",
            "--delete",
            "--preserve-permissions",
            "--description",
            "pull from the daemon",
            "--disabled",
        ],
    )?;
    let pull_id = task_id(&pull)?;
    ensure!(pull["direction"] == "PULL", "{pull}");
    ensure!(pull["delete"] == true && pull["preserve_permissions"] == true);

    // --watch follows the run; its exit status is the run's outcome.
    let watched = controller.cli(&["rsync", "run", &pull_id.to_string(), "--watch"])?;
    ensure!(
        watched.status.success(),
        "rsync run --watch: {}",
        String::from_utf8_lossy(&watched.stderr)
    );
    let pulled_x = into.join("x.txt");
    let pulled_y = into.join("deep/y.bin");
    same_content(&x, &pulled_x)?;
    same_content(&y, &pulled_y)?;
    // rsync ran as the task's user, not as root: the user owns what it made.
    for path in [&pulled_x, &pulled_y, &into.join("deep")] {
        let m = meta(path)?;
        ensure!(
            m.uid() == user.uid() && m.gid() == user.gid(),
            "{} is owned by {}:{}, not by the task's user {} ({}:{})",
            path.display(),
            m.uid(),
            m.gid(),
            user.name(),
            user.uid(),
            user.gid()
        );
    }
    ensure!(mode_of(&pulled_x)? == 0o640, "{:o}", mode_of(&pulled_x)?);
    ensure!(mode_of(&pulled_y)? == 0o600, "{:o}", mode_of(&pulled_y)?);
    ensure!(mode_of(&into.join("deep"))? == 0o750);
    ensure!(meta(&pulled_x)?.mtime() == OLD_MTIME + 120);
    ensure!(!stale.exists(), "--delete left {}", stale.display());

    let tasks = list_tasks(controller)?;
    ensure!(tasks.len() == 2, "{tasks:?}");
    let shown = show_task(controller, pull_id)?;
    ensure!(shown["status"] == "SUCCESS", "{shown}");
    ensure!(shown["description"] == "pull from the daemon", "{shown}");
    let table = controller.cli_ok(&["rsync", "list"])?;
    ensure!(!table.contains("No Rsync Tasks configured"), "{table}");
    Ok(())
}

#[test]
fn ssh_mode_push_and_pull_with_the_users_key_and_validated_remote_paths() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("rsyncssh")?;
    let pool = create_pool(&dir, "rsssh")?;
    let user = TestUser::create(dir.path())?;
    let sshd = TestSshd::start(dir.path())?;
    let (controller, _agent) = one_system(&dir, &pool, "nas1")?;
    let port = sshd.port().to_string();
    let host = sshd.host();

    // The admin's part, as on TrueNAS: the user has a key the remote host
    // accepts, and knows the remote host's key.
    let public_key = user.with_ssh_key()?;
    sshd.authorize_key(&public_key)?;
    user.write_known_hosts(&[sshd.known_hosts_line()?])?;

    // The remote side: a directory of the user's on the "remote host".
    let remote = dir.path().join("remote");
    user.create_dir(&remote)?;
    let remote_out = remote.join("out/made/by/validate");
    let out = dataset_dir(&pool, "out")?;
    let a = write(&out.join("a.txt"), b"over ssh\n")?;
    let b = write(&out.join("sub/b.bin"), &noise(200 * 1024, 3))?;
    set_mtime(&a, OLD_MTIME)?;

    // --validate-remote-path creates the missing remote path, over SSH as the user.
    let started = Instant::now();
    let mut flags = ssh_task_flags(&out, user.name(), "push", &host, &port, &remote_out)?;
    flags.extend(["--validate-remote-path", "--disabled"]);
    let push = create_task(&controller, &flags)?;
    ensure!(
        started.elapsed() < VALIDATE_BOUND,
        "validating took {:?}",
        started.elapsed()
    );
    ensure!(
        remote_out.is_dir(),
        "{} was not created",
        remote_out.display()
    );
    ensure!(meta(&remote_out)?.uid() == user.uid());
    ensure!(push["mode"] == "SSH" && push["remote_port"] == sshd.port());
    ensure!(push["validate_remote_path"] == true, "{push}");

    run_ok_task(&controller, task_id(&push)?)?;
    same_content(&a, &remote_out.join("a.txt"))?;
    same_content(&b, &remote_out.join("sub/b.bin"))?;
    ensure!(meta(&remote_out.join("a.txt"))?.mtime() == OLD_MTIME);
    // The remote end ran as the user too (logged in with its key).
    ensure!(meta(&remote_out.join("sub/b.bin"))?.uid() == user.uid());

    // PULL, the remote login given as USER@HOST.
    let remote_in = remote.join("in");
    let x = write(&remote_in.join("x.txt"), b"pulled over ssh\n")?;
    let y = write(&remote_in.join("deep/y.bin"), &noise(64 * 1024, 4))?;
    user.chown_tree(&remote_in)?;
    let into = dataset_dir(&pool, "in")?;
    user.chown(&into)?;
    let login = format!("{}@{host}", user.name());
    let mut flags = ssh_task_flags(&into, user.name(), "pull", &login, &port, &remote_in)?;
    flags.push("--disabled");
    let pull = create_task(&controller, &flags)?;
    ensure!(pull["remote_host"] == login.as_str(), "{pull}");
    run_ok_task(&controller, task_id(&pull)?)?;
    same_content(&x, &into.join("x.txt"))?;
    same_content(&y, &into.join("deep/y.bin"))?;
    ensure!(meta(&into.join("deep/y.bin"))?.uid() == user.uid());

    // Validating against a port where nothing listens fails fast and says why.
    let closed = free_port(IpAddr::V4(sshd.ip()))?.to_string();
    let started = Instant::now();
    let never = remote.join("never");
    let mut argv = vec!["rsync", "create"];
    argv.extend(ssh_task_flags(
        &out,
        user.name(),
        "push",
        &host,
        &closed,
        &never,
    )?);
    argv.push("--validate-remote-path");
    let err = cli_error(&controller, &argv)?;
    ensure!(
        started.elapsed() < VALIDATE_BOUND,
        "refused only after {:?}: {err}",
        started.elapsed()
    );
    ensure!(
        err.contains("remote_path:") && err.contains("connection refused"),
        "{err}"
    );
    ensure!(!remote.join("never").exists());
    ensure!(list_tasks(&controller)?.len() == 2);
    Ok(())
}

#[test]
fn create_refusals_name_their_field_and_save_nothing() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("rsyncrefuse")?;
    let pool = create_pool(&dir, "rsref")?;
    // A user without any SSH key.
    let keyless = TestUser::create(dir.path())?;
    let module = dir.path().join("module");
    let rsyncd = TestRsyncd::start(dir.path(), &[("mod", &module)])?;
    let (controller, _agent) = one_system(&dir, &pool, "nas1")?;
    let data = dataset_dir(&pool, "data")?;
    let data = path_arg(&data)?.to_owned();
    let port = rsyncd.port().to_string();
    let host = rsyncd.host();
    let base = |path: &str, user: &str| -> Vec<String> {
        [
            "rsync",
            "create",
            "--system",
            "nas1",
            "--path",
            path,
            "--user",
            user,
            "--direction",
            "push",
            "--remote-host",
            &host,
            "--remote-port",
            &port,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let refused = |args: Vec<String>, extra: &[&str]| -> Result<String> {
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend_from_slice(extra);
        cli_error(&controller, &all)
    };

    // Outside any pool, also by `..` or through a symbolic link inside one.
    let escape = format!("{data}/../../../../etc");
    let link = format!("{data}/etclink");
    std::os::unix::fs::symlink("/etc", &link)?;
    for path in ["/etc", escape.as_str(), link.as_str()] {
        let err = refused(base(path, keyless.name()), &["--remote-module", "mod"])?;
        ensure!(
            err.contains("path: The path must reside within a pool mount point"),
            "{path}: {err}"
        );
    }
    let err = refused(base(&data, "nosuchuser"), &["--remote-module", "mod"])?;
    ensure!(
        err.contains("user: Provided user \"nosuchuser\" does not exist"),
        "{err}"
    );
    let err = refused(
        base(&data, keyless.name()),
        &["--mode", "ssh", "--remote-path", "/srv/backup"],
    )?;
    ensure!(
        err.contains("user:") && err.contains(keyless.name()) && err.contains("private key"),
        "{err}"
    );
    let long = format!("/{}", "p".repeat(255));
    assert_eq!(long.chars().count(), 256);
    let err = refused(
        base(&data, keyless.name()),
        &["--remote-module", "mod", "--remote-path", &long],
    )?;
    ensure!(
        err.contains("remote_path: Remote path must be at most 255 characters"),
        "{err}"
    );
    // --validate-remote-path against a port where nothing listens.
    let closed_ip = next_loopback_ip();
    let closed_port = free_port(IpAddr::V4(closed_ip))?.to_string();
    let closed_host = closed_ip.to_string();
    let started = Instant::now();
    let err = cli_error(
        &controller,
        &[
            "rsync",
            "create",
            "--system",
            "nas1",
            "--path",
            &data,
            "--user",
            keyless.name(),
            "--direction",
            "push",
            "--remote-host",
            &closed_host,
            "--remote-port",
            &closed_port,
            "--remote-module",
            "mod",
            "--remote-path",
            "somewhere",
            "--validate-remote-path",
        ],
    )?;
    ensure!(
        started.elapsed() < VALIDATE_BOUND,
        "refused only after {:?}: {err}",
        started.elapsed()
    );
    ensure!(
        err.contains("remote_path:") && err.contains("connection refused"),
        "{err}"
    );
    // Nothing of the above was saved.
    ensure!(list_tasks(&controller)?.is_empty());
    let table = controller.cli_ok(&["rsync", "list"])?;
    ensure!(table.contains("No Rsync Tasks configured"), "{table}");

    // --validate-remote-path in MODULE mode creates the missing path in the module.
    let started = Instant::now();
    let mut args = base(&data, keyless.name());
    args.drain(..2);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend([
        "--remote-module",
        "mod",
        "--remote-path",
        "made/by/validate",
        "--validate-remote-path",
        "--disabled",
    ]);
    let task = create_task(&controller, &args)?;
    ensure!(
        started.elapsed() < VALIDATE_BOUND,
        "validating took {:?}",
        started.elapsed()
    );
    ensure!(
        module.join("made/by/validate").is_dir(),
        "the remote path was not created in the module"
    );
    ensure!(task["remote_path"] == "made/by/validate", "{task}");
    ensure!(list_tasks(&controller)?.len() == 1);
    Ok(())
}

#[test]
fn failed_runs_say_why_and_auxiliary_words_stay_data() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("rsyncfail")?;
    let pool = create_pool(&dir, "rsfail")?;
    let user = TestUser::create(dir.path())?;
    let module = dir.path().join("module");
    let kept = write(&module.join("keep.txt"), b"already there\n")?;
    let rsyncd = TestRsyncd::start(dir.path(), &[("mod", &module)])?;
    let (controller, _agent) = one_system(&dir, &pool, "nas1")?;
    let src = dataset_dir(&pool, "src")?;
    let a = write(&src.join("a.txt"), b"payload\n")?;
    let src = path_arg(&src)?.to_owned();
    let port = rsyncd.port().to_string();
    let host = rsyncd.host();
    let push = |remote_host: &str, remote_port: &str, module: &str, extra: &[&str]| {
        let mut args = vec![
            "--system",
            "nas1",
            "--path",
            &src,
            "--user",
            user.name(),
            "--direction",
            "push",
            "--remote-host",
            remote_host,
            "--remote-port",
            remote_port,
            "--remote-module",
            module,
            "--disabled",
        ];
        args.extend_from_slice(extra);
        create_task(&controller, &args).and_then(|t| task_id(&t))
    };

    // A module the daemon does not have.
    let wrong = push(&host, &port, "nosuchmodule", &[])?;
    let run = run_task(&controller, wrong)?;
    ensure!(run_state(&run)? == "FAILED", "{run}");
    let reason = str_field(&run, "reason")?;
    ensure!(
        reason.starts_with("rsync command returned 5 - Error starting client-server protocol."),
        "{reason}"
    );
    ensure!(
        reason.contains("@ERROR: Unknown module 'nosuchmodule'"),
        "{reason}"
    );
    let task = show_task(&controller, wrong)?;
    ensure!(task["status"] == "FAILED", "{task}");
    ensure!(str_field(&task, "last_error")? == reason, "{task}");
    // --watch of a failing run exits non-zero with the reason.
    let watched = controller.cli(&["rsync", "run", &wrong.to_string(), "--watch"])?;
    let stderr = String::from_utf8_lossy(&watched.stderr);
    ensure!(!watched.status.success(), "watch of a failed run exited 0");
    ensure!(stderr.contains("Unknown module"), "{stderr}");

    // A host where nothing listens.
    let down_ip = next_loopback_ip();
    let down_port = free_port(IpAddr::V4(down_ip))?.to_string();
    let unreachable = push(&down_ip.to_string(), &down_port, "mod", &[])?;
    let run = run_task(&controller, unreachable)?;
    ensure!(run_state(&run)? == "FAILED", "{run}");
    let reason = str_field(&run, "reason")?;
    ensure!(
        reason.starts_with("rsync command returned 10 - Error in socket I/O."),
        "{reason}"
    );
    ensure!(reason.contains("Connection refused"), "{reason}");

    // Auxiliary words that are not options are refused at create: rsync
    // would take them for more files to copy.
    let err = cli_error(
        &controller,
        &[
            "rsync",
            "create",
            "--system",
            "nas1",
            "--path",
            &src,
            "--user",
            user.name(),
            "--direction",
            "push",
            "--remote-host",
            &host,
            "--remote-port",
            &port,
            "--remote-module",
            "mod",
            "--aux",
            "; rm -rf /",
        ],
    )?;
    ensure!(
        err.contains("auxiliary: '; rm -rf /' is not an rsync option"),
        "{err}"
    );

    // Shell syntax inside an allowed option's value reaches rsync as one
    // literal word: a pattern that matches nothing, nothing is executed.
    // The canary and the victim sit in a directory the task's user may
    // write to, so even a shell running as that user would show. (GNU rm
    // refuses `rm -rf /` anyway; the test-owned victim proves no `rm` ran
    // at all.)
    let playground = dir.path().join("playground");
    user.create_dir(&playground)?;
    let canary = playground.join("CANARY");
    let backtick_canary = playground.join("BACKTICK");
    let victim = playground.join("victim");
    let victim_file = write(&victim.join("v.txt"), b"still here")?;
    user.chown_tree(&victim)?;
    let touch = format!("--exclude=$(touch {})", canary.display());
    let backtick = format!("--exclude=`touch {}`", backtick_canary.display());
    let rm_victim = format!("--exclude=; rm -rf {}", victim.display());
    let hostile = push(
        &host,
        &port,
        "mod",
        &[
            "--aux",
            &touch,
            "--aux",
            "--exclude=; rm -rf /",
            "--aux",
            &rm_victim,
            "--aux",
            &backtick,
        ],
    )?;
    let task = show_task(&controller, hostile)?;
    ensure!(
        string_array(&task, "auxiliary")?
            == [
                touch.as_str(),
                "--exclude=; rm -rf /",
                &rm_victim,
                &backtick
            ],
        "{task}"
    );
    let run = run_ok_task(&controller, hostile)?;
    let logged = string_array(&run, "log_tail")?;
    ensure!(
        logged.iter().any(|l| l.contains(&rm_victim)),
        "the run's log does not show the words: {logged:?}"
    );
    for made in [&canary, &backtick_canary] {
        ensure!(!made.exists(), "a shell ran: {} exists", made.display());
    }
    ensure!(victim_file.exists(), "a shell ran: the victim is gone");
    ensure!(kept.exists(), "the module's file is gone");
    // The real source went across.
    same_content(&a, &module.join("a.txt"))?;
    Ok(())
}

#[test]
fn preserve_xattrs_copies_user_attributes_both_ways() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("rsyncxattr")?;
    let pool = create_pool(&dir, "rsxat")?;
    let data = dataset_dir(&pool, "data")?;
    // See BindMount: zfs-fuse has no xattrs, so the task paths are plain
    // directories mounted inside the dataset.
    let out_mount = BindMount::new(&dir.path().join("plain-out"), &data.join("out"))?;
    let in_mount = BindMount::new(&dir.path().join("plain-in"), &data.join("in"))?;
    let user = TestUser::create(dir.path())?;
    let push_module = dir.path().join("module-push");
    let plain_module = dir.path().join("module-plain");
    let pull_module = dir.path().join("module-pull");
    let rsyncd = TestRsyncd::start(
        dir.path(),
        &[
            ("push", &push_module),
            ("plain", &plain_module),
            ("pull", &pull_module),
        ],
    )?;
    let (controller, _agent) = one_system(&dir, &pool, "nas1")?;
    let port = rsyncd.port().to_string();
    let host = rsyncd.host();

    let a = write(&out_mount.target.join("a.txt"), b"tagged\n")?;
    set_xattr(&a, "user.nasfleet", "hello")?;
    let x = write(&pull_module.join("x.txt"), b"tagged too\n")?;
    set_xattr(&x, "user.colour", "blue")?;
    user.chown(&in_mount.target)?;
    let task = |path: &Path, direction: &str, module: &str, xattrs: bool| -> Result<u64> {
        let mut args = module_task_flags(path, user.name(), direction, &host, &port, module)?;
        if xattrs {
            args.push("--preserve-xattrs");
        }
        task_id(&create_task(&controller, &args)?)
    };

    let push = task(&out_mount.target, "push", "push", true)?;
    ensure!(show_task(&controller, push)?["preserve_xattrs"] == true);
    run_ok_task(&controller, push)?;
    same_content(&a, &push_module.join("a.txt"))?;
    ensure!(
        xattr(&push_module.join("a.txt"), "user.nasfleet")?.as_deref() == Some("hello"),
        "--preserve-xattrs did not copy user.nasfleet"
    );
    // Without the flag the attribute stays behind: the flag is what copies it.
    let plain = task(&out_mount.target, "push", "plain", false)?;
    run_ok_task(&controller, plain)?;
    same_content(&a, &plain_module.join("a.txt"))?;
    ensure!(xattr(&plain_module.join("a.txt"), "user.nasfleet")?.is_none());

    let pull = task(&in_mount.target, "pull", "pull", true)?;
    run_ok_task(&controller, pull)?;
    let pulled = in_mount.target.join("x.txt");
    same_content(&x, &pulled)?;
    ensure!(
        xattr(&pulled, "user.colour")?.as_deref() == Some("blue"),
        "--preserve-xattrs did not copy user.colour"
    );
    ensure!(meta(&pulled)?.uid() == user.uid());
    Ok(())
}

/// The reason of a run whose task's path was swapped for a link out of the pools.
const OUTSIDE_POOLS: &str = "path: The path must reside within a pool mount point";

/// Every file below `dir` (relative) with its bytes, to tell that nothing changed.
fn tree_contents(dir: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in fs::read_dir(&next).with_context(|| format!("listing {}", next.display()))? {
            let path = entry?.path();
            let rel = path.strip_prefix(dir)?.to_path_buf();
            if fs::symlink_metadata(&path)?.is_dir() {
                found.push((rel, Vec::new()));
                pending.push(path);
            } else {
                found.push((rel, read(&path)?));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Replaces the directory `path` by a symbolic link to `to`.
fn swap_for_link(path: &Path, to: &Path) -> Result<()> {
    fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
    std::os::unix::fs::symlink(to, path)
        .with_context(|| format!("linking {} to {}", path.display(), to.display()))
}

#[test]
fn a_link_swapped_in_after_create_cannot_redirect_a_push_or_a_pull() -> Result<()> {
    let fleet = PushPullFleet::start("rsyncswap", "rsswp")?;
    let PushPullFleet {
        controller,
        rsyncd,
        user,
        push_module,
        pull_module,
        pool,
        dir,
        ..
    } = &fleet;
    let port = rsyncd.port().to_string();
    let host = rsyncd.host();
    let data = dataset_dir(pool, "data")?;
    let task = |path: &Path, direction: &str, module: &str| -> Result<u64> {
        let flags = module_task_flags(path, user.name(), direction, &host, &port, module)?;
        task_id(&create_task(controller, &flags)?)
    };

    // Directories outside every pool, which the task's user may write to:
    // a redirected run as that user would succeed there.
    let outside = dir.path().join("outside");
    write(&outside.join("secret.txt"), b"not for the backup\n")?;
    write(&outside.join("deep/keep.txt"), b"left alone\n")?;
    user.chown_tree(&outside)?;
    let before = tree_contents(&outside)?;

    // PUSH: the task's directory becomes a link to `outside` after create.
    let out = data.join("out");
    write(&out.join("a.txt"), b"in the pool\n")?;
    let push = task(&out, "push", "push")?;
    swap_for_link(&out, &outside)?;
    let run = run_task(controller, push)?;
    ensure!(run_state(&run)? == "FAILED", "{run}");
    ensure!(str_field(&run, "reason")? == OUTSIDE_POOLS, "{run}");
    ensure!(
        !push_module.join("secret.txt").exists() && !push_module.join("deep").exists(),
        "the push read outside the pool: {:?}",
        tree_contents(push_module)?
    );

    // PULL into a link swapped in after create: nothing is written outside.
    write(&pull_module.join("x.txt"), b"from the daemon\n")?;
    write(&pull_module.join("deep/keep.txt"), b"overwritten?\n")?;
    let into = data.join("in");
    fs::create_dir_all(&into)?;
    user.chown(&into)?;
    let pull = task(&into, "pull", "pull")?;
    swap_for_link(&into, &outside)?;
    let run = run_task(controller, pull)?;
    ensure!(run_state(&run)? == "FAILED", "{run}");
    ensure!(str_field(&run, "reason")? == OUTSIDE_POOLS, "{run}");

    // A link one level up (the task's directory itself is real) is caught too.
    let parent = data.join("parent");
    let nested = parent.join("in");
    fs::create_dir_all(&nested)?;
    user.chown_tree(&parent)?;
    let nested_pull = task(&nested, "pull", "pull")?;
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir_all(elsewhere.join("in"))?;
    user.chown_tree(&elsewhere)?;
    swap_for_link(&parent, &elsewhere)?;
    let run = run_task(controller, nested_pull)?;
    ensure!(run_state(&run)? == "FAILED", "{run}");
    ensure!(str_field(&run, "reason")? == OUTSIDE_POOLS, "{run}");
    ensure!(
        tree_contents(&elsewhere)?.len() == 1,
        "the pull wrote outside the pool: {:?}",
        tree_contents(&elsewhere)?
    );
    ensure!(
        tree_contents(&outside)? == before,
        "something outside the pool changed"
    );
    let shown = show_task(controller, pull)?;
    ensure!(shown["status"] == "FAILED", "{shown}");
    ensure!(shown["last_error"] == OUTSIDE_POOLS, "{shown}");

    // Put back as a real directory, the same task runs (rsync starts in the
    // directory the agent opened, as the task's user).
    fs::remove_file(&into)?;
    fs::create_dir(&into)?;
    user.chown(&into)?;
    run_ok_task(controller, pull)?;
    same_content(&pull_module.join("x.txt"), &into.join("x.txt"))?;
    ensure!(meta(&into.join("x.txt"))?.uid() == user.uid());
    Ok(())
}

/// The rsync options issue 11 reproduced, and what the refusal must name.
const REPRODUCED_AUX: [(&str, &str); 8] = [
    ("-ave/some/script.sh", "-e (--rsh) is refused"),
    (
        "-M--rsync-path=/tmp/evil",
        "-M (--remote-option) is refused",
    ),
    (
        "--remote-option=--rsync-path=/tmp/evil",
        "--remote-option is refused",
    ),
    ("--log-file=/tmp/nasfleet-log", "--log-file is refused"),
    ("--files-from=/etc/hostname", "--files-from is refused"),
    ("--link-dest=/etc", "--link-dest is refused"),
    ("--config=/tmp/rsyncd.conf", "--config is refused"),
    ("--server", "--server is refused"),
];

/// CreateTask or UpdateTask straight to the controller's API as the admin,
/// without the CLI and its pre-checks; the refusal's status.
fn api_refusal(
    controller: &Controller,
    spec: TaskSpec,
    update: Option<u64>,
) -> Result<tonic::Status> {
    let ca = fs::read(controller.data_dir().join("ca.crt"))?;
    let admin = ClientIdentity {
        cert_pem: fs::read(controller.data_dir().join("admin.crt"))?,
        key_pem: fs::read(controller.data_dir().join("admin.key"))?,
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
        let answer = match update {
            None => client.create_task(spec).await,
            Some(id) => {
                client
                    .update_task(UpdateTaskRequest {
                        task: id.to_string(),
                        spec: Some(spec),
                    })
                    .await
            }
        };
        match answer {
            Ok(task) => bail!("the controller accepted {:?}", task.into_inner()),
            Err(status) => Ok(status),
        }
    })
}

#[test]
fn auxiliary_options_that_run_programs_or_name_files_are_refused_at_create_and_edit() -> Result<()>
{
    ensure_zfs()?;
    let dir = TestDir::new("rsyncaux")?;
    let pool = create_pool(&dir, "rsaux")?;
    let user = TestUser::create(dir.path())?;
    let module = dir.path().join("module");
    let rsyncd = TestRsyncd::start(dir.path(), &[("mod", &module)])?;
    let (controller, mut agent) = one_system(&dir, &pool, "nas1")?;
    let data = dataset_dir(&pool, "data")?;
    let data = path_arg(&data)?.to_owned();
    let port = rsyncd.port().to_string();
    let host = rsyncd.host();
    let flags = |extra: &[&str]| -> Vec<String> {
        let mut all = vec![
            "--system",
            "nas1",
            "--path",
            &data,
            "--user",
            user.name(),
            "--direction",
            "push",
            "--remote-host",
            &host,
            "--remote-port",
            &port,
            "--remote-module",
            "mod",
        ];
        all.extend_from_slice(extra);
        all.into_iter().map(str::to_owned).collect()
    };
    let cli_refusal = |command: &[&str], extra: &[&str]| -> Result<String> {
        let mut argv: Vec<String> = command.iter().map(|s| (*s).to_owned()).collect();
        argv.extend(flags(extra));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        cli_error(&controller, &argv)
    };

    // A task with allowed options, to edit.
    let good = flags(&["--aux", "--exclude=*.tmp", "--aux", "-H", "--disabled"]);
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    let id = task_id(&create_task(&controller, &good)?)?;
    let id_text = id.to_string();
    let edit = |extra: &[&str]| -> Result<String> {
        let mut argv = vec!["rsync", "edit", id_text.as_str()];
        argv.extend_from_slice(extra);
        cli_error(&controller, &argv)
    };

    for (word, names) in REPRODUCED_AUX {
        let err = cli_refusal(&["rsync", "create"], &["--aux", word])?;
        ensure!(
            err.contains(&format!("auxiliary: '{word}': {names}")),
            "create --aux {word}: {err}"
        );
        let err = edit(&["--aux", word])?;
        ensure!(
            err.contains(&format!("auxiliary: '{word}': {names}")),
            "edit --aux {word}: {err}"
        );
    }
    // A value-taking option needs its value in the same word.
    let err = cli_refusal(
        &["rsync", "create"],
        &["--aux", "--exclude", "--aux", "*.tmp"],
    )?;
    ensure!(
        err.contains("--exclude takes a value; write --exclude=VALUE in one parameter"),
        "{err}"
    );
    // Nothing refused was saved or changed.
    let tasks = list_tasks(&controller)?;
    ensure!(tasks.len() == 1, "{tasks:?}");
    ensure!(
        string_array(&show_task(&controller, id)?, "auxiliary")? == ["--exclude=*.tmp", "-H"],
        "an edit was saved"
    );

    // The controller refuses them itself, whoever calls: with the agent
    // stopped it cannot be the agent's check, and the CLI is not involved.
    agent.stop()?;
    let spec_with = |word: &str| {
        let mut rsync = RsyncTaskSpec {
            system: "nas1".into(),
            path: data.clone(),
            user: user.name().to_owned(),
            remote_host: host.clone(),
            remote_module: "mod".into(),
            auxiliary: vec!["-v".into(), word.to_owned()],
            ..Default::default()
        };
        rsync.set_direction(RsyncDirection::Push);
        rsync.set_mode(RsyncMode::Module);
        TaskSpec {
            kind: Some(task_spec::Kind::Rsync(rsync)),
            ..Default::default()
        }
    };
    for (word, names) in REPRODUCED_AUX {
        for update in [None, Some(id)] {
            let status = api_refusal(&controller, spec_with(word), update)?;
            ensure!(
                status.code() == tonic::Code::InvalidArgument,
                "{word} ({update:?}): {status:?}"
            );
            ensure!(
                status
                    .message()
                    .starts_with(&format!("auxiliary: '{word}': {names}")),
                "{word} ({update:?}): {status:?}"
            );
        }
    }
    ensure!(list_tasks(&controller)?.len() == 1);
    ensure!(
        string_array(&show_task(&controller, id)?, "auxiliary")? == ["--exclude=*.tmp", "-H"],
        "an API edit was saved"
    );
    Ok(())
}

/// Processes whose real user is `uid`: (pid, command line).
fn processes_of(uid: u32) -> Result<Vec<(u32, String)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may end while we look: skip it.
        let Ok(status) = fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let real_uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next())
            .and_then(|id| id.parse::<u32>().ok());
        let zombie = status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'));
        if real_uid == Some(uid) && !zombie {
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push((pid, cmdline.trim().to_owned()));
        }
    }
    Ok(found)
}

/// Waits (bounded) until the task's user runs a local rsync and its ssh.
fn wait_for_rsync_and_ssh(uid: u32) -> Result<()> {
    let mut seen = Vec::new();
    nasfleet_tests::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        seen = processes_of(uid)?;
        let client = seen
            .iter()
            .any(|(_, c)| c.starts_with("rsync ") && !c.contains("--server"));
        let ssh = seen.iter().any(|(_, c)| c.starts_with("ssh "));
        Ok(client && ssh)
    })
    .with_context(|| format!("rsync and its ssh did not start; the user runs {seen:?}"))
}

/// Waits (bounded) until no process of the task's user is left: the local
/// rsync and ssh, and (once the connection is gone) the remote end.
fn wait_for_no_process(uid: u32, after: &str) -> Result<()> {
    let mut left = Vec::new();
    nasfleet_tests::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        left = processes_of(uid)?;
        Ok(left.is_empty())
    })
    .with_context(|| format!("after {after}, the task's user still runs {left:?}"))
}

/// A TCP server on loopback that accepts connections and never says a
/// word, for at most two minutes.
struct SilentServer {
    host: String,
    port: String,
}

impl SilentServer {
    fn start() -> Result<SilentServer> {
        let listener = std::net::TcpListener::bind((next_loopback_ip(), 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut held = Vec::new();
            while Instant::now() < deadline && held.len() < 16 {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        Ok(SilentServer {
            host: addr.ip().to_string(),
            port: addr.port().to_string(),
        })
    }
}

#[test]
fn cancelling_or_stopping_an_ssh_mode_run_leaves_no_process_behind() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("rsynccancel")?;
    let pool = create_pool(&dir, "rscan")?;
    let user = TestUser::create(dir.path())?;
    let sshd = TestSshd::start(dir.path())?;
    let (controller, mut agent) = one_system(&dir, &pool, "nas1")?;
    let public_key = user.with_ssh_key()?;
    sshd.authorize_key(&public_key)?;
    user.write_known_hosts(&[sshd.known_hosts_line()?])?;
    let remote = dir.path().join("remote");
    user.create_dir(&remote)?;

    // 8 MiB at 64 KiB/s: two minutes of transfer, far longer than the test.
    let big = dataset_dir(&pool, "big")?;
    for i in 0..8 {
        write(&big.join(format!("f{i}.bin")), &noise(1024 * 1024, 10 + i))?;
    }
    let port = sshd.port().to_string();
    let host = sshd.host();
    let mut flags = ssh_task_flags(&big, user.name(), "push", &host, &port, &remote)?;
    flags.extend(["--aux", "--bwlimit=64K", "--disabled"]);
    let id = task_id(&create_task(&controller, &flags)?)?;
    ensure!(
        processes_of(user.uid())?.is_empty(),
        "{:?}",
        processes_of(user.uid())?
    );

    // `run cancel`: the run ends FAILED and its whole process group goes.
    let run = controller.cli_json(&["rsync", "run", &id.to_string()])?;
    let run_id = run["id"].as_u64().context("no run id")?;
    wait_for_rsync_and_ssh(user.uid())?;
    controller.cli_ok(&["run", "cancel", &run_id.to_string()])?;
    let run = wait_run_final(&controller, run_id, RUN_TIMEOUT)?;
    ensure!(run_state(&run)? == "FAILED", "{run}");
    ensure!(
        str_field(&run, "reason")?.starts_with("Cancelled by"),
        "{run}"
    );
    wait_for_no_process(user.uid(), "run cancel")?;

    // The agent stopping (SIGTERM, as systemd sends it) drops the run,
    // with no cancel: the whole group goes too. Here ssh waits for a
    // server that accepts and never answers, so it would not end on its
    // own when rsync is killed (it reads nothing from rsync before the
    // server's greeting). The agent alone is signalled: the harness's stop
    // would clean up after it.
    let silent = SilentServer::start()?;
    let mut flags = ssh_task_flags(
        &big,
        user.name(),
        "push",
        &silent.host,
        &silent.port,
        &remote,
    )?;
    flags.push("--disabled");
    let stuck = task_id(&create_task(&controller, &flags)?)?;
    controller.cli_json(&["rsync", "run", &stuck.to_string()])?;
    wait_for_rsync_and_ssh(user.uid())?;
    agent.signal(libc::SIGTERM)?;
    agent.wait_exit(Duration::from_secs(20))?;
    wait_for_no_process(user.uid(), "the agent stopped")?;
    Ok(())
}
