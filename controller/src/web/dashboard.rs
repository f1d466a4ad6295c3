//! The Dashboard: the active alerts (with Dismiss), and a card per system the person sees, with its status, last seen time, pools (capacity bar and health), SSH service state, how many tasks use it, how many of those failed their latest run, and its alerts.

use super::ConsoleState;
use super::error::PageResult;
use super::form::FormData;
use super::layout::{self, Nav, badge, post_button, when};
use super::session::Person;
use crate::auth::{Call, settle};
use crate::engine::access::{Access, Actor};
use crate::engine::error::FleetError;
use crate::engine::kinds::systems_named;
use crate::engine::{alerts, systems, tasks};
use crate::store::AlertRecord;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use nasfleet_common::rate::human_bytes;
use nasfleet_common::status::system_status_word;
use nasfleet_proto::v1::{Inventory, RunState, SystemSummary, TaskKind};
use std::collections::HashMap;

/// Tasks that use a system, and how many of them failed their latest run.
#[derive(Default, Clone, Copy)]
struct TaskCounts {
    tasks: usize,
    failed: usize,
    alerts: usize,
}

pub async fn page(State(console): State<ConsoleState>, person: Person) -> PageResult {
    person.allow(&console, Call::ListSystems, "").await?;
    let state = &console.state;
    // Every system, its inventory, every task and alert: read off the runtime.
    let (reading, actor) = (console.clone(), person.actor.clone());
    let (active, cards) = tokio::task::spawn_blocking(move || gather(&reading, &actor))
        .await
        .map_err(|e| FleetError::Internal(format!("reading the dashboard: {e}")))??;
    let tz = state.timezone;
    let operate = person.can(Access::Operate);
    Ok(layout::page(
        &person,
        Nav::Dashboard,
        "Dashboard",
        html! {
            @if !active.is_empty() {
                section.alerts #alerts {
                    h2 { "Alerts" }
                    table {
                        tbody {
                            @for alert in &active {
                                tr data-alert=(alert.id) data-kind=(alert.kind) {
                                    td { (badge(&alert.level.to_uppercase())) }
                                    td { (alert.object) }
                                    td.alert-text { (alert.text) }
                                    td.muted { "since " (when(tz, alert.first_seen_unix_ms)) }
                                    td.actions {
                                        @if let Some(by) = &alert.dismissed_by {
                                            span.muted { "dismissed by " (by) }
                                        } @else if operate {
                                            (post_button(&person, &format!("/alerts/{}/dismiss", alert.id), "DISMISS", "dismiss", None))
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if cards.is_empty() {
                p.empty { "No systems yet. An admin enrolls one with a join token (Tokens)." }
            }
            div.cards #systems {
                @for card in cards { (card) }
            }
        },
    ))
}

/// The active alerts and one card per system `actor` sees.
fn gather(
    console: &ConsoleState,
    actor: &Actor,
) -> Result<(Vec<AlertRecord>, Vec<Markup>), FleetError> {
    let state = &console.state;
    let summaries = systems::list(state, actor)?;
    let mut counts: HashMap<String, TaskCounts> = HashMap::new();
    for task in tasks::list(state, actor, TaskKind::Unspecified)? {
        for system in systems_named(&task) {
            let entry = counts.entry(system).or_default();
            entry.tasks += 1;
            if task.status() == RunState::Failed {
                entry.failed += 1;
            }
        }
    }
    let active = alerts::list(state, actor, false)?;
    for alert in &active {
        for system in &alert.systems {
            counts.entry(system.clone()).or_default().alerts += 1;
        }
    }
    let mut cards = Vec::with_capacity(summaries.len());
    for summary in &summaries {
        let inventory = systems::inventory_header(state, &summary.name)?;
        let count = counts.get(&summary.name).copied().unwrap_or_default();
        cards.push(card(console, summary, inventory.as_ref(), count));
    }
    Ok((active, cards))
}

fn card(
    console: &ConsoleState,
    summary: &SystemSummary,
    inventory: Option<&Inventory>,
    count: TaskCounts,
) -> Markup {
    let status = system_status_word(summary.status());
    let ssh = inventory.and_then(|i| i.services.iter().find(|s| s.name == "ssh"));
    html! {
        a.card.system href={ "/systems/" (summary.name) } data-system=(summary.name) {
            div.card-head {
                h2 { (summary.name) }
                (badge(status))
            }
            p.muted { "Last seen " (when(console.state.timezone, summary.last_seen_unix_ms)) }
            @match inventory {
                None => p.muted { "No inventory reported yet." },
                Some(inventory) => {
                    @for pool in &inventory.pools {
                        (pool_bar(&pool.name, pool.size, pool.free, &pool.health))
                    }
                }
            }
            dl.facts {
                dt { "SSH" }
                dd.ssh-state { @match ssh {
                    Some(s) if s.running => "RUNNING",
                    Some(_) => "STOPPED",
                    None => "unknown",
                } }
                dt { "Tasks" } dd.task-count { (count.tasks) }
                dt { "Failed" } dd.failed-count class=[(count.failed > 0).then_some("bad")] { (count.failed) }
                dt { "Alerts" } dd.alert-count class=[(count.alerts > 0).then_some("bad")] { (count.alerts) }
            }
        }
    }
}

/// A pool's used share as a bar, with its health.
pub fn pool_bar(name: &str, total: u64, free: u64, health: &str) -> Markup {
    let used = total.saturating_sub(free);
    let percent = (used.saturating_mul(100)).checked_div(total).unwrap_or(0);
    html! {
        div.pool data-pool=(name) {
            div.pool-line {
                span.pool-name { (name) }
                span class={ "health h-" (health) } { (health) }
                span.muted { (human_bytes(used)) " / " (human_bytes(total)) " (" (percent) "%)" }
            }
            // A meter colours itself past `low` (80 %) and `high` (90 %).
            meter.bar min="0" max="100" low="80" high="90" optimum="0" value=(percent) { (percent) "%" }
        }
    }
}

pub async fn dismiss_alert(
    State(console): State<ConsoleState>,
    person: Person,
    Path(id): Path<u64>,
    _form: FormData,
) -> PageResult<Response> {
    let object = format!("alert {id}");
    person.allow(&console, Call::DismissAlert, &object).await?;
    let dismissed = alerts::dismiss(&console.state, &person.actor, id).await;
    settle(
        &console.state,
        &person.origin(),
        Call::DismissAlert,
        &object,
        dismissed,
    )
    .await?;
    Ok(Redirect::to("/").into_response())
}
