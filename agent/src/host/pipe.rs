//! One child piped into another through the agent (`zfs send | zfs recv`): both in process groups of their own, the stream relayed by a thread of its own with `splice(2)` (counting bytes, noticing stalls), and the side that really failed reported.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::process::{
    GroupGuard, Interrupted, cancelled, describe_code, describe_stderr, reap, render_command,
    stderr_for_message,
};
use super::time::display_duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::{Notify, watch};

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
/// - `rate_limit` (bytes per second) paces the relay: it moves no more
///   than that on average since the start, in chunks of a tenth of a
///   second's worth, so the sender blocks on its full pipe meanwhile.
pub async fn pipe(
    send: (&str, &[String]),
    recv: (&str, &[String]),
    idle_timeout: Duration,
    rate_limit: Option<u64>,
    mut progress: impl FnMut(u64) + Send,
    cancel: &mut watch::Receiver<bool>,
) -> Result<u64, PipeError> {
    if *cancel.borrow_and_update() {
        return Err(PipeError::Cancelled);
    }
    let (mut pair, streams) = Pair::start(send, recv)?;
    let outcome = tokio::select! {
        finished = pair.run(streams, idle_timeout, rate_limit, &mut progress) => finished,
        _ = cancelled(Some(cancel)) => Err(Interrupted::Cancelled),
    };
    tracing::debug!(send = %pair.send_command, recv = %pair.recv_command, "pipe ended");
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
        rate_limit: Option<u64>,
        progress: &mut (impl FnMut(u64) + Send),
    ) -> Result<(Result<u64, RelayEnd>, Ends), Interrupted> {
        let Pair {
            sender,
            receiver,
            send_guard,
            recv_guard,
            ..
        } = self;
        let relay = relay(streams.from, streams.to, idle_timeout, rate_limit, progress);
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
    /// Bytes per second at most, on average since `started`.
    rate_limit: Option<u64>,
}

impl RelayShared {
    fn new(rate_limit: Option<u64>) -> Self {
        RelayShared {
            rate_limit: rate_limit.filter(|&limit| limit > 0),
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

    /// The most one splice or write may move: with a rate limit, a tenth
    /// of a second's worth (at least 64 KiB), so pacing stays smooth.
    fn chunk(&self) -> usize {
        match self.rate_limit {
            Some(limit) => usize::try_from(limit / 10)
                .unwrap_or(RELAY_CHUNK)
                .clamp(64 * 1024, RELAY_CHUNK),
            None => RELAY_CHUNK,
        }
    }

    /// Sleeps until `total` bytes are within the rate limit, waking every
    /// [`RELAY_STOP_CHECK_MS`] to notice a stop.
    fn pace(&self, total: u64) {
        let Some(limit) = self.rate_limit else {
            return;
        };
        let due = Duration::from_secs_f64(total as f64 / limit as f64);
        let slice = Duration::from_millis(RELAY_STOP_CHECK_MS.unsigned_abs().into());
        while !self.stopped() {
            let Some(ahead) = due.checked_sub(self.started.elapsed()) else {
                return;
            };
            std::thread::sleep(ahead.min(slice));
        }
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
    rate_limit: Option<u64>,
    progress: &mut P,
) -> Result<u64, RelayEnd> {
    let shared = Arc::new(RelayShared::new(rate_limit));
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
    let mut from = File::from(from);
    let mut to = File::from(to);
    let mut copy: Option<CopyBuffer> = None;
    let mut total: u64 = 0;
    let mut last_report = shared.started;
    loop {
        let step = match &mut copy {
            None => splice_step(&from, &to, shared)?,
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
        shared.pace(total);
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

/// Waits for the sender's data, then splices what there is. When the
/// receiver's pipe is full it waits until there is room again and no
/// longer: a pause to let the pipe drain further (fewer wake-ups) cost 5 %
/// of a 1 GiB transfer's throughput on a two-core machine, more than the
/// wake-ups it saved (`deploy/bench-replication.sh`).
fn splice_step(from: &File, to: &File, shared: &RelayShared) -> Result<Step, RelayEnd> {
    // poll(2) returns at once when there is data; sleeping in it rather
    // than after a splice that failed with EAGAIN saves a call per wake-up.
    if wait_for(from, libc::POLLIN, shared)? & libc::POLLIN == 0 {
        // Empty and no writer left: the end. (splice itself would say so
        // only once the receiver's pipe has room.)
        return Ok(Step::Ended);
    }
    match splice_chunk(from, to, shared.chunk()) {
        Ok(0) => Ok(Step::Ended),
        Ok(n) => Ok(Step::Moved(n)),
        Err(e) => match e.raw_os_error() {
            // There is data, so the receiver's pipe is full.
            Some(libc::EAGAIN) => {
                wait_for(to, libc::POLLOUT, shared)?;
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

/// One `splice(2)` of at most `len` bytes from `from` to `to`: the bytes
/// moved, 0 at end of stream.
fn splice_chunk(from: &File, to: &File, len: usize) -> io::Result<usize> {
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
            len,
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
            let len = shared.chunk().min(self.buf.len());
            match from.read(&mut self.buf[..len]) {
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
    use crate::host::test_support::*;
    use std::os::fd::FromRawFd;
    use std::path::PathBuf;

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
            None,
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
            None,
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
    async fn a_rate_limit_paces_the_relay() {
        // 1.5 MiB at 1 MiB/s: the last bytes move after about 1.5 s.
        let send = sv(&["-c", "1572864", "/dev/zero"]);
        let recv = sv(&["-c", "cat > /dev/null"]);
        let (_tx, mut rx) = watch::channel(false);
        let started = std::time::Instant::now();
        let bytes = pipe(
            ("head", &send),
            ("sh", &recv),
            Duration::from_secs(10),
            Some(1 << 20),
            |_| {},
            &mut rx,
        )
        .await
        .unwrap();
        let took = started.elapsed();
        assert_eq!(bytes, 1_572_864);
        assert!(took >= Duration::from_millis(1300), "{took:?}");
    }

    #[tokio::test]
    async fn pipe_of_nothing_is_zero_bytes() {
        let (_tx, mut rx) = watch::channel(false);
        let mut reports = Vec::new();
        let bytes = pipe(
            ("true", &[]),
            ("cat", &[]),
            Duration::from_secs(5),
            None,
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
            None,
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
            None,
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
            None,
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
            None,
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
            None,
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
            None,
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
                None,
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
            None,
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
            None,
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
            None,
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
            None,
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
                None,
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
        let shared = RelayShared::new(None);
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
        let shared = RelayShared::new(None);
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
        let shared = Arc::new(RelayShared::new(None));
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
    fn relay_thread_waiting_for_the_sender_ends_when_given_up() {
        given_up_relay(false);
    }

    #[test]
    fn relay_thread_waiting_for_the_receiver_ends_when_given_up() {
        given_up_relay(true);
    }
}
