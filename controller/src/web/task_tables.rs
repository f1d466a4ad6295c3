//! What the task screens share: finding the task a page is about (after the role check), a task's live status cell, its Run Now, Edit and Delete buttons, and the replication task table the Replication and Data Protection screens both show.

use super::ConsoleState;
use super::error::PageResult;
use super::layout::{self, csrf, status_with_reason};
use super::session::Person;
use crate::api::subjects;
use crate::api::tasks::task_object;
use crate::auth::{Call, settle};
use crate::engine::access::Access;
use crate::engine::error::FleetError;
use crate::engine::tasks;
use maud::{Markup, html};
use nasfleet_common::replication_summary::{replication_spec, sources_text, target_text};
use nasfleet_common::status::run_state_word;
use nasfleet_proto::v1::task_spec::Kind;
use nasfleet_proto::v1::{RunState, Task, TaskKind, TaskSpec};

/// Task `id` as the person sees it, once they may make `call` on it; of
/// `kind` unless that is `Unspecified`.
pub async fn seen_task(
    console: &ConsoleState,
    person: &Person,
    id: u64,
    call: Call,
    kind: TaskKind,
) -> PageResult<Task> {
    let reference = id.to_string();
    person
        .allow(console, call, &subjects::task(&reference))
        .await?;
    let task = tasks::get(&console.state, &person.actor, &reference)?;
    let wanted = match kind {
        TaskKind::Unspecified => return Ok(task),
        _ if task.kind() == kind => return Ok(task),
        TaskKind::Rsync => "an rsync task",
        TaskKind::Replication => "a replication task",
        TaskKind::Snapshot => "a periodic snapshot task",
    };
    Err(FleetError::NotFound(format!("task {id} is not {wanted}")).into())
}

/// The status cell of a task row; the script updates it live by its id.
/// The call a form that saves a task makes, and how it names the task:
/// UpdateTask of `editing`, or CreateTask of a new one.
pub fn save_call(editing: Option<u64>) -> (Call, String) {
    match editing {
        Some(id) => (Call::UpdateTask, id.to_string()),
        None => (Call::CreateTask, String::new()),
    }
}

/// Creates a task, or changes task `editing`, audited as the API does;
/// the person's role was checked for [`save_call`]'s call before.
/// `spec` from a console form, plus what the forms do not show of the task
/// being edited (its stale-after, and a replication task's switch, overwrite,
/// raw, bandwidth and snapshot settings), kept as they are: an edit in the
/// console changes only what it shows.
pub fn with_hidden_settings(
    console: &ConsoleState,
    editing: Option<u64>,
    mut spec: TaskSpec,
) -> Result<TaskSpec, FleetError> {
    let Some(current) = editing
        .map(|id| console.state.store.task(id))
        .transpose()?
        .flatten()
        .and_then(|task| task.spec)
    else {
        return Ok(spec);
    };
    spec.stale_after = current.stale_after;
    if let (Some(Kind::Replication(new)), Some(Kind::Replication(old))) =
        (spec.kind.as_mut(), current.kind.as_ref())
    {
        spec.enabled = current.enabled;
        new.allow_overwrite = old.allow_overwrite;
        new.no_raw = old.no_raw;
        new.bandwidth_limit = old.bandwidth_limit;
        new.create_snapshot_task = old.create_snapshot_task;
    }
    Ok(spec)
}

pub async fn save_task(
    console: &ConsoleState,
    person: &Person,
    editing: Option<u64>,
    spec: TaskSpec,
) -> Result<Task, FleetError> {
    let (call, reference) = save_call(editing);
    let state = &console.state;
    let spec = with_hidden_settings(console, editing, spec)?;
    let saved = match editing {
        Some(_) => tasks::update(state, &person.actor, &reference, Some(spec)).await,
        None => tasks::create(state, &person.actor, spec).await,
    };
    let object = task_object(saved.as_ref().ok(), &reference);
    settle(state, &person.origin(), call, &object, saved).await
}

/// The status cell of a task row; the script updates it live by its id.
pub fn task_status_cell(task: &Task) -> Markup {
    let word = match task.status() {
        RunState::Unspecified => run_state_word(RunState::Pending),
        state => run_state_word(state),
    };
    html! {
        td.status-cell data-task-status=(task.id) {
            (status_with_reason(word, &task.last_error))
        }
    }
}

/// Run Now, Edit and Delete for people who may operate.
pub fn task_actions(person: &Person, task: &Task, back: &str, edit: Option<&str>) -> Markup {
    if !person.can(Access::Operate) {
        return html! {};
    }
    let confirm = format!("Delete task '{}'? Its history goes too.", task.name);
    html! {
        // The script posts it in the background; the status follows live.
        form.inline method="post" action={ "/tasks/" (task.id) "/run" } data-async="true" {
            (csrf(person))
            input type="hidden" name="back" value=(back);
            button.run-now type="submit" { "RUN NOW" }
        }
        @if let Some(edit) = edit { a.button href=(edit) { "EDIT" } }
        form.inline method="post" action={ "/tasks/" (task.id) "/delete" } data-confirm=(confirm) {
            (csrf(person))
            input type="hidden" name="back" value=(back);
            button.danger.delete type="submit" { "DELETE" }
        }
    }
}

pub fn replication_table(
    console: &ConsoleState,
    person: &Person,
    tasks: &[Task],
    back: &str,
) -> Markup {
    let tz = console.state.timezone;
    html! {
        @if tasks.is_empty() {
            p.empty { "No Replication Tasks configured" }
        } @else {
            table #replication-tasks {
                thead { tr { th { "Name" } th { "Sources" } th { "Target" } th { "Schedule" } th { "Next run" } th { "Status" } th { "Last run" } th {} } }
                tbody {
                    @for task in tasks {
                        @let spec = replication_spec(task);
                        tr data-task=(task.id) data-name=(task.name) {
                            td { a href={ "/tasks/" (task.id) "/runs" } { (task.name) } }
                            td { (sources_text(&spec)) }
                            td { (target_text(&spec)) }
                            td { (task.schedule_description) }
                            td { (layout::when(tz, task.next_run_unix_ms)) }
                            (task_status_cell(task))
                            td { (layout::when(tz, task.last_run_unix_ms)) }
                            td.actions { (task_actions(person, task, back, Some(&format!("/replication/{}/edit", task.id)))) }
                        }
                    }
                }
            }
        }
    }
}
