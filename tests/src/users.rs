//! Real system users for tests (rsync tasks run as "the task's user"): created with a unique name and a home in the test dir, optionally with an SSH key, deleted on drop.

use crate::process::{run_ok, run_output};
use anyhow::{Context, Result, anyhow, bail};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Deadline of one useradd/userdel call.
const ACCOUNT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How often useradd/userdel are tried while another process holds the
/// passwd lock (other test binaries create users too).
const LOCK_ATTEMPTS: u32 = 20;

/// How long the user's processes get to die before userdel.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// A real local account `nftu<pid><counter>` (at most 16 chars), removed
/// with its home on drop. Needs root.
///
/// The home is `<test dir>/home-<name>`. Creating a user makes the test dir
/// traversable by others (mode 0711, not listable): the user must reach its
/// home, and OpenSSH reads authorized_keys files (also the test sshd's own
/// file in the test dir) with the user's privileges.
///
/// The password field is `*` (no password login, but not "locked"): with
/// `UsePAM no`, sshd refuses key logins to accounts whose password starts
/// with `!`, which is what a plain `useradd` leaves.
pub struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
    deleted: bool,
}

impl TestUser {
    /// `useradd -m -d DIR/home-NAME -s /bin/sh -p '*' NAME`.
    pub fn create(dir: &Path) -> Result<TestUser> {
        // Others may pass through the test dir to the home, never list it.
        let mode = fs::metadata(dir)
            .with_context(|| format!("stat {}", dir.display()))?
            .permissions()
            .mode();
        fs::set_permissions(dir, fs::Permissions::from_mode((mode & 0o7777) | 0o011))
            .with_context(|| format!("making {} traversable", dir.display()))?;
        // A user left by a crashed earlier run may hold a name built from a
        // recycled pid: skip names that exist.
        let mut name = None;
        for _ in 0..20 {
            let candidate = format!("nftu{}", crate::unique_suffix());
            if passwd_entry(&candidate)?.is_none() {
                name = Some(candidate);
                break;
            }
        }
        let Some(name) = name else {
            bail!("no free test user name after 20 tries (leftover nftu* users? see /etc/passwd)");
        };
        debug_assert!(name.len() <= 16, "{name}");
        let home = dir.join(format!("home-{name}"));
        let mut args: Vec<OsString> = vec!["-m".into(), "-d".into(), home.clone().into()];
        args.extend(["-s", "/bin/sh", "-p", "*"].map(OsString::from));
        args.push(name.clone().into());
        retry_on_lock("useradd", &args).with_context(|| format!("creating test user {name}"))?;
        // From here on the guard owns the account: a failure below deletes it.
        let mut user = TestUser {
            name,
            uid: 0,
            gid: 0,
            home,
            deleted: false,
        };
        let entry = passwd_entry(&user.name)?
            .ok_or_else(|| anyhow!("user {} missing right after useradd", user.name))?;
        (user.uid, user.gid) =
            parse_ids(&entry).with_context(|| format!("unexpected passwd entry {entry:?}"))?;
        if user.uid == 0 {
            bail!("test user {} got uid 0", user.name);
        }
        Ok(user)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    pub fn gid(&self) -> u32 {
        self.gid
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `~/.ssh`, created (0700, owned by the user) if missing.
    pub fn ssh_dir(&self) -> Result<PathBuf> {
        let dir = self.home.join(".ssh");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 700 {}", dir.display()))?;
        self.chown(&dir)?;
        Ok(dir)
    }

    /// Generates `~/.ssh/id_ed25519` (no passphrase, 0600) and its `.pub`,
    /// both owned by the user; returns the public key line.
    pub fn with_ssh_key(&self) -> Result<String> {
        let key = self.ssh_dir()?.join("id_ed25519");
        run_ok(
            Command::new("ssh-keygen")
                .args(["-t", "ed25519", "-N", "", "-q", "-C", &self.name, "-f"])
                .arg(&key),
        )
        .with_context(|| format!("generating an SSH key for {}", self.name))?;
        let public = key.with_extension("pub");
        for path in [&key, &public] {
            self.chown(path)?;
        }
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 600 {}", key.display()))?;
        Ok(fs::read_to_string(&public)
            .with_context(|| format!("reading {}", public.display()))?
            .trim()
            .to_string())
    }

    /// Writes `~/.ssh/known_hosts` (owned by the user, 0644) with `lines`,
    /// e.g. a test sshd's [`crate::TestSshd::known_hosts_line`].
    pub fn write_known_hosts(&self, lines: &[String]) -> Result<PathBuf> {
        let path = self.ssh_dir()?.join("known_hosts");
        let mut text = lines.join("\n");
        text.push('\n');
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        self.chown(&path)?;
        Ok(path)
    }

    /// Gives one file or directory to the user (not recursive; see
    /// [`Self::chown_tree`]).
    pub fn chown(&self, path: &Path) -> Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .with_context(|| format!("chown {} {}", self.name, path.display()))
    }

    /// `chown -R` of a tree to the user and its group.
    pub fn chown_tree(&self, path: &Path) -> Result<()> {
        run_ok(
            Command::new("chown")
                .arg("-R")
                .arg(format!("{}:{}", self.uid, self.gid))
                .arg("--")
                .arg(path),
        )
        .map(drop)
    }

    /// Creates a directory (and its parents) owned by the user.
    pub fn create_dir(&self, path: &Path) -> Result<()> {
        fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        self.chown(path)
    }

    /// Deletes the account now and reports failure (drop only prints it).
    pub fn delete(mut self) -> Result<()> {
        self.delete_inner()
    }

    fn delete_inner(&mut self) -> Result<()> {
        if self.deleted {
            return Ok(());
        }
        // userdel refuses a user with running processes (an rsync or sshd
        // session a failed test left behind).
        kill_processes_of(self.uid, KILL_TIMEOUT);
        let name = self.name.clone();
        let result = retry_on_lock("userdel", &["-r".into(), name.into()]);
        // userdel -r also complains about a mail spool that never existed;
        // what counts is that the account is gone.
        if passwd_entry(&self.name)?.is_some() {
            return result.with_context(|| format!("deleting test user {}", self.name));
        }
        self.deleted = true;
        let _ = fs::remove_dir_all(&self.home);
        Ok(())
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if let Err(e) = self.delete_inner() {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// The `getent passwd NAME` line, or None if there is no such user.
fn passwd_entry(name: &str) -> Result<Option<String>> {
    let out = run_output(
        Command::new("getent").args(["passwd", name]),
        ACCOUNT_COMMAND_TIMEOUT,
    )?;
    // getent exits 2 for "not found".
    if !out.status.success() {
        return Ok(None);
    }
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(Some(line).filter(|l| !l.is_empty()))
}

/// `(uid, gid)` of a passwd line `name:x:uid:gid:gecos:home:shell`.
pub(crate) fn parse_ids(line: &str) -> Option<(u32, u32)> {
    let mut fields = line.split(':');
    let uid = fields.nth(2)?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    Some((uid, gid))
}

/// Runs a shadow-utils command, again while it fails because another
/// process holds the passwd/group lock.
fn retry_on_lock(program: &str, args: &[OsString]) -> Result<()> {
    let mut last = String::new();
    for attempt in 0..LOCK_ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(100 + 50 * u64::from(attempt)));
        }
        let out = run_output(Command::new(program).args(args), ACCOUNT_COMMAND_TIMEOUT)?;
        if out.status.success() {
            return Ok(());
        }
        last = format!(
            "{program} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        if !(last.contains("lock") || last.contains("try again")) {
            break;
        }
    }
    Err(anyhow!(last))
}

/// The real uid of a process from `/proc/PID/status`.
fn uid_of(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Pids of the processes running as `uid`.
fn processes_of(uid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| uid_of(*pid) == Some(uid))
        .collect()
}

/// SIGKILLs every process of `uid` (a test user: nobody else runs as it),
/// one pid at a time, until none is left or `timeout` passes.
fn kill_processes_of(uid: u32, timeout: Duration) {
    if uid == 0 {
        return;
    }
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let pids = processes_of(uid);
        if pids.is_empty() || std::time::Instant::now() >= deadline {
            return;
        }
        for pid in pids {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_the_third_and_fourth_fields() {
        assert_eq!(
            parse_ids("nftu1a:x:1001:1002::/tmp/h:/bin/sh"),
            Some((1001, 1002))
        );
        assert_eq!(parse_ids("broken"), None);
    }

    #[test]
    fn user_names_fit_in_16_chars() {
        let name = format!("nftu{}", crate::unique_suffix());
        assert!(name.len() <= 16, "{name}");
    }
}
