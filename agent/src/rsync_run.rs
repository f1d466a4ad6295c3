//! One rsync task run on this host: checks, then rsync as the task's user with live byte and file progress, its exit code judged as TrueNAS does.

use crate::rsync::{self, Account};
use crate::runs::{RunContext, RunFailure};
use nasfleet_proto::v1::{Progress, RsyncTaskSpec, RunUpdate};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// The longest one rsync run may take before it is stopped.
const RUN_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// stderr kept for the failure reason.
const STDERR_KEEP: usize = 64 * 1024;

pub(crate) async fn rsync_run(
    ctx: &mut RunContext<'_>,
    spec: &RsyncTaskSpec,
) -> Result<(), RunFailure> {
    let failed = |e: rsync::RsyncCheckError| RunFailure::Failed(e.to_string());
    rsync::check_fields(spec).map_err(failed)?;
    let account = rsync::lookup_account(&spec.user)
        .await
        .map_err(failed)?
        .ok_or_else(|| {
            RunFailure::Failed(format!("Provided user \"{}\" does not exist", spec.user))
        })?;
    if !tokio::fs::metadata(&spec.path)
        .await
        .is_ok_and(|m| m.is_dir())
    {
        return Err(RunFailure::Failed(format!(
            "path: '{}' does not exist or is not a directory",
            spec.path
        )));
    }
    ctx.begin("rsync")?;
    let outcome = run(ctx, spec, &account).await;
    ctx.end("rsync", outcome)
}

async fn run(
    ctx: &mut RunContext<'_>,
    spec: &RsyncTaskSpec,
    account: &Account,
) -> Result<((), String), RunFailure> {
    let args = rsync::build_args(spec);
    ctx.log(format!("rsync {}", args.join(" ")));
    let mut command = tokio::process::Command::new("rsync");
    command
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    rsync::as_user(&mut command, account);
    let mut child = command
        .spawn()
        .map_err(|e| RunFailure::Failed(format!("cannot start rsync: {e}")))?;
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| RunFailure::Failed("rsync has no stdout".into()))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| RunFailure::Failed("rsync has no stderr".into()))?;
    let stderr_task = tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut buf = [0_u8; 8192];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > STDERR_KEEP {
                kept.drain(..kept.len() - STDERR_KEEP);
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    });

    let started = Instant::now();
    let deadline = tokio::time::sleep(RUN_TIMEOUT);
    tokio::pin!(deadline);
    let mut cancel = ctx.cancel_flag.clone();
    let mut pending = Vec::new();
    let mut buf = vec![0_u8; 16 * 1024];
    let mut bytes = 0_u64;
    let mut files = 0_u64;
    let mut last_update = Instant::now() - Duration::from_secs(1);
    let stopped: Option<RunFailure> = loop {
        tokio::select! {
            read = stdout.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buf[..n]);
                // progress2 rewrites its line with '\r'; other output ends in '\n'.
                while let Some(end) = pending.iter().position(|b| *b == b'\r' || *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let line = String::from_utf8_lossy(&line).trim().to_owned();
                    if line.is_empty() {
                        continue;
                    }
                    match rsync::parse_progress(&line) {
                        Some((done, _, transferred)) => {
                            bytes = done;
                            files = files.max(transferred);
                            if last_update.elapsed() >= Duration::from_millis(500) {
                                last_update = Instant::now();
                                send_progress(ctx, bytes, files, started);
                            }
                        }
                        None if !spec.quiet => ctx.log(line),
                        None => {}
                    }
                }
            }
            _ = cancel.wait_for(|c| *c) => break Some(RunFailure::Failed(String::new())),
            _ = &mut deadline => break Some(RunFailure::Failed(format!(
                "rsync did not finish within {}h and was stopped",
                RUN_TIMEOUT.as_secs() / 3600
            ))),
        }
    };
    if let Some(failure) = stopped {
        kill_group(pgid);
        let _ = child.wait().await;
        ctx.check_cancelled()?;
        return Err(failure);
    }
    let status = child
        .wait()
        .await
        .map_err(|e| RunFailure::Failed(format!("waiting for rsync failed: {e}")))?;
    let stderr_text = stderr_task.await.unwrap_or_default();
    send_progress(ctx, bytes, files, started);
    ctx.bytes += bytes;
    let code = status.code().unwrap_or(-1);
    if rsync::is_success(code) {
        if code != 0 {
            ctx.log(format!(
                "rsync exited {code} ({}), counted as success",
                rsync::exit_code_name(code)
            ));
        }
        Ok(((), format!("{bytes} bytes, {files} file(s) transferred")))
    } else {
        Err(RunFailure::Failed(rsync::failure_reason(
            code,
            &stderr_text,
        )))
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

/// Kills rsync and whatever it started (ssh), which share its process group.
fn kill_group(pgid: Option<i32>) {
    if let Some(pgid) = pgid.filter(|p| *p > 0) {
        // SAFETY: kill(2) on a process group we created; no memory is involved.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}
