//! Continuing an interrupted receive on OpenZFS: a target that keeps a `receive_resume_token` gets the rest of its stream (`zfs send -t TOKEN`), or, when the token can no longer be used (its snapshot is gone from the source), its partial state is discarded (`zfs receive -A`) and the run goes on from the common base.

use super::options::{ReplicateOptions, ReplicationError};
use super::zfs_host::{LocalZfs, ZfsHost};
use crate::host::pipe::{self, PipeError};
use crate::host::process::{self, ProcessError};
use crate::zfs::{self, ZfsError};
use tokio::sync::watch;

/// What became of a partial receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    /// The rest was sent from `at` stream bytes on (`bytes` of it): the
    /// target now has `snapshot` (the part after '@').
    Completed {
        at: u64,
        bytes: u64,
        snapshot: String,
    },
    /// The token could not be used; the partial state is gone.
    Discarded { reason: String },
}

/// How far an interrupted receive got and what it brings, for an
/// estimate; or why `token` cannot be resumed from here (a run discards
/// it).
pub async fn resume_point(
    token: &str,
    source_dataset: &str,
    options: &ReplicateOptions,
    cancel: &mut watch::Receiver<bool>,
) -> Result<Result<zfs::ResumeInfo, String>, ReplicationError> {
    inspect(token, source_dataset, options, cancel).await
}

/// Sends the rest of the stream `token` describes from `source_dataset`
/// here to `target_dataset` on `target`; discards the partial state when
/// the token cannot be used. `progress(bytes, estimate, label)` as for
/// [`super::transfer::replicate_dataset`].
pub(super) async fn resume(
    token: &str,
    source_dataset: &str,
    target_dataset: &str,
    target: &dyn ZfsHost,
    options: &ReplicateOptions,
    progress: &mut (dyn FnMut(u64, Option<u64>, &str) + Send),
    cancel: &mut watch::Receiver<bool>,
) -> Result<Resumed, ReplicationError> {
    let info = match inspect(token, source_dataset, options, cancel).await? {
        Ok(info) => info,
        Err(reason) => return discard(target_dataset, target, options, reason, cancel).await,
    };
    let snapshot = info
        .snapshot
        .split_once('@')
        .map_or(info.snapshot.as_str(), |(_, s)| s)
        .to_owned();
    let label = format!(
        "{source_dataset}@{snapshot} (resumed at {} bytes)",
        info.received
    );
    let send = zfs::send_resume_args(token).map_err(ZfsError::from)?;
    let (send_program, send_args) = LocalZfs.command(send);
    let recv = zfs::recv_args(options.dialect_target, target_dataset, false, true)
        .map_err(ZfsError::from)?;
    let (recv_program, recv_args) = target.command(recv);
    progress(0, info.remaining, &label);
    let moved = pipe::pipe(
        (&send_program, &send_args),
        (&recv_program, &recv_args),
        options.idle_timeout,
        options.rate_limit,
        |bytes| progress(bytes, info.remaining, &label),
        cancel,
    )
    .await;
    match moved {
        Ok(bytes) => Ok(Resumed::Completed {
            at: info.received,
            bytes,
            snapshot,
        }),
        Err(PipeError::SendFailed { stderr, .. }) if cannot_resume(&stderr) => {
            discard(target_dataset, target, options, stderr, cancel).await
        }
        Err(PipeError::Cancelled) => Err(ReplicationError::Cancelled {
            dataset: source_dataset.to_owned(),
        }),
        Err(cause) => Err(match &cause {
            PipeError::RecvFailed { stderr, .. } => {
                zfs::recv_error(stderr, target_dataset).map(ReplicationError::Zfs)
            }
            _ => None,
        }
        .unwrap_or_else(|| ReplicationError::Transfer {
            target_dataset: target_dataset.to_owned(),
            transfer: label,
            cause,
        })),
    }
}

/// zfs's refusal of a token whose snapshot is gone or changed ("cannot
/// resume send: 'tank/a@s' used in the initial send no longer exists").
fn cannot_resume(stderr: &str) -> bool {
    stderr.contains("cannot resume send")
}

/// What `token` says (`zfs send -n -v -P -t`), or why it cannot be
/// resumed from `source_dataset`.
async fn inspect(
    token: &str,
    source_dataset: &str,
    options: &ReplicateOptions,
    cancel: &mut watch::Receiver<bool>,
) -> Result<Result<zfs::ResumeInfo, String>, ReplicationError> {
    let args = zfs::send_resume_info_args(token).map_err(ZfsError::from)?;
    let out = match process::run_cancellable("zfs", &args, options.command_timeout, cancel).await {
        Ok(out) => out,
        Err(ProcessError::Cancelled { .. }) => {
            return Err(ReplicationError::Cancelled {
                dataset: source_dataset.to_owned(),
            });
        }
        Err(e) => match e.stderr() {
            Some(stderr) if cannot_resume(stderr) => return Ok(Err(stderr.trim().to_owned())),
            _ => return Err(ZfsError::from_process(e, source_dataset).into()),
        },
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(info) = zfs::parse_resume_info(&text) else {
        return Ok(Err(
            "zfs did not say where the partial receive stopped".to_owned()
        ));
    };
    if !info.snapshot.starts_with(&format!("{source_dataset}@")) {
        return Ok(Err(format!(
            "the partial receive is of {}, not of {source_dataset}",
            info.snapshot
        )));
    }
    Ok(Ok(info))
}

/// `zfs receive -A` of `target_dataset`'s partial state.
async fn discard(
    target_dataset: &str,
    target: &dyn ZfsHost,
    options: &ReplicateOptions,
    reason: String,
    cancel: &mut watch::Receiver<bool>,
) -> Result<Resumed, ReplicationError> {
    let args = zfs::recv_abort_args(target_dataset).map_err(ZfsError::from)?;
    let (program, args) = target.command(args);
    match process::run_cancellable(&program, &args, options.command_timeout, cancel).await {
        Ok(_) => Ok(Resumed::Discarded { reason }),
        Err(ProcessError::Cancelled { .. }) => Err(ReplicationError::Cancelled {
            dataset: target_dataset.to_owned(),
        }),
        Err(e) => Err(ZfsError::from_process(e, target_dataset).into()),
    }
}
