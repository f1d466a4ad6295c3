//! Runs on this agent: executing the work the controller sends, keeping it going while the controller is away, and reporting each run's true outcome until the controller acknowledges it.
//!
//! The journal ([`super::journal`]) makes this survive disconnects and
//! agent restarts; each kind of run lives in a module of its own
//! ([`super::snapshot`], [`super::replication`], [`super::rsync`]).

use super::context::{AgentIdentity, RunContext, RunFailure};
use super::journal::{Journal, JournalError};
use super::uplink::Uplink;
use super::{replication, rsync, snapshot};
use crate::zfs::Zfs;
use nasfleet_common::status::now_unix_ms;
use nasfleet_proto::v1::agent_message::Body as Up;
use nasfleet_proto::v1::{AgentMessage, RunResult, RunState, StartRun, start_run};
use prost::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// Runs this agent knows about, and the current way up to the controller.
pub struct RunManager {
    journal: Journal,
    zfs: Arc<Zfs>,
    uplink: Uplink,
    /// Active runs and the switch that cancels each.
    active: Mutex<HashMap<u64, CancelSwitch>>,
    /// Who this agent is and the key it replicates with.
    pub(crate) identity: AgentIdentity,
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
        let journal = Journal::create(identity.state_dir.join("runs")).await?;
        let (work, results) = journal.entries();
        for run_id in work.into_iter().filter(|id| !results.contains(id)) {
            tracing::warn!(run = run_id, "run was interrupted by an agent restart");
            let result = failed_result(
                run_id,
                "The agent restarted while this run was in progress; it was not completed".into(),
            );
            journal
                .write(run_id, "result", result.encode_to_vec())
                .await?;
        }
        Ok(Arc::new(RunManager {
            journal,
            zfs,
            uplink: Uplink::default(),
            active: Mutex::new(HashMap::new()),
            identity,
        }))
    }

    fn active_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, CancelSwitch>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs executing right now (told to the controller in Hello).
    pub fn active_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.active_lock().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// A session started: results the controller has not acknowledged go up first.
    pub async fn attach(&self, tx: mpsc::Sender<AgentMessage>) {
        self.uplink.set(Some(tx.clone()));
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
        self.uplink.set(None);
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
                self.uplink.send_result(result).await;
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
            self.uplink.send_result(result).await;
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
            manager.uplink.send_result(result).await;
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

    /// Runs one piece of work to its result.
    async fn execute(
        &self,
        work: StartRun,
        cancel: watch::Receiver<Option<String>>,
        cancel_flag: watch::Receiver<bool>,
    ) -> RunResult {
        let mut ctx = RunContext::new(
            &self.uplink,
            &self.identity,
            self.zfs.clone(),
            work.run_id,
            cancel,
            cancel_flag,
        );
        // rsync runs succeed as SUCCESS, the others as FINISHED (TrueNAS's words).
        let (outcome, success) = match work.work {
            Some(start_run::Work::Snapshot(work)) => {
                (snapshot::run(&mut ctx, &work).await, RunState::Finished)
            }
            Some(start_run::Work::Replication(work)) => {
                (replication::run(&mut ctx, &work).await, RunState::Finished)
            }
            Some(start_run::Work::Rsync(spec)) => {
                (rsync::run(&mut ctx, &spec).await, RunState::Success)
            }
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
        ctx.into_result(state, reason)
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

#[cfg(test)]
mod tests {
    use super::*;

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
