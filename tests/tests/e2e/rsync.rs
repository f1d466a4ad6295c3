//! Rsync tasks: push and pull against a real rsync daemon and a real sshd, run as the task's user, TrueNAS's flags, auxiliary words as data, failure reasons and create-time refusals.

use super::common::*;
use anyhow::{Context, Result, bail, ensure};
use nasfleet_tests::{
    Controller, TestDir, TestPool, TestRsyncd, TestSshd, TestUser, ensure_zfs_fuse, free_port,
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

#[test]
fn module_mode_push_and_pull_run_as_the_tasks_user_with_truenas_flags() -> Result<()> {
    ensure_zfs_fuse()?;
    let dir = TestDir::new("rsyncmod")?;
    let pool = create_pool(&dir, "rsmod")?;
    let user = TestUser::create(dir.path())?;
    let push_module = dir.path().join("module-push");
    let pull_module = dir.path().join("module-pull");
    let rsyncd = TestRsyncd::start(
        dir.path(),
        &[("push", &push_module), ("pull", &pull_module)],
    )?;
    let (controller, _agent) = one_system(&dir, &pool, "nas1")?;
    let port = rsyncd.port().to_string();
    let host = rsyncd.host();

    // Nothing configured yet: people and scripts both see it.
    let table = controller.cli_ok(&["rsync", "list"])?;
    ensure!(table.contains("No Rsync Tasks configured"), "{table}");
    ensure!(list_tasks(&controller)?.is_empty());

    // PUSH with the task defaults (-z --delay-updates -r -t) and an exclude.
    let out = dataset_dir(&pool, "out")?;
    let a = write(&out.join("a.txt"), b"alpha\n")?;
    let b = write(&out.join("sub/b.bin"), &noise(256 * 1024, 1))?;
    write(&out.join("scratch.tmp"), b"never copied")?;
    set_mtime(&a, OLD_MTIME)?;
    set_mtime(&b, OLD_MTIME + 60)?;
    let push = create_task(
        &controller,
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

    let run = run_ok_task(&controller, push_id)?;
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
    let shown = show_task(&controller, push_id)?;
    ensure!(shown["status"] == "SUCCESS", "{shown}");
    ensure!(shown["last_error"].is_null(), "{shown}");

    // PULL into a dataset the user owns, with --delete and --preserve-permissions.
    let x = write(&pull_module.join("x.txt"), b"xray\n")?;
    let y = write(&pull_module.join("deep/y.bin"), &noise(128 * 1024, 2))?;
    chmod(&x, 0o640)?;
    chmod(&y, 0o600)?;
    chmod(&pull_module.join("deep"), 0o750)?;
    set_mtime(&x, OLD_MTIME + 120)?;
    let into = dataset_dir(&pool, "in")?;
    let stale = write(&into.join("stale.txt"), b"not on the source")?;
    user.chown_tree(&into)?;
    let pull = create_task(
        &controller,
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

    let tasks = list_tasks(&controller)?;
    ensure!(tasks.len() == 2, "{tasks:?}");
    let shown = show_task(&controller, pull_id)?;
    ensure!(shown["status"] == "SUCCESS", "{shown}");
    ensure!(shown["description"] == "pull from the daemon", "{shown}");
    let table = controller.cli_ok(&["rsync", "list"])?;
    ensure!(!table.contains("No Rsync Tasks configured"), "{table}");
    Ok(())
}

#[test]
fn ssh_mode_push_and_pull_with_the_users_key_and_validated_remote_paths() -> Result<()> {
    ensure_zfs_fuse()?;
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
    ensure_zfs_fuse()?;
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
    ensure_zfs_fuse()?;
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

    // Shell syntax in auxiliary words reaches rsync as literal words: rsync
    // takes them for more source files, finds none, and the run fails with
    // 23; nothing is executed. The canary and the victim sit in a directory
    // the task's user may write to, so even a shell running as that user
    // would show. (GNU rm refuses `rm -rf /` anyway; the test-owned victim
    // proves no `rm` ran at all.)
    let playground = dir.path().join("playground");
    user.create_dir(&playground)?;
    let canary = playground.join("CANARY");
    let backtick_canary = playground.join("BACKTICK");
    let victim = playground.join("victim");
    let victim_file = write(&victim.join("v.txt"), b"still here")?;
    user.chown_tree(&victim)?;
    let touch = format!("$(touch {})", canary.display());
    let backtick = format!("`touch {}`", backtick_canary.display());
    let rm_victim = format!("; rm -rf {}", victim.display());
    let hostile = push(
        &host,
        &port,
        "mod",
        &[
            "--aux",
            &touch,
            "--aux",
            "; rm -rf /",
            "--aux",
            &rm_victim,
            "--aux",
            &backtick,
        ],
    )?;
    let task = show_task(&controller, hostile)?;
    ensure!(
        string_array(&task, "auxiliary")? == [touch.as_str(), "; rm -rf /", &rm_victim, &backtick],
        "{task}"
    );
    let run = run_task(&controller, hostile)?;
    ensure!(run_state(&run)? == "FAILED", "{run}");
    let reason = str_field(&run, "reason")?;
    ensure!(
        reason.starts_with("rsync command returned 23 - Partial transfer due to error."),
        "{reason}"
    );
    // rsync names the words it could not find: they arrived as words.
    ensure!(reason.contains("rm -rf"), "{reason}");
    for made in [&canary, &backtick_canary] {
        ensure!(!made.exists(), "a shell ran: {} exists", made.display());
    }
    ensure!(victim_file.exists(), "a shell ran: the victim is gone");
    ensure!(kept.exists(), "the module's file is gone");
    // The real source still went across.
    same_content(&a, &module.join("a.txt"))?;
    Ok(())
}

#[test]
fn preserve_xattrs_copies_user_attributes_both_ways() -> Result<()> {
    ensure_zfs_fuse()?;
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
        let mut args = vec![
            "--system",
            "nas1",
            "--path",
            path_arg(path)?,
            "--user",
            user.name(),
            "--direction",
            direction,
            "--remote-host",
            &host,
            "--remote-port",
            &port,
            "--remote-module",
            module,
            "--disabled",
        ];
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
