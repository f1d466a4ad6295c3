//! The Data Protection screen: widgets for Periodic Snapshot Tasks, Replication Tasks and Rsync Tasks with their statuses, Run Now and delete with confirmation; the Add/Edit Rsync Task screen with every field of the CLI; and the Run Now and delete actions every task list shares.

use super::ConsoleState;
use super::error::{PageError, PageResult};
use super::form::FormData;
use super::layout::{self, Nav, csrf, field_error, page_number, paged, when};
use super::session::Person;
use super::task_tables::{
    replication_table, save_call, save_task, seen_task, task_actions, task_status_cell,
};
use crate::api::subjects;
use crate::api::tasks::task_object;
use crate::auth::{Call, settle};
use crate::engine::access::Access;
use crate::engine::error::FleetError;
use crate::engine::tasks;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use nasfleet_common::schedule::Schedule;
use nasfleet_proto::v1::task_spec::Kind;
use nasfleet_proto::v1::{RsyncDirection, RsyncMode, RsyncTaskSpec, Task, TaskKind, TaskSpec};
use std::collections::HashMap;

fn snapshot_of(task: &Task) -> Option<&nasfleet_proto::v1::SnapshotTaskSpec> {
    match task.spec.as_ref()?.kind.as_ref()? {
        Kind::Snapshot(s) => Some(s),
        _ => None,
    }
}

fn rsync_of(task: &Task) -> RsyncTaskSpec {
    match task.spec.as_ref().and_then(|s| s.kind.as_ref()) {
        Some(Kind::Rsync(r)) => r.clone(),
        _ => RsyncTaskSpec::default(),
    }
}

pub async fn page(
    State(console): State<ConsoleState>,
    person: Person,
    Query(query): Query<HashMap<String, String>>,
) -> PageResult {
    person.allow(&console, Call::ListTasks, "").await?;
    let state = &console.state;
    let tz = state.timezone;
    let all = tasks::list(state, &person.actor, TaskKind::Unspecified)?;
    let of = |kind| all.iter().filter(move |t| t.kind() == kind);
    let snapshot_all: Vec<&Task> = of(TaskKind::Snapshot).collect();
    let replication_all: Vec<Task> = of(TaskKind::Replication).cloned().collect();
    let rsync_all: Vec<&Task> = of(TaskKind::Rsync).collect();
    // Each widget pages on its own.
    let widget = |param| (page_number(&query, param), "/protection", param);
    let (snapshot_tasks, snapshot_pager) = {
        let (page, path, param) = widget("snapshots");
        paged(&snapshot_all, page, path, param)
    };
    let (replication_tasks, replication_pager) = {
        let (page, path, param) = widget("replication");
        paged(&replication_all, page, path, param)
    };
    let (rsync_tasks, rsync_pager) = {
        let (page, path, param) = widget("rsync");
        paged(&rsync_all, page, path, param)
    };
    let operate = person.can(Access::Operate);
    let back = "/protection";
    let body = html! {
        section.widget #snapshot-widget {
            h2 { "Periodic Snapshot Tasks" }
            @if snapshot_tasks.is_empty() {
                p.empty { "No Periodic Snapshot Tasks configured" }
            } @else {
                table #snapshot-tasks {
                    thead { tr { th { "System" } th { "Dataset" } th { "Recursive" } th { "Naming schema" } th { "Keep for" } th { "Schedule" } th { "Status" } th {} } }
                    tbody {
                        @for task in snapshot_tasks {
                            @if let Some(spec) = snapshot_of(task) {
                                tr data-task=(task.id) data-name=(task.name) {
                                    td { (spec.system) }
                                    td { (spec.dataset) }
                                    td { @if spec.recursive { "yes" } @else { "no" } }
                                    td { (spec.naming_schema) }
                                    td { (spec.lifetime) }
                                    td { (task.schedule_description) }
                                    (task_status_cell(task))
                                    td.actions { (task_actions(&person, task, back, None)) }
                                }
                            }
                        }
                    }
                }
                (snapshot_pager)
            }
        }
        section.widget #replication-widget {
            h2 { "Replication Tasks" }
            @if operate { p { a.button href="/replication/wizard" { "ADD" } } }
            (replication_table(&console, &person, replication_tasks, back))
            (replication_pager)
        }
        section.widget #rsync-widget {
            h2 { "Rsync Tasks" }
            @if operate { p { a.button.primary href="/rsync/new" #add-rsync { "ADD" } } }
            @if rsync_tasks.is_empty() {
                p.empty { "No Rsync Tasks configured" }
            } @else {
                table #rsync-tasks {
                    thead { tr { th { "Description" } th { "System" } th { "Path" } th { "Remote" } th { "Direction" } th { "Schedule" } th { "Next run" } th { "Status" } th {} } }
                    tbody {
                        @for task in rsync_tasks {
                            @let spec = rsync_of(task);
                            tr data-task=(task.id) data-name=(task.name) {
                                td { a href={ "/tasks/" (task.id) "/runs" } { (task.name) } }
                                td { (spec.system) }
                                td { (spec.path) }
                                td { (remote_text(&spec)) }
                                td { (direction_word(spec.direction())) }
                                td { (task.schedule_description) }
                                td { (when(tz, task.next_run_unix_ms)) }
                                (task_status_cell(task))
                                td.actions { (task_actions(&person, task, back, Some(&format!("/rsync/{}/edit", task.id)))) }
                            }
                        }
                    }
                }
                (rsync_pager)
            }
        }
    };
    Ok(layout::page(
        &person,
        Nav::Protection,
        "Data Protection",
        body,
    ))
}

fn remote_text(spec: &RsyncTaskSpec) -> String {
    match spec.mode() {
        RsyncMode::Ssh => format!("{}:{}", spec.remote_host, spec.remote_path),
        _ => format!(
            "{}::{}/{}",
            spec.remote_host, spec.remote_module, spec.remote_path
        )
        .trim_end_matches('/')
        .to_owned(),
    }
}

fn direction_word(direction: RsyncDirection) -> &'static str {
    match direction {
        RsyncDirection::Pull => "PULL",
        _ => "PUSH",
    }
}

/// Where to go after an action: a path of this console, never elsewhere.
fn back_to(form: &FormData, fallback: &str) -> String {
    let back = form.text("back");
    if back.starts_with('/') && !back.starts_with("//") && !back.contains('\\') {
        back
    } else {
        fallback.to_owned()
    }
}

pub async fn run_now(
    State(console): State<ConsoleState>,
    person: Person,
    Path(id): Path<u64>,
    form: FormData,
) -> PageResult<Response> {
    let reference = id.to_string();
    let object = subjects::task(&reference);
    person.allow(&console, Call::RunTask, &object).await?;
    let started = tasks::run_now(&console.state, &person.actor, &reference).await;
    settle(
        &console.state,
        &person.origin(),
        Call::RunTask,
        &object,
        started,
    )
    .await?;
    Ok(Redirect::to(&back_to(&form, "/protection")).into_response())
}

pub async fn delete(
    State(console): State<ConsoleState>,
    person: Person,
    Path(id): Path<u64>,
    form: FormData,
) -> PageResult<Response> {
    let reference = id.to_string();
    person
        .allow(&console, Call::DeleteTask, &subjects::task(&reference))
        .await?;
    let deleted = tasks::delete(&console.state, &person.actor, &reference).await;
    let object = task_object(deleted.as_ref().ok(), &reference);
    settle(
        &console.state,
        &person.origin(),
        Call::DeleteTask,
        &object,
        deleted,
    )
    .await?;
    Ok(Redirect::to(&back_to(&form, "/protection")).into_response())
}

/// The rsync form's answers: the spec, its schedule text and whether it
/// is enabled.
struct RsyncDraft {
    editing: Option<u64>,
    spec: RsyncTaskSpec,
    schedule: String,
    enabled: bool,
}

impl RsyncDraft {
    /// A new task with the CLI's defaults: module mode, push, hourly;
    /// recursive, times, compress and delay updates on.
    fn new() -> Self {
        RsyncDraft {
            editing: None,
            spec: RsyncTaskSpec {
                direction: RsyncDirection::Push as i32,
                mode: RsyncMode::Module as i32,
                recursive: true,
                times: true,
                compress: true,
                delay_updates: true,
                ..Default::default()
            },
            schedule: Schedule::hourly().expression().to_owned(),
            enabled: true,
        }
    }

    fn from_task(task: &Task) -> Self {
        RsyncDraft {
            editing: Some(task.id),
            spec: rsync_of(task),
            schedule: task.schedule.clone(),
            enabled: task.spec.as_ref().is_some_and(|s| s.enabled),
        }
    }

    fn from_form(form: &FormData) -> Self {
        let direction = match form.text("direction").as_str() {
            "PULL" => RsyncDirection::Pull,
            _ => RsyncDirection::Push,
        };
        let mode = match form.text("mode").as_str() {
            "SSH" => RsyncMode::Ssh,
            _ => RsyncMode::Module,
        };
        RsyncDraft {
            editing: form.text("editing").parse().ok(),
            spec: RsyncTaskSpec {
                system: form.text("system"),
                path: form.text("path"),
                user: form.text("user"),
                direction: direction as i32,
                description: form.text("description"),
                remote_host: form.text("remote_host"),
                mode: mode as i32,
                remote_module: form.text("remote_module"),
                // Unparseable text is 0, the mode's default port; the
                // controller checks the range.
                remote_port: form.text("remote_port").parse().unwrap_or(0),
                remote_path: form.text("remote_path"),
                validate_remote_path: form.checked("validate_remote_path"),
                recursive: form.checked("recursive"),
                times: form.checked("times"),
                compress: form.checked("compress"),
                archive: form.checked("archive"),
                delete: form.checked("delete"),
                quiet: form.checked("quiet"),
                preserve_permissions: form.checked("preserve_permissions"),
                preserve_xattrs: form.checked("preserve_xattrs"),
                delay_updates: form.checked("delay_updates"),
                auxiliary: form
                    .get("auxiliary")
                    .unwrap_or_default()
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect(),
            },
            schedule: form.text("schedule"),
            enabled: form.checked("enabled"),
        }
    }

    fn task_spec(&self) -> TaskSpec {
        TaskSpec {
            schedule: self.schedule.clone(),
            enabled: self.enabled,
            kind: Some(Kind::Rsync(self.spec.clone())),
            ..Default::default()
        }
    }
}

pub async fn rsync_new(State(console): State<ConsoleState>, person: Person) -> PageResult {
    person
        .allow(&console, Call::CreateTask, &subjects::task(""))
        .await?;
    rsync_form(&console, &person, &RsyncDraft::new(), &[], None)
}

pub async fn rsync_edit(
    State(console): State<ConsoleState>,
    person: Person,
    Path(id): Path<u64>,
) -> PageResult {
    let task = seen_task(&console, &person, id, Call::UpdateTask, TaskKind::Rsync).await?;
    rsync_form(&console, &person, &RsyncDraft::from_task(&task), &[], None)
}

pub async fn rsync_save(
    State(console): State<ConsoleState>,
    person: Person,
    form: FormData,
) -> PageResult<Response> {
    let draft = RsyncDraft::from_form(&form);
    let reference = draft.editing.map(|id| id.to_string()).unwrap_or_default();
    let state = &console.state;
    if form.text("go") == "check" {
        person
            .allow(&console, Call::ValidateTask, &subjects::task(&reference))
            .await?;
        return match tasks::check(state, &person.actor, &reference, Some(draft.task_spec())).await {
            Ok(task) => rsync_form(
                &console,
                &person,
                &draft,
                &[],
                Some(format!(
                    "The task is valid{}; it runs {}.",
                    if draft.spec.validate_remote_path {
                        " and the remote path was checked"
                    } else {
                        ""
                    },
                    task.schedule_description
                )),
            ),
            Err(e) => rsync_refused(&console, &person, &draft, e),
        };
    }
    let (call, reference) = save_call(draft.editing);
    person
        .allow(&console, call, &subjects::task(&reference))
        .await?;
    match save_task(&console, &person, draft.editing, draft.task_spec()).await {
        Ok(_) => Ok(Redirect::to("/protection").into_response()),
        Err(e) => rsync_refused(&console, &person, &draft, e),
    }
}

/// A refused save shown on the form, under its field when it names one.
fn rsync_refused(
    console: &ConsoleState,
    person: &Person,
    draft: &RsyncDraft,
    error: FleetError,
) -> PageResult<Response> {
    match &error {
        FleetError::Invalid { field, .. } => {
            let errors = [(field.clone(), error.to_string())];
            rsync_form(console, person, draft, &errors, None)
        }
        _ => Err(PageError::Fleet(error)),
    }
}

/// Every field the form shows; an error about any other field is shown at
/// the top.
const RSYNC_FIELDS: [&str; 11] = [
    "system",
    "path",
    "user",
    "remote_host",
    "remote_module",
    "remote_port",
    "remote_path",
    "schedule",
    "auxiliary",
    "description",
    "direction",
];

fn rsync_form(
    console: &ConsoleState,
    person: &Person,
    draft: &RsyncDraft,
    errors: &[(String, String)],
    notice: Option<String>,
) -> PageResult {
    let systems = person.system_names(console)?;
    let spec = &draft.spec;
    let ssh = spec.mode() == RsyncMode::Ssh;
    let check = |name: &str, label: &str, on: bool| {
        html! { label.check { input type="checkbox" name=(name) checked[on]; (label) } }
    };
    let title = if draft.editing.is_some() {
        "Edit Rsync Task"
    } else {
        "Add Rsync Task"
    };
    let body = html! {
        form.rsync #rsync-form method="post" action="/rsync/save" {
            (csrf(person))
            @if let Some(id) = draft.editing { input type="hidden" name="editing" value=(id); }
            @if let Some(notice) = &notice { p.notice #notice { (notice) } }
            @for (field, message) in errors {
                @if !RSYNC_FIELDS.contains(&field.as_str()) { p.error.form-error data-field=(field) { (message) } }
            }
            fieldset {
                legend { "Source" }
                label { "System"
                    select name="system" #rsync-system {
                        @for name in &systems { option value=(name) selected[*name == spec.system] { (name) } }
                    }
                }
                (field_error(errors, "system"))
                label { "Path" input name="path" #rsync-path value=(spec.path) placeholder="/mnt/tank/data"; }
                (field_error(errors, "path"))
                label { "User" input name="user" #rsync-user value=(spec.user) placeholder="root"; }
                (field_error(errors, "user"))
                label { "Direction"
                    select name="direction" #rsync-direction {
                        option value="PUSH" selected[spec.direction() != RsyncDirection::Pull] { "PUSH" }
                        option value="PULL" selected[spec.direction() == RsyncDirection::Pull] { "PULL" }
                    }
                }
                label { "Description" input name="description" #rsync-description value=(spec.description); }
                (field_error(errors, "description"))
            }
            fieldset {
                legend { "Remote" }
                label { "Remote Host" input name="remote_host" #rsync-remote-host value=(spec.remote_host) placeholder="backup.example or user@backup.example"; }
                (field_error(errors, "remote_host"))
                label { "Rsync Mode"
                    select name="mode" #rsync-mode {
                        option value="MODULE" selected[!ssh] { "Module" }
                        option value="SSH" selected[ssh] { "SSH" }
                    }
                }
                label data-mode="MODULE" { "Remote Module Name" input name="remote_module" #rsync-module value=(spec.remote_module); }
                (field_error(errors, "remote_module"))
                label { "Remote Port" input name="remote_port" #rsync-port value=(if spec.remote_port == 0 { String::new() } else { spec.remote_port.to_string() }) placeholder="22 for SSH, 873 for Module"; }
                (field_error(errors, "remote_port"))
                label { "Remote Path" input name="remote_path" #rsync-remote-path value=(spec.remote_path); }
                (field_error(errors, "remote_path"))
                span data-mode="SSH" { (check("validate_remote_path", "Validate Remote Path", spec.validate_remote_path)) }
            }
            fieldset {
                legend { "Schedule" }
                label { "Schedule" input name="schedule" #rsync-schedule value=(draft.schedule) placeholder="hourly, daily, weekly, monthly or a cron expression"; }
                (field_error(errors, "schedule"))
                (check("enabled", "Enabled", draft.enabled))
            }
            fieldset {
                legend { "More Options" }
                (check("recursive", "Recursive", spec.recursive))
                (check("times", "Times", spec.times))
                (check("compress", "Compress", spec.compress))
                (check("archive", "Archive", spec.archive))
                (check("delete", "Delete", spec.delete))
                (check("quiet", "Quiet", spec.quiet))
                (check("preserve_permissions", "Preserve Permissions", spec.preserve_permissions))
                (check("preserve_xattrs", "Preserve Extended Attributes", spec.preserve_xattrs))
                (check("delay_updates", "Delay Updates", spec.delay_updates))
                label { "Auxiliary Parameters (one per line)"
                    textarea name="auxiliary" #rsync-aux rows="4" { (spec.auxiliary.join("\n")) }
                }
                (field_error(errors, "auxiliary"))
            }
            div.actions {
                a.button href="/protection" { "CANCEL" }
                button type="submit" name="go" value="check" #rsync-check { "CHECK" }
                button.primary type="submit" name="go" value="save" #rsync-save { "SAVE" }
            }
        }
    };
    Ok(layout::page(person, Nav::Protection, title, body))
}
