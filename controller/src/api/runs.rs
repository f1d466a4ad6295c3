//! Handlers for runs: list, show, watch live, cancel.

use super::Answer;
use crate::auth::{Call, authorize, settle};
use crate::engine::state::SharedState;
use crate::engine::{runs, tasks};
use crate::store::is_final;
use nasfleet_proto::v1::{ListRunsRequest, ListRunsResponse, Run, RunEvent, RunRef, run_event};
use std::pin::Pin;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Runs listed when the caller gives no limit.
const DEFAULT_RUN_LIMIT: usize = 20;
/// Events queued for one watcher before it is a slow watcher.
const WATCH_QUEUE: usize = 64;

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<RunEvent, Status>> + Send>>;

pub async fn list(
    state: &SharedState,
    request: Request<ListRunsRequest>,
) -> Answer<ListRunsResponse> {
    let (actor, _) = authorize(state, &request, Call::ListRuns).await?;
    let req = request.into_inner();
    let limit = match req.limit {
        0 => DEFAULT_RUN_LIMIT,
        n => n as usize,
    };
    Ok(Response::new(ListRunsResponse {
        runs: tasks::history(state, &actor, &req.task, limit)?,
    }))
}

pub async fn get(state: &SharedState, request: Request<RunRef>) -> Answer<Run> {
    let (actor, _) = authorize(state, &request, Call::GetRun).await?;
    Ok(Response::new(runs::get(
        state,
        &actor,
        request.into_inner().id,
    )?))
}

pub async fn cancel(state: &SharedState, request: Request<RunRef>) -> Answer<Run> {
    let (actor, origin) = authorize(state, &request, Call::CancelRun).await?;
    let id = request.into_inner().id;
    let cancelled = runs::cancel(state, &actor, id).await;
    let object = format!("run {id}");
    Ok(Response::new(
        settle(state, &origin, Call::CancelRun, &object, cancelled).await?,
    ))
}

/// The run as it is now, then every event of it until it ends, the watcher
/// goes away or the controller shuts down.
pub async fn watch(
    state: &SharedState,
    request: Request<RunRef>,
    mut shutdown: watch::Receiver<bool>,
) -> Answer<WatchStream> {
    let (actor, _) = authorize(state, &request, Call::WatchRun).await?;
    let id = request.into_inner().id;
    // Subscribe first, then read: a run ending in between is seen in the read.
    let mut events = state.runs.subscribe(id);
    let current = match runs::get(state, &actor, id) {
        Ok(run) => run,
        Err(e) => {
            state.runs.discard_if_unwatched(id);
            return Err(e.into());
        }
    };
    let (tx, rx) = mpsc::channel(WATCH_QUEUE);
    let done = is_final(current.state());
    // Room for the first event is guaranteed: the channel is new.
    let _ = tx.try_send(Ok(RunEvent {
        body: Some(run_event::Body::Run(current)),
    }));
    if done {
        state.runs.discard_if_unwatched(id);
    } else {
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    e = events.recv() => e,
                    _ = nasfleet_common::daemon::wait_for_shutdown(&mut shutdown) => return,
                };
                match event {
                    Ok(event) => {
                        let last = matches!(&event.body, Some(run_event::Body::Run(run)) if is_final(run.state()));
                        if tx.send(Ok(event)).await.is_err() || last {
                            return;
                        }
                    }
                    // A slow watcher missed some progress; carry on with newer events.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
    Ok(Response::new(Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )))
}
