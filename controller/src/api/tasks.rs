//! Handlers for tasks of every kind: create, check, estimate, edit, list, show, delete, enable and run now.

use super::{Answer, subjects};
use crate::auth::{Call, authorize, settle};
use crate::engine::state::SharedState;
use crate::engine::tasks;
use nasfleet_common::status::task_kind_word;
use nasfleet_proto::v1::{
    ListTasksRequest, ListTasksResponse, ReplicationEstimate, Run, SetTaskEnabledRequest, Task,
    TaskRef, TaskSpec, UpdateTaskRequest,
};
use tonic::{Request, Response};

/// How the audit log names a task: as stored when the call returned it,
/// else as the caller referred to it.
pub(crate) fn task_object(task: Option<&Task>, reference: &str) -> String {
    match task {
        Some(task) => format!(
            "{} task '{}' (id {})",
            task_kind_word(task.kind()),
            task.name,
            task.id
        ),
        None => subjects::task(reference),
    }
}

pub async fn create(state: &SharedState, request: Request<TaskSpec>) -> Answer<Task> {
    let (actor, origin) = authorize(state, &request, Call::CreateTask).await?;
    let created = tasks::create(state, &actor, request.into_inner()).await;
    let object = task_object(created.as_ref().ok(), "");
    Ok(Response::new(
        settle(state, &origin, Call::CreateTask, &object, created).await?,
    ))
}

pub async fn check(state: &SharedState, request: Request<UpdateTaskRequest>) -> Answer<Task> {
    let (actor, _) = authorize(state, &request, Call::ValidateTask).await?;
    let req = request.into_inner();
    Ok(Response::new(
        tasks::check(state, &actor, &req.task, req.spec).await?,
    ))
}

pub async fn estimate(
    state: &SharedState,
    request: Request<UpdateTaskRequest>,
) -> Answer<ReplicationEstimate> {
    let (actor, _) = authorize(state, &request, Call::EstimateReplication).await?;
    let req = request.into_inner();
    Ok(Response::new(
        tasks::estimate(state, &actor, &req.task, req.spec).await?,
    ))
}

pub async fn update(state: &SharedState, request: Request<UpdateTaskRequest>) -> Answer<Task> {
    let (actor, origin) = authorize(state, &request, Call::UpdateTask).await?;
    let req = request.into_inner();
    let updated = tasks::update(state, &actor, &req.task, req.spec).await;
    let object = task_object(updated.as_ref().ok(), &req.task);
    Ok(Response::new(
        settle(state, &origin, Call::UpdateTask, &object, updated).await?,
    ))
}

pub async fn list(
    state: &SharedState,
    request: Request<ListTasksRequest>,
) -> Answer<ListTasksResponse> {
    let (actor, _) = authorize(state, &request, Call::ListTasks).await?;
    let tasks = tasks::list(state, &actor, request.into_inner().kind())?;
    Ok(Response::new(ListTasksResponse { tasks }))
}

pub async fn get(state: &SharedState, request: Request<TaskRef>) -> Answer<Task> {
    let (actor, _) = authorize(state, &request, Call::GetTask).await?;
    Ok(Response::new(tasks::get(
        state,
        &actor,
        &request.into_inner().task,
    )?))
}

pub async fn delete(state: &SharedState, request: Request<TaskRef>) -> Answer<Task> {
    let (actor, origin) = authorize(state, &request, Call::DeleteTask).await?;
    let reference = request.into_inner().task;
    let deleted = tasks::delete(state, &actor, &reference).await;
    let object = task_object(deleted.as_ref().ok(), &reference);
    Ok(Response::new(
        settle(state, &origin, Call::DeleteTask, &object, deleted).await?,
    ))
}

pub async fn set_enabled(
    state: &SharedState,
    request: Request<SetTaskEnabledRequest>,
) -> Answer<Task> {
    let (actor, origin) = authorize(state, &request, Call::SetTaskEnabled).await?;
    let req = request.into_inner();
    let changed = tasks::set_enabled(state, &actor, &req.task, req.enabled).await;
    let object = format!(
        "{} ({})",
        task_object(changed.as_ref().ok(), &req.task),
        if req.enabled { "enable" } else { "disable" }
    );
    Ok(Response::new(
        settle(state, &origin, Call::SetTaskEnabled, &object, changed).await?,
    ))
}

pub async fn run_now(state: &SharedState, request: Request<TaskRef>) -> Answer<Run> {
    let (actor, origin) = authorize(state, &request, Call::RunTask).await?;
    let reference = request.into_inner().task;
    let started = tasks::run_now(state, &actor, &reference).await;
    let object = match &started {
        Ok(run) => format!(
            "task '{}' (id {}), run {}",
            run.task_name, run.task_id, run.id
        ),
        Err(_) => task_object(None, &reference),
    };
    Ok(Response::new(
        settle(state, &origin, Call::RunTask, &object, started).await?,
    ))
}
