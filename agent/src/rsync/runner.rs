//! Running rsync, and the probes of a remote path, as the task's user under [`crate::host::process`]'s guarantees: no shell, a timeout, stderr drained, the whole process group killed on timeout, cancel or drop.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::watch;

use crate::host::passwd::Account;
use crate::host::process::{self, Ended, ProcessError};

/// The longest one rsync run may take before it is stopped.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// stderr kept for the failure reason (its last lines are what rsync says
/// about why it stopped).
const STDERR_KEEP: usize = 64 * 1024;

/// A child's setup to run as `account` (not root unless the task's user is root).
fn as_user(command: &mut Command, account: &Account) {
    command
        .uid(account.uid)
        .gid(account.gid)
        .env("HOME", &account.home)
        .env("USER", &account.name)
        .env("LOGNAME", &account.name);
}

/// Runs `rsync ARGS` as `account` in `dir` (the task's directory, opened
/// without following links, see [`super::checks::open_task_dir`]) for at
/// most [`RUN_TIMEOUT`], handing its stdout to `on_stdout` as it arrives.
/// The exit status is returned, not judged: rsync's own rules say which
/// codes count as success ([`super::output::is_success`]).
pub async fn run_in(
    dir: &File,
    args: &[String],
    account: &Account,
    cancel: &mut watch::Receiver<bool>,
    on_stdout: impl FnMut(&[u8]),
) -> Result<Ended, ProcessError> {
    let mut command = Command::new("rsync");
    command.args(args);
    as_user(&mut command, account);
    let dir_fd = dir.as_raw_fd();
    // SAFETY: fchdir(2) is async-signal-safe and touches no memory of the
    // parent; `dir` outlives the spawn (it is borrowed for this whole call).
    // The descriptor stays close-on-exec: rsync keeps the directory as its
    // working directory, not the descriptor. std runs this after the switch
    // to the task's user, so entering the directory needs that user's
    // search permission on it, which rsync needs there anyway.
    unsafe {
        command.pre_exec(move || {
            if libc::fchdir(dir_fd) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    process::stream(command, RUN_TIMEOUT, cancel, on_stdout, STDERR_KEEP).await
}

/// Runs a short probe (`program ARGS`, see [`super::argv::ssh_mkdir_probe`])
/// as `account` within `timeout`; its stdout is not needed.
pub async fn probe(
    program: &str,
    args: &[String],
    account: &Account,
    timeout: Duration,
) -> Result<Ended, ProcessError> {
    let mut command = Command::new(program);
    command.args(args);
    as_user(&mut command, account);
    // Nobody cancels a probe: the sender is dropped at once.
    let (_, mut never_cancelled) = watch::channel(false);
    process::stream(command, timeout, &mut never_cancelled, |_| {}, STDERR_KEEP).await
}
