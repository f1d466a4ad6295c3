//! Running child processes (zfs, zpool, ssh, rsync) safely: no shell, a timeout, stderr kept for the error, and each child's whole process group killed and the child reaped on timeout, cancellation or drop; one child alone ([`run`], or [`stream`] with its output read as it comes) or one piped into another through the agent ([`pipe`], for `zfs send | zfs recv`).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::time::display_duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::{Notify, watch};

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

fn describe_code(code: Option<i32>) -> String {
    match code {
        Some(code) => format!("exit code {code}"),
        None => "killed by a signal".to_owned(),
    }
}

fn describe_stderr(stderr: &str) -> String {
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
struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            kill_group(pgid);
        }
    }

    /// The leader was reaped; the group id may be reused from now on.
    fn disarm(&mut self) {
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
enum Interrupted {
    TimedOut,
    Cancelled,
}

async fn cancelled(cancel: Option<&mut watch::Receiver<bool>>) {
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
    let ended = supervise(
        cmd,
        timeout,
        cancel,
        |chunk| stdout.extend_from_slice(chunk),
        usize::MAX,
    )
    .await?;
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
async fn reap(child: &mut tokio::process::Child, command: &str) {
    if let Err(err) = child.kill().await {
        tracing::warn!(%command, %err, "could not kill and reap child");
    }
}

/// Trimmed stderr, cut to [`MAX_STDERR`] so a tool that dumps pages of text
/// (usage, per-file rsync complaints) cannot swamp a message.
fn stderr_for_message(stderr: &[u8]) -> String {
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

// ---------------------------------------------------------------------------
// Piping one child into another (`zfs send | zfs recv`).

/// Most bytes one `splice(2)` of [`pipe`]'s relay moves (and the buffer of
/// its userspace fallback). Each call moves what the sender's pipe holds
/// (64 KiB by default, more after [`widen_pipe`]) and the receiver's has
/// room for, so a larger chunk only helps when the sender is ahead.
const RELAY_CHUNK: usize = 1 << 20;

/// Longest the relay thread sleeps in poll(2) before it checks whether the
/// transfer was given up; the backstop for pipes that a killed process
/// group did not close (a helper that left the group still holds them).
const RELAY_STOP_CHECK_MS: libc::c_int = 100;

/// Kernel pipe size asked for on both of [`pipe`]'s pipes: fewer, larger
/// reads and writes than the 64 KiB default. Best effort; capped by
/// `/proc/sys/fs/pipe-max-size` (1 MiB by default) for unprivileged users.
const WIDE_PIPE: libc::c_int = 1 << 20;

/// How often [`pipe`] reports progress at most.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// Most stderr read from each side of a [`pipe`]; the rest is discarded
/// unread-into-memory so a chatty child cannot grow the agent.
const MAX_STDERR_READ: usize = 64 * 1024;

/// Why a [`pipe`] did not move the whole stream.
#[derive(Debug, Error)]
pub enum PipeError {
    /// The sending side failed: the cause, not the receiver's complaint
    /// about the stream ending early.
    #[error("`{command}` failed ({}){}", describe_code(*.code), describe_stderr(.stderr))]
    SendFailed {
        command: String,
        code: Option<i32>,
        stderr: String,
    },
    /// The receiving side failed; if it stopped reading early, the sender's
    /// broken pipe that followed is not reported.
    #[error("`{command}` failed ({}){}", describe_code(*.code), describe_stderr(.stderr))]
    RecvFailed {
        command: String,
        code: Option<i32>,
        stderr: String,
    },
    #[error("the transfer was cancelled")]
    Cancelled,
    #[error("the transfer stalled: no data moved for {}", display_duration(*.after))]
    Stalled { after: Duration },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl PipeError {
    /// The trimmed stderr of the side that failed, so callers can turn
    /// known messages (zfs recv's "destination ... exists") into reasons.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            PipeError::SendFailed { stderr, .. } | PipeError::RecvFailed { stderr, .. } => {
                Some(stderr)
            }
            _ => None,
        }
    }
}

/// Runs `send` and `recv` (program, args; never a shell) and relays the
/// sender's stdout into the receiver's stdin through the agent, counting
/// the bytes. Returns the number of bytes moved when both exit with 0.
///
/// Relaying instead of connecting the two processes directly is what lets
/// the agent count bytes for progress, notice a stall, and tell which side
/// failed first. It costs next to nothing: a thread of its own moves the
/// data with `splice(2)`, so the kernel hands pages from the sender's pipe
/// to the receiver's without copying them through the agent (a plain
/// read/write copy is the fallback where `splice` is not available).
///
/// - Both run in process groups of their own (an `ssh` receiver's helpers
///   go with it); both groups are killed and both children reaped on
///   cancel, on stall and when the returned future is dropped.
/// - `progress` gets the bytes moved so far at most every ~500 ms, and once
///   more when the sender's stream has ended.
/// - A stall is `idle_timeout` with no byte read from the sender nor written
///   to the receiver; after the stream has ended, the two get another
///   `idle_timeout` to exit (zfs recv commits, ssh closes).
/// - Both stderrs are drained concurrently with the relay.
/// - When the receiver fails early the sender is left with a broken pipe;
///   the receiver's failure is the one reported. When the sender fails,
///   the receiver's complaint about a truncated stream is not.
pub async fn pipe(
    send: (&str, &[String]),
    recv: (&str, &[String]),
    idle_timeout: Duration,
    mut progress: impl FnMut(u64) + Send,
    cancel: &mut watch::Receiver<bool>,
) -> Result<u64, PipeError> {
    if *cancel.borrow_and_update() {
        return Err(PipeError::Cancelled);
    }
    let (mut pair, streams) = Pair::start(send, recv)?;
    let outcome = tokio::select! {
        finished = pair.run(streams, idle_timeout, &mut progress) => finished,
        _ = cancelled(Some(cancel)) => Err(Interrupted::Cancelled),
    };
    match outcome {
        Ok((relayed, ends)) => pair.verdict(relayed, ends, idle_timeout),
        Err(why) => {
            pair.stop().await;
            Err(match why {
                Interrupted::TimedOut => PipeError::Stalled {
                    after: idle_timeout,
                },
                Interrupted::Cancelled => PipeError::Cancelled,
            })
        }
    }
}

/// The two children of a [`pipe`], each in a process group of its own
/// that is killed when its guard goes.
struct Pair {
    sender: tokio::process::Child,
    receiver: tokio::process::Child,
    send_guard: GroupGuard,
    recv_guard: GroupGuard,
    send_command: String,
    recv_command: String,
}

/// What the relay and the stderr drains take over from the children.
struct Streams {
    from: OwnedFd,
    to: OwnedFd,
    send_stderr: Option<tokio::process::ChildStderr>,
    recv_stderr: Option<tokio::process::ChildStderr>,
}

/// How both children ended, with their stderr.
struct Ends {
    send_status: io::Result<ExitStatus>,
    recv_status: io::Result<ExitStatus>,
    send_err: Vec<u8>,
    recv_err: Vec<u8>,
}

impl Pair {
    /// Starts the receiver, then the sender (if the receiver cannot start,
    /// nothing is sent), and takes the pipe ends out of tokio's reactor
    /// for the relay thread.
    fn start(
        send: (&str, &[String]),
        recv: (&str, &[String]),
    ) -> Result<(Pair, Streams), PipeError> {
        let send_command = render_command(send.0, send.1);
        let recv_command = render_command(recv.0, recv.1);
        let mut receiver =
            spawn_side(recv.0, recv.1, &recv_command, Stdio::piped(), Stdio::null())?;
        let recv_guard = GroupGuard {
            pgid: receiver.id().and_then(|pid| i32::try_from(pid).ok()),
        };
        let mut sender = spawn_side(send.0, send.1, &send_command, Stdio::null(), Stdio::piped())?;
        let send_guard = GroupGuard {
            pgid: sender.id().and_then(|pid| i32::try_from(pid).ok()),
        };
        let not_connected = |source| PipeError::Io {
            context: format!("could not connect `{send_command}` to `{recv_command}`"),
            source,
        };
        let (Some(from), Some(to)) = (sender.stdout.take(), receiver.stdin.take()) else {
            return Err(not_connected(io::Error::other("a pipe was not set up")));
        };
        let from = from.into_owned_fd().map_err(not_connected)?;
        let to = to.into_owned_fd().map_err(not_connected)?;
        widen_pipe(&from);
        widen_pipe(&to);
        let streams = Streams {
            from,
            to,
            send_stderr: sender.stderr.take(),
            recv_stderr: receiver.stderr.take(),
        };
        let pair = Pair {
            sender,
            receiver,
            send_guard,
            recv_guard,
            send_command,
            recv_command,
        };
        Ok((pair, streams))
    }

    /// Relays the stream and waits for both children, draining both
    /// stderrs meanwhile. Until the stream has ended, the relay's own idle
    /// timeout governs (the children may well exit before the last bytes
    /// are relayed); after it, the children get `idle_timeout` to exit.
    async fn run(
        &mut self,
        streams: Streams,
        idle_timeout: Duration,
        progress: &mut (impl FnMut(u64) + Send),
    ) -> Result<(Result<u64, RelayEnd>, Ends), Interrupted> {
        let Pair {
            sender,
            receiver,
            send_guard,
            recv_guard,
            ..
        } = self;
        let relay = relay(streams.from, streams.to, idle_timeout, progress);
        let ends = async {
            let (send_err, recv_err) = tokio::join!(
                drain_capped(streams.send_stderr),
                drain_capped(streams.recv_stderr)
            );
            let (send_status, recv_status) = tokio::join!(
                async {
                    let status = sender.wait().await;
                    send_guard.disarm();
                    status
                },
                async {
                    let status = receiver.wait().await;
                    recv_guard.disarm();
                    status
                }
            );
            Ends {
                send_status,
                recv_status,
                send_err,
                recv_err,
            }
        };
        tokio::pin!(relay, ends);
        let mut ended = None;
        let relayed = loop {
            tokio::select! {
                relayed = &mut relay => break relayed,
                done = &mut ends, if ended.is_none() => ended = Some(done),
            }
        };
        if let Err(RelayEnd::Stalled) = relayed {
            return Err(Interrupted::TimedOut);
        }
        let ended = match ended {
            Some(done) => done,
            None => tokio::time::timeout(idle_timeout, ends)
                .await
                .map_err(|_| Interrupted::TimedOut)?,
        };
        Ok((relayed, ended))
    }

    /// Kills both process groups and reaps both children.
    async fn stop(&mut self) {
        self.send_guard.kill();
        self.recv_guard.kill();
        reap_quietly(&mut self.sender, &self.send_command).await;
        reap_quietly(&mut self.receiver, &self.recv_command).await;
    }

    /// Which side failed, if any. When the receiver fails early the sender
    /// is left with a broken pipe: the receiver's failure is the one
    /// reported. When the sender fails, the receiver's complaint about a
    /// truncated stream is not.
    fn verdict(
        &self,
        relayed: Result<u64, RelayEnd>,
        ends: Ends,
        idle_timeout: Duration,
    ) -> Result<u64, PipeError> {
        let (send_command, recv_command) = (&self.send_command, &self.recv_command);
        let lost = |command: &str, source: io::Error| PipeError::Io {
            context: format!("lost track of `{command}` while it ran"),
            source,
        };
        let send_status = ends.send_status.map_err(|e| lost(send_command, e))?;
        let recv_status = ends.recv_status.map_err(|e| lost(recv_command, e))?;
        let send_failed = || PipeError::SendFailed {
            command: send_command.clone(),
            code: send_status.code(),
            stderr: stderr_for_message(&ends.send_err),
        };
        let recv_failed = || PipeError::RecvFailed {
            command: recv_command.clone(),
            code: recv_status.code(),
            stderr: stderr_for_message(&ends.recv_err),
        };
        match relayed {
            Ok(bytes) if send_status.success() && recv_status.success() => Ok(bytes),
            // The stream ended: a failed sender is the cause of whatever the
            // receiver says about a truncated stream.
            Ok(_) if !send_status.success() => Err(send_failed()),
            Ok(_) => Err(recv_failed()),
            // The receiver stopped reading: its failure is the cause of the
            // sender's broken pipe.
            Err(RelayEnd::WriteFailed(_)) if !recv_status.success() => Err(recv_failed()),
            Err(RelayEnd::WriteFailed(source)) => Err(PipeError::Io {
                context: format!("`{recv_command}` exited before reading the whole stream"),
                source,
            }),
            Err(RelayEnd::ReadFailed(_)) if !send_status.success() => Err(send_failed()),
            Err(RelayEnd::ReadFailed(source)) => Err(PipeError::Io {
                context: format!("could not read the output of `{send_command}`"),
                source,
            }),
            Err(RelayEnd::Stalled) => Err(PipeError::Stalled {
                after: idle_timeout,
            }),
            Err(RelayEnd::Failed(source)) => Err(PipeError::Io {
                context: format!("could not relay `{send_command}` to `{recv_command}`"),
                source,
            }),
        }
    }
}

/// Starts one side of a [`pipe`] in a process group of its own.
fn spawn_side(
    program: &str,
    args: &[String],
    command: &str,
    stdin: Stdio,
    stdout: Stdio,
) -> Result<tokio::process::Child, PipeError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("LC_ALL", "C")
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    cmd.spawn().map_err(|source| PipeError::Io {
        context: if source.kind() == io::ErrorKind::NotFound {
            format!("`{program}` is not installed or not in PATH")
        } else {
            format!("could not start `{command}`")
        },
        source,
    })
}

/// Asks the kernel for a larger pipe buffer (best effort).
fn widen_pipe(pipe: &impl AsRawFd) {
    // SAFETY: fcntl(F_SETPIPE_SZ) on a file descriptor we own; it only
    // changes the pipe's capacity and fails harmlessly on anything else.
    let _ = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, WIDE_PIPE) };
}

/// The capacity of a pipe in bytes; 0 if it cannot be read.
fn pipe_capacity(pipe: &impl AsRawFd) -> usize {
    // SAFETY: fcntl(F_GETPIPE_SZ) on a file descriptor we own reads a number.
    let size = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_GETPIPE_SZ) };
    usize::try_from(size).unwrap_or(0)
}

/// Longest [`refill_pause`].
const MAX_REFILL_PAUSE: Duration = Duration::from_millis(5);

/// How long the relay lets a receiver that keeps its pipe full drain it
/// before refilling: the time to read about half the pipe at the rate seen
/// so far (at most [`MAX_REFILL_PAUSE`]; none before a rate is known).
///
/// Without it the relay wakes for every read the receiver makes (ssh reads
/// its stdin a few pages at a time), three calls and a context switch per
/// few dozen KiB, CPU that a two-core NAS also needs for ssh and zfs. With
/// half the pipe still queued when the pause ends, the receiver never waits.
fn refill_pause(capacity: usize, moved: u64, elapsed: Duration) -> Duration {
    let secs = elapsed.as_secs_f64();
    if capacity == 0 || moved == 0 || secs <= 0.0 {
        return Duration::ZERO;
    }
    let rate = moved as f64 / secs;
    Duration::from_secs_f64((capacity as f64 / 2.0) / rate).min(MAX_REFILL_PAUSE)
}

/// How [`relay`] stopped before the end of the stream.
#[derive(Debug)]
enum RelayEnd {
    Stalled,
    ReadFailed(io::Error),
    WriteFailed(io::Error),
    /// Neither side's fault: the relay itself broke.
    Failed(io::Error),
}

/// What [`relay`]'s thread and the task waiting for it share.
struct RelayShared {
    started: Instant,
    /// Bytes moved so far.
    moved: AtomicU64,
    /// When a byte last moved, in nanoseconds after `started`.
    last_moved: AtomicU64,
    /// Set, and `progressed` notified, when bytes moved and a progress
    /// report is due: at most every [`PROGRESS_INTERVAL`].
    report_due: AtomicBool,
    progressed: Notify,
    /// Set when nobody waits for the thread any more.
    stop: AtomicBool,
}

impl RelayShared {
    fn new() -> Self {
        RelayShared {
            started: Instant::now(),
            moved: AtomicU64::new(0),
            last_moved: AtomicU64::new(0),
            report_due: AtomicBool::new(false),
            progressed: Notify::new(),
            stop: AtomicBool::new(false),
        }
    }

    // Relaxed is enough for the count and the time: each is read for
    // itself, and one atomic variable is seen in the order it was written.
    fn record(&self, total: u64) {
        self.moved.store(total, Ordering::Relaxed);
        let since = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_moved.store(since, Ordering::Relaxed);
    }

    fn moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }

    fn report(&self) {
        // Release: whoever takes the report sees the count it is for.
        self.report_due.store(true, Ordering::Release);
        self.progressed.notify_one();
    }

    /// The bytes moved if a report is due (once per [`RelayShared::report`]).
    fn take_report(&self) -> Option<u64> {
        self.report_due
            .swap(false, Ordering::AcqRel)
            .then(|| self.moved())
    }

    /// When the transfer counts as stalled unless another byte moves;
    /// `None` if that is too far away to represent.
    fn stall_deadline(&self, idle: Duration) -> Option<Instant> {
        let last = Duration::from_nanos(self.last_moved.load(Ordering::Relaxed));
        self.started.checked_add(last)?.checked_add(idle)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Tells the relay thread to end when the task waiting for it ends, for
/// whatever reason (stall, cancel, the future dropped).
struct StopOnDrop(Arc<RelayShared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// Moves `from` (the sender's stdout) to `to` (the receiver's stdin) on a
/// thread of its own until end of stream, then closes `to` so the receiver
/// sees the end. Fails as stalled when no byte moved for `idle`. Both ends
/// are closed when the thread ends, so on an early end the sender gets a
/// broken pipe instead of blocking on a full pipe.
///
/// The thread never hangs: it waits in poll(2) with a timeout, so besides
/// the pipes closing (the killed groups' ends, or the receiver's end that
/// makes the next `splice` fail with `EPIPE`) it also notices, within
/// [`RELAY_STOP_CHECK_MS`], that this future is gone. Closing the fds from
/// here instead would not do: a thread blocked in a system call keeps the
/// file open, and the fd number could be reused under it.
async fn relay<P: FnMut(u64)>(
    from: OwnedFd,
    to: OwnedFd,
    idle: Duration,
    progress: &mut P,
) -> Result<u64, RelayEnd> {
    let shared = Arc::new(RelayShared::new());
    let _stop = StopOnDrop(Arc::clone(&shared));
    let thread_side = Arc::clone(&shared);
    let mut moving = tokio::task::spawn_blocking(move || relay_blocking(from, to, &thread_side));
    loop {
        let stall_at = shared.stall_deadline(idle);
        tokio::select! {
            biased;
            done = &mut moving => {
                let total = done.map_err(|e| {
                    RelayEnd::Failed(io::Error::other(format!("the relay thread ended: {e}")))
                })??;
                // A report that fell due just before the end is not lost.
                if let Some(moved) = shared.take_report() {
                    progress(moved);
                }
                progress(total);
                return Ok(total);
            }
            () = shared.progressed.notified() => {
                if let Some(moved) = shared.take_report() {
                    progress(moved);
                }
            }
            () = async {
                match stall_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            } => {
                // Bytes may have moved while we slept; then wait on.
                if shared.stall_deadline(idle).is_some_and(|at| at <= Instant::now()) {
                    return Err(RelayEnd::Stalled);
                }
            }
        }
    }
}

/// The relay thread of [`relay`]: `splice(2)` from pipe to pipe, or a
/// read/write copy if the kernel cannot splice these files. Both fds are
/// made non-blocking and waited for with poll(2), so the thread can check
/// [`RelayShared::stop`] while nothing moves.
fn relay_blocking(from: OwnedFd, to: OwnedFd, shared: &RelayShared) -> Result<u64, RelayEnd> {
    set_nonblocking(&from).map_err(RelayEnd::Failed)?;
    set_nonblocking(&to).map_err(RelayEnd::Failed)?;
    let capacity = pipe_capacity(&to);
    let mut from = File::from(from);
    let mut to = File::from(to);
    let mut copy: Option<CopyBuffer> = None;
    let mut total: u64 = 0;
    let mut last_report = shared.started;
    loop {
        let step = match &mut copy {
            None => splice_step(&from, &to, capacity, total, shared)?,
            Some(buffer) => buffer.step(&mut from, &mut to, shared)?,
        };
        let moved = match step {
            Step::Moved(0) => continue,
            Step::Moved(n) => n,
            Step::Ended => break,
            Step::CannotSplice => {
                copy = Some(CopyBuffer::new());
                continue;
            }
        };
        total += moved as u64;
        shared.record(total);
        if last_report.elapsed() >= PROGRESS_INTERVAL {
            shared.report();
            last_report = Instant::now();
        }
    }
    drop(to);
    Ok(total)
}

/// What one step of [`relay_blocking`] did.
enum Step {
    /// Moved this many bytes to the receiver (0: waited, or read only).
    Moved(usize),
    /// The sender's stream ended.
    Ended,
    /// `splice(2)` cannot move between these files: copy instead.
    CannotSplice,
}

/// Waits for the sender's data, then splices what there is. `capacity` of
/// the receiver's pipe and `moved` so far set the pause when it is full.
fn splice_step(
    from: &File,
    to: &File,
    capacity: usize,
    moved: u64,
    shared: &RelayShared,
) -> Result<Step, RelayEnd> {
    // poll(2) returns at once when there is data; sleeping in it rather
    // than after a splice that failed with EAGAIN saves a call per wake-up.
    if wait_for(from, libc::POLLIN, shared)? & libc::POLLIN == 0 {
        // Empty and no writer left: the end. (splice itself would say so
        // only once the receiver's pipe has room.)
        return Ok(Step::Ended);
    }
    match splice_chunk(from, to) {
        Ok(0) => Ok(Step::Ended),
        Ok(n) => Ok(Step::Moved(n)),
        Err(e) => match e.raw_os_error() {
            // There is data, so the receiver's pipe is full.
            Some(libc::EAGAIN) => {
                wait_for(to, libc::POLLOUT, shared)?;
                let pause = refill_pause(capacity, moved, shared.started.elapsed());
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
                Ok(Step::Moved(0))
            }
            Some(libc::EINTR) => Ok(Step::Moved(0)),
            // Not pipes, or no splice at all.
            Some(libc::EINVAL | libc::ENOSYS) => Ok(Step::CannotSplice),
            // No reader left on the receiver's pipe. (The SIGPIPE that
            // comes with it is ignored, as in every Rust program.)
            Some(libc::EPIPE) => Err(RelayEnd::WriteFailed(e)),
            _ => Err(RelayEnd::Failed(e)),
        },
    }
}

/// One `splice(2)` from `from` to `to`: the bytes moved, 0 at end of stream.
fn splice_chunk(from: &File, to: &File) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: both fds are open for the duration of the call (borrowed
    // from the files this thread owns); null offsets (required for pipes)
    // mean each file's current position; no memory is passed.
    let n = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            RELAY_CHUNK,
            flags,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// The userspace fallback of [`relay_blocking`]: a buffer with the bytes
/// read from the sender but not yet written to the receiver.
struct CopyBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl CopyBuffer {
    fn new() -> Self {
        CopyBuffer {
            buf: vec![0; RELAY_CHUNK],
            start: 0,
            end: 0,
        }
    }

    /// Reads a chunk if all is written, else writes some.
    fn step(
        &mut self,
        from: &mut File,
        to: &mut File,
        shared: &RelayShared,
    ) -> Result<Step, RelayEnd> {
        if self.start == self.end {
            match from.read(&mut self.buf) {
                Ok(0) => return Ok(Step::Ended),
                Ok(n) => (self.start, self.end) = (0, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_for(from, libc::POLLIN, shared)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(RelayEnd::ReadFailed(e)),
            }
            return Ok(Step::Moved(0));
        }
        match to.write(&self.buf[self.start..self.end]) {
            Ok(0) => Err(RelayEnd::WriteFailed(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                self.start += n;
                Ok(Step::Moved(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_for(to, libc::POLLOUT, shared)?;
                Ok(Step::Moved(0))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Step::Moved(0)),
            Err(e) => Err(RelayEnd::WriteFailed(e)),
        }
    }
}

/// Waits until `file` has one of `events` (or a hang-up or error, which
/// poll(2) always reports) and returns what it has; fails once the relay
/// was given up.
fn wait_for(
    file: &File,
    events: libc::c_short,
    shared: &RelayShared,
) -> Result<libc::c_short, RelayEnd> {
    loop {
        if shared.stopped() {
            return Err(RelayEnd::Failed(io::Error::new(
                io::ErrorKind::Interrupted,
                "the relay was given up",
            )));
        }
        let mut pollfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: `pollfd` is one valid, writable pollfd (nfds = 1) for an
        // fd that stays open during the call.
        let rc = unsafe { libc::poll(&mut pollfd, 1, RELAY_STOP_CHECK_MS) };
        if rc > 0 {
            return Ok(pollfd.revents);
        }
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(RelayEnd::Failed(err));
            }
        }
    }
}

/// Sets `O_NONBLOCK` on our end of a pipe (tokio hands the fd over in
/// blocking mode). The child's end is a file description of its own.
fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl(F_GETFL) on an fd we own; no memory is passed.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl(F_SETFL) on an fd we own; it only changes its status
    // flags.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads a pipe to its end, keeping at most [`MAX_STDERR_READ`] bytes. A
/// read error ends the drain with what was read; stderr is only for
/// messages, and exit statuses decide success.
async fn drain_capped<R: AsyncRead + Unpin>(pipe: Option<R>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return kept;
    };
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                let room = MAX_STDERR_READ.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!(%e, "could not read a child's stderr");
                break;
            }
        }
    }
    kept
}

/// [`reap`] for a child that may already have been reaped.
async fn reap_quietly(child: &mut tokio::process::Child, command: &str) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    reap(child, command).await;
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Whether `pid` is still running (a zombie has finished running).
    fn running(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
            Err(_) => false,
        }
    }

    /// A shell that writes its own pid and its background sleep's pid to
    /// `pids` and then sleeps too: a tree of three processes.
    fn tree_script(pids: &std::path::Path) -> Vec<String> {
        let file = pids.display();
        vec![
            "-c".to_owned(),
            format!("sleep 30 & echo $$ $! > {file}.tmp; mv {file}.tmp {file}; sleep 30"),
        ]
    }

    /// Waits (bounded) until the script has written both pids.
    async fn read_pids(pids: &std::path::Path) -> Vec<i32> {
        for _ in 0..100 {
            if let Ok(text) = std::fs::read_to_string(pids) {
                let found: Vec<i32> = text
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect();
                if found.len() == 2 {
                    return found;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the script did not write its pids");
    }

    /// Waits (bounded) until none of `pids` runs: SIGKILL is delivered
    /// asynchronously, and init reaps orphans when it gets to them.
    async fn assert_all_gone(pids: &[i32]) {
        for _ in 0..100 {
            if !pids.iter().any(|p| running(*p)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let alive: Vec<_> = pids.iter().filter(|p| running(**p)).collect();
        panic!("still running: {alive:?}");
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

    // --- pipe ----------------------------------------------------------------

    fn sv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn pipe_counts_every_byte_and_reports_progress() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let send = sv(&["-c", "3000000", "/dev/zero"]);
        let recv = sv(&["-c", "cat > \"$1\"", "sh", out.to_str().unwrap()]);
        let (_tx, mut rx) = watch::channel(false);
        let mut reports = Vec::new();
        let started = std::time::Instant::now();
        let bytes = pipe(
            ("head", &send),
            ("sh", &recv),
            Duration::from_secs(10),
            |b| reports.push(b),
            &mut rx,
        )
        .await
        .unwrap();
        let took = started.elapsed();
        assert_eq!(bytes, 3_000_000);
        assert_eq!(std::fs::metadata(&out).unwrap().len(), 3_000_000);
        assert_eq!(reports.last(), Some(&3_000_000));
        assert!(reports.windows(2).all(|w| w[0] <= w[1]), "{reports:?}");
        // At most one report per 500 ms, plus the final one.
        let allowed = took.as_millis() / 500 + 1;
        assert!(reports.len() as u128 <= allowed, "{reports:?} in {took:?}");
    }

    #[tokio::test]
    async fn pipe_reports_progress_while_running() {
        // Two bursts 1.2 s apart: at least one report before the end.
        let send = sv(&[
            "-c",
            "head -c 1000 /dev/zero; sleep 1.2; head -c 1000 /dev/zero",
        ]);
        let recv = sv(&["-c", "cat > /dev/null"]);
        let (_tx, mut rx) = watch::channel(false);
        let mut reports = Vec::new();
        let bytes = pipe(
            ("sh", &send),
            ("sh", &recv),
            Duration::from_secs(10),
            |b| reports.push(b),
            &mut rx,
        )
        .await
        .unwrap();
        assert_eq!(bytes, 2000);
        // One report when the second burst came (more than 500 ms after
        // the first), one at the end.
        assert!(reports.ends_with(&[2000, 2000]), "{reports:?}");
    }

    #[tokio::test]
    async fn pipe_of_nothing_is_zero_bytes() {
        let (_tx, mut rx) = watch::channel(false);
        let mut reports = Vec::new();
        let bytes = pipe(
            ("true", &[]),
            ("cat", &[]),
            Duration::from_secs(5),
            |b| reports.push(b),
            &mut rx,
        )
        .await
        .unwrap();
        assert_eq!(bytes, 0);
        assert_eq!(reports, [0]);
    }

    #[tokio::test]
    async fn pipe_reports_the_receiver_that_failed_early_not_the_broken_pipe() {
        // The sender would write 1 GB; the receiver dies at once.
        let send = sv(&["-c", "1000000000", "/dev/zero"]);
        let recv = sv(&["-c", "echo 'cannot receive: boom' >&2; exit 2"]);
        let (_tx, mut rx) = watch::channel(false);
        let started = std::time::Instant::now();
        let err = pipe(
            ("head", &send),
            ("sh", &recv),
            Duration::from_secs(10),
            |_| {},
            &mut rx,
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        match &err {
            PipeError::RecvFailed {
                command,
                code,
                stderr,
            } => {
                assert!(command.starts_with("sh -c "), "{command}");
                assert_eq!(*code, Some(2));
                assert_eq!(stderr, "cannot receive: boom");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.stderr(), Some("cannot receive: boom"));
        assert!(
            err.to_string()
                .ends_with("(exit code 2): cannot receive: boom")
        );
    }

    #[tokio::test]
    async fn pipe_reports_a_receiver_failing_after_the_whole_stream() {
        let send = sv(&["-c", "10000", "/dev/zero"]);
        let recv = sv(&["-c", "cat > /dev/null; echo 'out of space' >&2; exit 1"]);
        let (_tx, mut rx) = watch::channel(false);
        let err = pipe(
            ("head", &send),
            ("sh", &recv),
            Duration::from_secs(10),
            |_| {},
            &mut rx,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, PipeError::RecvFailed { stderr, code: Some(1), .. } if stderr == "out of space"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn pipe_reports_the_failed_sender_not_the_truncated_stream() {
        let send = sv(&[
            "-c",
            "head -c 5000 /dev/zero; echo 'cannot send: gone' >&2; exit 3",
        ]);
        let recv = sv(&[
            "-c",
            "cat > /dev/null; echo 'cannot receive: failed to read from stream' >&2; exit 1",
        ]);
        let (_tx, mut rx) = watch::channel(false);
        let err = pipe(
            ("sh", &send),
            ("sh", &recv),
            Duration::from_secs(10),
            |_| {},
            &mut rx,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, PipeError::SendFailed { stderr, code: Some(3), .. } if stderr == "cannot send: gone"),
            "{err:?}"
        );
        // The sender failing alone is reported too.
        let err = pipe(
            ("sh", &send),
            ("cat", &[]),
            Duration::from_secs(10),
            |_| {},
            &mut rx,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, PipeError::SendFailed { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn pipe_notices_a_receiver_that_exits_without_reading_everything() {
        let send = sv(&["-c", "1000000000", "/dev/zero"]);
        let recv = sv(&["-c", "10"]);
        let (_tx, mut rx) = watch::channel(false);
        let err = pipe(
            ("head", &send),
            ("head", &recv),
            Duration::from_secs(10),
            |_| {},
            &mut rx,
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("`head -c 10` exited before reading the whole stream"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn pipe_missing_program() {
        let (_tx, mut rx) = watch::channel(false);
        let err = pipe(
            ("cat", &[]),
            ("nasfleet-no-such-tool", &[]),
            Duration::from_secs(5),
            |_| {},
            &mut rx,
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("`nasfleet-no-such-tool` is not installed or not in PATH"),
            "{err}"
        );
    }

    /// A sender and a receiver that each write their shell's pid and a
    /// background sleep's pid to a file, then keep running without ending
    /// the stream: four processes in two groups.
    fn stuck_pair(dir: &std::path::Path) -> (Vec<String>, Vec<String>, [PathBuf; 2]) {
        let send_pids = dir.join("send");
        let recv_pids = dir.join("recv");
        let send = tree_script(&send_pids);
        let recv = vec![
            "-c".to_owned(),
            format!(
                "sleep 30 & echo $$ $! > {f}.tmp; mv {f}.tmp {f}; cat > /dev/null",
                f = recv_pids.display()
            ),
        ];
        (send, recv, [send_pids, recv_pids])
    }

    use std::path::PathBuf;

    #[tokio::test]
    async fn pipe_cancel_kills_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let (send, recv, [send_pids, recv_pids]) = stuck_pair(dir.path());
        let (tx, mut rx) = watch::channel(false);
        let started = std::time::Instant::now();
        let (result, pids) = tokio::join!(
            pipe(
                ("sh", &send),
                ("sh", &recv),
                Duration::from_secs(60),
                |_| {},
                &mut rx
            ),
            async {
                let mut pids = read_pids(&send_pids).await;
                pids.extend(read_pids(&recv_pids).await);
                assert!(pids.iter().all(|p| running(*p)));
                tx.send(true).unwrap();
                pids
            }
        );
        assert!(matches!(result, Err(PipeError::Cancelled)), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_all_gone(&pids).await;
    }

    #[tokio::test]
    async fn pipe_already_cancelled_starts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let script = sv(&["-c", &format!("touch {}", marker.display())]);
        let (_tx, mut rx) = watch::channel(true);
        let err = pipe(
            ("sh", &script),
            ("sh", &script),
            Duration::from_secs(5),
            |_| {},
            &mut rx,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, PipeError::Cancelled));
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn pipe_stall_of_the_sender_kills_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let (send, recv, [send_pids, recv_pids]) = stuck_pair(dir.path());
        let (_tx, mut rx) = watch::channel(false);
        let started = std::time::Instant::now();
        let err = pipe(
            ("sh", &send),
            ("sh", &recv),
            Duration::from_millis(700),
            |_| {},
            &mut rx,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, PipeError::Stalled { after } if after == Duration::from_millis(700)),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "the transfer stalled: no data moved for 700ms"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let mut pids = read_pids(&send_pids).await;
        pids.extend(read_pids(&recv_pids).await);
        assert_all_gone(&pids).await;
    }

    #[tokio::test]
    async fn pipe_stall_of_the_receiver_is_noticed() {
        // The receiver never reads: once the pipes are full, nothing moves.
        let send = sv(&["-c", "100000000", "/dev/zero"]);
        let recv = sv(&["30"]);
        let (_tx, mut rx) = watch::channel(false);
        let started = std::time::Instant::now();
        let err = pipe(
            ("head", &send),
            ("sleep", &recv),
            Duration::from_millis(500),
            |_| {},
            &mut rx,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, PipeError::Stalled { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn pipe_children_that_do_not_exit_after_the_stream_stall() {
        // The stream ends at once, but the receiver lingers.
        let recv = sv(&["-c", "cat > /dev/null; sleep 30"]);
        let (_tx, mut rx) = watch::channel(false);
        let started = std::time::Instant::now();
        let err = pipe(
            ("true", &[]),
            ("sh", &recv),
            Duration::from_millis(500),
            |_| {},
            &mut rx,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, PipeError::Stalled { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn dropping_a_pipe_kills_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let (send, recv, [send_pids, recv_pids]) = stuck_pair(dir.path());
        let (_tx, mut rx) = watch::channel(false);
        let outcome = tokio::time::timeout(
            Duration::from_secs(1),
            pipe(
                ("sh", &send),
                ("sh", &recv),
                Duration::from_secs(60),
                |_| {},
                &mut rx,
            ),
        )
        .await;
        assert!(outcome.is_err(), "the pipe should still have been going");
        let mut pids = read_pids(&send_pids).await;
        pids.extend(read_pids(&recv_pids).await);
        assert_all_gone(&pids).await;
    }

    // --- the relay thread ----------------------------------------------------

    use std::os::fd::FromRawFd;

    /// A pipe: (read end, write end), in blocking mode.
    fn os_pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two new fds into the two-element array.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        // SAFETY: both fds were just created and belong to nothing else.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    #[test]
    fn relay_splices_between_pipes() {
        let (from, mut feed) = os_pipe();
        let (mut out, to) = os_pipe();
        let writer = std::thread::spawn(move || {
            let chunk: Vec<u8> = (0..100_003u32).map(|i| (i % 251) as u8).collect();
            for _ in 0..30 {
                feed.write_all(&chunk).unwrap();
            }
            chunk
        });
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            out.read_to_end(&mut all).unwrap();
            all
        });
        let shared = RelayShared::new();
        let total = relay_blocking(from.into(), to.into(), &shared).unwrap();
        let chunk = writer.join().unwrap();
        let all = reader.join().unwrap();
        assert_eq!(total, 3_000_090);
        assert_eq!(shared.moved(), total);
        assert_eq!(all.len(), 3_000_090);
        assert!(all.chunks(chunk.len()).all(|c| c == chunk));
    }

    #[test]
    fn relay_falls_back_to_copying_where_splice_cannot_go() {
        // Neither end is a pipe: splice(2) says EINVAL.
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(dir.path().join("in"), &data).unwrap();
        let from = File::open(dir.path().join("in")).unwrap();
        let to = File::create(dir.path().join("out")).unwrap();
        let shared = RelayShared::new();
        let total = relay_blocking(from.into(), to.into(), &shared).unwrap();
        assert_eq!(total, 3_000_000);
        assert_eq!(shared.moved(), total);
        assert!(std::fs::read(dir.path().join("out")).unwrap() == data);
    }

    /// Runs the relay thread between two pipes whose other ends the test
    /// keeps open, so that only being given up can end it.
    fn given_up_relay(fill_the_receiver: bool) {
        let (from, mut feed) = os_pipe();
        let (out, to) = os_pipe();
        let shared = Arc::new(RelayShared::new());
        let thread_side = Arc::clone(&shared);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(relay_blocking(from.into(), to.into(), &thread_side));
        });
        if fill_the_receiver {
            // One pipe-full moves to the receiver's pipe (64 KiB: neither
            // is widened), a second one waits in the sender's.
            let block = vec![1u8; 64 * 1024];
            feed.write_all(&block).unwrap();
            for _ in 0..500 {
                if shared.moved() == block.len() as u64 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(shared.moved(), block.len() as u64);
            feed.write_all(&block).unwrap();
        }
        shared.stop.store(true, Ordering::Relaxed);
        let ended = done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the relay thread should have ended");
        assert!(matches!(ended, Err(RelayEnd::Failed(_))), "{ended:?}");
        drop((feed, out));
    }

    #[test]
    fn refill_pause_lets_half_the_pipe_drain_at_the_rate_seen() {
        let mib = 1 << 20;
        // 100 MB/s: half a MiB drains in ~5.2 ms, capped at 5 ms.
        let pause = refill_pause(mib, 100_000_000, Duration::from_secs(1));
        assert_eq!(pause, MAX_REFILL_PAUSE);
        // 500 MB/s: ~1.05 ms.
        let pause = refill_pause(mib, 500_000_000, Duration::from_secs(1));
        assert!(
            pause > Duration::from_micros(1000) && pause < Duration::from_micros(1100),
            "{pause:?}"
        );
        // Nothing known yet, or no pipe size: no pause.
        assert_eq!(refill_pause(mib, 0, Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(refill_pause(mib, 10, Duration::ZERO), Duration::ZERO);
        assert_eq!(refill_pause(0, 10, Duration::from_secs(1)), Duration::ZERO);
    }

    #[test]
    fn relay_thread_waiting_for_the_sender_ends_when_given_up() {
        given_up_relay(false);
    }

    #[test]
    fn relay_thread_waiting_for_the_receiver_ends_when_given_up() {
        given_up_relay(true);
    }
}
