//! Runs on this agent: executing the work the controller sends, keeping it going while the controller is away, and reporting each run's true outcome until the controller acknowledges it.
//!
//! A journal in `STATE_DIR/runs/` makes this survive disconnects and agent
//! restarts: `<id>.work` is written when a run starts (so a second StartRun
//! for the same id is ignored) and `<id>.result` when it ends; both go once
//! the controller acknowledges the result.

use crate::retention::{self, RetentionPolicy};
use crate::zfs::{Zfs, ZfsError};
use nasfleet_common::naming::NamingSchema;
use nasfleet_common::status::now_unix_ms;
use nasfleet_proto::v1::agent_message::Body as Up;
use nasfleet_proto::v1::{
    AgentMessage, Progress, RunResult, RunState, RunStep, RunUpdate, SnapshotWork, StartRun,
    start_run,
};
use prost::Message;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, watch};

/// Lines of output kept with a result.
const LOG_TAIL_LINES: usize = 50;

#[derive(Debug, Error)]
pub enum JournalError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a run stopped early; its message is the run's reason.
#[derive(Debug, Error)]
pub(crate) enum RunFailure {
    #[error("Cancelled by {0}")]
    Cancelled(String),
    #[error("{0}")]
    Failed(String),
}

impl From<ZfsError> for RunFailure {
    fn from(e: ZfsError) -> Self {
        RunFailure::Failed(e.to_string())
    }
}

/// The journal directory.
struct Journal {
    dir: PathBuf,
}

impl Journal {
    fn path(&self, run_id: u64, ext: &str) -> PathBuf {
        self.dir.join(format!("{run_id}.{ext}"))
    }

    async fn write(&self, run_id: u64, ext: &str, bytes: Vec<u8>) -> Result<(), JournalError> {
        let path = self.path(run_id, ext);
        let tmp = self.path(run_id, &format!("{ext}.tmp"));
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| JournalError::Io {
                action,
                path,
                source,
            }
        };
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(io("write", &tmp))?;
        // Rename makes the record appear whole or not at all.
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(io("rename", &path))
    }

    async fn remove(&self, run_id: u64) {
        for ext in ["work", "result"] {
            let _ = tokio::fs::remove_file(self.path(run_id, ext)).await;
        }
    }

    fn has(&self, run_id: u64) -> bool {
        self.path(run_id, "work").exists() || self.path(run_id, "result").exists()
    }

    async fn result(&self, run_id: u64) -> Option<RunResult> {
        let bytes = tokio::fs::read(self.path(run_id, "result")).await.ok()?;
        RunResult::decode(bytes.as_slice()).ok()
    }

    /// Ids with a journal entry, by kind of file.
    fn entries(&self) -> (Vec<u64>, Vec<u64>) {
        let mut work = Vec::new();
        let mut results = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let Some((id, ext)) = name.split_once('.') else {
                    continue;
                };
                let Ok(id) = id.parse::<u64>() else { continue };
                match ext {
                    "work" => work.push(id),
                    "result" => results.push(id),
                    _ => {}
                }
            }
        }
        work.sort_unstable();
        results.sort_unstable();
        (work, results)
    }
}

/// Runs this agent knows about, and the current way up to the controller.
pub struct RunManager {
    journal: Journal,
    zfs: Arc<Zfs>,
    /// The current session's outbound queue; `None` while disconnected.
    uplink: Mutex<Option<mpsc::Sender<AgentMessage>>>,
    /// Active runs and the switch that cancels each.
    active: Mutex<HashMap<u64, CancelSwitch>>,
    /// Who this agent is and the key it replicates with.
    pub(crate) identity: AgentIdentity,
}

/// What runs need to know about the agent itself.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    pub system: String,
    pub state_dir: PathBuf,
    pub replication_key: crate::ssh::ReplicationKey,
    /// The pools this agent owns (empty = every pool): an rsync task's path
    /// must lie inside one of them, at create and again at every run.
    pub pools: Vec<String>,
}

/// Cancels one run: `by` says who asked (for the reason), `flag` stops child
/// processes that watch a plain boolean.
struct CancelSwitch {
    by: watch::Sender<Option<String>>,
    flag: watch::Sender<bool>,
}

impl RunManager {
    /// Opens the journal. A run whose work is journalled without a result
    /// was cut off by an agent restart; it is reported as such.
    pub async fn open(identity: AgentIdentity, zfs: Arc<Zfs>) -> Result<Arc<Self>, JournalError> {
        let dir = identity.state_dir.join("runs");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|source| JournalError::Io {
                action: "create",
                path: dir.clone(),
                source,
            })?;
        let journal = Journal { dir };
        let (work, results) = journal.entries();
        for run_id in work.into_iter().filter(|id| !results.contains(id)) {
            tracing::warn!(run = run_id, "run was interrupted by an agent restart");
            let result = RunResult {
                run_id,
                state: RunState::Failed.into(),
                reason: "The agent restarted while this run was in progress; it was not completed"
                    .into(),
                finished_unix_ms: now_unix_ms(),
                ..Default::default()
            };
            journal
                .write(run_id, "result", result.encode_to_vec())
                .await?;
        }
        Ok(Arc::new(RunManager {
            journal,
            zfs,
            uplink: Mutex::new(None),
            active: Mutex::new(HashMap::new()),
            identity,
        }))
    }

    fn active_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, CancelSwitch>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn uplink_lock(&self) -> std::sync::MutexGuard<'_, Option<mpsc::Sender<AgentMessage>>> {
        self.uplink.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn zfs(&self) -> Arc<Zfs> {
        self.zfs.clone()
    }

    /// Runs executing right now (told to the controller in Hello).
    pub fn active_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.active_lock().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// A session started: results the controller has not acknowledged go up first.
    pub async fn attach(&self, tx: mpsc::Sender<AgentMessage>) {
        *self.uplink_lock() = Some(tx.clone());
        let (_, results) = self.journal.entries();
        for run_id in results {
            if let Some(result) = self.journal.result(run_id).await {
                let _ = tx
                    .send(AgentMessage {
                        body: Some(Up::RunResult(result)),
                    })
                    .await;
            }
        }
    }

    pub fn detach(&self) {
        *self.uplink_lock() = None;
    }

    /// Progress is best effort: dropped while disconnected or when the queue is full.
    pub(crate) fn send_update(&self, update: RunUpdate) {
        if let Some(tx) = self.uplink_lock().as_ref() {
            let _ = tx.try_send(AgentMessage {
                body: Some(Up::RunUpdate(update)),
            });
        }
    }

    async fn send_result(&self, result: RunResult) {
        let tx = self.uplink_lock().clone();
        if let Some(tx) = tx {
            let _ = tx
                .send(AgentMessage {
                    body: Some(Up::RunResult(result)),
                })
                .await;
        }
    }

    /// Starts a run unless this agent already has it; a finished one's result is sent again.
    pub async fn start(self: &Arc<Self>, work: StartRun) {
        let run_id = work.run_id;
        if self.active_lock().contains_key(&run_id) {
            tracing::debug!(
                run = run_id,
                "run already in progress; duplicate start ignored"
            );
            return;
        }
        if self.journal.has(run_id) {
            if let Some(result) = self.journal.result(run_id).await {
                tracing::info!(
                    run = run_id,
                    "run already finished; sending its result again"
                );
                self.send_result(result).await;
            }
            return;
        }
        if let Err(e) = self
            .journal
            .write(run_id, "work", work.encode_to_vec())
            .await
        {
            // Without a journal entry the outcome could be lost: refuse to start.
            tracing::error!(run = run_id, error = %e, "cannot journal the run; not starting it");
            let result = failed_result(run_id, format!("The agent cannot record the run: {e}"));
            self.send_result(result).await;
            return;
        }
        let (by_tx, by_rx) = watch::channel(None);
        let (flag_tx, flag_rx) = watch::channel(false);
        self.active_lock().insert(
            run_id,
            CancelSwitch {
                by: by_tx,
                flag: flag_tx,
            },
        );
        let manager = self.clone();
        tokio::spawn(async move {
            let result = manager.execute(work, by_rx, flag_rx).await;
            if let Err(e) = manager
                .journal
                .write(run_id, "result", result.encode_to_vec())
                .await
            {
                tracing::error!(run = run_id, error = %e, "cannot journal the result; sending it once");
            }
            manager.active_lock().remove(&run_id);
            tracing::info!(run = run_id, state = ?result.state(), reason = %result.reason, "run ended");
            manager.send_result(result).await;
        });
    }

    pub fn cancel(&self, run_id: u64, by: &str) {
        match self.active_lock().get(&run_id) {
            Some(switch) => {
                tracing::info!(run = run_id, by, "cancelling run");
                let _ = switch.by.send(Some(by.to_owned()));
                let _ = switch.flag.send(true);
            }
            None => tracing::debug!(run = run_id, "cancel for a run that is not active"),
        }
    }

    /// The controller stored the result: forget the run.
    pub async fn ack(&self, run_id: u64) {
        self.journal.remove(run_id).await;
    }

    async fn execute(
        &self,
        work: StartRun,
        cancel: watch::Receiver<Option<String>>,
        cancel_flag: watch::Receiver<bool>,
    ) -> RunResult {
        let run_id = work.run_id;
        let mut ctx = RunContext {
            manager: self,
            run_id,
            cancel,
            cancel_flag,
            steps: Vec::new(),
            log: VecDeque::new(),
            bytes: 0,
        };
        // rsync runs succeed as SUCCESS, the others as FINISHED (TrueNAS's words).
        let (outcome, success) = match work.work {
            Some(start_run::Work::Snapshot(snapshot)) => {
                (snapshot_run(&mut ctx, &snapshot).await, RunState::Finished)
            }
            Some(start_run::Work::Replication(replication)) => (
                crate::replication_run::replication_run(&mut ctx, &replication).await,
                RunState::Finished,
            ),
            Some(start_run::Work::Rsync(spec)) => (
                crate::rsync_run::rsync_run(&mut ctx, &spec).await,
                RunState::Success,
            ),
            None => (
                Err(RunFailure::Failed(
                    "The controller sent a run without work; this agent may be too old".into(),
                )),
                RunState::Failed,
            ),
        };
        let (state, reason) = match outcome {
            Ok(()) => (success, String::new()),
            Err(failure) => (RunState::Failed, failure.to_string()),
        };
        if state == RunState::Failed {
            ctx.log(format!("FAILED: {reason}"));
        }
        RunResult {
            run_id,
            state: state.into(),
            reason,
            steps: ctx.steps,
            bytes: ctx.bytes,
            log_tail: ctx.log.into_iter().collect(),
            finished_unix_ms: now_unix_ms(),
        }
    }
}

fn failed_result(run_id: u64, reason: String) -> RunResult {
    RunResult {
        run_id,
        state: RunState::Failed.into(),
        reason,
        finished_unix_ms: now_unix_ms(),
        ..Default::default()
    }
}

/// What one executing run reports through.
pub(crate) struct RunContext<'a> {
    pub(crate) manager: &'a RunManager,
    pub(crate) run_id: u64,
    cancel: watch::Receiver<Option<String>>,
    /// The same cancellation as a boolean, for child-process helpers.
    pub(crate) cancel_flag: watch::Receiver<bool>,
    steps: Vec<RunStep>,
    log: VecDeque<String>,
    /// Bytes transferred so far.
    pub(crate) bytes: u64,
}

impl RunContext<'_> {
    pub(crate) fn log(&mut self, line: String) {
        tracing::info!(run = self.run_id, "{line}");
        self.log.push_back(line.clone());
        if self.log.len() > LOG_TAIL_LINES {
            self.log.pop_front();
        }
        self.manager.send_update(RunUpdate {
            run_id: self.run_id,
            log_lines: vec![line],
            ..Default::default()
        });
    }

    pub(crate) fn step(&mut self, name: &str, state: RunState, detail: String) {
        let step = RunStep {
            name: name.to_owned(),
            state: state.into(),
            detail,
            bytes: 0,
        };
        match self.steps.iter_mut().find(|s| s.name == name) {
            Some(existing) => *existing = step.clone(),
            None => self.steps.push(step.clone()),
        }
        self.manager.send_update(RunUpdate {
            run_id: self.run_id,
            progress: Some(Progress {
                phase: name.to_owned(),
                step: name.to_owned(),
                ..Default::default()
            }),
            step: Some(step),
            ..Default::default()
        });
    }

    pub(crate) fn check_cancelled(&self) -> Result<(), RunFailure> {
        match self.cancel.borrow().as_ref() {
            Some(by) => Err(RunFailure::Cancelled(by.clone())),
            None => Ok(()),
        }
    }

    /// Marks a step as started (after checking for cancellation).
    pub(crate) fn begin(&mut self, name: &str) -> Result<(), RunFailure> {
        self.check_cancelled()?;
        self.step(name, RunState::Running, String::new());
        Ok(())
    }

    /// Records how a step ended and passes its outcome on.
    pub(crate) fn end<T>(
        &mut self,
        name: &str,
        outcome: Result<(T, String), RunFailure>,
    ) -> Result<T, RunFailure> {
        match outcome {
            Ok((value, detail)) => {
                self.step(name, RunState::Finished, detail);
                Ok(value)
            }
            Err(failure) => {
                self.step(name, RunState::Failed, failure.to_string());
                Err(failure)
            }
        }
    }
}

/// Datasets a snapshot task covers: the dataset, plus every descendant when
/// recursive, minus excluded subtrees. `all` is every dataset of the pool.
pub fn covered_datasets(
    dataset: &str,
    recursive: bool,
    exclude: &[String],
    all: &[String],
) -> Vec<String> {
    let under =
        |name: &str, parent: &str| name == parent || name.starts_with(&format!("{parent}/"));
    if !recursive {
        return vec![dataset.to_owned()];
    }
    all.iter()
        .filter(|name| under(name, dataset) && !exclude.iter().any(|e| under(name, e)))
        .cloned()
        .collect()
}

/// One periodic snapshot task run: take the snapshot, then apply retention.
async fn snapshot_run(ctx: &mut RunContext<'_>, work: &SnapshotWork) -> Result<(), RunFailure> {
    let zfs = ctx.manager.zfs.clone();
    let pool = work
        .dataset
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let listing = zfs.list_datasets_and_snapshots(&pool).await?;
    let all: Vec<String> = listing.datasets.iter().map(|d| d.name.clone()).collect();
    if !all.contains(&work.dataset) {
        return Err(RunFailure::Failed(format!(
            "Dataset not found: '{}'",
            work.dataset
        )));
    }
    let covered = covered_datasets(&work.dataset, work.recursive, &work.exclude, &all);

    ctx.begin("snapshot")?;
    let outcome = take_snapshots(ctx, &zfs, work, &covered).await;
    let created = ctx.end("snapshot", outcome)?;

    let Some(retention) = &work.retention else {
        return Ok(());
    };
    ctx.begin("retention")?;
    let outcome = apply_retention(ctx, &zfs, work, retention, &covered, &created).await;
    ctx.end("retention", outcome)
}

/// Takes the task's snapshots; returns their full names.
///
/// A snapshot of this name that exists already (a second run within the
/// same minute of a minute-resolution schema) is the snapshot this run
/// wanted: it is kept and counted, not an error.
async fn take_snapshots(
    ctx: &mut RunContext<'_>,
    zfs: &Zfs,
    work: &SnapshotWork,
    covered: &[String],
) -> Result<(Vec<String>, String), RunFailure> {
    let wanted: Vec<String> = covered
        .iter()
        .map(|d| format!("{d}@{}", work.snapshot_name))
        .collect();
    let (existing, _) = zfs.list_snapshots(&work.dataset, work.recursive).await?;
    let existing: HashSet<String> = existing.into_iter().map(|s| s.name).collect();
    let missing: Vec<String> = wanted
        .iter()
        .filter(|n| !existing.contains(*n))
        .cloned()
        .collect();
    for name in wanted.iter().filter(|n| existing.contains(*n)) {
        ctx.log(format!("snapshot {name} exists already; kept"));
    }
    if missing.len() == wanted.len() && work.recursive && work.exclude.is_empty() {
        // One recursive snapshot is atomic across the whole tree.
        zfs.create_snapshots(&[format!("{}@{}", work.dataset, work.snapshot_name)], true)
            .await?;
    } else if !missing.is_empty() {
        zfs.create_snapshots(&missing, false).await?;
    }
    for name in &missing {
        ctx.log(format!("created snapshot {name}"));
    }
    let detail = format!(
        "{} snapshot(s) @{} ({} new)",
        wanted.len(),
        work.snapshot_name,
        missing.len()
    );
    Ok((wanted, detail))
}

/// Destroys the task's expired snapshots, and nothing else.
async fn apply_retention(
    ctx: &mut RunContext<'_>,
    zfs: &Zfs,
    work: &SnapshotWork,
    retention: &nasfleet_proto::v1::Retention,
    covered: &[String],
    created: &[String],
) -> Result<((), String), RunFailure> {
    // Guessing could destroy the base the next incremental replication needs.
    if !retention.protection_unknown.is_empty() {
        let detail = format!(
            "nothing destroyed: the snapshots replication needs could not be determined ({})",
            retention.protection_unknown
        );
        ctx.log(detail.clone());
        return Ok(((), detail));
    }
    let policy = RetentionPolicy {
        schema: NamingSchema::new(&retention.naming_schema)
            .map_err(|e| RunFailure::Failed(format!("naming schema: {e}")))?,
        lifetime: Duration::from_secs(retention.lifetime_secs),
        timezone: nasfleet_common::schedule::parse_timezone(&retention.timezone)
            .map_err(|e| RunFailure::Failed(e.to_string()))?,
        // Never destroy what this run just took, whatever the clocks say.
        protected: retention.protected.iter().chain(created).cloned().collect(),
    };
    let (snapshots, _) = zfs.list_snapshots(&work.dataset, work.recursive).await?;
    let names: Vec<String> = snapshots.into_iter().map(|s| s.name).collect();
    let covered_set: HashSet<String> = covered.iter().cloned().collect();
    let doomed = retention::expired(&names, &covered_set, &policy, chrono::Utc::now());
    for name in &doomed {
        ctx.check_cancelled()?;
        match zfs.destroy_snapshot(name).await {
            Ok(()) => ctx.log(format!("destroyed expired snapshot {name}")),
            // Someone destroyed it meanwhile: the goal is reached.
            Err(ZfsError::SnapshotNotFound { .. }) => {
                ctx.log(format!("expired snapshot {name} was already gone"))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((
        (),
        format!("{} expired snapshot(s) destroyed", doomed.len()),
    ))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covered_datasets_follow_recursion_and_exclusions() {
        let all: Vec<String> = [
            "tank",
            "tank/a",
            "tank/a/x",
            "tank/a/y",
            "tank/a/y/deep",
            "tank/ab",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(covered_datasets("tank/a", false, &[], &all), vec!["tank/a"]);
        assert_eq!(
            covered_datasets("tank/a", true, &["tank/a/y".into()], &all),
            vec!["tank/a", "tank/a/x"]
        );
        // "tank/ab" is a sibling, not a child, of "tank/a".
        assert_eq!(
            covered_datasets("tank/a", true, &[], &all),
            vec!["tank/a", "tank/a/x", "tank/a/y", "tank/a/y/deep"]
        );
    }

    #[tokio::test]
    async fn journal_reports_interrupted_runs_and_resends_results() {
        let dir = tempfile::tempdir().unwrap();
        let zfs = Arc::new(Zfs::new(crate::zfs::Dialect::Legacy, "test"));
        let identity = AgentIdentity {
            system: "nas1".into(),
            state_dir: dir.path().to_owned(),
            replication_key: crate::ssh::ReplicationKey {
                private_key: dir.path().join("key"),
                public_key: String::new(),
            },
            pools: Vec::new(),
        };
        let journal = Journal {
            dir: dir.path().join("runs"),
        };
        tokio::fs::create_dir_all(&journal.dir).await.unwrap();
        journal
            .write(
                7,
                "work",
                StartRun {
                    run_id: 7,
                    work: None,
                }
                .encode_to_vec(),
            )
            .await
            .unwrap();
        let manager = RunManager::open(identity, zfs).await.unwrap();
        let result = manager.journal.result(7).await.unwrap();
        assert_eq!(result.state(), RunState::Failed);
        assert!(result.reason.contains("restarted"));

        // A session receives the pending result; an ack forgets it.
        let (tx, mut rx) = mpsc::channel(4);
        manager.attach(tx).await;
        assert!(matches!(
            rx.recv().await.and_then(|m| m.body),
            Some(Up::RunResult(RunResult { run_id: 7, .. }))
        ));
        // A duplicate StartRun for a finished run re-sends, never re-runs.
        manager
            .start(StartRun {
                run_id: 7,
                work: None,
            })
            .await;
        assert!(matches!(
            rx.recv().await.and_then(|m| m.body),
            Some(Up::RunResult(RunResult { run_id: 7, .. }))
        ));
        assert!(manager.active_ids().is_empty());
        manager.ack(7).await;
        assert!(!manager.journal.has(7));
    }
}
