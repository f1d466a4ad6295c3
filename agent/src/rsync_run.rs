//! One rsync task run on this host: checks, then rsync as the task's user in the task's directory (opened without following links) with live byte and file progress, its exit code judged as TrueNAS does.

use crate::host::process::{self, ProcessError};
use crate::rsync::{self, Account};
use crate::runs::{RunContext, RunFailure};
use nasfleet_proto::v1::{Progress, RsyncTaskSpec, RunUpdate};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The longest one rsync run may take before it is stopped.
const RUN_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// stderr kept for the failure reason (its last lines are what rsync says
/// about why it stopped).
const STDERR_KEEP: usize = 64 * 1024;

pub(crate) async fn rsync_run(
    ctx: &mut RunContext<'_>,
    spec: &RsyncTaskSpec,
) -> Result<(), RunFailure> {
    let failed = |e: rsync::RsyncCheckError| RunFailure::Failed(e.to_string());
    // The same checks as at create, the auxiliary allow-list included: the
    // task may predate a rule, and the host may have changed since.
    nasfleet_common::rsync_rules::check_fields(spec)
        .map_err(|e| RunFailure::Failed(e.to_string()))?;
    let account = rsync::lookup_account(&spec.user)
        .await
        .map_err(failed)?
        .ok_or_else(|| {
            RunFailure::Failed(format!("Provided user \"{}\" does not exist", spec.user))
        })?;
    let zfs = ctx.manager.zfs();
    let pools = ctx.manager.identity.pools.clone();
    let dir = rsync::open_task_dir(&spec.path, &zfs, &pools)
        .await
        .map_err(failed)?;
    ctx.begin("rsync")?;
    let outcome = run(ctx, spec, &account, &dir).await;
    ctx.end("rsync", outcome)
}

/// What rsync's stdout has told so far.
struct Seen {
    pending: Vec<u8>,
    bytes: u64,
    files: u64,
    last_update: Option<Instant>,
}

async fn run(
    ctx: &mut RunContext<'_>,
    spec: &RsyncTaskSpec,
    account: &Account,
    dir: &File,
) -> Result<((), String), RunFailure> {
    let args = rsync::build_args(spec, rsync::LOCAL_DIR);
    ctx.log(format!("in {}:", spec.path));
    ctx.log(format!("rsync {}", args.join(" ")));
    let mut command = tokio::process::Command::new("rsync");
    command.args(&args);
    rsync::as_user(&mut command, account);
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

    let started = Instant::now();
    let mut cancel = ctx.cancel_flag.clone();
    let mut seen = Seen {
        pending: Vec::new(),
        bytes: 0,
        files: 0,
        last_update: None,
    };
    let ended = process::stream(
        command,
        RUN_TIMEOUT,
        &mut cancel,
        |chunk| read_output(ctx, spec, &mut seen, chunk, started),
        STDERR_KEEP,
    )
    .await;
    let ended = match ended {
        Ok(ended) => ended,
        Err(ProcessError::Cancelled { .. }) => {
            ctx.check_cancelled()?;
            return Err(RunFailure::Failed("rsync was cancelled".into()));
        }
        Err(ProcessError::TimedOut { .. }) => {
            return Err(RunFailure::Failed(format!(
                "rsync did not finish within {}h and was stopped",
                RUN_TIMEOUT.as_secs() / 3600
            )));
        }
        Err(ProcessError::Spawn { source, .. }) => {
            return Err(RunFailure::Failed(format!(
                "cannot start rsync in {} as user \"{}\": {source}",
                spec.path, spec.user
            )));
        }
        Err(other) => return Err(RunFailure::Failed(other.to_string())),
    };
    send_progress(ctx, seen.bytes, seen.files, started);
    ctx.bytes += seen.bytes;
    let code = ended.status.code().unwrap_or(-1);
    if rsync::is_success(code) {
        if code != 0 {
            ctx.log(format!(
                "rsync exited {code} ({}), counted as success",
                rsync::exit_code_name(code)
            ));
        }
        Ok((
            (),
            format!("{} bytes, {} file(s) transferred", seen.bytes, seen.files),
        ))
    } else {
        Err(RunFailure::Failed(rsync::failure_reason(
            code,
            &String::from_utf8_lossy(&ended.stderr),
        )))
    }
}

/// Splits rsync's stdout into lines: progress lines update the run's
/// progress (at most every 500 ms), the others go to its log.
fn read_output(
    ctx: &mut RunContext<'_>,
    spec: &RsyncTaskSpec,
    seen: &mut Seen,
    chunk: &[u8],
    started: Instant,
) {
    seen.pending.extend_from_slice(chunk);
    // progress2 rewrites its line with '\r'; other output ends in '\n'.
    while let Some(end) = seen.pending.iter().position(|b| *b == b'\r' || *b == b'\n') {
        let line: Vec<u8> = seen.pending.drain(..=end).collect();
        let line = String::from_utf8_lossy(&line).trim().to_owned();
        if line.is_empty() {
            continue;
        }
        match rsync::parse_progress(&line) {
            Some((done, _, transferred)) => {
                seen.bytes = done;
                seen.files = seen.files.max(transferred);
                if seen
                    .last_update
                    .is_none_or(|at| at.elapsed() >= Duration::from_millis(500))
                {
                    seen.last_update = Some(Instant::now());
                    send_progress(ctx, seen.bytes, seen.files, started);
                }
            }
            None if !spec.quiet => ctx.log(line),
            None => {}
        }
    }
}

fn send_progress(ctx: &RunContext<'_>, bytes: u64, files: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    ctx.manager.send_update(RunUpdate {
        run_id: ctx.run_id,
        progress: Some(Progress {
            phase: format!("rsync: {files} file(s)"),
            bytes_done: bytes,
            bytes_total: 0,
            bytes_per_second: if secs > 0.0 {
                (bytes as f64 / secs) as u64
            } else {
                0
            },
            step: "rsync".into(),
        }),
        ..Default::default()
    });
}
