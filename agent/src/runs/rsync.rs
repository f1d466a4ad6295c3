//! One rsync task run on this host: checks, then rsync as the task's user in the task's directory (opened without following links) with live byte and file progress, its exit code judged as TrueNAS does.

use super::context::{RunContext, RunFailure, rate};
use crate::host::passwd::Account;
use crate::host::process::ProcessError;
use crate::rsync::{self, output::Lines, runner};
use nasfleet_proto::v1::RsyncTaskSpec;
use std::fs::File;
use std::time::{Duration, Instant};

/// Progress goes up at most this often; every line of it is parsed.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

pub(crate) async fn run(ctx: &mut RunContext<'_>, spec: &RsyncTaskSpec) -> Result<(), RunFailure> {
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
    let dir = rsync::open_task_dir(&spec.path, &ctx.zfs, &ctx.identity.pools)
        .await
        .map_err(failed)?;
    ctx.begin("rsync")?;
    let outcome = run_rsync(ctx, spec, &account, &dir).await;
    ctx.end("rsync", outcome)
}

/// What rsync's stdout has told so far.
struct Seen {
    lines: Lines,
    bytes: u64,
    files: u64,
    last_update: Option<Instant>,
}

/// rsync itself: logged, followed, and judged by its exit code.
async fn run_rsync(
    ctx: &mut RunContext<'_>,
    spec: &RsyncTaskSpec,
    account: &Account,
    dir: &File,
) -> Result<((), String), RunFailure> {
    let args = rsync::build_args(spec, rsync::LOCAL_DIR);
    ctx.log(format!("in {}:", spec.path));
    ctx.log(format!("rsync {}", args.join(" ")));
    let started = Instant::now();
    let mut cancel = ctx.cancel_flag.clone();
    let mut seen = Seen {
        lines: Lines::default(),
        bytes: 0,
        files: 0,
        last_update: None,
    };
    let ended = runner::run_in(dir, &args, account, &mut cancel, |chunk| {
        read_output(ctx, spec, &mut seen, chunk, started)
    })
    .await
    .map_err(|e| why_rsync_stopped(ctx, spec, e))?;
    send_progress(ctx, seen.bytes, seen.files, started);
    ctx.bytes += seen.bytes;
    let code = ended.status.code().unwrap_or(-1);
    if !rsync::is_success(code) {
        return Err(RunFailure::Failed(rsync::failure_reason(
            code,
            &String::from_utf8_lossy(&ended.stderr),
        )));
    }
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
}

/// The run's reason when rsync did not run to its own end.
fn why_rsync_stopped(ctx: &RunContext<'_>, spec: &RsyncTaskSpec, err: ProcessError) -> RunFailure {
    match err {
        ProcessError::Cancelled { .. } => match ctx.check_cancelled() {
            Err(cancelled) => cancelled,
            Ok(()) => RunFailure::Failed("rsync was cancelled".into()),
        },
        ProcessError::TimedOut { .. } => RunFailure::Failed(format!(
            "rsync did not finish within {}h and was stopped",
            runner::RUN_TIMEOUT.as_secs() / 3600
        )),
        ProcessError::Spawn { source, .. } => RunFailure::Failed(format!(
            "cannot start rsync in {} as user \"{}\": {source}",
            spec.path, spec.user
        )),
        other => RunFailure::Failed(other.to_string()),
    }
}

/// Progress lines update the run's progress (at most every
/// [`PROGRESS_EVERY`]), the others go to its log unless the task is quiet.
fn read_output(
    ctx: &mut RunContext<'_>,
    spec: &RsyncTaskSpec,
    seen: &mut Seen,
    chunk: &[u8],
    started: Instant,
) {
    for line in seen.lines.feed(chunk) {
        match rsync::parse_progress(&line) {
            Some((done, _, transferred)) => {
                seen.bytes = done;
                seen.files = seen.files.max(transferred);
                if seen
                    .last_update
                    .is_none_or(|at| at.elapsed() >= PROGRESS_EVERY)
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
    ctx.progress_reporter().report(
        "rsync",
        format!("rsync: {files} file(s)"),
        bytes,
        None,
        rate(bytes, started),
    );
}
