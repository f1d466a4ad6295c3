//! What one executing run reports through and knows about: its steps, log tail, bytes and progress (sent up the uplink as they happen), its cancellation, the agent's identity and the host's zfs; and `RunFailure`, why a run stopped early.

use super::uplink::Uplink;
use crate::ssh::ReplicationKey;
use crate::zfs::{Zfs, ZfsError};
use nasfleet_common::status::now_unix_ms;
use nasfleet_proto::v1::{Progress, RunResult, RunState, RunStep, RunUpdate};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use thiserror::Error;
use tokio::sync::watch;

/// Lines of output kept with a result.
const LOG_TAIL_LINES: usize = 50;

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

/// What runs need to know about the agent itself.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    pub system: String,
    pub state_dir: PathBuf,
    pub replication_key: ReplicationKey,
    /// The pools this agent owns (empty = every pool): an rsync task's path
    /// must lie inside one of them, at create and again at every run.
    pub pools: Vec<String>,
}

/// What one executing run reports through.
pub(crate) struct RunContext<'a> {
    uplink: &'a Uplink,
    /// Who this agent is and the key it replicates with.
    pub(crate) identity: &'a AgentIdentity,
    /// This host's zfs.
    pub(crate) zfs: Arc<Zfs>,
    pub(crate) run_id: u64,
    cancel: watch::Receiver<Option<String>>,
    /// The same cancellation as a boolean, for child-process helpers.
    pub(crate) cancel_flag: watch::Receiver<bool>,
    steps: Vec<RunStep>,
    log: VecDeque<String>,
    /// Bytes transferred so far.
    pub(crate) bytes: u64,
    /// Bytes the current step moved so far: set by whoever moves data
    /// (a transfer's progress), read when the step ends, so a step that
    /// fails halfway still says how much it moved.
    step_bytes: Arc<AtomicU64>,
}

/// Sends a run's progress while the run's context is busy elsewhere (a
/// transfer holds it): copied out of [`RunContext::progress_reporter`].
#[derive(Clone, Copy)]
pub(crate) struct ProgressReporter<'a> {
    uplink: &'a Uplink,
    run_id: u64,
}

impl ProgressReporter<'_> {
    /// `moved` bytes so far in `step` of `total` when known, moving at
    /// `bytes_per_second` ([`rate`]); best effort, like every update.
    pub(crate) fn report(
        &self,
        step: &str,
        phase: String,
        moved: u64,
        total: Option<u64>,
        bytes_per_second: u64,
    ) {
        self.uplink.send_update(RunUpdate {
            run_id: self.run_id,
            progress: Some(Progress {
                phase,
                bytes_done: moved,
                bytes_total: total.unwrap_or(0),
                bytes_per_second,
                step: step.to_owned(),
            }),
            ..Default::default()
        });
    }
}

/// Bytes per second of `bytes` moved since `started`.
pub(crate) fn rate(bytes: u64, started: Instant) -> u64 {
    let secs = started.elapsed().as_secs_f64();
    if secs > 0.0 {
        (bytes as f64 / secs) as u64
    } else {
        0
    }
}

impl<'a> RunContext<'a> {
    pub(crate) fn new(
        uplink: &'a Uplink,
        identity: &'a AgentIdentity,
        zfs: Arc<Zfs>,
        run_id: u64,
        cancel: watch::Receiver<Option<String>>,
        cancel_flag: watch::Receiver<bool>,
    ) -> RunContext<'a> {
        RunContext {
            uplink,
            identity,
            zfs,
            run_id,
            cancel,
            cancel_flag,
            steps: Vec::new(),
            log: VecDeque::new(),
            bytes: 0,
            step_bytes: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn progress_reporter(&self) -> ProgressReporter<'a> {
        ProgressReporter {
            uplink: self.uplink,
            run_id: self.run_id,
        }
    }

    /// The run's result: how it ended, with the steps, bytes and log tail
    /// recorded on the way.
    pub(crate) fn into_result(self, state: RunState, reason: String) -> RunResult {
        RunResult {
            run_id: self.run_id,
            state: state.into(),
            reason,
            steps: self.steps,
            bytes: self.bytes,
            log_tail: self.log.into_iter().collect(),
            finished_unix_ms: now_unix_ms(),
        }
    }

    pub(crate) fn log(&mut self, line: String) {
        tracing::info!(run = self.run_id, "{line}");
        self.log.push_back(line.clone());
        if self.log.len() > LOG_TAIL_LINES {
            self.log.pop_front();
        }
        self.uplink.send_update(RunUpdate {
            run_id: self.run_id,
            log_lines: vec![line],
            ..Default::default()
        });
    }

    /// Where the current step's mover counts the bytes it moved.
    pub(crate) fn step_bytes(&self) -> Arc<AtomicU64> {
        self.step_bytes.clone()
    }

    pub(crate) fn step(&mut self, name: &str, state: RunState, detail: String) {
        let step = RunStep {
            name: name.to_owned(),
            state: state.into(),
            detail,
            bytes: self.step_bytes.load(Ordering::Relaxed),
        };
        match self.steps.iter_mut().find(|s| s.name == name) {
            Some(existing) => *existing = step.clone(),
            None => self.steps.push(step.clone()),
        }
        self.uplink.send_update(RunUpdate {
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
        self.step_bytes.store(0, Ordering::Relaxed);
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
