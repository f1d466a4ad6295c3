//! Checks the test harness itself against the real things it drives: ZFS pools (zfs-fuse or OpenZFS), sshd with key login, and process guards.

use anyhow::Result;
use nasfleet_tests::process::{ChildGuard, run_ok, run_output, wait_until};
use nasfleet_tests::sshd::{TestSshd, generate_client_key};
use nasfleet_tests::zfs::{TestPool, dataset_exists, zpool};
use nasfleet_tests::{TestDir, log_path};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn pid_alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; only a reaped or running-elsewhere
    // pid counts, so look at the state too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn pool_dataset_snapshot_and_cleanup() -> Result<()> {
    let dir = TestDir::new("smoke-zfs")?;
    let pool = TestPool::create(dir.path(), "src")?;
    let name = pool.name().to_string();
    assert!(name.starts_with("nftsrc") && name.len() <= 20, "{name}");

    let ds = pool.create_dataset("a/b")?;
    assert_eq!(ds, format!("{name}/a/b"));
    let file = pool.write_file("a/b", "dir/hello.txt", b"hello")?;
    assert!(file.starts_with(pool.mountpoint()), "{}", file.display());
    assert_eq!(std::fs::read(&file)?, b"hello");

    let s1 = pool.snapshot("a/b", "s1")?;
    let s2 = pool.snapshot(&ds, "s2")?;
    pool.snapshot("a", "other")?;
    assert_eq!(pool.snapshots("a/b")?, vec![s1.clone(), s2]);
    assert!(dataset_exists(&s1)?);
    assert_eq!(
        pool.datasets()?,
        vec![name.clone(), format!("{name}/a"), format!("{name}/a/b")]
    );

    let image = pool.image_path().to_path_buf();
    let mountpoint = pool.mountpoint().to_path_buf();
    pool.destroy()?;
    let listed = run_output(
        zpool()?.args(["list", "-H", "-o", "name", &name]),
        Duration::from_secs(60),
    )?;
    assert!(!listed.status.success(), "pool {name} still exists");
    assert!(!image.exists() && !mountpoint.exists());
    Ok(())
}

#[test]
fn parallel_pools_get_distinct_names() -> Result<()> {
    let dir = TestDir::new("smoke-par")?;
    let names = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| TestPool::create(dir.path(), "par")))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("pool thread panicked"))
            .collect::<Result<Vec<_>>>()
    })?;
    let mut unique: Vec<&str> = names.iter().map(TestPool::name).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3);
    Ok(())
}

#[test]
fn sshd_accepts_authorized_root_key_only() -> Result<()> {
    let dir = TestDir::new("smoke-ssh")?;
    let pool = TestPool::create(dir.path(), "ssh")?;
    let a = TestSshd::start(dir.path())?;
    let mut b = TestSshd::start(dir.path())?;
    assert_ne!(a.ip(), b.ip());
    assert!(a.host().starts_with("127.0.0.") && a.host() != "127.0.0.1");
    assert_eq!(a.address(), format!("{}:{}", a.host(), a.port()));
    for sshd in [&a, &b] {
        let fp = sshd.host_key_fingerprint();
        assert!(fp.starts_with("ssh-ed25519 SHA256:"), "{fp}");
        assert!(sshd.host_key_pub()?.starts_with("ssh-ed25519 AAAA"));
    }
    assert_ne!(a.host_key_fingerprint(), b.host_key_fingerprint());

    let key = generate_client_key(dir.path(), "client")?;
    let stranger = generate_client_key(dir.path(), "stranger")?;
    a.authorize_key(&std::fs::read_to_string(key.with_extension("pub"))?)?;

    // Root logs in with the authorized key and runs zfs on the "remote" host.
    let listed = run_ok(
        a.ssh_command(&key)?
            .args(["zfs", "list", "-H", "-o", "name"])
            .arg(pool.name()),
    )?;
    assert_eq!(listed.trim(), pool.name());

    // Another key, or the right key on another host, is refused.
    let refused = run_output(
        a.ssh_command(&stranger)?.arg("true"),
        Duration::from_secs(30),
    )?;
    assert!(!refused.status.success());
    let refused = run_output(b.ssh_command(&key)?.arg("true"), Duration::from_secs(30))?;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // A stopped host refuses connections; a restarted one keeps its key.
    let fingerprint = b.host_key_fingerprint().to_string();
    b.stop()?;
    assert!(TcpStream::connect_timeout(&b.socket_addr(), Duration::from_secs(1)).is_err());
    b.restart()?;
    assert!(b.is_running());
    assert_eq!(b.host_key_fingerprint(), fingerprint);
    assert!(b.log().contains("Server listening on"), "{}", b.log());
    Ok(())
}

#[test]
fn child_guard_kills_process_tree_on_drop() -> Result<()> {
    let dir = TestDir::new("smoke-proc")?;
    let log = log_path(dir.path(), "tree");
    // A shell that ignores SIGTERM and has a grandchild: the worst case.
    let guard = ChildGuard::spawn(
        "tree",
        Command::new("sh").args([
            "-c",
            "trap '' TERM; echo started; sleep 600 & echo grandchild $!; wait",
        ]),
        &log,
    )?;
    let pid = guard.pid();
    let mut grandchild = None;
    wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        grandchild = guard
            .log()
            .lines()
            .find_map(|l| l.strip_prefix("grandchild ")?.trim().parse::<u32>().ok());
        Ok(grandchild.is_some())
    })?;
    let grandchild = grandchild.unwrap_or_default();
    assert!(pid_alive(pid) && pid_alive(grandchild));

    let started = Instant::now();
    drop(guard);
    // SIGTERM is ignored, so SIGKILL comes after the 5 s grace.
    assert!(started.elapsed() >= Duration::from_secs(4));
    assert!(!pid_alive(pid), "child {pid} survived");
    wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        Ok(!pid_alive(grandchild))
    })?;
    assert!(std::fs::read_to_string(&log)?.contains("started"));
    Ok(())
}

#[test]
fn child_guard_stop_and_kill_report_status() -> Result<()> {
    let dir = TestDir::new("smoke-stop")?;
    let log = log_path(dir.path(), "sleeper");
    let mut guard = ChildGuard::spawn("sleeper", Command::new("sleep").arg("600"), &log)?;
    assert!(guard.is_running());
    let status = guard.terminate()?;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGTERM)
    );
    let mut guard = ChildGuard::spawn("sleeper", Command::new("sleep").arg("600"), &log)?;
    let status = guard.kill()?;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    // Both starts appended to one log.
    assert_eq!(std::fs::read_to_string(&log)?.matches("==== ").count(), 2);
    Ok(())
}

#[test]
fn run_helpers_report_failures_and_deadlines() -> Result<()> {
    let err = run_ok(Command::new("sh").args(["-c", "echo out; echo oops >&2; exit 3"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sh -c") && err.contains("exit status: 3") && err.contains("oops"),
        "{err}"
    );
    assert_eq!(run_ok(Command::new("echo").arg("hi"))?, "hi\n");

    let started = Instant::now();
    let err = run_output(Command::new("sleep").arg("600"), Duration::from_millis(300))
        .unwrap_err()
        .to_string();
    assert!(err.contains("did not finish within"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // A daemon that forks and keeps stdout open must not hang the caller.
    let started = Instant::now();
    let out = run_output(
        Command::new("sh").args(["-c", "sleep 5 & echo forked"]),
        Duration::from_secs(30),
    )?;
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "forked\n");
    Ok(())
}

#[test]
fn binaries_are_looked_up_next_to_the_test_executable() {
    let err = nasfleet_tests::binary("nasfleet-does-not-exist")
        .unwrap_err()
        .to_string();
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/"));
    assert!(
        err.contains(&profile_dir.display().to_string()),
        "{err} should name {}",
        profile_dir.display()
    );
}

#[test]
fn free_ports_are_bindable_on_test_hosts() -> Result<()> {
    let ip = nasfleet_tests::next_loopback_ip();
    let port = nasfleet_tests::free_port(ip.into())?;
    let listener = std::net::TcpListener::bind(SocketAddr::from((ip, port)))?;
    assert_eq!(listener.local_addr()?.port(), port);
    Ok(())
}
