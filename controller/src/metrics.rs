//! Prometheus metrics on `metrics_listen` (plain HTTP, loopback only): systems by status, connected agents, pools' size, free space and health, each task's and each replicated dataset's last success, the last run's duration and bytes, runs in progress and finished since start by state, and active alerts by level.

use crate::engine::access::Actor;
use crate::engine::alerts;
use crate::engine::state::SharedState;
use crate::engine::systems::inventory;
use crate::store::is_final;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nasfleet_common::daemon::wait_for_shutdown;
use nasfleet_common::status::{run_state_word, task_kind_word};
use nasfleet_proto::v1::{RunState, SystemStatus, Task};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Runs of a task read for the last successful one and each dataset's.
const LOOKBACK_RUNS: usize = 50;

/// A metric family being written: its HELP and TYPE once, then samples.
struct Family<'a> {
    out: &'a mut String,
}

/// A label value as the exposition format wants it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
        }
    }
}

fn seconds(unix_ms: i64) -> f64 {
    unix_ms as f64 / 1000.0
}

/// Every metric, in the Prometheus text format.
pub fn render(state: &SharedState) -> Result<String, crate::engine::error::FleetError> {
    let mut out = String::new();
    let actor = Actor::Controller;
    let systems = crate::engine::systems::list(state, &actor)?;
    let online = systems
        .iter()
        .filter(|s| s.status() == SystemStatus::Online)
        .count();
    let mut f = Family::new(
        &mut out,
        "nasfleet_systems",
        "gauge",
        "Enrolled systems by status.",
    );
    f.sample("nasfleet_systems", &[("status", "online")], online as f64);
    f.sample(
        "nasfleet_systems",
        &[("status", "offline")],
        (systems.len() - online) as f64,
    );
    let mut f = Family::new(
        &mut out,
        "nasfleet_agents_connected",
        "gauge",
        "Agents connected to the controller now.",
    );
    f.sample(
        "nasfleet_agents_connected",
        &[],
        state.sessions.connected_count() as f64,
    );

    let mut pools = Vec::new();
    for system in &systems {
        if let Some(inv) = inventory(state, &system.name)? {
            for pool in inv.pools {
                pools.push((system.name.clone(), pool));
            }
        }
    }
    let mut f = Family::new(
        &mut out,
        "nasfleet_pool_size_bytes",
        "gauge",
        "Size of each pool.",
    );
    for (system, pool) in &pools {
        f.sample(
            "nasfleet_pool_size_bytes",
            &[("system", system), ("pool", &pool.name)],
            pool.size as f64,
        );
    }
    let mut f = Family::new(
        &mut out,
        "nasfleet_pool_free_bytes",
        "gauge",
        "Free space of each pool.",
    );
    for (system, pool) in &pools {
        f.sample(
            "nasfleet_pool_free_bytes",
            &[("system", system), ("pool", &pool.name)],
            pool.free as f64,
        );
    }
    let mut f = Family::new(
        &mut out,
        "nasfleet_pool_healthy",
        "gauge",
        "1 when the pool's health is ONLINE, else 0.",
    );
    for (system, pool) in &pools {
        let healthy = pool.health.eq_ignore_ascii_case("ONLINE");
        f.sample(
            "nasfleet_pool_healthy",
            &[
                ("system", system),
                ("pool", &pool.name),
                ("health", &pool.health),
            ],
            if healthy { 1.0 } else { 0.0 },
        );
    }

    task_metrics(state, &mut out)?;

    let mut by_level: BTreeMap<&str, usize> = ["info", "warning", "critical"]
        .into_iter()
        .map(|l| (l, 0))
        .collect();
    let active = alerts::list(state, &actor, false)?;
    for alert in &active {
        if let Some(count) = by_level.get_mut(alert.level.as_str()) {
            *count += 1;
        }
    }
    let mut f = Family::new(
        &mut out,
        "nasfleet_alerts",
        "gauge",
        "Active alerts by level.",
    );
    for (level, count) in by_level {
        f.sample("nasfleet_alerts", &[("level", level)], count as f64);
    }
    Ok(out)
}

fn task_metrics(
    state: &SharedState,
    out: &mut String,
) -> Result<(), crate::engine::error::FleetError> {
    let tasks: Vec<Task> = state.store.tasks()?;
    let mut success = Vec::new();
    let mut datasets = Vec::new();
    let mut last = Vec::new();
    for task in &tasks {
        let kind = task_kind_word(task.kind());
        let mut newest_final = None;
        let mut newest_success = None;
        let mut dataset_success = std::collections::HashMap::new();
        state
            .store
            .visit_runs_of_task(task.id, LOOKBACK_RUNS, |run| {
                if !is_final(run.state())
                    || matches!(run.state(), RunState::Skipped | RunState::Missed)
                {
                    return true;
                }
                if newest_final.is_none() {
                    newest_final = Some(run.clone());
                }
                if newest_success.is_none()
                    && matches!(run.state(), RunState::Finished | RunState::Success)
                {
                    newest_success = Some(run.finished_unix_ms);
                }
                alerts::record_successes(&run, &mut dataset_success);
                true
            })?;
        if let Some(at) = newest_success {
            success.push((task.name.clone(), kind, at));
        }
        // Sorted, so a scrape lists the datasets in the same order each time.
        for (dataset, at) in dataset_success.into_iter().collect::<BTreeMap<_, _>>() {
            datasets.push((task.name.clone(), dataset, at));
        }
        if let Some(run) = newest_final {
            last.push((task.name.clone(), kind, run));
        }
    }
    let mut f = Family::new(
        out,
        "nasfleet_task_last_success_timestamp_seconds",
        "gauge",
        "When each task's latest successful run ended (unix seconds).",
    );
    for (task, kind, at) in &success {
        f.sample(
            "nasfleet_task_last_success_timestamp_seconds",
            &[("task", task), ("kind", kind)],
            seconds(*at),
        );
    }
    let mut f = Family::new(
        out,
        "nasfleet_dataset_last_success_timestamp_seconds",
        "gauge",
        "When each replicated source dataset last transferred successfully (unix seconds).",
    );
    for (task, dataset, at) in &datasets {
        f.sample(
            "nasfleet_dataset_last_success_timestamp_seconds",
            &[("task", task), ("dataset", dataset)],
            seconds(*at),
        );
    }
    let mut f = Family::new(
        out,
        "nasfleet_task_last_run_duration_seconds",
        "gauge",
        "How long each task's latest finished run took.",
    );
    for (task, kind, run) in &last {
        let took = (run.finished_unix_ms - run.started_unix_ms).max(0);
        f.sample(
            "nasfleet_task_last_run_duration_seconds",
            &[("task", task), ("kind", kind)],
            seconds(took),
        );
    }
    let mut f = Family::new(
        out,
        "nasfleet_task_last_run_transferred_bytes",
        "gauge",
        "Bytes each task's latest finished run moved.",
    );
    for (task, kind, run) in &last {
        f.sample(
            "nasfleet_task_last_run_transferred_bytes",
            &[("task", task), ("kind", kind)],
            run.bytes as f64,
        );
    }
    let mut f = Family::new(
        out,
        "nasfleet_task_last_run_state",
        "gauge",
        "1 for the state of each task's latest finished run.",
    );
    for (task, kind, run) in &last {
        f.sample(
            "nasfleet_task_last_run_state",
            &[
                ("task", task),
                ("kind", kind),
                ("state", run_state_word(run.state())),
            ],
            1.0,
        );
    }
    let active = state.store.active_runs()?;
    let mut f = Family::new(
        out,
        "nasfleet_runs_in_progress",
        "gauge",
        "Runs not yet finished.",
    );
    let ids: std::collections::BTreeSet<u64> = active.iter().map(|(run, _, _)| run.id).collect();
    f.sample("nasfleet_runs_in_progress", &[], ids.len() as f64);
    Ok(())
}

async fn metrics(State(state): State<SharedState>) -> Response {
    let rendered = tokio::task::spawn_blocking(move || render(&state)).await;
    match rendered {
        Ok(Ok(text)) => {
            let mut response = text.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        Ok(Err(e)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("metrics: {e}\n")).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("metrics: {e}\n")).into_response(),
    }
}

/// Serves `/metrics` on `listener` until shutdown.
pub async fn serve(state: SharedState, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(state);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { wait_for_shutdown(&mut shutdown).await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "metrics listener failed");
    }
}

/// Metrics are plain HTTP, so only on loopback.
pub fn check_listen(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "metrics_listen: {addr} is not a loopback address; metrics are served as plain HTTP, \
             so only on 127.0.0.0/8 or ::1 (scrape through a TLS proxy from elsewhere)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut out = String::new();
        let mut f = Family::new(&mut out, "x_total", "counter", "Things.");
        f.sample("x_total", &[("task", "q\"t")], 2.0);
        f.sample("x_total", &[], 1.5);
        assert_eq!(
            out,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{task=\"q\\\"t\"} 2\nx_total 1.5\n"
        );
    }
}
