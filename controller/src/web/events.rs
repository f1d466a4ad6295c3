//! Live updates pushed by server-sent events: the statuses of the tasks a page lists (sent when any run starts, progresses or ends), and one run's progress, steps and end.

use super::ConsoleState;
use super::error::PageResult;
use super::runs::progress_text;
use super::session::Person;
use crate::auth::Call;
use crate::engine::access::Actor;
use crate::engine::runs;
use crate::engine::tasks;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use nasfleet_common::status::run_state_word;
use nasfleet_proto::v1::{Run, RunState, run_event};
use serde::Deserialize;
use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Tasks one stream follows at most (a page lists fewer).
const MAX_WATCHED_TASKS: usize = 1000;
/// Status changes are sent at most this often, so a busy fleet does not
/// flood a browser with progress.
const THROTTLE: Duration = Duration::from_millis(500);
/// How often a stream checks that its session is still open.
const SESSION_CHECK: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
pub struct TaskIds {
    #[serde(default)]
    ids: String,
}

fn stream(rx: mpsc::Receiver<Event>) -> Response {
    let events = tokio_stream::StreamExt::map(ReceiverStream::new(rx), Ok::<_, Infallible>);
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The statuses of tasks `ids` as the lists show them: the word, the
/// reason of a failure, and progress while one runs. Tasks the actor does
/// not see (or that are gone) are left out; the active runs are read once.
fn task_statuses(
    console: &ConsoleState,
    actor: &Actor,
    ids: &[u64],
) -> Vec<(u64, serde_json::Value)> {
    let active: HashMap<u64, Run> = console
        .state
        .store
        .active_runs()
        .unwrap_or_default()
        .into_iter()
        .map(|(run, _, _)| (run.task_id, run))
        .collect();
    ids.iter()
        .filter_map(|&id| {
            let task = tasks::get(&console.state, actor, &id.to_string()).ok()?;
            let state = match task.status() {
                RunState::Unspecified => RunState::Pending,
                state => state,
            };
            let progress = active
                .get(&id)
                .and_then(|run| console.state.runs.overlay(run.clone()).progress)
                .map(|p| progress_text(&p))
                .unwrap_or_default();
            Some((
                id,
                serde_json::json!({
                    "id": id,
                    "status": run_state_word(state),
                    "reason": task.last_error,
                    "progress": progress,
                }),
            ))
        })
        .collect()
}

pub async fn tasks(
    State(console): State<ConsoleState>,
    person: Person,
    Query(query): Query<TaskIds>,
) -> PageResult {
    person.allow(&console, Call::ListTasks, "").await?;
    let ids: Vec<u64> = query
        .ids
        .split(',')
        .filter_map(|id| id.trim().parse().ok())
        .take(MAX_WATCHED_TASKS)
        .collect();
    let (tx, rx) = mpsc::channel(16);
    let mut changes = console.state.runs.changes();
    let mut shutdown = console.shutdown.clone();
    tokio::spawn(async move {
        let mut sent: HashMap<u64, serde_json::Value> = HashMap::new();
        loop {
            // Store reads for up to a thousand tasks: off the runtime.
            let (reading, actor, wanted) = (console.clone(), person.actor.clone(), ids.clone());
            let Ok(statuses) =
                tokio::task::spawn_blocking(move || task_statuses(&reading, &actor, &wanted)).await
            else {
                return;
            };
            for (id, now) in statuses {
                if sent.get(&id) != Some(&now) {
                    let event = Event::default().event("task").data(now.to_string());
                    if tx.send(event).await.is_err() {
                        return;
                    }
                    sent.insert(id, now);
                }
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(SESSION_CHECK) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() || !console.sessions.is_open(&person.session_id) {
                return;
            }
            tokio::time::sleep(THROTTLE).await;
        }
    });
    Ok(stream(rx))
}

pub async fn run(
    State(console): State<ConsoleState>,
    person: Person,
    Path(id): Path<u64>,
) -> PageResult {
    person
        .allow(&console, Call::WatchRun, &format!("run {id}"))
        .await?;
    // Subscribe before reading, so nothing between the two is missed.
    let mut events = console.state.runs.subscribe(id);
    let run = runs::get(&console.state, &person.actor, id)?;
    let (tx, rx) = mpsc::channel(64);
    let mut shutdown = console.shutdown.clone();
    tokio::spawn(async move {
        let state_event = |run: &nasfleet_proto::v1::Run| {
            Event::default().event("state").data(
                serde_json::json!({
                    "state": run_state_word(run.state()),
                    "reason": run.reason,
                    "bytes": run.bytes,
                    "final": crate::store::is_final(run.state()),
                })
                .to_string(),
            )
        };
        if tx.send(state_event(&run)).await.is_err() || crate::store::is_final(run.state()) {
            console.state.runs.discard_if_unwatched(id);
            return;
        }
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                _ = shutdown.changed() => break,
            };
            let event = match event {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            let (sse, last) = match event.body {
                Some(run_event::Body::Progress(p)) => (
                    Event::default().event("progress").data(progress_text(&p)),
                    false,
                ),
                Some(run_event::Body::LogLine(line)) => {
                    (Event::default().event("log").data(line), false)
                }
                Some(run_event::Body::Run(run)) => {
                    let last = crate::store::is_final(run.state());
                    (state_event(&run), last)
                }
                None => continue,
            };
            if tx.send(sse).await.is_err() || last {
                break;
            }
        }
        drop(events);
        console.state.runs.discard_if_unwatched(id);
    });
    Ok(stream(rx))
}
