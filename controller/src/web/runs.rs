//! The Runs screens: history fleet-wide and per task, one run's steps, per-dataset detail and log tail with live progress (the script listens to the run's event stream), and Cancel.

use super::ConsoleState;
use super::error::PageResult;
use super::form::FormData;
use super::layout::{self, Nav, badge, post_button, status_with_reason, when};
use super::session::Person;
use super::task_tables::seen_task;
use crate::auth::{Call, settle};
use crate::engine::access::Access;
use crate::engine::{runs, tasks};
use crate::store::is_final;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use nasfleet_common::rate::format_rate;
use nasfleet_common::rate::human_bytes;
use nasfleet_common::status::{run_state_word, task_kind_word, trigger_word};
use nasfleet_proto::v1::{Progress, Run, TaskKind};

/// Runs a history page lists.
const HISTORY_SHOWN: usize = 100;

pub async fn fleet(State(console): State<ConsoleState>, person: Person) -> PageResult {
    person.allow(&console, Call::ListRuns, "").await?;
    let runs = tasks::history(&console.state, &person.actor, "", HISTORY_SHOWN)?;
    let body = run_table(&console, &runs);
    Ok(layout::page(&person, Nav::Runs, "Runs", body))
}

pub async fn task_history(
    State(console): State<ConsoleState>,
    person: Person,
    Path(id): Path<u64>,
) -> PageResult {
    let task = seen_task(&console, &person, id, Call::ListRuns, TaskKind::Unspecified).await?;
    let runs = tasks::history(
        &console.state,
        &person.actor,
        &id.to_string(),
        HISTORY_SHOWN,
    )?;
    let body = html! {
        p { (task_kind_word(task.kind())) " task · " (task.schedule_description) " · next run " (when(console.state.timezone, task.next_run_unix_ms)) }
        @if person.can(Access::Operate) {
            (post_button(&person, &format!("/tasks/{id}/run"), "RUN NOW", "run-now", None))
        }
        (run_table(&console, &runs))
    };
    Ok(layout::page(
        &person,
        Nav::Runs,
        &format!("Runs of {}", task.name),
        body,
    ))
}

fn run_table(console: &ConsoleState, runs: &[Run]) -> Markup {
    let tz = console.state.timezone;
    html! {
        @if runs.is_empty() { p.empty { "No runs yet." } }
        @else {
            table #runs {
                thead { tr { th { "Run" } th { "Task" } th { "Systems" } th { "Trigger" } th { "Started" } th { "Finished" } th { "Bytes" } th { "State" } } }
                tbody {
                    @for run in runs {
                        tr data-run-row=(run.id) {
                            td { a href={ "/runs/" (run.id) } { (run.id) } }
                            td { a href={ "/tasks/" (run.task_id) "/runs" } { (run.task_name) } }
                            td { (run.system) }
                            td { (trigger_word(run.trigger())) " " span.muted { (run.triggered_by) } }
                            td { (when(tz, run.started_unix_ms)) }
                            td { (when(tz, run.finished_unix_ms)) }
                            td { (human_bytes(run.bytes)) }
                            td { (status_with_reason(run_state_word(run.state()), &run.reason)) }
                        }
                    }
                }
            }
        }
    }
}

/// `1.2 GiB of 4.0 GiB (30%), 85 MiB/s, 36 s left`, as much as is known.
pub fn progress_text(progress: &Progress) -> String {
    let mut text = human_bytes(progress.bytes_done);
    if let Some(percent) = progress
        .bytes_done
        .saturating_mul(100)
        .checked_div(progress.bytes_total)
    {
        text = format!(
            "{text} of {} ({}%)",
            human_bytes(progress.bytes_total),
            percent.min(100)
        );
    }
    if progress.bytes_per_second > 0 {
        text = format!("{text}, {}", format_rate(progress.bytes_per_second));
        if progress.bytes_total > progress.bytes_done {
            let left = (progress.bytes_total - progress.bytes_done) / progress.bytes_per_second;
            text = format!("{text}, {left} s left");
        }
    }
    if !progress.step.is_empty() {
        text = format!("{}: {text}", progress.step);
    }
    text
}

pub async fn page(
    State(console): State<ConsoleState>,
    person: Person,
    Path(id): Path<u64>,
) -> PageResult {
    person
        .allow(&console, Call::GetRun, &format!("run {id}"))
        .await?;
    let run = runs::get(&console.state, &person.actor, id)?;
    let tz = console.state.timezone;
    let state_word = run_state_word(run.state());
    let live = !is_final(run.state());
    let body = html! {
        div #run data-run=(run.id) data-live=(live) {
            dl.facts {
                dt { "Task" } dd { a href={ "/tasks/" (run.task_id) "/runs" } { (run.task_name) } }
                dt { "State" } dd #run-state { (status_with_reason(state_word, &run.reason)) }
                dt { "Systems" } dd { (run.system) }
                dt { "Trigger" } dd { (trigger_word(run.trigger())) " by " (run.triggered_by) }
                dt { "Started" } dd { (when(tz, run.started_unix_ms)) }
                dt { "Finished" } dd #run-finished { (when(tz, run.finished_unix_ms)) }
                dt { "Bytes" } dd #run-bytes { (human_bytes(run.bytes)) }
                dt { "Progress" } dd #run-progress { @if let Some(p) = &run.progress { (progress_text(p)) } @else { "-" } }
            }
            @if !run.reason.is_empty() { p.reason-text #run-reason { (run.reason) } }
            @if live && person.can(Access::Operate) {
                (post_button(&person, &format!("/runs/{id}/cancel"), "CANCEL", "danger", Some("Cancel this run?")))
            }
            h2 { "Systems" }
            table #run-parts {
                thead { tr { th { "System" } th { "State" } th { "Reason" } } }
                tbody { @for part in &run.parts { tr { td { (part.system) } td { (badge(run_state_word(part.state()))) } td { (part.reason) } } } }
            }
            h2 { "Steps" }
            table #run-steps {
                thead { tr { th { "Step" } th { "State" } th { "Bytes" } th { "Detail" } } }
                tbody { @for step in &run.steps { tr { td { (step.name) } td { (badge(run_state_word(step.state()))) } td { (human_bytes(step.bytes)) } td { (step.detail) } } } }
            }
            h2 { "Log" }
            pre.log #run-log { (run.log_tail.join("\n")) }
        }
    };
    Ok(layout::page(&person, Nav::Runs, &format!("Run {id}"), body))
}

pub async fn cancel(
    State(console): State<ConsoleState>,
    person: Person,
    Path(id): Path<u64>,
    _form: FormData,
) -> PageResult<Response> {
    let object = format!("run {id}");
    person.allow(&console, Call::CancelRun, &object).await?;
    let cancelled = runs::cancel(&console.state, &person.actor, id).await;
    settle(
        &console.state,
        &person.origin(),
        Call::CancelRun,
        &object,
        cancelled,
    )
    .await?;
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}
