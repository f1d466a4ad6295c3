//! Real ZFS for tests on either tier: zfs-fuse on the host (the harness starts its daemon) or OpenZFS's kernel module in the guest (deploy/openzfs-guest.sh), and `TestPool`, a file-backed pool with a unique name that is destroyed on drop.

use crate::process::{run_ok, run_output, wait_until};
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Parent of every test pool's mountpoint, away from `/` so leftovers are
/// easy to spot and clean.
pub const MOUNT_ROOT: &str = "/nasfleet-test";

/// Size of a test pool's backing file (sparse: costs no disk until written).
pub const DEFAULT_POOL_SIZE: u64 = 256 * 1024 * 1024;

/// How long zfs-fuse gets to answer `zpool list` after being started.
const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Serialises daemon start-up among the test threads of this process.
static DAEMON_LOCK: Mutex<()> = Mutex::new(());

/// Finds an executable in PATH or the sbin dirs: `zpool` and `zfs-fuse`
/// live in /usr/sbin, which a non-login environment may not have in PATH.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Which ZFS the tests run against. Both speak the same `zfs`/`zpool`
/// commands; they differ in how the harness gets them going and in what
/// the agent reports (its dialect).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZfsKind {
    /// zfs-fuse on the host (pool version 23): a daemon the harness starts,
    /// and mounts serialised machine-wide (see [`MountLock`]).
    ZfsFuse,
    /// OpenZFS's kernel module, as in the guest tier
    /// (`deploy/openzfs-guest.sh run`): nothing to start, no mount lock.
    OpenZfs,
}

/// The ZFS of this machine, decided once per process: `NASFLEET_ZFS`
/// (`openzfs` or `zfs-fuse`; the guest runner sets `openzfs`) when set,
/// else OpenZFS when its kernel module is loaded or when `zfs` is installed
/// without `zfs-fuse`, else zfs-fuse.
///
/// Panics on any other `NASFLEET_ZFS`: a misspelt tier must not quietly
/// test the other one.
pub fn zfs_kind() -> ZfsKind {
    static KIND: OnceLock<ZfsKind> = OnceLock::new();
    *KIND.get_or_init(|| match std::env::var("NASFLEET_ZFS").as_deref() {
        Ok("openzfs") => ZfsKind::OpenZfs,
        Ok("zfs-fuse") => ZfsKind::ZfsFuse,
        Ok(other) => panic!("NASFLEET_ZFS={other:?}: expected \"openzfs\" or \"zfs-fuse\""),
        Err(_) => {
            let module = Path::new("/sys/module/zfs").exists();
            let fuse = find_tool("zfs-fuse").is_some();
            if module || (!fuse && find_tool("zfs").is_some()) {
                ZfsKind::OpenZfs
            } else {
                ZfsKind::ZfsFuse
            }
        }
    })
}

/// True on the OpenZFS tier (see [`zfs_kind`]).
pub fn is_openzfs() -> bool {
    zfs_kind() == ZfsKind::OpenZfs
}

fn tool(name: &str) -> Result<PathBuf> {
    find_tool(name).with_context(|| {
        let why = if std::env::var("CI").as_deref() == Ok("true") {
            "CI=true: the ZFS tests must run, so a missing ZFS is a failure"
        } else {
            "the end-to-end tests need real ZFS and are never skipped"
        };
        let install = match zfs_kind() {
            ZfsKind::ZfsFuse => {
                "install the Debian package zfs-fuse (as root: deploy/install-deps.sh)"
            }
            ZfsKind::OpenZfs => {
                "NASFLEET_ZFS=openzfs but zfsutils-linux is missing: run the tests in the \
                 guest (deploy/openzfs-guest.sh run)"
            }
        };
        format!("`{name}` not found in PATH nor /usr/sbin: {install}; {why}")
    })
}

/// `zpool ARGS` as a command (absolute path, see [`find_tool`]).
pub fn zpool() -> Result<Command> {
    Ok(Command::new(tool("zpool")?))
}

/// `zfs ARGS` as a command (absolute path, see [`find_tool`]).
pub fn zfs() -> Result<Command> {
    Ok(Command::new(tool("zfs")?))
}

fn zpool_answers() -> Result<bool> {
    let out = run_output(zpool()?.arg("list"), Duration::from_secs(10))?;
    Ok(out.status.success())
}

/// Makes sure ZFS answers on this machine, whichever [`zfs_kind`] it is:
/// starts the zfs-fuse daemon when needed, or checks the OpenZFS module
/// ([`ensure_openzfs`]). Missing ZFS is an error, never a skip.
pub fn ensure_zfs() -> Result<()> {
    match zfs_kind() {
        ZfsKind::ZfsFuse => ensure_zfs_fuse_daemon(),
        ZfsKind::OpenZfs => ensure_openzfs(),
    }
}

/// The name the tests used before the OpenZFS tier: same as [`ensure_zfs`].
pub fn ensure_zfs_fuse() -> Result<()> {
    ensure_zfs()
}

/// OpenZFS: loads the kernel module when `/dev/zfs` is missing (the guest's
/// init loads it already) and waits up to 30 s for `zpool list` to answer.
pub fn ensure_openzfs() -> Result<()> {
    let _guard = DAEMON_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    tool("zpool")?;
    tool("zfs")?;
    if !Path::new("/dev/zfs").exists() {
        let modprobe = find_tool("modprobe").context("modprobe not found (package kmod)")?;
        let out = run_output(Command::new(modprobe).arg("zfs"), Duration::from_secs(60))?;
        if !out.status.success() {
            bail!(
                "modprobe zfs failed ({}): {}; the OpenZFS tier runs in the guest \
                 (deploy/openzfs-guest.sh run), whose kernel has the module",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    wait_until(
        DAEMON_START_TIMEOUT,
        Duration::from_millis(200),
        zpool_answers,
    )
    .context("OpenZFS does not answer `zpool list`")
}

/// Makes sure a zfs-fuse daemon serves this machine: starts `zfs-fuse` (it
/// forks into the background) when `pgrep -x zfs-fuse` finds none, then
/// waits up to 30 s for `zpool list` to answer.
fn ensure_zfs_fuse_daemon() -> Result<()> {
    // A poisoned lock only means another test panicked meanwhile; the
    // daemon check itself is still sound.
    let _guard = DAEMON_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let daemon = tool("zfs-fuse")?;
    tool("zpool")?;
    tool("zfs")?;
    let running = run_output(
        Command::new("pgrep").args(["-x", "zfs-fuse"]),
        Duration::from_secs(10),
    )
    .context("running pgrep (Debian package procps)")?
    .status
    .success();
    if !running {
        if !Path::new("/dev/fuse").exists() {
            bail!("/dev/fuse is missing: zfs-fuse needs the fuse device (modprobe fuse)");
        }
        eprintln!("starting {}", daemon.display());
        let log = std::env::temp_dir().join("nasfleet-zfs-fuse.log");
        let out = run_output(&mut Command::new(&daemon), Duration::from_secs(30))?;
        // A failure may just mean another process started it a moment ago
        // (its pid file is locked); `zpool list` below is the real test.
        if !out.status.success() {
            let _ = fs::write(&log, [out.stdout, out.stderr].concat());
            eprintln!(
                "zfs-fuse exited with {}; output in {}",
                out.status,
                log.display()
            );
        }
    }
    wait_until(
        DAEMON_START_TIMEOUT,
        Duration::from_millis(200),
        zpool_answers,
    )
    .context("zfs-fuse does not answer `zpool list`")
}

/// Full name of `dataset` inside `pool`: `""` is the pool's root dataset; a
/// name that already starts with the pool is taken as is.
pub(crate) fn full_dataset_name(pool: &str, dataset: &str) -> String {
    let dataset = dataset.trim_matches('/');
    if dataset.is_empty() || dataset == pool {
        pool.to_string()
    } else if dataset.starts_with(&format!("{pool}/")) {
        dataset.to_string()
    } else {
        format!("{pool}/{dataset}")
    }
}

/// Non-empty output lines.
fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// True if the dataset, volume or snapshot `name` exists.
pub fn dataset_exists(name: &str) -> Result<bool> {
    let out = run_output(
        zfs()?.args(["list", "-H", "-o", "name", name]),
        Duration::from_secs(60),
    )?;
    Ok(out.status.success())
}

/// Every file system under and including `root`, in `zfs list` order.
pub fn datasets(root: &str) -> Result<Vec<String>> {
    Ok(lines(&run_ok(zfs()?.args([
        "list",
        "-H",
        "-o",
        "name",
        "-t",
        "filesystem",
        "-r",
        root,
    ]))?))
}

/// Snapshots of `dataset` itself (not its children) as full names
/// `pool/ds@snap`, oldest first.
pub fn snapshots(dataset: &str) -> Result<Vec<String>> {
    Ok(lines(&run_ok(zfs()?.args([
        "list", "-H", "-o", "name", "-t", "snapshot", "-s", "creation", "-d", "1", dataset,
    ]))?))
}

/// One property value, parsable form (`zfs get -H -p -o value`, which both
/// zfs-fuse and OpenZFS understand).
pub fn get_property(name: &str, property: &str) -> Result<String> {
    Ok(
        run_ok(zfs()?.args(["get", "-H", "-p", "-o", "value", property, name]))?
            .trim()
            .to_string(),
    )
}

/// Where the files of `dataset` can be read: its mountpoint, after
/// mounting it where it is not mounted. Replicas are received unmounted on
/// OpenZFS (`zfs receive -u`); zfs-fuse mounts them itself.
pub fn mounted_at(dataset: &str) -> Result<PathBuf> {
    if is_openzfs() && get_property(dataset, "mounted")? != "yes" {
        run_ok(zfs()?.args(["mount", dataset]))?;
    }
    Ok(PathBuf::from(get_property(dataset, "mountpoint")?))
}

/// Where [`MountLock`] takes its flock; shared by every process on the machine.
const MOUNT_LOCK_FILE: &str = "/run/lock/nasfleet-zfs-fuse-mount.lock";

/// How long one test waits for another's mount to finish.
const MOUNT_LOCK_TIMEOUT: Duration = Duration::from_secs(180);

/// One mount at a time on this machine, across processes (an flock).
///
/// zfs-fuse announces every new mount to its FUSE listener with two
/// unsynchronised `write`s to one pipe (`zfsfuse_newfs` in
/// `fuse_listener.c`). Two mounts at once (`zpool create`, `zfs create`)
/// can interleave them; the listener then reads a garbage length and waits
/// forever for that many bytes while holding the mutex every FUSE request
/// needs, and every zfs-fuse file system on the machine hangs until the
/// daemon is restarted. So the harness creates pools and datasets (the
/// calls that mount) under this lock.
///
/// OpenZFS has no such listener: there the lock is a no-op, and tests
/// mount as concurrently as the agent does in production.
pub struct MountLock {
    _file: Option<fs::File>,
}

impl MountLock {
    pub fn take() -> Result<MountLock> {
        use std::os::fd::AsRawFd;
        if is_openzfs() {
            return Ok(MountLock { _file: None });
        }
        if let Some(dir) = Path::new(MOUNT_LOCK_FILE).parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(MOUNT_LOCK_FILE)
            .with_context(|| format!("opening {MOUNT_LOCK_FILE}"))?;
        let deadline = Instant::now() + MOUNT_LOCK_TIMEOUT;
        loop {
            // SAFETY: flock(2) on a descriptor this function owns.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                // Released when the file is closed, i.e. on drop.
                return Ok(MountLock { _file: Some(file) });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err).with_context(|| format!("flock {MOUNT_LOCK_FILE}"));
            }
            if Instant::now() >= deadline {
                bail!("{MOUNT_LOCK_FILE} still locked after {MOUNT_LOCK_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A file-backed pool owned by one test, destroyed on drop.
///
/// Named `nft<prefix><pid><counter>` (at most 20 chars) so test threads and
/// test processes sharing the one ZFS of the machine never collide; mounted at
/// `/nasfleet-test/<name>`.
pub struct TestPool {
    name: String,
    image: PathBuf,
    mountpoint: PathBuf,
    destroyed: bool,
}

impl TestPool {
    /// Creates a 256 MiB pool backed by `dir/<name>.img`. `prefix` (up to 6
    /// of its letters and digits) makes the name readable, e.g. "src".
    pub fn create(dir: &Path, prefix: &str) -> Result<TestPool> {
        Self::create_sized(dir, prefix, DEFAULT_POOL_SIZE)
    }

    /// [`Self::create`] with a backing file of `size` bytes (at least 64 MiB,
    /// zfs's minimum vdev size).
    pub fn create_sized(dir: &Path, prefix: &str, size: u64) -> Result<TestPool> {
        ensure_zfs()?;
        let readable = crate::sanitize(prefix.strip_prefix("nft").unwrap_or(prefix), 6);
        // A pool left by a crashed earlier run may hold a name built from a
        // recycled pid: skip names that exist.
        let mut name = None;
        for _ in 0..20 {
            let candidate = format!("nft{readable}{}", crate::unique_suffix());
            let exists = run_output(
                zpool()?.args(["list", "-H", "-o", "name", &candidate]),
                Duration::from_secs(60),
            )?
            .status
            .success();
            if !exists {
                name = Some(candidate);
                break;
            }
        }
        let Some(name) = name else {
            bail!("no free test pool name after 20 tries (leftover nft* pools? see `zpool list`)");
        };
        debug_assert!(name.len() <= 20, "{name}");
        let image = dir.join(format!("{name}.img"));
        let file = fs::File::create(&image)
            .with_context(|| format!("creating pool image {}", image.display()))?;
        // Same as `truncate -s`: a sparse file.
        file.set_len(size)
            .with_context(|| format!("sizing pool image {}", image.display()))?;
        drop(file);
        let mountpoint = Path::new(MOUNT_ROOT).join(&name);
        let lock = MountLock::take()?;
        let created = run_ok(
            zpool()?
                .args(["create", "-m"])
                .arg(&mountpoint)
                .arg(&name)
                .arg(&image),
        );
        drop(lock);
        if let Err(e) = created {
            let _ = fs::remove_file(&image);
            return Err(e.context(format!("creating test pool {name}")));
        }
        Ok(TestPool {
            name,
            image,
            mountpoint,
            destroyed: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn image_path(&self) -> &Path {
        &self.image
    }

    /// Mountpoint of the pool's root dataset (children inherit below it).
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Full name of a dataset of this pool (see [`full_dataset_name`]):
    /// `dataset("a/b")` is `"<pool>/a/b"`.
    pub fn dataset(&self, dataset: &str) -> String {
        full_dataset_name(&self.name, dataset)
    }

    /// `zfs create -p` of `rel` (relative to the pool, or a full name);
    /// returns the full name.
    pub fn create_dataset(&self, rel: &str) -> Result<String> {
        let full = self.dataset(rel);
        let _lock = MountLock::take()?;
        run_ok(zfs()?.args(["create", "-p", &full]))?;
        Ok(full)
    }

    /// Where a dataset of this pool is mounted (`zfs get mountpoint`).
    pub fn dataset_mountpoint(&self, dataset: &str) -> Result<PathBuf> {
        Ok(PathBuf::from(get_property(
            &self.dataset(dataset),
            "mountpoint",
        )?))
    }

    /// Writes `contents` to `file` (relative path) inside a dataset's
    /// mountpoint, creating parent dirs: data for replication and rsync.
    pub fn write_file(&self, dataset: &str, file: &str, contents: &[u8]) -> Result<PathBuf> {
        let path = self.dataset_mountpoint(dataset)?.join(file);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// `zfs snapshot <dataset>@<snap>`; returns the full snapshot name.
    pub fn snapshot(&self, dataset: &str, snap: &str) -> Result<String> {
        let full = format!("{}@{snap}", self.dataset(dataset));
        run_ok(zfs()?.args(["snapshot", &full]))?;
        Ok(full)
    }

    /// Snapshots of one dataset of this pool, full names, oldest first.
    pub fn snapshots(&self, dataset: &str) -> Result<Vec<String>> {
        snapshots(&self.dataset(dataset))
    }

    /// Every file system of this pool, the root first.
    pub fn datasets(&self) -> Result<Vec<String>> {
        datasets(&self.name)
    }

    /// Destroys the pool now and reports failure (drop only prints it).
    pub fn destroy(mut self) -> Result<()> {
        self.destroy_inner()
    }

    fn destroy_inner(&mut self) -> Result<()> {
        if self.destroyed {
            return Ok(());
        }
        // "pool is busy" happens while a just-killed process still holds a
        // file open under the mountpoint; it clears within moments.
        let mut result = Ok(());
        for attempt in 0..5 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_secs(1));
            }
            result = run_ok(zpool()?.args(["destroy", "-f", &self.name])).map(drop);
            if result.is_ok() {
                break;
            }
        }
        result.with_context(|| format!("destroying test pool {}", self.name))?;
        self.destroyed = true;
        // zfs-fuse (and OpenZFS, for a -m mountpoint) leaves the empty
        // mountpoint dir behind.
        let _ = fs::remove_dir(&self.mountpoint);
        fs::remove_file(&self.image)
            .with_context(|| format!("removing pool image {}", self.image.display()))?;
        Ok(())
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        if let Err(e) = self.destroy_inner() {
            eprintln!("cleanup: {e:#}");
        }
    }
}

impl TestPool {
    /// [`Self::create`] as a two-way mirror: a second backing file of the
    /// same size, `dir/<name>-mirror.img`, attached to the first. Returns
    /// the pool and that second file's path, e.g. to `zpool offline` it
    /// (the pool is DEGRADED then). Destroyed on drop like any test pool;
    /// the second file goes with `dir`.
    pub fn create_mirror(dir: &Path, prefix: &str) -> Result<(TestPool, PathBuf)> {
        let pool = Self::create(dir, prefix)?;
        let second = dir.join(format!("{}-mirror.img", pool.name));
        fs::File::create(&second)
            .and_then(|file| file.set_len(DEFAULT_POOL_SIZE))
            .with_context(|| format!("creating pool image {}", second.display()))?;
        run_ok(
            zpool()?
                .arg("attach")
                .arg(&pool.name)
                .arg(&pool.image)
                .arg(&second),
        )
        .with_context(|| format!("attaching a mirror to test pool {}", pool.name))?;
        // An empty pool resilvers at once; wait for it, so that the new
        // side holds a full copy before a test takes either side away.
        wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
            let status = run_ok(zpool()?.args(["status", &pool.name]))?;
            Ok(!status.contains("in progress"))
        })
        .with_context(|| format!("the mirror of test pool {} did not resilver", pool.name))?;
        Ok((pool, second))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_names_are_relative_to_the_pool_unless_full() {
        assert_eq!(full_dataset_name("nftp", ""), "nftp");
        assert_eq!(full_dataset_name("nftp", "nftp"), "nftp");
        assert_eq!(full_dataset_name("nftp", "a/b"), "nftp/a/b");
        assert_eq!(full_dataset_name("nftp", "/a/"), "nftp/a");
        assert_eq!(full_dataset_name("nftp", "nftp/a"), "nftp/a");
        // A dataset whose name merely starts with the pool's letters.
        assert_eq!(full_dataset_name("nftp", "nftpx"), "nftp/nftpx");
    }

    #[test]
    fn pool_names_fit_in_20_chars() {
        let name = format!(
            "nft{}{}",
            crate::sanitize("longprefix", 6),
            crate::unique_suffix()
        );
        assert!(name.len() <= 20, "{name}");
    }
}
