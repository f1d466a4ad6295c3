//! Running one child process (zfs, zpool, ssh, rsync) safely: no shell, a timeout, stderr kept for the error, and the child's whole process group killed and the child reaped on timeout, cancellation or drop; [`run`] for its output at the end, [`stream`] with its output read as it comes. [`super::pipe`] runs two of them piped into each other.

use std::ffi::OsStr;
use std::io;
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use super::time::display_duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::watch;

/// Longest rendering of a command line in an error message; inventory
/// commands are short, but a `zfs send` with many snapshot names need not be.
const MAX_RENDERED_COMMAND: usize = 200;

/// Most stderr kept in a [`ProcessError::Failed`]; the start is where
/// zfs, ssh and rsync say what went wrong.
const MAX_STDERR: usize = 4096;

/// Why a child process did not produce a successful result.
#[derive(Debug, Error)]
pub enum ProcessError {
    #[error("`{program}` is not installed or not in PATH")]
    NotFound { program: String },
    #[error("could not start `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("could not read the output of `{command}`: {source}")]
    Read {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("lost track of `{command}` while it ran: {source}")]
    Wait {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` timed out after {}", display_duration(*.after))]
    TimedOut { command: String, after: Duration },
    #[error("`{command}` was cancelled")]
    Cancelled { command: String },
    #[error("`{command}` failed ({}){}", describe_code(*.code), describe_stderr(.stderr))]
    Failed {
        command: String,
        /// `None` when the child was ended by a signal.
        code: Option<i32>,
        /// Trimmed standard error of the child.
        stderr: String,
    },
}

impl ProcessError {
    /// The trimmed stderr of a command that ran and failed, so callers can
    /// turn known messages into reasons a person can act on.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            ProcessError::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

pub(super) fn describe_code(code: Option<i32>) -> String {
    match code {
        Some(code) => format!("exit code {code}"),
        None => "killed by a signal".to_owned(),
    }
}

pub(super) fn describe_stderr(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// Renders a command line for messages and logs. Arguments are quoted only
/// when needed so the common case reads like what a person would type.
pub fn render_command<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let mut out = program.to_owned();
    for arg in args {
        out.push(' ');
        let arg = arg.as_ref().to_string_lossy();
        let plain = !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:,=@%+".contains(c));
        if plain {
            out.push_str(&arg);
        } else {
            out.push('\'');
            out.push_str(&arg.replace('\'', r"'\''"));
            out.push('\'');
        }
        if out.len() > MAX_RENDERED_COMMAND {
            break;
        }
    }
    if out.len() > MAX_RENDERED_COMMAND {
        let mut cut = MAX_RENDERED_COMMAND;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(" ...");
    }
    out
}

/// Runs `program` with `args` (one argv entry each, never through a shell)
/// and returns its output if it exits with status 0.
///
/// stdin is closed so a tool that unexpectedly prompts fails instead of
/// hanging. `LC_ALL=C` keeps messages and number formats stable for parsing.
/// The child runs in a process group of its own; on timeout, or if the
/// returned future is dropped, the whole group is killed (see
/// [`run_cancellable`]).
pub async fn run<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    timeout: Duration,
) -> Result<Output, ProcessError> {
    run_inner(program, args, timeout, None).await
}

/// [`run`] that an administrator can stop: when `cancel` becomes `true`
/// the child's whole process group is killed, the child is reaped, and
/// [`ProcessError::Cancelled`] is returned. If `cancel` is already `true`
/// nothing is started. A sender that goes away without cancelling leaves
/// the run to finish (or time out) normally.
///
/// Killing the group rather than the child matters for pipelines: `ssh`
/// started by `zfs send | ssh ...` wrappers, rsync's remote-shell helper
/// and a shell's background jobs all inherit the group, and would
/// otherwise keep running (and keep pipes open) after the run is over.
pub async fn run_cancellable<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    timeout: Duration,
    cancel: &mut watch::Receiver<bool>,
) -> Result<Output, ProcessError> {
    run_inner(program, args, timeout, Some(cancel)).await
}

/// Kills the child's process group when dropped unless disarmed, so a
/// dropped future (the caller gave up) leaves nothing running. The leader
/// itself is also killed and reaped by tokio (`kill_on_drop`).
///
/// The group is only signalled while its leader has not been reaped:
/// until then the leader's pid, and so the group id, cannot be reused by
/// an unrelated process.
pub(super) struct GroupGuard {
    pub(super) pgid: Option<i32>,
}

impl GroupGuard {
    pub(super) fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            kill_group(pgid);
        }
    }

    /// The leader was reaped; the group id may be reused from now on.
    pub(super) fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGKILL to every process in group `pgid`.
fn kill_group(pgid: i32) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid
    // addresses the process group, which is ours (see GroupGuard).
    let rc = unsafe { libc::kill(-pgid, libc::SIGKILL) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        // ESRCH: every member is gone already.
        if err.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(pgid, %err, "could not kill process group");
        }
    }
}

/// Why waiting for the child stopped early.
pub(super) enum Interrupted {
    TimedOut,
    Cancelled,
}

pub(super) async fn cancelled(cancel: Option<&mut watch::Receiver<bool>>) {
    match cancel {
        // An error means the sender is gone: nobody can cancel any more.
        Some(rx) => {
            if rx.wait_for(|c| *c).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

async fn run_inner<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    timeout: Duration,
    cancel: Option<&mut watch::Receiver<bool>>,
) -> Result<Output, ProcessError> {
    let mut cmd = Command::new(program);
    for arg in args {
        cmd.arg(arg);
    }
    let mut stdout = Vec::new();
    let started = std::time::Instant::now();
    let ended = supervise(
        cmd,
        timeout,
        cancel,
        |chunk| stdout.extend_from_slice(chunk),
        usize::MAX,
    )
    .await?;
    // What each call costs, for finding a run's fixed cost (RUST_LOG=debug).
    tracing::debug!(command = %ended.command, ms = started.elapsed().as_millis(), ok = ended.status.success(), "ran");
    if ended.status.success() {
        Ok(Output {
            status: ended.status,
            stdout,
            stderr: ended.stderr,
        })
    } else {
        Err(ProcessError::Failed {
            command: ended.command,
            code: ended.status.code(),
            stderr: stderr_for_message(&ended.stderr),
        })
    }
}

/// How a child run by [`stream`] ended.
#[derive(Debug)]
pub struct Ended {
    /// The command line as rendered for messages.
    pub command: String,
    pub status: ExitStatus,
    /// The last bytes of its standard error (at most what was asked for).
    pub stderr: Vec<u8>,
}

/// Runs a prepared command (program and arguments, one argv entry each,
/// never a shell, plus whatever the caller set up: user, environment,
/// `pre_exec`) and hands its stdout to `on_stdout` as it arrives, for tools
/// that report progress while they run (rsync).
///
/// The same guarantees as [`run_cancellable`]: stdin closed, `LC_ALL=C`,
/// a process group of its own that is killed as a whole on timeout, on
/// `cancel` and when the returned future is dropped (rsync's ssh child goes
/// with it), stderr drained concurrently (its last `stderr_keep` bytes are
/// kept for the reason), and the leader reaped. A read error on either pipe
/// is an error ([`ProcessError::Read`]), never taken for the end of output.
/// The exit status is returned, not judged: the caller knows which codes
/// count as success.
pub async fn stream(
    cmd: Command,
    timeout: Duration,
    cancel: &mut watch::Receiver<bool>,
    on_stdout: impl FnMut(&[u8]),
    stderr_keep: usize,
) -> Result<Ended, ProcessError> {
    supervise(cmd, timeout, Some(cancel), on_stdout, stderr_keep).await
}

/// The one place a child is started and watched; see [`stream`].
async fn supervise(
    mut cmd: Command,
    timeout: Duration,
    mut cancel: Option<&mut watch::Receiver<bool>>,
    on_stdout: impl FnMut(&[u8]),
    stderr_keep: usize,
) -> Result<Ended, ProcessError> {
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    let args: Vec<&OsStr> = cmd.as_std().get_args().collect();
    let command = render_command(&program, &args);
    let already_cancelled = cancel
        .as_deref_mut()
        .is_some_and(|rx| *rx.borrow_and_update());
    if already_cancelled {
        return Err(ProcessError::Cancelled { command });
    }
    cmd.env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);

    let mut child = cmd.spawn().map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            ProcessError::NotFound {
                program: program.clone(),
            }
        } else {
            ProcessError::Spawn {
                command: command.clone(),
                source,
            }
        }
    })?;
    // With process_group(0) the group id is the child's pid.
    let mut guard = GroupGuard {
        pgid: child.id().and_then(|pid| i32::try_from(pid).ok()),
    };

    let work = drain_and_wait(&mut child, &command, on_stdout, stderr_keep);
    let outcome = tokio::select! {
        finished = work => Ok(finished),
        _ = tokio::time::sleep(timeout) => Err(Interrupted::TimedOut),
        _ = cancelled(cancel) => Err(Interrupted::Cancelled),
    };

    match outcome {
        Ok(Ok((status, stderr))) => {
            guard.disarm();
            Ok(Ended {
                command,
                status,
                stderr,
            })
        }
        Ok(Err(failed)) => {
            guard.kill();
            reap(&mut child, &command).await;
            Err(failed)
        }
        Err(why) => {
            guard.kill();
            reap(&mut child, &command).await;
            Err(match why {
                Interrupted::TimedOut => ProcessError::TimedOut {
                    command,
                    after: timeout,
                },
                Interrupted::Cancelled => ProcessError::Cancelled { command },
            })
        }
    }
}

/// Reads the child's stdout (handed to `on_stdout`) and its stderr (the
/// last `stderr_keep` bytes kept) to their ends, then reaps it.
///
/// Both pipes are drained concurrently: a child that fills one pipe
/// while we read the other would otherwise block forever. The child is
/// reaped only after both pipes are closed, so while a background
/// grandchild still holds them the leader stays unreaped and its group
/// can safely be killed on timeout or cancel.
async fn drain_and_wait(
    child: &mut tokio::process::Child,
    command: &str,
    on_stdout: impl FnMut(&[u8]),
    stderr_keep: usize,
) -> Result<(ExitStatus, Vec<u8>), ProcessError> {
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (out, err) = tokio::join!(
        read_chunks(stdout, on_stdout),
        drain_tail(stderr, stderr_keep)
    );
    let read = |source| ProcessError::Read {
        command: command.to_owned(),
        source,
    };
    out.map_err(read)?;
    let err = err.map_err(read)?;
    let status = child.wait().await.map_err(|source| ProcessError::Wait {
        command: command.to_owned(),
        source,
    })?;
    Ok((status, err))
}

/// Hands a pipe's bytes to `on_chunk` as they arrive, until its end.
async fn read_chunks<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    mut on_chunk: impl FnMut(&[u8]),
) -> io::Result<()> {
    let Some(mut pipe) = pipe else {
        return Ok(());
    };
    let mut buf = vec![0_u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => return Ok(()),
            Ok(n) => on_chunk(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Kills (again, harmlessly) and waits for the group leader so no zombie
/// is left behind. Members of the group other than the leader are not our
/// children; whoever inherits them (init or a subreaper) reaps them.
pub(super) async fn reap(child: &mut tokio::process::Child, command: &str) {
    if let Err(err) = child.kill().await {
        tracing::warn!(%command, %err, "could not kill and reap child");
    }
}

/// Trimmed stderr, cut to [`MAX_STDERR`] so a tool that dumps pages of text
/// (usage, per-file rsync complaints) cannot swamp a message.
pub(super) fn stderr_for_message(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.len() <= MAX_STDERR {
        return text.to_owned();
    }
    let mut cut = MAX_STDERR;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{} ...", text[..cut].trim_end())
}

/// Reads a pipe to its end, keeping its last `keep` bytes.
async fn drain_tail<R: AsyncRead + Unpin>(pipe: Option<R>, keep: usize) -> io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return Ok(kept);
    };
    let mut buf = [0_u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => return Ok(kept),
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > keep {
                    kept.drain(..kept.len() - keep);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::test_support::*;

    // These run /bin/sh and friends, which every test machine has; they
    // check our process handling, not any tool's behaviour.

    #[tokio::test]
    async fn returns_stdout_on_success() {
        let out = run("echo", &["hello", "a b"], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(out.stdout, b"hello a b\n");
    }

    #[tokio::test]
    async fn arguments_are_not_interpreted_by_a_shell() {
        let out = run("echo", &["$(id)", ";", "`x`"], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(out.stdout, b"$(id) ; `x`\n");
    }

    #[tokio::test]
    async fn failure_carries_code_and_trimmed_stderr() {
        let err = run(
            "sh",
            &["-c", "echo '  cannot open thing  ' >&2; exit 3"],
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        match &err {
            ProcessError::Failed { code, stderr, .. } => {
                assert_eq!(*code, Some(3));
                assert_eq!(stderr, "cannot open thing");
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("exit code 3"), "{msg}");
        assert!(msg.ends_with(": cannot open thing"), "{msg}");
    }

    #[test]
    fn long_stderr_is_cut() {
        let long = format!("  first line\n{}", "x".repeat(10_000));
        let kept = stderr_for_message(long.as_bytes());
        assert!(kept.starts_with("first line\n"));
        assert!(kept.ends_with(" ..."));
        assert!(kept.len() <= MAX_STDERR + 4);
    }

    #[tokio::test]
    async fn missing_program_is_not_found() {
        let err = run(
            "nasfleet-no-such-tool",
            &[] as &[&str],
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`nasfleet-no-such-tool` is not installed or not in PATH"
        );
    }

    #[tokio::test]
    async fn timeout_kills_the_child() {
        let started = std::time::Instant::now();
        let err = run("sleep", &["30"], Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(err.to_string(), "`sleep 30` timed out after 200ms");
    }

    #[tokio::test]
    async fn cancel_kills_the_whole_tree() {
        let dir = tempfile::tempdir().unwrap();
        let pids_file = dir.path().join("pids");
        let args = tree_script(&pids_file);
        let (tx, mut rx) = watch::channel(false);
        let started = std::time::Instant::now();
        let (result, pids) = tokio::join!(
            run_cancellable("sh", &args, Duration::from_secs(60), &mut rx),
            async {
                let pids = read_pids(&pids_file).await;
                assert!(pids.iter().all(|p| running(*p)));
                tx.send(true).unwrap();
                pids
            }
        );
        let err = result.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(matches!(err, ProcessError::Cancelled { .. }), "{err:?}");
        assert!(err.to_string().ends_with("` was cancelled"), "{err}");
        assert_all_gone(&pids).await;
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_tree() {
        let dir = tempfile::tempdir().unwrap();
        let pids_file = dir.path().join("pids");
        let err = run("sh", &tree_script(&pids_file), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, ProcessError::TimedOut { .. }), "{err:?}");
        let pids = read_pids(&pids_file).await;
        assert_all_gone(&pids).await;
    }

    #[tokio::test]
    async fn a_grandchild_holding_the_pipes_is_killed_on_timeout() {
        // The shell exits at once; its background sleep keeps stdout open.
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}", pid_file.display());
        let err = run("sh", &["-c", script.as_str()], Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(matches!(err, ProcessError::TimedOut { .. }), "{err:?}");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_all_gone(&[pid]).await;
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_whole_tree() {
        let dir = tempfile::tempdir().unwrap();
        let pids_file = dir.path().join("pids");
        let args = tree_script(&pids_file);
        let outcome = tokio::time::timeout(
            Duration::from_secs(1),
            run("sh", &args, Duration::from_secs(60)),
        )
        .await;
        assert!(outcome.is_err(), "the run should still have been going");
        let pids = read_pids(&pids_file).await;
        assert_all_gone(&pids).await;
    }

    #[tokio::test]
    async fn already_cancelled_starts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let script = format!("touch {}", marker.display());
        let (_tx, mut rx) = watch::channel(true);
        let err = run_cancellable(
            "sh",
            &["-c", script.as_str()],
            Duration::from_secs(5),
            &mut rx,
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), format!("`sh -c '{script}'` was cancelled"));
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn uncancelled_run_finishes_even_if_the_sender_is_gone() {
        let (tx, mut rx) = watch::channel(false);
        drop(tx);
        let out = run_cancellable("echo", &["done"], Duration::from_secs(5), &mut rx)
            .await
            .unwrap();
        assert_eq!(out.stdout, b"done\n");
        let (_tx, mut rx) = watch::channel(false);
        let err = run_cancellable("false", &[] as &[&str], Duration::from_secs(5), &mut rx)
            .await
            .unwrap_err();
        assert!(matches!(err, ProcessError::Failed { code: Some(1), .. }));
    }

    #[tokio::test]
    async fn large_output_on_both_pipes_does_not_deadlock() {
        let script = "head -c 1000000 /dev/zero; head -c 1000000 /dev/zero >&2";
        let out = run("sh", &["-c", script], Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(out.stdout.len(), 1_000_000);
        assert_eq!(out.stderr.len(), 1_000_000);
    }

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        cmd
    }

    #[tokio::test]
    async fn stream_hands_over_output_as_it_comes_and_returns_any_status() {
        let (_tx, mut rx) = watch::channel(false);
        let mut seen = Vec::new();
        let ended = stream(
            sh("echo one; sleep 0.2; echo two; echo 12345678-the-end >&2; exit 23"),
            Duration::from_secs(10),
            &mut rx,
            |chunk| seen.push(String::from_utf8_lossy(chunk).into_owned()),
            8,
        )
        .await
        .unwrap();
        assert_eq!(seen.concat(), "one\ntwo\n");
        assert!(seen.len() >= 2, "the output came in one piece: {seen:?}");
        assert_eq!(ended.status.code(), Some(23));
        // Only the tail of stderr is kept.
        assert_eq!(ended.stderr, b"the-end\n");
        assert!(ended.command.starts_with("sh -c "), "{}", ended.command);
    }

    #[tokio::test]
    async fn stream_cancel_kills_the_whole_tree() {
        let dir = tempfile::tempdir().unwrap();
        let pids_file = dir.path().join("pids");
        let mut cmd = Command::new("sh");
        cmd.args(tree_script(&pids_file));
        let (tx, mut rx) = watch::channel(false);
        let (result, pids) = tokio::join!(
            stream(cmd, Duration::from_secs(60), &mut rx, |_| {}, 1024),
            async {
                let pids = read_pids(&pids_file).await;
                assert!(pids.iter().all(|p| running(*p)));
                tx.send(true).unwrap();
                pids
            }
        );
        let err = result.unwrap_err();
        assert!(matches!(err, ProcessError::Cancelled { .. }), "{err:?}");
        assert_all_gone(&pids).await;
    }

    #[tokio::test]
    async fn dropping_a_stream_kills_the_whole_tree() {
        let dir = tempfile::tempdir().unwrap();
        let pids_file = dir.path().join("pids");
        let mut cmd = Command::new("sh");
        cmd.args(tree_script(&pids_file));
        let (_tx, mut rx) = watch::channel(false);
        let outcome = tokio::time::timeout(
            Duration::from_secs(1),
            stream(cmd, Duration::from_secs(60), &mut rx, |_| {}, 1024),
        )
        .await;
        assert!(outcome.is_err(), "the run should still have been going");
        let pids = read_pids(&pids_file).await;
        assert_all_gone(&pids).await;
    }

    #[tokio::test]
    async fn stream_timeout_kills_the_whole_tree() {
        let dir = tempfile::tempdir().unwrap();
        let pids_file = dir.path().join("pids");
        let mut cmd = Command::new("sh");
        cmd.args(tree_script(&pids_file));
        let (_tx, mut rx) = watch::channel(false);
        let err = stream(cmd, Duration::from_secs(1), &mut rx, |_| {}, 1024)
            .await
            .unwrap_err();
        assert!(matches!(err, ProcessError::TimedOut { .. }), "{err:?}");
        assert_all_gone(&read_pids(&pids_file).await).await;
    }

    #[test]
    fn renders_commands_readably() {
        assert_eq!(
            render_command("zfs", &["get", "-H", "-o", "name,value", "tank/a"]),
            "zfs get -H -o name,value tank/a"
        );
        assert_eq!(
            render_command("x", &["a b", "", "it's"]),
            r"x 'a b' '' 'it'\''s'"
        );
        let long = "a".repeat(500);
        let rendered = render_command("zfs", &[long.as_str()]);
        assert!(rendered.ends_with(" ..."));
        assert!(rendered.len() <= MAX_RENDERED_COMMAND + 4);
    }
}
