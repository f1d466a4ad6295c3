//! The live side of active runs: latest progress, recent log lines and steps, which systems take part, and the channels watchers listen on.

use crate::store::is_final;
use nasfleet_proto::v1::{Progress, Run, RunEvent, RunStep, RunUpdate, run_event};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tokio::sync::broadcast;

/// Lines of run output kept with a run.
pub const LOG_TAIL_LINES: usize = 50;
/// Events a slow watcher may lag behind before it misses some.
const WATCH_BUFFER: usize = 256;

/// What is known about an active run beyond its stored record: the latest
/// progress and recent log lines. Kept in memory; the final result carries
/// the agent's own log tail into the store.
#[derive(Default)]
struct LiveRun {
    progress: Option<Progress>,
    log_tail: VecDeque<String>,
    steps: Vec<RunStep>,
    /// Systems known to take part, whose progress reports are accepted.
    participants: Vec<String>,
}

/// Live state of active runs and the channels their watchers listen on.
#[derive(Default)]
pub struct RunHub {
    inner: Mutex<HashMap<u64, (broadcast::Sender<RunEvent>, LiveRun)>>,
    /// Counts every start, progress report and end of any run, so pages
    /// that show task statuses know when to look again.
    changes: Changes,
}

struct Changes(tokio::sync::watch::Sender<u64>);

impl Default for Changes {
    fn default() -> Self {
        Changes(tokio::sync::watch::channel(0).0)
    }
}

impl RunHub {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, (broadcast::Sender<RunEvent>, LiveRun)>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes when any run starts, reports progress or ends.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.0.subscribe()
    }

    fn changed(&self) {
        self.changes.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Receives every event of `run_id` from now on.
    pub fn subscribe(&self, run_id: u64) -> broadcast::Receiver<RunEvent> {
        self.lock()
            .entry(run_id)
            .or_insert_with(|| (broadcast::channel(WATCH_BUFFER).0, LiveRun::default()))
            .0
            .subscribe()
    }

    /// Drops the channel of a run nobody watches and that has no live state
    /// (a watch of a finished run must not leave an entry behind).
    pub fn discard_if_unwatched(&self, run_id: u64) {
        let mut guard = self.lock();
        if guard
            .get(&run_id)
            .is_some_and(|(tx, live)| tx.receiver_count() == 0 && live.progress.is_none())
        {
            guard.remove(&run_id);
        }
    }

    /// The stored record with live progress, log lines and steps merged in.
    pub fn overlay(&self, mut run: Run) -> Run {
        if let Some((_, live)) = self.lock().get(&run.id)
            && !is_final(run.state())
        {
            run.progress = live.progress.clone();
            if !live.log_tail.is_empty() {
                run.log_tail = live.log_tail.iter().cloned().collect();
            }
            if !live.steps.is_empty() {
                run.steps = live.steps.clone();
            }
        }
        run
    }

    /// Whether `system` is known to take part in run `run_id`.
    pub(crate) fn takes_part(&self, run_id: u64, system: &str) -> bool {
        self.lock()
            .get(&run_id)
            .is_some_and(|(_, live)| live.participants.iter().any(|p| p == system))
    }

    pub(crate) fn add_participant(&self, run_id: u64, system: &str) {
        let mut guard = self.lock();
        let (_, live) = guard
            .entry(run_id)
            .or_insert_with(|| (broadcast::channel(WATCH_BUFFER).0, LiveRun::default()));
        if !live.participants.iter().any(|p| p == system) {
            live.participants.push(system.to_owned());
        }
        drop(guard);
        self.changed();
    }

    pub(crate) fn apply_update(&self, update: &RunUpdate) {
        let mut guard = self.lock();
        let (tx, live) = guard
            .entry(update.run_id)
            .or_insert_with(|| (broadcast::channel(WATCH_BUFFER).0, LiveRun::default()));
        if let Some(progress) = &update.progress {
            live.progress = Some(progress.clone());
            let _ = tx.send(RunEvent {
                body: Some(run_event::Body::Progress(progress.clone())),
            });
        }
        for line in &update.log_lines {
            live.log_tail.push_back(line.clone());
            if live.log_tail.len() > LOG_TAIL_LINES {
                live.log_tail.pop_front();
            }
            let _ = tx.send(RunEvent {
                body: Some(run_event::Body::LogLine(line.clone())),
            });
        }
        if let Some(step) = &update.step {
            match live.steps.iter_mut().find(|s| s.name == step.name) {
                Some(existing) => *existing = step.clone(),
                None => live.steps.push(step.clone()),
            }
        }
        drop(guard);
        self.changed();
    }

    /// Sends the final record to watchers and forgets the live state.
    pub(crate) fn finish(&self, run: &Run) {
        let removed = self.lock().remove(&run.id);
        if let Some((tx, _)) = removed {
            let _ = tx.send(RunEvent {
                body: Some(run_event::Body::Run(run.clone())),
            });
        }
        self.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nasfleet_proto::v1::RunState;

    #[test]
    fn hub_keeps_a_bounded_log_tail_and_latest_progress() {
        let hub = RunHub::default();
        let mut rx = hub.subscribe(1);
        for i in 0..(LOG_TAIL_LINES + 5) {
            hub.apply_update(&RunUpdate {
                run_id: 1,
                progress: Some(Progress {
                    bytes_done: i as u64,
                    ..Default::default()
                }),
                log_lines: vec![format!("line {i}")],
                step: None,
            });
        }
        let mut run = Run {
            id: 1,
            ..Default::default()
        };
        run.set_state(RunState::Running);
        let run = hub.overlay(run);
        assert_eq!(run.log_tail.len(), LOG_TAIL_LINES);
        assert_eq!(run.log_tail.last().map(String::as_str), Some("line 54"));
        assert_eq!(run.progress.map(|p| p.bytes_done), Some(54));
        assert!(matches!(
            rx.try_recv().ok().and_then(|e| e.body),
            Some(run_event::Body::Progress(_))
        ));
    }
}
