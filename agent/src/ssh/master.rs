//! One shared ssh connection per run (ControlMaster): started in a private directory, closed when dropped, and the directories of agents that died without closing theirs swept at start.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::argv::{SshTarget, ssh_args};
use super::error::{SshError, io_error};

/// A master SSH connection shared by the commands of one run; closed when dropped.
pub struct SshMaster {
    child: tokio::process::Child,
    dir: PathBuf,
}

impl Drop for SshMaster {
    fn drop(&mut self) {
        // kill_on_drop ends the master; the socket goes with its directory.
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Prefix of the private directories holding master sockets, followed by
/// the owning agent's pid: `nasfleet-ssh-PID-RANDOM`.
const CONTROL_DIR_PREFIX: &str = "nasfleet-ssh-";

/// Removes the master-socket directories under `tmp` that agents no longer
/// running left behind (killed with SIGKILL, so no [`SshMaster`] was
/// dropped; the master itself died with them). A directory whose pid is
/// alive is kept: other agents may share the host (and a reused pid only
/// delays the sweep). Returns how many were removed.
pub fn sweep_stale_control_dirs(tmp: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(CONTROL_DIR_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let ours = entry.metadata().is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            // SAFETY: geteuid has no preconditions and cannot fail.
            m.is_dir() && m.uid() == unsafe { libc::geteuid() }
        });
        if !ours || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::debug!(dir = %entry.path().display(), error = %e, "could not remove a stale SSH control directory")
            }
        }
    }
    removed
}

/// Opens a master connection for `target` and returns the target set up to
/// share it. The socket lives in a fresh private directory under /tmp (unix
/// socket paths are limited to about 100 bytes, state dirs can be longer).
/// On any failure the caller simply goes on without sharing.
pub async fn start_master(
    target: &SshTarget,
    timeout: Duration,
) -> Result<(SshMaster, SshTarget), SshError> {
    let dir = std::env::temp_dir().join(format!(
        "{CONTROL_DIR_PREFIX}{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io_error("create", &dir))?;
    }
    let socket = dir.join("ctl");
    let args = master_args(target, &socket)?;
    let mut command = tokio::process::Command::new("ssh");
    command
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    // If the agent dies without dropping the master (SIGKILL, crash), the
    // kernel ends the master too instead of leaving it connected forever.
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches only
    // the child's own process attributes between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(io_error("start", Path::new("ssh")))?;
    let mut master = SshMaster { child, dir };
    let deadline = tokio::time::Instant::now() + timeout;
    while !socket.exists() {
        if tokio::time::Instant::now() >= deadline || matches!(master.child.try_wait(), Ok(Some(_)))
        {
            return Err(SshError::Unreachable {
                host: target.host.clone(),
                port: target.port,
                reason: io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the shared SSH connection did not come up",
                ),
            });
        }
        // Short: every millisecond here is a millisecond of every run.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let shared = SshTarget {
        control_path: Some(socket),
        ..target.clone()
    };
    Ok((master, shared))
}

/// The argv (after `ssh`) of a master connection for `target` listening
/// on `socket`.
fn master_args(target: &SshTarget, socket: &Path) -> Result<Vec<String>, SshError> {
    let master_target = SshTarget {
        control_path: None,
        ..target.clone()
    };
    // `-N`: no command, just the connection; `-M` with an explicit
    // ControlPath makes this process the master, in the foreground, so it
    // is our child (never a daemon holding our pipes open).
    let mut args = ssh_args(&master_target, &["true".to_owned()])?;
    let destination = args.len() - 2;
    args.truncate(destination + 1);
    args.splice(
        0..0,
        [
            "-M".to_owned(),
            "-N".to_owned(),
            "-o".to_owned(),
            format!("ControlPath={}", socket.display()),
            "-o".to_owned(),
            "ControlPersist=no".to_owned(),
        ],
    );
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_control_dirs_of_agents_that_are_gone_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let dead = tmp
            .path()
            .join(format!("{CONTROL_DIR_PREFIX}{}-00ff", i32::MAX));
        let alive = tmp
            .path()
            .join(format!("{CONTROL_DIR_PREFIX}{}-00ff", std::process::id()));
        let other = tmp
            .path()
            .join(format!("nasfleet-rsync-empty-{}", i32::MAX));
        let not_a_pid = tmp.path().join(format!("{CONTROL_DIR_PREFIX}x-00ff"));
        for dir in [&dead, &alive, &other, &not_a_pid] {
            std::fs::create_dir(dir).unwrap();
        }
        std::fs::write(dead.join("ctl"), b"").unwrap();
        assert_eq!(sweep_stale_control_dirs(tmp.path()), 1);
        assert!(!dead.exists());
        assert!(alive.exists() && other.exists() && not_a_pid.exists());
        assert_eq!(sweep_stale_control_dirs(&tmp.path().join("missing")), 0);
    }
}
