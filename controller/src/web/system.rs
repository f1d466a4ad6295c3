//! A system's page: its pools, datasets (snapshot counts, newest snapshot, covering tasks), snapshots with the form that takes a manual one, and Services with the SSH state and host-key fingerprints.

use super::ConsoleState;
use super::dashboard::pool_bar;
use super::error::PageResult;
use super::form::FormData;
use super::layout::{self, Nav, badge, csrf, when};
use super::session::Person;
use crate::api::subjects;
use crate::auth::{Call, Subject, settle};
use crate::engine::access::Access;
use crate::engine::systems;
use axum::extract::{Path, State};
use axum::response::Response;
use maud::html;
use nasfleet_common::naming::DEFAULT_MANUAL_SCHEMA;
use nasfleet_common::rate::human_bytes;
use nasfleet_common::status::system_status_word;
use nasfleet_proto::v1::CreateSnapshotRequest;

/// Snapshots listed on the page, newest first; the CLI lists them all.
const SNAPSHOTS_SHOWN: usize = 200;

pub async fn page(
    State(console): State<ConsoleState>,
    person: Person,
    Path(name): Path<String>,
) -> PageResult {
    render(&console, &person, &name, None).await
}

async fn render(
    console: &ConsoleState,
    person: &Person,
    name: &str,
    notice: Option<Result<String, String>>,
) -> PageResult {
    person
        .allow(console, Call::GetSystem, &subjects::system(name))
        .await?;
    let state = &console.state;
    let tz = state.timezone;
    let detail = systems::detail(state, &person.actor, name, false).await?;
    let summary = detail.summary.clone().unwrap_or_default();
    let inventory = detail.inventory.clone().unwrap_or_default();
    let datasets = if detail.inventory.is_some() {
        systems::datasets(state, &person.actor, name, false).await?
    } else {
        Vec::new()
    };
    let mut snapshots = inventory.snapshots.clone();
    snapshots.sort_by_key(|s| std::cmp::Reverse(s.creation_unix));
    let operate = person.can(Access::Operate);
    let body = html! {
        p {
            (badge(system_status_word(summary.status())))
            " Last seen " (when(tz, summary.last_seen_unix_ms))
            @if !inventory.zfs_version.is_empty() { " · ZFS " (inventory.zfs_version) }
            @if !summary.agent_version.is_empty() { " · agent " (summary.agent_version) }
        }
        @if !summary.inventory_problem.is_empty() {
            p.error #inventory-stale {
                "The inventory below is from " (when(tz, summary.inventory_unix_ms)) " and stale: " (summary.inventory_problem)
            }
        }
        @if let Some(notice) = &notice {
            @match notice {
                Ok(text) => p.notice #notice { (text) },
                Err(text) => p.error #notice { (text) },
            }
        }
        section {
            h2 { "Pools" }
            @if inventory.pools.is_empty() { p.empty { "No pools reported." } }
            @for pool in &inventory.pools { (pool_bar(&pool.name, pool.size, pool.free, &pool.health)) }
        }
        section #services {
            h2 { "Services" }
            table {
                thead { tr { th { "Service" } th { "State" } th { "Address" } th { "Host keys" } } }
                tbody {
                    @for service in &inventory.services {
                        tr data-service=(service.name) {
                            td { (service.name.to_uppercase()) }
                            td { (badge(if service.running { "RUNNING" } else { "STOPPED" }))
                                 @if !service.detail.is_empty() { " " span.muted { (service.detail) } } }
                            td { (service.address) }
                            td { @for fp in &service.host_key_fingerprints { code.fingerprint { (fp) } br; } }
                        }
                    }
                }
            }
        }
        section #datasets {
            h2 { "Datasets" }
            table {
                thead { tr { th { "Dataset" } th { "Used" } th { "Available" } th { "Snapshots" } th { "Newest snapshot" } th { "Snapshot tasks" } } }
                tbody {
                    @for d in &datasets {
                        @let ds = d.dataset.clone().unwrap_or_default();
                        tr data-dataset=(ds.name) {
                            td { (ds.name) @if ds.readonly { " " span.muted { "(read-only)" } } }
                            td { (human_bytes(ds.used)) }
                            td { (human_bytes(ds.available)) }
                            td { (d.snapshot_count) }
                            td { (d.newest_snapshot) }
                            td { (d.snapshot_tasks.join(", ")) }
                        }
                    }
                }
            }
        }
        section #snapshots {
            h2 { "Snapshots" }
            @if operate {
                form.row method="post" action={ "/systems/" (name) "/snapshots" } #take-snapshot {
                    (csrf(person))
                    label { "Dataset"
                        select name="dataset" {
                            @for d in &datasets { @let n = d.dataset.clone().unwrap_or_default().name; option value=(n) { (n) } }
                        }
                    }
                    label.check { input type="checkbox" name="recursive"; "Recursive" }
                    label { "Naming schema" input name="naming_schema" value=(DEFAULT_MANUAL_SCHEMA); }
                    button.primary type="submit" { "TAKE SNAPSHOT" }
                }
            }
            table {
                thead { tr { th { "Snapshot" } th { "Created" } th { "Used" } th { "Referenced" } th { "Holds" } } }
                tbody {
                    @for s in snapshots.iter().take(SNAPSHOTS_SHOWN) {
                        tr {
                            td { (s.name) }
                            td { (when(tz, s.creation_unix * 1000)) }
                            td { (human_bytes(s.used)) }
                            td { (human_bytes(s.referenced)) }
                            td { (s.holds) }
                        }
                    }
                }
            }
            @if snapshots.len() > SNAPSHOTS_SHOWN {
                p.muted { (snapshots.len() - SNAPSHOTS_SHOWN) " older snapshots not shown; `nasfleet snapshot list` lists all." }
            } @else if snapshots.is_empty() && inventory.snapshot_count > 0 {
                p.muted { (inventory.snapshot_count) " snapshots, too many to show here; the datasets above count them and `nasfleet snapshot list SYSTEM DATASET` lists them." }
            }
        }
    };
    Ok(layout::page(person, Nav::Dashboard, name, body))
}

pub async fn take_snapshot(
    State(console): State<ConsoleState>,
    person: Person,
    Path(name): Path<String>,
    form: FormData,
) -> PageResult<Response> {
    let request = CreateSnapshotRequest {
        system: name.clone(),
        dataset: form.text("dataset"),
        recursive: form.checked("recursive"),
        naming_schema: form.text("naming_schema"),
    };
    let object = request.subject();
    person
        .allow(&console, Call::CreateSnapshot, &object)
        .await?;
    let taken = systems::take_snapshot(
        &console.state,
        &person.actor,
        &request.system,
        &request.dataset,
        request.recursive,
        &request.naming_schema,
    )
    .await;
    let notice = match settle(
        &console.state,
        &person.origin(),
        Call::CreateSnapshot,
        &object,
        taken,
    )
    .await
    {
        Ok(created) => Ok(format!("Created {}", created.join(", "))),
        Err(e) => Err(e.to_string()),
    };
    render(&console, &person, &name, Some(notice)).await
}
