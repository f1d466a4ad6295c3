//! Running one child process (zfs, zpool, ssh, rsync) safely: no shell, a timeout, stderr kept for the error, and the child's whole process group killed and the child reaped on timeout, cancellation or drop.

use std::ffi::OsStr;
use std::io;
use std::process::{Output, Stdio};
use std::time::Duration;

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

fn display_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
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
    mut cancel: Option<&mut watch::Receiver<bool>>,
) -> Result<Output, ProcessError> {
    let command = render_command(program, args);
    let already_cancelled = cancel
        .as_deref_mut()
        .is_some_and(|rx| *rx.borrow_and_update());
    if already_cancelled {
        return Err(ProcessError::Cancelled { command });
    }
    let mut cmd = Command::new(program);
    for arg in args {
        cmd.arg(arg);
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
                program: program.to_owned(),
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

    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    // Both pipes are drained concurrently: a child that fills one pipe
    // while we read the other would otherwise block forever. The child is
    // reaped only after both pipes are closed, so while a background
    // grandchild still holds them the leader stays unreaped and its group
    // can safely be killed on timeout or cancel.
    let work = async {
        let (out, err) = tokio::join!(drain(stdout), drain(stderr));
        let status = child.wait().await?;
        Ok::<_, io::Error>((out?, err?, status))
    };
    let outcome = tokio::select! {
        finished = work => Ok(finished),
        _ = tokio::time::sleep(timeout) => Err(Interrupted::TimedOut),
        _ = cancelled(cancel) => Err(Interrupted::Cancelled),
    };

    let (stdout, stderr, status) = match outcome {
        Ok(Ok(parts)) => {
            guard.disarm();
            parts
        }
        Ok(Err(source)) => {
            guard.kill();
            reap(&mut child, &command).await;
            return Err(ProcessError::Wait { command, source });
        }
        Err(why) => {
            guard.kill();
            reap(&mut child, &command).await;
            return Err(match why {
                Interrupted::TimedOut => ProcessError::TimedOut {
                    command,
                    after: timeout,
                },
                Interrupted::Cancelled => ProcessError::Cancelled { command },
            });
        }
    };

    if status.success() {
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    } else {
        Err(ProcessError::Failed {
            command,
            code: status.code(),
            stderr: stderr_for_message(&stderr),
        })
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

async fn drain<R: AsyncRead + Unpin>(pipe: Option<R>) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(mut pipe) = pipe {
        pipe.read_to_end(&mut buf).await?;
    }
    Ok(buf)
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
