//! Running one child process (zfs, zpool, ssh, rsync) safely: no shell, a timeout, stderr kept for the error, and the child killed and reaped on timeout or cancellation.

use std::ffi::OsStr;
use std::io;
use std::process::{Output, Stdio};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

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
/// On timeout, or if the returned future is dropped, the child is killed;
/// on timeout it is also reaped before the error is returned.
pub async fn run<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    timeout: Duration,
) -> Result<Output, ProcessError> {
    let command = render_command(program, args);
    let mut cmd = Command::new(program);
    for arg in args {
        cmd.arg(arg);
    }
    cmd.env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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

    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    // Both pipes are drained while waiting: a child that fills one pipe
    // while we read the other would otherwise block forever.
    let finished = tokio::time::timeout(timeout, async {
        let (out, err, status) = tokio::join!(drain(stdout), drain(stderr), child.wait());
        Ok::<_, io::Error>((out?, err?, status?))
    })
    .await;

    let (stdout, stderr, status) = match finished {
        Ok(Ok(parts)) => parts,
        Ok(Err(source)) => {
            let _ = child.kill().await;
            return Err(ProcessError::Wait { command, source });
        }
        Err(_elapsed) => {
            // kill() also waits, so no zombie is left behind.
            if let Err(err) = child.kill().await {
                tracing::warn!(%command, %err, "could not kill timed-out child");
            }
            return Err(ProcessError::TimedOut {
                command,
                after: timeout,
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
