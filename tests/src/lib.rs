//! Harness for the end-to-end tests: temp dirs, unique names and loopback addresses, plus the process, zfs, sshd and fleet guards.
//!
//! Everything here starts real things (binaries, ZFS pools, sshd) and
//! owns them through guards that clean up on `Drop`, also while a test
//! panics. Drop order matters: Rust drops locals in reverse order of
//! declaration, so declare the [`TestDir`] first, then pools, then sshd,
//! controller and agents. Processes then stop before the pools they use are
//! destroyed, and the directory holding logs and pool images goes last.
//!
//! Set `NASFLEET_TEST_KEEP=1` to keep temp dirs (logs, state, configs) for
//! debugging; their paths are printed to stderr.

pub mod browser;
pub mod fleet;
pub mod process;
pub mod receivers;
pub mod rsyncd;
pub mod sshd;
pub mod users;
pub mod zfs;

pub use fleet::{Agent, Controller, JoinToken, wait_for_status};
pub use process::{ChildGuard, binary, run_ok, run_ok_timeout, run_output, wait_until};
pub use rsyncd::TestRsyncd;
pub use sshd::TestSshd;
pub use users::TestUser;
pub use zfs::{TestPool, ZfsKind, ensure_zfs, ensure_zfs_fuse, is_openzfs, zfs_kind};

use anyhow::{Context, Result, bail};
use std::fs;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Most bytes of one log printed by [`dump_logs`]: a runaway debug log must
/// not bury the assertion message in CI output; the tail is what matters.
const MAX_DUMPED_LOG_BYTES: u64 = 256 * 1024;

/// True when `NASFLEET_TEST_KEEP` asks to keep temp dirs for debugging.
pub fn keep_temp_dirs() -> bool {
    matches!(
        std::env::var("NASFLEET_TEST_KEEP").as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

/// One test's scratch directory (logs, data dirs, pool images, sshd configs).
///
/// Removed on drop unless `NASFLEET_TEST_KEEP=1`. Logs of every process go
/// to `<dir>/logs/<name>.log`.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    /// Creates `/tmp/nasfleet-<label>-XXXXXX` (mode 0700) with a `logs/` subdir.
    pub fn new(label: &str) -> Result<TestDir> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("nasfleet-{}-", sanitize(label, 24)))
            .tempdir()
            .context("creating the test's temp dir")?;
        let path = dir.path().to_path_buf();
        fs::create_dir_all(path.join("logs"))
            .with_context(|| format!("creating {}/logs", path.display()))?;
        Ok(TestDir {
            dir: Some(dir),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<dir>/logs`, where every guard writes its process's log.
    pub fn logs_dir(&self) -> PathBuf {
        self.path.join("logs")
    }

    /// Prints every log under `<dir>/logs` to stderr (see [`dump_logs`]).
    pub fn dump_logs(&self) {
        dump_logs(&self.path);
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        if keep_temp_dirs() {
            let path = dir.keep();
            eprintln!("NASFLEET_TEST_KEEP: keeping {}", path.display());
        } else if std::thread::panicking() {
            eprintln!(
                "test dir {} is removed; set NASFLEET_TEST_KEEP=1 to keep it",
                self.path.display()
            );
        }
    }
}

/// Where a process named `name` logs inside the test dir `dir`.
pub fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("logs").join(format!("{name}.log"))
}

/// Prints every `*.log` under `<dir>/logs` to stderr, each with a header and
/// at most its last 256 KiB. Tests call it on failure; guards already print
/// their own log when dropped during a panic.
pub fn dump_logs(dir: &Path) {
    let logs = dir.join("logs");
    let mut files: Vec<PathBuf> = match fs::read_dir(&logs) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => {
            eprintln!("no logs in {}: {e}", logs.display());
            return;
        }
    };
    files.sort();
    for file in files {
        eprintln!("===== {} =====", file.display());
        eprintln!("{}", read_log_tail(&file, MAX_DUMPED_LOG_BYTES));
    }
}

/// The last `max` bytes of a log file, lossily decoded; an error text if it
/// cannot be read (a log dump must never fail the cleanup that prints it).
pub(crate) fn read_log_tail(path: &Path, max: u64) -> String {
    use std::io::{Seek, SeekFrom};
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("<cannot open {}: {e}>", path.display()),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut prefix = String::new();
    if len > max {
        if let Err(e) = file.seek(SeekFrom::Start(len - max)) {
            return format!("<cannot seek in {}: {e}>", path.display());
        }
        prefix = format!("<... {} earlier bytes cut ...>\n", len - max);
    }
    let mut bytes = Vec::new();
    if let Err(e) = file.read_to_end(&mut bytes) {
        return format!("<cannot read {}: {e}>", path.display());
    }
    prefix + &String::from_utf8_lossy(&bytes)
}

/// Keeps `[0-9a-z]` of `s` (lowercased), at most `max` chars: labels end up
/// in pool names and paths, where anything else is trouble.
pub(crate) fn sanitize(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(max)
        .collect()
}

/// Lowercase base 36, to keep unique suffixes short (pool names are limited).
pub(crate) fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".to_string();
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

static UNIQUE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A suffix unique within this machine at this moment: the pid tells test
/// processes apart (several test binaries and developers share one zfs-fuse
/// daemon), the counter tells calls within one process apart (tests run in
/// parallel threads). At most 5 + 4 chars in practice.
pub fn unique_suffix() -> String {
    let n = UNIQUE_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}{}",
        base36(u64::from(std::process::id())),
        base36(u64::from(n))
    )
}

/// Loopback addresses handed to "hosts" (sshd, ...) by [`next_loopback_ip`].
static NEXT_LOOPBACK: AtomicU32 = AtomicU32::new(2);

/// The next loopback address of this process: 127.0.0.2, 127.0.0.3, ...,
/// wrapping after 127.0.0.254. Linux routes all of 127.0.0.0/8 to `lo`, so
/// nothing needs configuring. Other test processes may hand out the same
/// addresses; [`free_port`] keeps them apart by port.
pub fn next_loopback_ip() -> Ipv4Addr {
    let n = NEXT_LOOPBACK.fetch_add(1, Ordering::Relaxed);
    let host = 2 + (n - 2) % 253;
    Ipv4Addr::new(127, 0, 0, host as u8)
}

/// A port that was free on `ip` a moment ago: binds port 0 and drops the
/// listener. Racy by nature; callers that spawn a server retry on
/// "address already in use".
pub fn free_port(ip: IpAddr) -> Result<u16> {
    if !ip.is_loopback() {
        bail!("tests only listen on loopback addresses, not {ip}");
    }
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))
        .with_context(|| format!("binding {ip}:0 to find a free port"))?;
    Ok(listener
        .local_addr()
        .context("reading a bound address")?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_is_short_and_exact() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        // Linux pid_max is 2^22: five chars at most.
        assert_eq!(base36(4_194_304), "2hwcg");
    }

    #[test]
    fn unique_suffixes_differ() {
        let a = unique_suffix();
        let b = unique_suffix();
        assert_ne!(a, b);
        assert!(a.len() <= 9, "{a}");
    }

    #[test]
    fn sanitize_keeps_lowercase_alphanumerics() {
        assert_eq!(sanitize("Src-Pool_1/x", 6), "srcpoo");
    }

    #[test]
    fn loopback_ips_are_loopback_and_not_127_0_0_1() {
        for _ in 0..300 {
            let ip = next_loopback_ip();
            assert!(ip.is_loopback());
            assert_ne!(ip, Ipv4Addr::new(127, 0, 0, 1));
            assert_ne!(ip.octets()[3], 255);
        }
    }

    #[test]
    fn free_port_refuses_non_loopback() {
        assert!(free_port(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))).is_err());
    }
}
