//! Handlers for tasks of every kind: create, check, estimate, edit, list, show, delete, enable and run now.

use super::Answer;
use crate::auth::{Call, authorize};
use crate::engine::state::SharedState;
use crate::engine::tasks;
use nasfleet_proto::v1::{
    ListTasksRequest, ListTasksResponse, ReplicationEstimate, Run, SetTaskEnabledRequest, Task,
    TaskRef, TaskSpec, UpdateTaskRequest,
};
use tonic::{Request, Response};

pub async fn create(state: &SharedState, request: Request<TaskSpec>) -> Answer<Task> {
    let caller = authorize(&state.store, &request, Call::CreateTask)?;
    let by = caller.principal.to_string();
    Ok(Response::new(
        tasks::create(state, request.into_inner(), &by).await?,
    ))
}

pub async fn check(state: &SharedState, request: Request<UpdateTaskRequest>) -> Answer<Task> {
    authorize(&state.store, &request, Call::ValidateTask)?;
    let req = request.into_inner();
    Ok(Response::new(
        tasks::check(state, &req.task, req.spec).await?,
    ))
}

pub async fn estimate(
    state: &SharedState,
    request: Request<UpdateTaskRequest>,
) -> Answer<ReplicationEstimate> {
    authorize(&state.store, &request, Call::EstimateReplication)?;
    let req = request.into_inner();
    Ok(Response::new(
        tasks::estimate(state, &req.task, req.spec).await?,
    ))
}

pub async fn update(state: &SharedState, request: Request<UpdateTaskRequest>) -> Answer<Task> {
    let caller = authorize(&state.store, &request, Call::UpdateTask)?;
    let req = request.into_inner();
    let by = caller.principal.to_string();
    Ok(Response::new(
        tasks::update(state, &req.task, req.spec, &by).await?,
    ))
}

pub fn list(state: &SharedState, request: Request<ListTasksRequest>) -> Answer<ListTasksResponse> {
    authorize(&state.store, &request, Call::ListTasks)?;
    let tasks = tasks::list(state, request.into_inner().kind())?;
    Ok(Response::new(ListTasksResponse { tasks }))
}

pub fn get(state: &SharedState, request: Request<TaskRef>) -> Answer<Task> {
    authorize(&state.store, &request, Call::GetTask)?;
    Ok(Response::new(tasks::get(
        state,
        &request.into_inner().task,
    )?))
}

pub async fn delete(state: &SharedState, request: Request<TaskRef>) -> Answer<Task> {
    let caller = authorize(&state.store, &request, Call::DeleteTask)?;
    let by = caller.principal.to_string();
    Ok(Response::new(
        tasks::delete(state, &request.into_inner().task, &by).await?,
    ))
}

pub async fn set_enabled(
    state: &SharedState,
    request: Request<SetTaskEnabledRequest>,
) -> Answer<Task> {
    let caller = authorize(&state.store, &request, Call::SetTaskEnabled)?;
    let req = request.into_inner();
    let by = caller.principal.to_string();
    Ok(Response::new(
        tasks::set_enabled(state, &req.task, req.enabled, &by).await?,
    ))
}

pub async fn run_now(state: &SharedState, request: Request<TaskRef>) -> Answer<Run> {
    let caller = authorize(&state.store, &request, Call::RunTask)?;
    Ok(Response::new(
        tasks::run_now(state, &request.into_inner().task, caller.name()).await?,
    ))
}
