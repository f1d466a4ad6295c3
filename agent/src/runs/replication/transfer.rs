//! Carrying out a replication plan for one dataset: `zfs send | [ssh target] zfs recv` through the agent's relay, the zfs calls around the transfers (parent, discards, `readonly=on`, holds, cursor), a partial receive resumed first, and the quirks of zfs-fuse and of chained remote calls.
//!
//! Children of a recursive task are replicated by calling
//! [`replicate_dataset`] per dataset, parents first.

use nasfleet_common::names::{is_below, replication_hold_tag};
use std::collections::HashMap;
use std::process::Output;
use std::time::Duration;

use tokio::sync::watch;

use super::options::{ReplicateOptions, ReplicationError};
use super::plan::{Plan, Transfer, plan, with_mark};
use super::resume::{self, Resumed};
use super::stream;
use super::zfs_host::{LocalZfs, ZfsHost};
use super::{cursor, holds};
use crate::host::pipe::{self, PipeError};
use crate::host::process::{self, ProcessError};
use crate::zfs::{
    self, Dialect, SendFrom, SnapshotInfo, SnapshotListing, StreamFeatures, ZfsError,
};

/// How often a "dataset is busy" refusal is retried before it counts.
const BUSY_ATTEMPTS: u32 = 5;
const BUSY_PAUSE: Duration = Duration::from_millis(500);

/// How long a failed first receive may take to disappear, and how often
/// to look (see `Step::await_discarded`).
const DISCARD_WAIT: Duration = Duration::from_secs(10);
const DISCARD_POLL: Duration = Duration::from_millis(250);

/// What [`replicate_dataset`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetOutcome {
    pub transferred: Vec<Transfer>,
    /// Stream bytes moved, all transfers together (a resumed one too).
    pub bytes: u64,
    /// Nothing needed sending.
    pub up_to_date: bool,
    /// Planned from the target agent's listing
    /// ([`ReplicateOptions::target_listing`]) instead of one taken here.
    pub planned_from_target_listing: bool,
    /// A partial receive found on the target, and what became of it.
    pub resumed: Option<Resumed>,
    /// The stream features the transfers used.
    pub features: StreamFeatures,
    /// What went wrong around the transfers without undoing them (a hold
    /// that could not be moved), for the run's log.
    pub notes: Vec<String>,
}

impl DatasetOutcome {
    /// Snapshots the transfers brought to the target (a resumed one too).
    pub fn snapshots(&self) -> usize {
        let resumed = usize::from(matches!(self.resumed, Some(Resumed::Completed { .. })));
        self.transferred
            .iter()
            .map(Transfer::snapshots)
            .sum::<usize>()
            + resumed
    }
}

/// Replicates `source_dataset` (on this system) to `target_dataset` (on
/// `target`): lists both sides, resumes a partial receive the target
/// keeps (OpenZFS), [`plan`]s, creates the target's parent if missing,
/// discards target snapshots when overwriting was allowed and needed,
/// runs each transfer through [`pipe::pipe`] (send here, recv via
/// `target`), and sets `readonly=on` on the target after receiving (also
/// when a later transfer failed after an earlier one succeeded; not when
/// nothing was received, so an up-to-date run is read-only itself).
///
/// `progress(bytes, estimate, label)` gets the bytes moved so far by the
/// transfer under way, what it should move (`zfs send -n -P`'s figure
/// for the whole plan; `None` where zfs cannot say) and its
/// [`Transfer::label`].
///
/// A run cut short (cancel, stall, failure) leaves the target at the last
/// snapshot fully received, and on OpenZFS the partial stream for the
/// next call to resume; zfs-fuse discards it. The next call lists again
/// and continues from there.
///
/// A receive that reports failure although its snapshot (by guid) is on
/// the target afterwards counts as done: zfs-fuse answers a full `recv -F`
/// onto an existing, mounted dataset with "I/O error" after receiving it.
///
/// With [`ReplicateOptions::target_listing`] the target is not listed
/// first when that listing calls for plain receives only; if zfs refuses
/// the first of them as not fitting the target (it changed since), the
/// target is listed and planned for afresh. As with a listing taken here,
/// a snapshot taken on the target in between without changing its data
/// does not stop zfs from receiving on top of the base; it stays there.
pub async fn replicate_dataset(
    source_dataset: &str,
    target_dataset: &str,
    matching: &(dyn Fn(&str) -> bool + Send + Sync),
    target: &dyn ZfsHost,
    options: &ReplicateOptions,
    progress: &mut (dyn FnMut(u64, Option<u64>, &str) + Send),
    cancel: &mut watch::Receiver<bool>,
) -> Result<DatasetOutcome, ReplicationError> {
    let (step, source) = begin(source_dataset, target_dataset, options, cancel).await?;

    let hinted_token = options
        .target_listing
        .as_ref()
        .and_then(|listed| listed.as_ref()?.resume_token.clone());
    let mut resumed = None;
    if let Some(token) = hinted_token {
        resumed = Some(step.resume(&token, target, progress, cancel).await?);
    } else if let Some(listed) = &options.target_listing
        && let Some(done) = step
            .carry_out_listed(listed.as_ref(), &source, matching, target, progress, cancel)
            .await
    {
        return done;
    }

    let mut existing = step
        .snapshot_guids(target, options.dialect_target, target_dataset, cancel)
        .await?;
    if resumed.is_none()
        && let Some(token) = existing.as_ref().and_then(|l| l.resume_token.clone())
    {
        resumed = Some(step.resume(&token, target, progress, cancel).await?);
        existing = step
            .snapshot_guids(target, options.dialect_target, target_dataset, cancel)
            .await?;
    }
    let resumed_bytes = match &resumed {
        Some(Resumed::Completed { bytes, .. }) => *bytes,
        _ => 0,
    };
    let plan = plan(
        source_dataset,
        target_dataset,
        &source.snapshots,
        &source.bookmarks,
        matching,
        existing.as_ref().map(|l| l.snapshots.as_slice()),
        options.allow_overwrite,
    )?;
    if plan.is_up_to_date() {
        // Tasks replicated before holds existed get theirs here.
        let notes = match (&plan.base, &plan.target_base) {
            (Some(base), Some(target_base)) => {
                let base = Base {
                    newest: base,
                    target_newest: target_base,
                    previous: None,
                    target_previous: None,
                    target_held: false,
                    target_created: false,
                };
                step.protect_base(&base, &source, target).await
            }
            _ => Vec::new(),
        };
        return Ok(DatasetOutcome {
            transferred: Vec::new(),
            bytes: resumed_bytes,
            up_to_date: true,
            planned_from_target_listing: false,
            resumed,
            features: step.features,
            notes,
        });
    }
    if plan.base.is_some() {
        stream::check_replica(
            target_dataset,
            step.features,
            existing.as_ref().and_then(|l| l.encryption),
        )?;
    }
    let basis = Basis {
        target_absent: existing.is_none(),
        from_target_agent: false,
    };
    let mut outcome = step
        .carry_out(&plan, basis, &source, target, progress, cancel)
        .await
        .map_err(ReplicationError::from)?;
    outcome.bytes += resumed_bytes;
    outcome.resumed = resumed;
    Ok(outcome)
}

/// The start of every step: both names checked, the source's snapshots
/// listed (a missing source is an error), and the stream features chosen
/// (an encrypted source that cannot be sent as the task asks is refused).
async fn begin<'a>(
    source_dataset: &'a str,
    target_dataset: &'a str,
    options: &'a ReplicateOptions,
    cancel: &mut watch::Receiver<bool>,
) -> Result<(Step<'a>, SnapshotListing), ReplicationError> {
    zfs::validate_dataset_name(source_dataset).map_err(ZfsError::from)?;
    zfs::validate_dataset_name(target_dataset).map_err(ZfsError::from)?;
    let mut step = Step {
        dataset: source_dataset,
        target_dataset,
        options,
        features: StreamFeatures::default(),
    };
    let source = step
        .snapshot_guids(&LocalZfs, options.dialect_source, source_dataset, cancel)
        .await?
        .ok_or_else(|| ZfsError::DatasetNotFound {
            name: source_dataset.to_owned(),
        })?;
    step.features = stream::features(
        source_dataset,
        source.encryption,
        options.raw,
        options.dialect_source,
        options.dialect_target,
    )?;
    Ok((step, source))
}

/// What [`estimate_dataset`] found: the transfers a run would make now and
/// their stream size together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetEstimate {
    pub transfers: Vec<Transfer>,
    /// The incremental base and its GUID; `None` when a run starts with a
    /// full stream. A bookmark is named `#name`.
    pub base: Option<(String, u64)>,
    /// Target snapshots a run would destroy first (overwriting).
    pub discards: usize,
    /// `None` where zfs cannot estimate a send (zfs-fuse has no
    /// `zfs send -n -P`).
    pub bytes: Option<u64>,
    /// A partial receive on the target that a run would resume, from this
    /// many stream bytes on.
    pub resumes_at: Option<u64>,
    pub features: StreamFeatures,
}

impl DatasetEstimate {
    /// Snapshots a run would bring to the target.
    pub fn snapshots(&self) -> usize {
        self.transfers
            .iter()
            .map(Transfer::snapshots)
            .sum::<usize>()
            + usize::from(self.resumes_at.is_some())
    }
}

/// What replicating `source_dataset` to `target_dataset` would send now,
/// planned as a run plans, from `listed`: the target as its agent listed
/// it (`None`: the target dataset does not exist). Sends and changes
/// nothing; a plan a run would refuse (a diverged target without
/// overwriting) is that refusal. A partial receive there counts as
/// resumed (its rest in the bytes) when its token can be used; when not,
/// as discarded.
pub async fn estimate_dataset(
    source_dataset: &str,
    target_dataset: &str,
    matching: &(dyn Fn(&str) -> bool + Send + Sync),
    listed: Option<&SnapshotListing>,
    options: &ReplicateOptions,
    cancel: &mut watch::Receiver<bool>,
) -> Result<DatasetEstimate, ReplicationError> {
    let (step, source) = begin(source_dataset, target_dataset, options, cancel).await?;
    let mut target: Option<Vec<SnapshotInfo>> = listed.map(|l| l.snapshots.clone());
    let mut resumes_at = None;
    let mut rest = Some(0);
    if let Some(token) = listed.and_then(|l| l.resume_token.as_deref()) {
        match resume::resume_point(token, source_dataset, options, cancel).await? {
            Ok(info) => {
                resumes_at = Some(info.received);
                rest = info.remaining;
                // As if it had arrived: the plan goes on from there.
                let arriving = source.snapshots.iter().find(|s| s.guid == info.guid);
                if let (Some(snapshot), Some(listing)) = (arriving, target.as_mut()) {
                    listing.push(SnapshotInfo {
                        createtxg: u64::MAX,
                        ..snapshot.clone()
                    });
                }
            }
            // A run discards it: a new dataset's partial state goes with it.
            Err(_) => {
                if target.as_ref().is_some_and(Vec::is_empty) {
                    target = None;
                }
            }
        }
    }
    let plan = plan(
        source_dataset,
        target_dataset,
        &source.snapshots,
        &source.bookmarks,
        matching,
        target.as_deref(),
        options.allow_overwrite,
    )?;
    let bytes = if plan.is_up_to_date() {
        rest
    } else {
        match (rest, step.estimate(&plan, cancel).await) {
            (Some(rest), Some(plan_bytes)) => Some(rest + plan_bytes),
            _ => None,
        }
    };
    let base = plan.base.as_ref().map(|name| {
        let known = match name.strip_prefix('#') {
            Some(mark) => source.bookmarks.iter().find(|b| b.name == mark),
            None => source.snapshots.iter().find(|s| &s.name == name),
        };
        (name.clone(), known.map_or(0, |s| s.guid))
    });
    Ok(DatasetEstimate {
        transfers: plan.transfers,
        base,
        discards: plan.discard.len(),
        bytes,
        resumes_at,
        features: step.features,
    })
}

/// The snapshots of `dataset` on this system, oldest first, with its
/// resume token and encryption; `None` when it does not exist. A target's
/// agent answers the controller's listing for a replication run's
/// dispatch with it.
pub async fn local_snapshots(
    dialect: Dialect,
    dataset: &str,
    timeout: Duration,
) -> Result<Option<SnapshotListing>, ReplicationError> {
    zfs::validate_dataset_name(dataset).map_err(ZfsError::from)?;
    let mut options = ReplicateOptions::new(dialect, dialect);
    options.command_timeout = timeout;
    let step = Step {
        dataset,
        target_dataset: dataset,
        options: &options,
        features: StreamFeatures::default(),
    };
    // Nobody cancels a listing: the sender is dropped at once.
    let (_, mut never_cancelled) = watch::channel(false);
    step.snapshot_guids(&LocalZfs, dialect, dataset, &mut never_cancelled)
        .await
}

/// What a plan was made from.
#[derive(Debug, Clone, Copy)]
struct Basis {
    /// The target dataset did not exist.
    target_absent: bool,
    /// The target's agent listed the target at dispatch, not this step:
    /// the target may have changed since.
    from_target_agent: bool,
}

/// Why carrying out a plan stopped.
#[derive(Debug)]
enum Halted {
    Failed(ReplicationError),
    /// zfs refused the first receive of a plan made from the target
    /// agent's listing as not matching the target (it changed since).
    /// Nothing was received: plan again from a fresh listing.
    StalePlan(ZfsError),
}

impl From<ReplicationError> for Halted {
    fn from(err: ReplicationError) -> Halted {
        Halted::Failed(err)
    }
}

impl From<ZfsError> for Halted {
    fn from(err: ZfsError) -> Halted {
        Halted::Failed(err.into())
    }
}

impl From<Halted> for ReplicationError {
    fn from(halted: Halted) -> ReplicationError {
        match halted {
            Halted::Failed(err) => err,
            Halted::StalePlan(err) => err.into(),
        }
    }
}

/// zfs refusals of a receive that mean the target is not what the plan
/// expected: it exists after all, its newest snapshot is not the base, or
/// it is gone.
fn is_plan_mismatch(refusal: &ZfsError) -> bool {
    matches!(
        refusal,
        ZfsError::Diverged { .. }
            | ZfsError::TargetExists { .. }
            | ZfsError::DatasetNotFound { .. }
            | ZfsError::PartialReceive { .. }
    )
}

/// Whether a chained call failed at `zfs create -p` of an ancestor of
/// `target_dataset` (zfs: "cannot create 'ANCESTOR': ..."), before any
/// receive started.
fn is_create_failure(stderr: &str, target_dataset: &str) -> bool {
    stderr.split("cannot create '").skip(1).any(|rest| {
        rest.split_once('\'')
            .is_some_and(|(name, _)| is_below(target_dataset, name))
    })
}

/// A program and its arguments, as [`ZfsHost::command`] gives them.
type ProgramArgs = (String, Vec<String>);

/// Where a send starts, with the incremental source's full name.
enum SendStart {
    Full,
    Incremental(String),
    Intermediates(String),
}

impl SendStart {
    fn as_send_from(&self) -> SendFrom<'_> {
        match self {
            SendStart::Full => SendFrom::Full,
            SendStart::Incremental(from) => SendFrom::Incremental(from),
            SendStart::Intermediates(from) => SendFrom::Intermediates(from),
        }
    }
}

/// The zfs calls that ride along with one receive on a target that runs
/// several in one call ([`ZfsHost::chain`]).
struct Around {
    /// `zfs create -p` of the parent, before the first receive.
    create_first: Option<Vec<String>>,
    /// `zfs set readonly=on`, after the last one.
    readonly_after: Option<Vec<String>>,
    /// `zfs hold` of the task's tag on what the last one brings.
    hold_after: Option<Vec<String>>,
}

/// A dataset's new base, for [`Step::protect_base`]: as the source and the
/// target call it, the base the run started from on each side (`None`:
/// none, or not known), and whether the target's hold rode along with the
/// last receive.
struct Base<'a> {
    newest: &'a str,
    target_newest: &'a str,
    previous: Option<&'a str>,
    target_previous: Option<&'a str>,
    target_held: bool,
    /// The target dataset was created by this run's first receive.
    target_created: bool,
}

/// One transfer as the pipe left it.
struct Sent {
    moved: Result<u64, PipeError>,
    /// Bytes the relay moved before it ended, also when it failed.
    moved_now: u64,
    /// Other zfs calls rode along with the receive.
    chained: bool,
}

/// The zfs calls of one [`replicate_dataset`] around its transfers.
struct Step<'a> {
    /// The source dataset, named when the run is cancelled.
    dataset: &'a str,
    target_dataset: &'a str,
    options: &'a ReplicateOptions,
    /// What every send of this dataset uses (see [`stream::features`]).
    features: StreamFeatures,
}

impl Step<'_> {
    /// Acts on what the target's agent listed, only when that calls for
    /// plain receives (no -F, nothing destroyed): zfs refuses those itself
    /// if the target changed since. `None` when it was not acted on or zfs
    /// refused it as stale: every other verdict (up to date, a refusal, an
    /// overwrite) is made from a listing taken now.
    async fn carry_out_listed(
        &self,
        listed: Option<&SnapshotListing>,
        source: &SnapshotListing,
        matching: &(dyn Fn(&str) -> bool + Send + Sync),
        target: &dyn ZfsHost,
        progress: &mut (dyn FnMut(u64, Option<u64>, &str) + Send),
        cancel: &mut watch::Receiver<bool>,
    ) -> Option<Result<DatasetOutcome, ReplicationError>> {
        let hinted = plan(
            self.dataset,
            self.target_dataset,
            &source.snapshots,
            &source.bookmarks,
            matching,
            listed.map(|l| l.snapshots.as_slice()),
            self.options.allow_overwrite,
        )
        .ok()
        .filter(|p| !p.is_up_to_date() && !p.force && p.discard.is_empty())?;
        let basis = Basis {
            target_absent: listed.is_none(),
            from_target_agent: true,
        };
        match self
            .carry_out(&hinted, basis, source, target, progress, cancel)
            .await
        {
            Err(Halted::StalePlan(refusal)) => {
                tracing::info!(
                    %refusal,
                    dataset = %self.target_dataset,
                    "the target changed since its agent listed it; listing it again"
                );
                None
            }
            other => Some(other.map_err(ReplicationError::from)),
        }
    }

    /// Carries out `plan` for this step's datasets: creates the target's
    /// parent if missing, discards what the plan discards, runs each
    /// transfer through [`pipe::pipe`] (send here, recv via `target`)
    /// and sets `readonly=on` on the target (see [`replicate_dataset`]).
    async fn carry_out(
        &self,
        plan: &Plan,
        basis: Basis,
        source: &SnapshotListing,
        target: &dyn ZfsHost,
        progress: &mut (dyn FnMut(u64, Option<u64>, &str) + Send),
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<DatasetOutcome, Halted> {
        let estimate = self.estimate(plan, cancel).await;
        let mut progress = |bytes: u64, label: &str| progress(bytes, estimate, label);
        // Over ssh the parent's creation rides in front of the first receive
        // and `readonly=on` behind the last one, in the same remote call:
        // two sessions fewer per dataset. Locally they are calls of their own.
        let chaining = target.can_chain();
        self.prepare_target(plan, basis, target, chaining, cancel)
            .await?;
        let guids: HashMap<&str, u64> = source
            .snapshots
            .iter()
            .map(|s| (s.name.as_str(), s.guid))
            .collect();
        let create_parent = if basis.target_absent && chaining {
            zfs::create_parents_args(self.target_dataset).map_err(ZfsError::from)?
        } else {
            None
        };
        let readonly = zfs::set_readonly_args(self.target_dataset).map_err(ZfsError::from)?;
        // The target's hold on the new base rides along with the last
        // receive too (received snapshots keep the source's names).
        let target_hold = match (self.options.task_id, plan.transfers.last()) {
            (Some(task_id), Some(last)) if chaining => Some(
                zfs::hold_args(
                    &replication_hold_tag(task_id),
                    &format!("{}@{}", self.target_dataset, last.snapshot()),
                )
                .map_err(ZfsError::from)?,
            ),
            _ => None,
        };
        let mut target_held = false;
        // OpenZFS makes a new replica read-only with its full receive
        // (`-o readonly=on`); after incrementals, and on zfs-fuse, a `zfs
        // set` follows the last receive.
        let set_by_receive = |transfer: &Transfer| {
            self.options.dialect_target == Dialect::OpenZfs
                && matches!(transfer, Transfer::Full { .. })
        };
        let mut readonly_set = false;
        let mut total: u64 = 0;
        let mut transferred = Vec::with_capacity(plan.transfers.len());
        for (index, transfer) in plan.transfers.iter().enumerate() {
            let last = index + 1 == plan.transfers.len();
            let around = Around {
                create_first: create_parent.clone().filter(|_| index == 0),
                readonly_after: Some(readonly.clone())
                    .filter(|_| chaining && last && !set_by_receive(transfer)),
                hold_after: target_hold.clone().filter(|_| last),
            };
            let sent = self
                .send_one(
                    transfer,
                    plan.force,
                    around,
                    target,
                    total,
                    &mut progress,
                    cancel,
                )
                .await?;
            let readonly_rode_along = sent.chained && last && sent.moved.is_ok();
            target_held = readonly_rode_along && target_hold.is_some();
            let first = transferred.is_empty();
            match self
                .settle(sent, transfer, basis, first, &guids, target, cancel)
                .await
            {
                Ok(bytes) => total += bytes,
                Err(Halted::Failed(err)) => {
                    self.after_failure(transfer, basis, !first, target).await;
                    return Err(Halted::Failed(err));
                }
                Err(stale) => return Err(stale),
            }
            readonly_set |= readonly_rode_along || set_by_receive(transfer);
            transferred.push(transfer.clone());
        }

        if !readonly_set {
            self.run(target, readonly, self.target_dataset, cancel)
                .await?;
        }
        // Received snapshots keep the source's names.
        let notes = match transferred.last() {
            Some(last) => {
                let base = Base {
                    newest: last.snapshot(),
                    target_newest: last.snapshot(),
                    previous: plan.base.as_deref(),
                    target_previous: plan.target_base.as_deref(),
                    target_held,
                    target_created: basis.target_absent,
                };
                self.protect_base(&base, source, target).await
            }
            None => Vec::new(),
        };
        Ok(DatasetOutcome {
            transferred,
            bytes: total,
            up_to_date: false,
            planned_from_target_listing: basis.from_target_agent,
            resumed: None,
            features: self.features,
            notes,
        })
    }

    /// Moves the task's hold (if it has one) to the new base on both sides
    /// (on the source only when it is a snapshot there, not `#bookmark`:
    /// the target's hold still moves); then, on an OpenZFS source, the
    /// task's cursor.
    async fn protect_base(
        &self,
        base: &Base<'_>,
        source: &SnapshotListing,
        target: &dyn ZfsHost,
    ) -> Vec<String> {
        let Some(task_id) = self.options.task_id else {
            return Vec::new();
        };
        let newest = base.newest;
        let tag = replication_hold_tag(task_id);
        let target_side = holds::Side {
            host: target,
            dataset: self.target_dataset,
            newest: base.target_newest,
            previous: base.target_previous,
            held: base.target_held,
            fresh: base.target_created,
        };
        let source_side = (!newest.starts_with('#')).then_some(holds::Side {
            host: &LocalZfs,
            dataset: self.dataset,
            newest,
            previous: base.previous.filter(|p| !p.starts_with('#')),
            held: false,
            fresh: false,
        });
        let mut notes =
            holds::move_hold(&tag, source_side, target_side, self.options.command_timeout).await;
        let snapshot = source.snapshots.iter().find(|s| s.name == newest);
        if self.options.dialect_source == Dialect::OpenZfs
            && let Some(snapshot) = snapshot
        {
            notes.extend(
                cursor::move_cursor(
                    task_id,
                    self.dataset,
                    newest,
                    snapshot.guid,
                    &source.bookmarks,
                    self.options.command_timeout,
                )
                .await,
            );
        }
        notes
    }

    /// Resumes (or discards) the partial receive `token` describes.
    async fn resume(
        &self,
        token: &str,
        target: &dyn ZfsHost,
        progress: &mut (dyn FnMut(u64, Option<u64>, &str) + Send),
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Resumed, ReplicationError> {
        let resumed = resume::resume(
            token,
            self.dataset,
            self.target_dataset,
            target,
            self.options,
            progress,
            cancel,
        )
        .await?;
        match &resumed {
            Resumed::Completed { at, snapshot, .. } => tracing::info!(
                dataset = %self.dataset, %snapshot, at, "resumed an interrupted receive"
            ),
            Resumed::Discarded { reason } => tracing::info!(
                dataset = %self.target_dataset, %reason, "discarded a partial receive that cannot be resumed"
            ),
        }
        Ok(resumed)
    }

    /// Before the first transfer: the target's parent (unless it rides
    /// along with the first receive) and the snapshots the plan discards.
    async fn prepare_target(
        &self,
        plan: &Plan,
        basis: Basis,
        target: &dyn ZfsHost,
        chaining: bool,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), Halted> {
        if basis.target_absent && !chaining {
            self.ensure_parent(target, self.target_dataset, cancel)
                .await?;
        }
        for name in &plan.discard {
            self.destroy_snapshot(target, &format!("{}@{name}", self.target_dataset), cancel)
                .await?;
        }
        Ok(())
    }

    /// The stream size of every transfer of `plan` together, from
    /// `zfs send -n -P` here; `None` when zfs cannot estimate (zfs-fuse)
    /// or one estimate failed. Best effort: a run goes on without one.
    async fn estimate(&self, plan: &Plan, cancel: &mut watch::Receiver<bool>) -> Option<u64> {
        let mut total: u64 = 0;
        for transfer in &plan.transfers {
            let (from, snapshot) = self.send_names(transfer);
            let args = zfs::send_estimate_args(
                self.options.dialect_source,
                self.features,
                from.as_send_from(),
                &snapshot,
            )
            .ok()??;
            let out = match self.run_raw(&LocalZfs, args, cancel).await {
                Ok(out) => out,
                Err(err) => {
                    tracing::debug!(%snapshot, %err, "no send size estimate");
                    return None;
                }
            };
            total = total.saturating_add(zfs::parse_send_estimate(&String::from_utf8_lossy(
                &out.stdout,
            ))?);
        }
        Some(total)
    }

    /// Where `transfer` starts and the snapshot it sends (full names).
    fn send_names(&self, transfer: &Transfer) -> (SendStart, String) {
        let from = match transfer {
            Transfer::Full { .. } => SendStart::Full,
            Transfer::Incremental { from, .. } => SendStart::Incremental(with_mark(from)),
            Transfer::Intermediates { from, .. } => SendStart::Intermediates(with_mark(from)),
        };
        (from, format!("{}@{}", self.dataset, transfer.snapshot()))
    }

    /// `zfs send` here and `zfs recv` there for one transfer.
    fn transfer_commands(
        &self,
        transfer: &Transfer,
        force: bool,
    ) -> Result<(ProgramArgs, Vec<String>), ZfsError> {
        let (from, snapshot) = self.send_names(transfer);
        let send = zfs::send_args(self.features, from.as_send_from(), &snapshot)?;
        let creates = matches!(transfer, Transfer::Full { .. });
        let recv = zfs::recv_args(
            self.options.dialect_target,
            self.target_dataset,
            force,
            creates,
        )?;
        Ok((LocalZfs.command(send), recv))
    }

    /// Pipes one transfer from here to `target`, reporting `done` plus its
    /// bytes as they move. When the parent's creation rode along and
    /// failed (it may exist while this user may not create: delegation),
    /// that is settled on its own, with its own error, and the stream sent
    /// again without it.
    #[allow(clippy::too_many_arguments)]
    async fn send_one(
        &self,
        transfer: &Transfer,
        force: bool,
        mut around: Around,
        target: &dyn ZfsHost,
        done: u64,
        progress: &mut (dyn FnMut(u64, &str) + Send),
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Sent, Halted> {
        let label = transfer.label(self.dataset);
        let ((send_program, send_args), recv) = self.transfer_commands(transfer, force)?;
        loop {
            let mut commands: Vec<Vec<String>> = around.create_first.iter().cloned().collect();
            commands.push(recv.clone());
            commands.extend(around.readonly_after.iter().cloned());
            commands.extend(around.hold_after.iter().cloned());
            let chained = commands.len() > 1;
            let (recv_program, recv_args) = match target.chain(commands) {
                Some(chain) => chain,
                None => target.command(recv.clone()),
            };
            progress(done, &label);
            let mut moved_now = 0;
            let moved = pipe::pipe(
                (&send_program, &send_args),
                (&recv_program, &recv_args),
                self.options.idle_timeout,
                self.options.rate_limit,
                |bytes| {
                    moved_now = bytes;
                    progress(done + bytes, &label);
                },
                cancel,
            )
            .await;
            if around.create_first.is_some()
                && let Err(PipeError::RecvFailed { stderr, .. }) = &moved
                && is_create_failure(stderr, self.target_dataset)
            {
                self.ensure_parent(target, self.target_dataset, cancel)
                    .await?;
                around.create_first = None;
                continue;
            }
            return Ok(Sent {
                moved,
                moved_now,
                chained,
            });
        }
    }

    /// What one sent transfer counts for: its bytes, or why the step stops.
    ///
    /// Checked first: a plan made from the target agent's listing whose
    /// first receive zfs refused as not fitting the target is stale, and
    /// zfs-fuse's and the chained calls' quirks below must not hide that.
    /// A receive that failed although its snapshot (by guid) arrived counts
    /// as done: zfs-fuse can report "I/O error" after a full `recv -F` onto
    /// an existing dataset when remounting fails (or a chained
    /// `readonly=on` failed; it is set again at the end).
    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &self,
        sent: Sent,
        transfer: &Transfer,
        basis: Basis,
        first: bool,
        guids: &HashMap<&str, u64>,
        target: &dyn ZfsHost,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<u64, Halted> {
        if basis.from_target_agent
            && first
            && let Err(PipeError::RecvFailed { stderr, .. }) = &sent.moved
            && let Some(refusal) =
                zfs::recv_error(stderr, self.target_dataset).filter(is_plan_mismatch)
        {
            return Err(Halted::StalePlan(refusal));
        }
        match sent.moved {
            Ok(bytes) => Ok(bytes),
            Err(PipeError::Cancelled) => Err(ReplicationError::Cancelled {
                dataset: self.dataset.to_owned(),
            }
            .into()),
            Err(cause @ PipeError::RecvFailed { .. })
                if self
                    .arrived(
                        target,
                        self.options,
                        self.target_dataset,
                        guids.get(transfer.snapshot()).copied(),
                        cancel,
                    )
                    .await =>
            {
                tracing::warn!(
                    %cause,
                    transfer = %transfer.label(self.dataset),
                    "zfs receive failed, but the snapshot arrived on the target; continuing"
                );
                Ok(sent.moved_now)
            }
            Err(cause) => {
                let known = match &cause {
                    PipeError::RecvFailed { stderr, .. } => {
                        zfs::recv_error(stderr, self.target_dataset)
                    }
                    _ => None,
                };
                Err(match known {
                    Some(reason) => ReplicationError::Zfs(reason),
                    None => ReplicationError::Transfer {
                        target_dataset: self.target_dataset.to_owned(),
                        transfer: transfer.label(self.dataset),
                        cause,
                    },
                }
                .into())
            }
        }
    }

    /// After a failed transfer: a failed first receive is waited for until
    /// zfs discards it, and what did arrive is made read-only.
    async fn after_failure(
        &self,
        transfer: &Transfer,
        basis: Basis,
        received_some: bool,
        target: &dyn ZfsHost,
    ) {
        // OpenZFS keeps a partial receive for the next run to resume.
        if basis.target_absent
            && matches!(transfer, Transfer::Full { .. })
            && self.options.dialect_target == Dialect::Legacy
        {
            self.await_discarded(target, self.target_dataset).await;
        }
        if received_some {
            self.set_readonly_quietly(target, self.target_dataset).await;
        }
    }

    /// Runs one zfs call on `host`; a failure is typed with `subject` as
    /// the dataset it concerns.
    async fn run(
        &self,
        host: &dyn ZfsHost,
        zfs_args: Vec<String>,
        subject: &str,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Output, ReplicationError> {
        self.run_raw(host, zfs_args, cancel)
            .await
            .map_err(|err| self.failure(err, subject))
    }

    async fn run_raw(
        &self,
        host: &dyn ZfsHost,
        zfs_args: Vec<String>,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Output, ProcessError> {
        let (program, args) = host.command(zfs_args);
        process::run_cancellable(&program, &args, self.options.command_timeout, cancel).await
    }

    fn failure(&self, err: ProcessError, subject: &str) -> ReplicationError {
        match err {
            ProcessError::Cancelled { .. } => ReplicationError::Cancelled {
                dataset: self.dataset.to_owned(),
            },
            err => ReplicationError::Zfs(match ZfsError::from_process(err, subject) {
                ZfsError::PoolNotFound { name } => ZfsError::PoolNotFound {
                    name: name.split('/').next().unwrap_or(&name).to_owned(),
                },
                other => other,
            }),
        }
    }

    /// `readonly=on` for a replica that received something before the run
    /// failed or was cancelled (so not cancellable); a failure is logged.
    async fn set_readonly_quietly(&self, host: &dyn ZfsHost, dataset: &str) {
        let Ok(args) = zfs::set_readonly_args(dataset) else {
            return;
        };
        let (program, args) = host.command(args);
        if let Err(err) = process::run(&program, &args, self.options.command_timeout).await {
            tracing::warn!(%dataset, %err, "could not make the replica read-only");
        }
    }

    /// Waits (at most [`DISCARD_WAIT`]) until a dataset whose first, full
    /// receive failed is gone. zfs-fuse discards the partial dataset only
    /// when its daemon sees the stream end, a moment after the zfs process
    /// was killed; a retry meanwhile would find a dataset without
    /// snapshots and refuse it as unrelated data. Not cancellable (it runs
    /// after a cancel) and silent: whatever remains, the next plan reports.
    async fn await_discarded(&self, host: &dyn ZfsHost, dataset: &str) {
        let Ok(args) = zfs::dataset_exists_args(dataset) else {
            return;
        };
        let (program, args) = host.command(args);
        let deadline = tokio::time::Instant::now() + DISCARD_WAIT;
        loop {
            match process::run(
                &program,
                &args,
                self.options.command_timeout.min(DISCARD_WAIT),
            )
            .await
            {
                Err(err) if err.stderr().is_some_and(zfs::is_missing_dataset) => return,
                Ok(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(DISCARD_POLL).await;
                }
                _ => {
                    tracing::debug!(%dataset, "a partially received dataset is still there");
                    return;
                }
            }
        }
    }

    /// The snapshots of `dataset` on `host`, oldest first; `None` when the
    /// dataset does not exist.
    async fn snapshot_guids(
        &self,
        host: &dyn ZfsHost,
        dialect: Dialect,
        dataset: &str,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Option<SnapshotListing>, ReplicationError> {
        let args = zfs::snapshot_guids_args(dialect, dataset).map_err(ZfsError::from)?;
        let (program, full_args) = host.command(args.clone());
        let out = match self.run_raw(host, args, cancel).await {
            Ok(out) => out,
            Err(err) if err.stderr().is_some_and(zfs::is_missing_dataset) => return Ok(None),
            Err(err) => return Err(self.failure(err, dataset)),
        };
        let text = String::from_utf8_lossy(&out.stdout);
        zfs::parse_snapshot_guids(dialect, dataset, &text)
            .map(Some)
            .map_err(|detail| {
                ReplicationError::Zfs(ZfsError::UnexpectedOutput {
                    command: process::render_command(&program, &full_args),
                    detail,
                })
            })
    }

    /// Whether `dataset` on `host` has a snapshot with `guid`, checked after
    /// a receive reported failure. Any error listing counts as "no".
    async fn arrived(
        &self,
        host: &dyn ZfsHost,
        options: &ReplicateOptions,
        dataset: &str,
        guid: Option<u64>,
        cancel: &mut watch::Receiver<bool>,
    ) -> bool {
        let Some(guid) = guid else {
            return false;
        };
        match self
            .snapshot_guids(host, options.dialect_target, dataset, cancel)
            .await
        {
            Ok(Some(listing)) => listing.snapshots.iter().any(|s| s.guid == guid),
            _ => false,
        }
    }

    /// Makes sure the parent of `dataset` (and its ancestors) exists.
    /// `zfs create -p` first: it succeeds when they exist already, so the
    /// common cases (a new fan-in path, an existing parent) take one remote
    /// command. Only when it fails is the parent looked up: a delegated user
    /// may lack the `create` permission for a parent that is there.
    async fn ensure_parent(
        &self,
        host: &dyn ZfsHost,
        dataset: &str,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), ReplicationError> {
        let (Some(parent), Some(create)) = (
            zfs::parent_dataset(dataset),
            zfs::create_parents_args(dataset).map_err(ZfsError::from)?,
        ) else {
            return Ok(());
        };
        let create_failure = match self.run_raw(host, create, cancel).await {
            Ok(_) => return Ok(()),
            Err(err @ ProcessError::Cancelled { .. }) => return Err(self.failure(err, parent)),
            Err(err) => err,
        };
        let exists = zfs::dataset_exists_args(parent).map_err(ZfsError::from)?;
        match self.run_raw(host, exists, cancel).await {
            Ok(_) => Ok(()),
            Err(err @ ProcessError::Cancelled { .. }) => Err(self.failure(err, parent)),
            Err(_) => Err(self.failure(create_failure, parent)),
        }
    }

    /// Destroys one target snapshot, retrying zfs-fuse's transient
    /// "dataset is busy". Already gone counts as done.
    async fn destroy_snapshot(
        &self,
        host: &dyn ZfsHost,
        full_name: &str,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), ReplicationError> {
        let args = zfs::destroy_snapshot_args(full_name).map_err(ZfsError::from)?;
        let mut attempt = 1;
        loop {
            let err = match self.run_raw(host, args.clone(), cancel).await {
                Ok(_) => return Ok(()),
                Err(err) => err,
            };
            if err.stderr().is_some_and(|e| e.contains("dataset is busy"))
                && attempt < BUSY_ATTEMPTS
            {
                attempt += 1;
                tokio::time::sleep(BUSY_PAUSE).await;
                continue;
            }
            if let ProcessError::Cancelled { .. } = err {
                return Err(self.failure(err, full_name));
            }
            return match ZfsError::from_destroy_process(err, full_name) {
                ZfsError::SnapshotNotFound { .. } => Ok(()),
                other => Err(ReplicationError::Zfs(other)),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_about_the_targets_state_send_a_step_to_a_fresh_listing() {
        let target = "backup/nas1/tank";
        for (stderr, mismatch) in [
            (
                "cannot receive incremental stream: most recent snapshot of backup/nas1/tank does not\nmatch incremental source",
                true,
            ),
            (
                "cannot receive new filesystem stream: destination 'backup/nas1/tank' exists\nmust specify -F to overwrite it",
                true,
            ),
            (
                "cannot receive incremental stream: destination 'backup/nas1/tank' does not exist",
                true,
            ),
            ("cannot receive: out of space", false),
            ("cannot open 'backup': no such pool", false),
        ] {
            let refusal = zfs::recv_error(stderr, target);
            assert_eq!(
                refusal.as_ref().is_some_and(is_plan_mismatch),
                mismatch,
                "{stderr}: {refusal:?}"
            );
        }
    }

    #[test]
    fn replicate_dataset_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        let (_tx, mut rx) = watch::channel(false);
        let matching = |_: &str| true;
        let mut progress = |_: u64, _: Option<u64>, _: &str| {};
        let options = ReplicateOptions::new(Dialect::Legacy, Dialect::OpenZfs);
        let future = replicate_dataset(
            "tank/a",
            "backup/a",
            &matching,
            &LocalZfs,
            &options,
            &mut progress,
            &mut rx,
        );
        assert_send(&future);
    }

    #[tokio::test]
    async fn invalid_names_are_refused_before_anything_runs() {
        let (_tx, mut rx) = watch::channel(false);
        let options = ReplicateOptions::new(Dialect::Legacy, Dialect::Legacy);
        for (source, target) in [
            ("tank/a;id", "backup/a"),
            ("tank/a", "-F"),
            ("tank/a@s", "b/a"),
        ] {
            let err = replicate_dataset(
                source,
                target,
                &|_: &str| true,
                &LocalZfs,
                &options,
                &mut |_: u64, _: Option<u64>, _: &str| {},
                &mut rx,
            )
            .await
            .unwrap_err();
            assert!(
                matches!(err, ReplicationError::Zfs(ZfsError::InvalidName(_))),
                "{source} -> {target}: {err:?}"
            );
        }
    }

    #[test]
    fn a_failed_parent_creation_is_told_from_a_failed_receive() {
        let target = "backup/nas1/tank/data";
        assert!(is_create_failure(
            "cannot create 'backup/nas1/tank': permission denied",
            target
        ));
        assert!(is_create_failure(
            "cannot create 'backup/nas1': out of space",
            target
        ));
        // The receive's own complaints, and names that only share a prefix.
        assert!(!is_create_failure(
            "cannot receive new filesystem stream: destination has snapshots",
            target
        ));
        assert!(!is_create_failure(
            "cannot create 'backup/nas1/tank/data': dataset already exists",
            target
        ));
        assert!(!is_create_failure("cannot create 'backup/nas': no", target));
        assert!(!is_create_failure(
            "cannot create 'backup/nas1/ta': x",
            target
        ));
        assert!(!LocalZfs.can_chain());
        assert!(LocalZfs.chain(vec![vec!["list".into()]]).is_none());
    }
}
