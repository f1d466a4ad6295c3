//! The run engine: a run is recorded before it is dispatched, follows its agent's reports to a true outcome, and fans progress out to watchers.
//!
//! Durability rules: a run and the work it was sent with are flushed to the
//! store before the agent hears of it; while a run is active its work stays
//! in the store, so after a controller restart it can be offered to the
//! agent again (the agent ignores run ids it already has and re-sends the
//! results it still holds). A result is acknowledged to the agent only after
//! it is flushed.

use crate::engine::access::Actor;
use crate::engine::error::FleetError;
use crate::engine::kinds::{state_word, systems_of};
use crate::engine::run_hub::LOG_TAIL_LINES;
use crate::engine::state::SharedState;
use crate::store::{StoreError, Write, is_final, is_success};
use chrono::{DateTime, Utc};
use nasfleet_common::status::now_unix_ms;
use nasfleet_proto::v1::controller_message::Body as Down;
use nasfleet_proto::v1::{
    AckRunResult, CancelRun, ControllerMessage, Run, RunPart, RunResult, RunState, RunUpdate,
    StartRun, Task, start_run,
};
use nasfleet_proto::v1::{RunTrigger, TaskKind};

/// Why a run started.
#[derive(Debug, Clone)]
pub enum Trigger {
    Manual { by: String },
    Scheduled { at: DateTime<Utc> },
}

/// Ends a run in the store with `state` and `reason`, and tells watchers.
async fn finish(
    state: &SharedState,
    mut run: Run,
    final_state: RunState,
    reason: String,
) -> Result<Run, FleetError> {
    close_run(&mut run, final_state, reason);
    let limit = state.history_limit;
    let stored = run.clone();
    state
        .store
        .write(move |w| store_final(w, &stored, limit))
        .await?;
    state.runs.finish(&run);
    Ok(run)
}

fn close_run(run: &mut Run, final_state: RunState, reason: String) {
    run.set_state(final_state);
    run.reason = reason;
    run.finished_unix_ms = now_unix_ms();
    run.progress = None;
}

/// Writes a final run and trims its task's history, in the same write.
fn store_final(w: &Write<'_>, run: &Run, history_limit: usize) -> Result<(), StoreError> {
    w.put_run(run)?;
    if let Err(e) = w.prune_runs(run.task_id, history_limit) {
        tracing::warn!(task_id = run.task_id, error = %e, "cannot prune run history");
    }
    Ok(())
}

/// The run of a task that has not ended, if any.
pub fn active_run_of(state: &SharedState, task_id: u64) -> Result<Option<Run>, FleetError> {
    match state.store.running_run_of_task(task_id) {
        Some(id) => Ok(state.store.run(id)?.filter(|run| !is_final(run.state()))),
        None => Ok(None),
    }
}

/// When every part of a run has ended: the run's final state and reason.
/// One failed part fails the run; the reason names each failed part's
/// system when there are several parts.
fn settle(run: &Run) -> Option<(RunState, String)> {
    if run.parts.iter().any(|p| !is_final(p.state())) {
        return None;
    }
    let failed: Vec<&RunPart> = run
        .parts
        .iter()
        .filter(|p| !is_success(p.state()))
        .collect();
    if failed.is_empty() {
        let state = run.parts.first().map_or(RunState::Finished, |p| p.state());
        return Some((state, String::new()));
    }
    // Replication reasons always name the source system, even for one source.
    let name_systems = run.parts.len() > 1 || run.task_kind() == TaskKind::Replication;
    let reason = if !name_systems {
        failed[0].reason.clone()
    } else {
        failed
            .iter()
            .map(|p| format!("{}: {}", p.system, p.reason))
            .collect::<Vec<_>>()
            .join("; ")
    };
    Some((RunState::Failed, reason))
}

/// Ends one part of a stored run inside a store write (so two parts ending
/// at once cannot overwrite each other); finishes the run when it was the
/// last. Returns whether the run is now final.
fn end_part_in(
    w: &Write<'_>,
    run: &mut Run,
    system: &str,
    part_state: RunState,
    reason: String,
    history_limit: usize,
) -> Result<bool, StoreError> {
    if let Some(part) = run.parts.iter_mut().find(|p| p.system == system) {
        part.set_state(part_state);
        part.reason = reason;
    }
    w.remove_run_work(run.id, system)?;
    match settle(run) {
        Some((final_state, reason)) => {
            close_run(run, final_state, reason);
            store_final(w, run, history_limit)?;
            Ok(true)
        }
        None => {
            w.put_run(run)?;
            Ok(false)
        }
    }
}

/// Ends one part of run `run_id` (re-read in the write); finishes the run
/// when it was the last. Returns the run as stored, or `None` when the run
/// is gone or the part had ended already.
async fn end_part(
    state: &SharedState,
    run_id: u64,
    system: &str,
    part_state: RunState,
    reason: String,
) -> Result<Option<Run>, FleetError> {
    let limit = state.history_limit;
    let part_system = system.to_owned();
    let ended = state
        .store
        .write(move |w| {
            let Some(mut run) = w.run(run_id)? else {
                return Ok(None);
            };
            let open = run
                .parts
                .iter()
                .any(|p| p.system == part_system && !is_final(p.state()));
            if !open || is_final(run.state()) {
                return Ok(None);
            }
            let finished = end_part_in(w, &mut run, &part_system, part_state, reason, limit)?;
            Ok(Some((run, finished)))
        })
        .await?;
    let Some((run, finished)) = ended else {
        return Ok(None);
    };
    after_part(state, &run, system, finished);
    Ok(Some(run))
}

/// What follows a part's end outside the store: fresh inventories where
/// snapshots changed, and the final record to watchers.
fn after_part(state: &SharedState, run: &Run, system: &str, finished: bool) {
    if run.task_kind() == TaskKind::Replication {
        // Snapshots changed on both sides: retention's protected bases and
        // listings should see them soon.
        let _ = state.sessions.request_inventory(system);
        if let Ok(Some(task)) = state.store.task(run.task_id)
            && let Some(nasfleet_proto::v1::task_spec::Kind::Replication(spec)) =
                task.spec.and_then(|s| s.kind)
        {
            let _ = state.sessions.request_inventory(&spec.target_system);
        }
    }
    if finished {
        state.runs.finish(run);
    }
}

/// Records a scheduled fire that did not run (SKIPPED or MISSED) as a run of its own.
pub async fn record_not_run(
    state: &SharedState,
    task: &Task,
    system: &str,
    scheduled_for: DateTime<Utc>,
    run_state: RunState,
    reason: String,
) -> Result<Run, FleetError> {
    let now = now_unix_ms();
    let mut run = Run {
        id: 0,
        task_id: task.id,
        task_name: task.name.clone(),
        task_kind: task.kind,
        system: system.to_owned(),
        trigger: RunTrigger::Scheduled.into(),
        triggered_by: "scheduler".into(),
        scheduled_for_unix_ms: scheduled_for.timestamp_millis(),
        started_unix_ms: now,
        finished_unix_ms: now,
        reason,
        ..Default::default()
    };
    run.set_state(run_state);
    let limit = state.history_limit;
    let stored = run.clone();
    // The id is taken in the same durable write that records the run.
    run.id = state
        .store
        .write(move |w| {
            let mut stored = stored;
            stored.id = w.next_id()?;
            store_final(w, &stored, limit)?;
            Ok(stored.id)
        })
        .await?;
    tracing::info!(task = %task.name, run = run.id, state = ?run_state, reason = %run.reason, "scheduled fire not run");
    Ok(run)
}

/// What a run of a task is made of.
#[derive(Debug)]
pub enum RunPlan {
    /// The work for each system taking part (one for most tasks, one per
    /// source system for replication); run ids are filled in at the start.
    Parts(Vec<(String, StartRun)>),
    /// Why the work could not be prepared: the run ends FAILED with it at
    /// once, so the history says why a scheduled run did nothing.
    Unprepared(String),
}

/// Starts a run of `task` as `plan` says.
///
/// A task never runs twice at once: a manual start while it runs is refused;
/// a scheduled one is recorded as SKIPPED with the reason.
pub async fn start(
    state: &SharedState,
    task: &Task,
    trigger: Trigger,
    plan: RunPlan,
) -> Result<Run, FleetError> {
    // One write checks that no run of the task is running, numbers the run
    // and stores it with its work: the writer applies writes one at a
    // time, so two starts of one task cannot both pass the check, and
    // starts of many tasks share a flush.
    let task_id = task.id;
    let (prepared, unprepared) = match plan {
        RunPlan::Parts(parts) => (Some((task.clone(), trigger.clone(), parts)), None),
        RunPlan::Unprepared(reason) => (None, Some(reason)),
    };
    let started = state
        .store
        .write(move |w| {
            if let Some(active) = w.running_run_of_task(task_id) {
                return Ok(Err(active));
            }
            let id = w.next_id()?;
            let Some((task, trigger, mut parts)) = prepared else {
                return Ok(Ok((id, None)));
            };
            for (_, work) in &mut parts {
                work.run_id = id;
            }
            let run = new_run(&task, id, &trigger, &parts);
            w.put_run(&run)?;
            for (system, work) in &parts {
                w.put_run_work(id, system, work)?;
            }
            Ok(Ok((id, Some((run, parts)))))
        })
        .await?;
    let (id, stored) = match started {
        Ok(started) => started,
        Err(active) => {
            let reason = format!("Previous run {active} of this task is still running");
            return match trigger {
                Trigger::Manual { .. } => Err(FleetError::Conflict(format!(
                    "task '{}' is already running: run {active}",
                    task.name
                ))),
                Trigger::Scheduled { at } => {
                    let systems = systems_of(task).join(",");
                    record_not_run(state, task, &systems, at, RunState::Skipped, reason).await
                }
            };
        }
    };
    let Some((run, parts)) = stored else {
        let reason = unprepared.unwrap_or_default();
        tracing::warn!(task = %task.name, run = id, %reason, "run failed before dispatch");
        let run = new_run(task, id, &trigger, &[]);
        return finish(state, run, RunState::Failed, reason).await;
    };
    // Watchers may subscribe from here on.
    drop(state.runs.subscribe(id));
    for (system, _) in &parts {
        state.runs.add_participant(id, system);
    }
    dispatch(state, task, run, parts).await
}

/// A new RUNNING run of `task` with one RUNNING part per system in `parts`.
fn new_run(task: &Task, id: u64, trigger: &Trigger, parts: &[(String, StartRun)]) -> Run {
    let (trigger_kind, by, scheduled_for) = match trigger {
        Trigger::Manual { by } => (RunTrigger::Manual, by.clone(), 0),
        Trigger::Scheduled { at } => (
            RunTrigger::Scheduled,
            "scheduler".to_owned(),
            at.timestamp_millis(),
        ),
    };
    let mut run = Run {
        id,
        task_id: task.id,
        task_name: task.name.clone(),
        task_kind: task.kind,
        system: systems_of(task).join(","),
        trigger: trigger_kind.into(),
        triggered_by: by,
        scheduled_for_unix_ms: scheduled_for,
        started_unix_ms: now_unix_ms(),
        parts: parts
            .iter()
            .map(|(system, _)| {
                let mut part = RunPart {
                    system: system.clone(),
                    ..Default::default()
                };
                part.set_state(RunState::Running);
                part
            })
            .collect(),
        ..Default::default()
    };
    run.set_state(RunState::Running);
    run
}

/// Sends each system its part of a stored run; a system that cannot be
/// reached fails its part at once. Returns the run as it then stands.
async fn dispatch(
    state: &SharedState,
    task: &Task,
    mut run: Run,
    parts: Vec<(String, StartRun)>,
) -> Result<Run, FleetError> {
    let id = run.id;
    for (system, work) in parts {
        let message = ControllerMessage {
            body: Some(Down::StartRun(work)),
        };
        if let Err(e) = state.sessions.send(&system, message).await {
            tracing::warn!(task = %task.name, run = id, %system, reason = %e, "part failed before dispatch");
            if let Some(ended) =
                end_part(state, id, &system, RunState::Failed, e.to_string()).await?
            {
                run = ended;
            }
        } else {
            tracing::info!(task = %task.name, run = id, %system, trigger = ?run.trigger(), "run dispatched");
        }
    }
    Ok(run)
}

/// Records an agent's progress report, if that agent takes part in the run
/// (another system's agent must not write into a run's live view).
pub fn progress(state: &SharedState, system: &str, update: &RunUpdate) {
    if !state.runs.takes_part(update.run_id, system) {
        let taking_part = match state.store.run(update.run_id) {
            Ok(Some(run)) if !is_final(run.state()) => run
                .parts
                .iter()
                .any(|p| p.system == system && !is_final(p.state())),
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(run = update.run_id, error = %e, "cannot read run for a progress report");
                false
            }
        };
        if !taking_part {
            tracing::warn!(
                run = update.run_id,
                system,
                "progress from a system that takes no part in the run; ignored"
            );
            return;
        }
        state.runs.add_participant(update.run_id, system);
    }
    state.runs.apply_update(update);
}

/// Records an agent's final result, then acknowledges it so the agent can forget it.
pub async fn result(state: &SharedState, system: &str, result: RunResult) {
    let run_id = result.run_id;
    match record_result(state, system, result).await {
        Ok(()) => {
            let ack = ControllerMessage {
                body: Some(Down::AckRunResult(AckRunResult { run_id })),
            };
            if let Err(e) = state.sessions.send(system, ack).await {
                // The agent re-sends the result on its next connection; harmless.
                tracing::debug!(run = run_id, reason = %e, "result acknowledgement not delivered");
            }
        }
        Err(e) => {
            tracing::error!(run = run_id, error = %e, "cannot record run result; the agent will send it again")
        }
    }
}

async fn record_result(
    state: &SharedState,
    system: &str,
    result: RunResult,
) -> Result<(), FleetError> {
    let run_id = result.run_id;
    let reported = result.state();
    let part_state = if is_final(reported) {
        reported
    } else {
        tracing::warn!(run = result.run_id, state = ?reported, "agent reported a non-final result; counting it as FAILED");
        RunState::Failed
    };
    let limit = state.history_limit;
    let part_system = system.to_owned();
    // Read, merge and write in one store write: the parts of a multi-system
    // run report independently and must not overwrite each other.
    let outcome = state
        .store
        .write(move |w| {
            let Some(mut run) = w.run(result.run_id)? else {
                return Ok(ResultOutcome::UnknownRun);
            };
            let Some(part) = run.parts.iter().find(|p| p.system == part_system) else {
                return Ok(ResultOutcome::NotAPart);
            };
            if is_final(run.state()) || is_final(part.state()) {
                return Ok(ResultOutcome::AlreadyEnded);
            }
            for step in result.steps {
                match run.steps.iter_mut().find(|s| s.name == step.name) {
                    Some(existing) => *existing = step,
                    None => run.steps.push(step),
                }
            }
            run.bytes += result.bytes;
            run.log_tail.extend(result.log_tail);
            let excess = run.log_tail.len().saturating_sub(LOG_TAIL_LINES);
            run.log_tail.drain(..excess);
            let finished =
                end_part_in(w, &mut run, &part_system, part_state, result.reason, limit)?;
            Ok(ResultOutcome::Ended(Box::new(run), finished))
        })
        .await?;
    match outcome {
        ResultOutcome::UnknownRun => {
            tracing::warn!(
                run = run_id,
                system,
                "result for an unknown run (task deleted?)"
            )
        }
        ResultOutcome::NotAPart => tracing::warn!(
            run = run_id,
            system,
            "result from a system that takes no part in the run; ignored"
        ),
        // Already ended here (cancelled while the system was offline); the first outcome stays.
        ResultOutcome::AlreadyEnded => tracing::info!(
            run = run_id,
            system,
            "late result for a finished run; keeping the recorded outcome"
        ),
        ResultOutcome::Ended(run, finished) => {
            after_part(state, &run, system, finished);
            tracing::info!(run = run.id, task = %run.task_name, system, part = ?part_state, state = ?run.state(), reason = %run.reason, "run part ended");
        }
    }
    Ok(())
}

/// What recording one result did.
enum ResultOutcome {
    UnknownRun,
    NotAPart,
    AlreadyEnded,
    Ended(Box<Run>, bool),
}

/// After an agent (re)connects: offer it again every active run it does not
/// report as running (it may never have received it, or may hold its result),
/// and tell it to stop runs that ended here while it was away.
pub async fn reconcile(state: &SharedState, system: &str, agent_active: &[u64]) {
    let active = match state.store.active_runs() {
        Ok(active) => active,
        Err(e) => {
            tracing::error!(error = %e, "cannot read active runs for reconciliation");
            return;
        }
    };
    for (run, part_system, mut work) in active {
        if part_system != system || agent_active.contains(&run.id) {
            continue;
        }
        // The target's listing was taken for the first dispatch; by now it
        // may be stale, and the source lists over ssh without it.
        if let Some(start_run::Work::Replication(replication)) = work.work.as_mut() {
            replication.target_replicas.clear();
        }
        tracing::info!(
            run = run.id,
            system,
            "offering an active run to its agent again"
        );
        let message = ControllerMessage {
            body: Some(Down::StartRun(work)),
        };
        if let Err(e) = state.sessions.send(system, message).await {
            tracing::warn!(run = run.id, reason = %e, "re-dispatch failed; will retry on next connection");
        }
    }
    for run_id in agent_active {
        let ended = match state.store.run(*run_id) {
            Ok(Some(run)) => {
                is_final(run.state())
                    || run
                        .parts
                        .iter()
                        .find(|p| p.system == system)
                        .is_none_or(|p| is_final(p.state()))
            }
            Ok(None) => true,
            Err(_) => false,
        };
        if ended {
            let cancel = ControllerMessage {
                body: Some(Down::CancelRun(CancelRun {
                    run_id: *run_id,
                    by: "controller (run already ended)".into(),
                })),
            };
            let _ = state.sessions.send(system, cancel).await;
        }
    }
}

/// Cancels an active run: the agent kills its processes and reports FAILED
/// `Cancelled by USER`. When the system is offline the run ends here at once
/// and the agent is told to stop when it reconnects.
pub async fn cancel(state: &SharedState, actor: &Actor, run_id: u64) -> Result<Run, FleetError> {
    let mut run = seen_run(state, actor, run_id)?;
    let by = actor.name();
    if is_final(run.state()) {
        return Err(FleetError::Conflict(format!(
            "run {run_id} already ended ({})",
            state_word(run.state())
        )));
    }
    let running: Vec<String> = run
        .parts
        .iter()
        .filter(|p| !is_final(p.state()))
        .map(|p| p.system.clone())
        .collect();
    for system in running {
        let message = ControllerMessage {
            body: Some(Down::CancelRun(CancelRun {
                run_id,
                by: by.to_owned(),
            })),
        };
        match state.sessions.send(&system, message).await {
            Ok(()) => tracing::info!(run = run_id, %system, by, "cancel requested"),
            Err(e) => {
                tracing::info!(run = run_id, %system, by, reason = %e, "cancelled while the system is unreachable");
                if let Some(ended) = end_part(
                    state,
                    run_id,
                    &system,
                    RunState::Failed,
                    format!("Cancelled by {by}"),
                )
                .await?
                {
                    run = ended;
                }
            }
        }
    }
    Ok(state.runs.overlay(run))
}

/// The current record of a run, with live progress merged in.
pub fn get(state: &SharedState, actor: &Actor, run_id: u64) -> Result<Run, FleetError> {
    Ok(state.runs.overlay(seen_run(state, actor, run_id)?))
}

/// Run `run_id` as stored, if `actor` sees it; one they do not see is
/// answered as missing.
fn seen_run(state: &SharedState, actor: &Actor, run_id: u64) -> Result<Run, FleetError> {
    state
        .store
        .run(run_id)?
        .filter(|run| sees_run(state, actor, run))
        .ok_or_else(|| FleetError::NotFound(format!("run {run_id} does not exist")))
}

/// Whether `actor` sees `run`: they see its task, or, once the task is
/// deleted, every system the run took part on.
pub fn sees_run(state: &SharedState, actor: &Actor, run: &Run) -> bool {
    if matches!(actor, Actor::Controller) {
        return true;
    }
    match state.store.task(run.task_id) {
        Ok(Some(task)) => actor.sees_task(&task),
        Ok(None) => actor.sees_all(
            run.parts.iter().map(|p| p.system.as_str()).chain(
                run.system
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty()),
            ),
        ),
        // A store error hides the run rather than showing it to the wrong person.
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::engine::state::test_state as state;
    use nasfleet_proto::v1::Progress;

    fn task() -> Task {
        Task {
            id: 42,
            name: "nas1:tank/data".into(),
            kind: nasfleet_proto::v1::TaskKind::Snapshot.into(),
            ..Default::default()
        }
    }

    fn no_work() -> RunPlan {
        RunPlan::Parts(vec![(
            "nas1".into(),
            StartRun {
                run_id: 0,
                work: None,
            },
        )])
    }

    #[tokio::test]
    async fn a_run_for_an_offline_system_fails_at_once_and_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        let run = start(
            &state,
            &task(),
            Trigger::Manual { by: "admin".into() },
            no_work(),
        )
        .await
        .unwrap();
        assert_eq!(run.state(), RunState::Failed);
        assert_eq!(run.reason, "System 'nas1' is offline");
        let stored = state.store.run(run.id).unwrap().unwrap();
        assert_eq!(stored.state(), RunState::Failed);
        assert!(state.store.active_runs().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_task_never_runs_twice_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        let mut active = Run {
            id: 7,
            task_id: 42,
            ..Default::default()
        };
        active.set_state(RunState::Running);
        state
            .store
            .write(move |w| {
                w.put_run(&active)?;
                w.put_run_work(
                    7,
                    "nas1",
                    &StartRun {
                        run_id: 7,
                        work: None,
                    },
                )
            })
            .await
            .unwrap();

        let manual = start(
            &state,
            &task(),
            Trigger::Manual { by: "admin".into() },
            no_work(),
        )
        .await;
        assert!(
            matches!(&manual, Err(FleetError::Conflict(m)) if m.contains("already running: run 7")),
            "{manual:?}"
        );

        let due = chrono::Utc::now();
        let skipped = start(&state, &task(), Trigger::Scheduled { at: due }, no_work())
            .await
            .unwrap();
        assert_eq!(skipped.state(), RunState::Skipped);
        assert_eq!(
            skipped.reason,
            "Previous run 7 of this task is still running"
        );
        assert_eq!(skipped.scheduled_for_unix_ms, due.timestamp_millis());
        // Still exactly one active run; the skip is history only.
        assert_eq!(state.store.active_runs().unwrap().len(), 1);
        assert_eq!(state.store.runs_of_task(42, 10).unwrap().len(), 2);
    }

    /// A two-part run stored as dispatched to nas1 and nas2.
    async fn two_part_run(state: &SharedState) -> Run {
        let mut run = Run {
            id: 9,
            task_id: 42,
            task_kind: TaskKind::Replication.into(),
            parts: ["nas1", "nas2"]
                .iter()
                .map(|s| {
                    let mut part = RunPart {
                        system: (*s).into(),
                        ..Default::default()
                    };
                    part.set_state(RunState::Running);
                    part
                })
                .collect(),
            ..Default::default()
        };
        run.set_state(RunState::Running);
        let stored = run.clone();
        state
            .store
            .write(move |w| {
                w.put_run(&stored)?;
                for system in ["nas1", "nas2"] {
                    w.put_run_work(9, system, &StartRun::default())?;
                }
                Ok(())
            })
            .await
            .unwrap();
        run
    }

    #[tokio::test]
    async fn progress_is_taken_only_from_systems_in_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        let run = two_part_run(&state).await;
        let update = |bytes| RunUpdate {
            run_id: 9,
            progress: Some(Progress {
                bytes_done: bytes,
                ..Default::default()
            }),
            log_lines: vec![format!("line {bytes}")],
            step: None,
        };
        progress(&state, "rogue", &update(666));
        let shown = state.runs.overlay(run.clone());
        assert!(shown.progress.is_none() && shown.log_tail.is_empty());
        progress(&state, "nas2", &update(5));
        let shown = state.runs.overlay(run);
        assert_eq!(shown.progress.map(|p| p.bytes_done), Some(5));
        assert_eq!(shown.log_tail, vec!["line 5".to_owned()]);
    }

    /// Both parts report at the same moment: neither outcome may be lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn results_of_two_parts_at_once_both_count() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        two_part_run(&state).await;
        let report = |system: &'static str, outcome: RunState| {
            let state = state.clone();
            tokio::spawn(async move {
                let mut result = RunResult {
                    run_id: 9,
                    bytes: 10,
                    reason: format!("{system} says so"),
                    ..Default::default()
                };
                result.set_state(outcome);
                record_result(&state, system, result).await
            })
        };
        let (a, b) = (
            report("nas1", RunState::Finished),
            report("nas2", RunState::Failed),
        );
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
        let stored = state.store.run(9).unwrap().unwrap();
        assert_eq!(stored.state(), RunState::Failed);
        assert_eq!(stored.reason, "nas2: nas2 says so");
        assert_eq!(stored.bytes, 20);
        assert!(state.store.active_runs().unwrap().is_empty());
    }
}
