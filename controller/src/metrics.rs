//! Prometheus metrics on `metrics_listen` (plain HTTP on loopback, or HTTPS with client certificates of fleet-wide users when `metrics_tls` is set): systems by status, connected agents, pools' size, free space and health, each task's and each replicated dataset's last success, the last run's duration and bytes, runs in progress and ended since start by final state, scheduler lag, store write latency, and active alerts by level.

use crate::auth::person_by_certificate;
use crate::config::DataDir;
use crate::engine::access::{Access, Actor, Scope};
use crate::engine::alerts;
use crate::engine::state::SharedState;
use crate::engine::systems::inventory_header;
use crate::store::{is_final, is_success};
use crate::web::PeerCertificates;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nasfleet_common::daemon::wait_for_shutdown;
use nasfleet_common::histogram::HistogramSnapshot;
use nasfleet_common::status::{run_state_word, task_kind_word};
use nasfleet_proto::v1::{RunState, SystemStatus, Task};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
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

    /// A histogram's `_bucket`, `_sum` and `_count` samples.
    fn histogram(&mut self, name: &str, snapshot: &HistogramSnapshot) {
        for (bound, count) in &snapshot.buckets {
            let le = if bound.is_infinite() {
                "+Inf".to_owned()
            } else {
                bound.to_string()
            };
            self.sample(&format!("{name}_bucket"), &[("le", &le)], *count as f64);
        }
        self.sample(&format!("{name}_sum"), &[], snapshot.sum_seconds);
        self.sample(&format!("{name}_count"), &[], snapshot.count as f64);
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
        if let Some(inv) = inventory_header(state, &system.name)? {
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
    controller_metrics(state, &mut out);

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
                if newest_success.is_none() && is_success(run.state()) {
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

    let finished = state
        .store
        .telemetry
        .runs_finished
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let names: std::collections::HashMap<u64, (&str, &str)> = tasks
        .iter()
        .map(|t| (t.id, (t.name.as_str(), task_kind_word(t.kind()))))
        .collect();
    let mut f = Family::new(
        out,
        "nasfleet_task_runs_total",
        "counter",
        "Runs that ended since the controller started, by task and final state.",
    );
    for ((task_id, run_state), count) in &finished {
        // A deleted task's runs no longer have a name to report under.
        let Some((task, kind)) = names.get(task_id) else {
            continue;
        };
        let word = RunState::try_from(*run_state)
            .map(run_state_word)
            .unwrap_or("UNKNOWN");
        f.sample(
            "nasfleet_task_runs_total",
            &[("task", task), ("kind", kind), ("state", word)],
            *count as f64,
        );
    }
    Ok(())
}

/// How the controller itself is doing: scheduler lag and store latency.
fn controller_metrics(state: &SharedState, out: &mut String) {
    let mut f = Family::new(
        out,
        "nasfleet_scheduler_lag_seconds",
        "histogram",
        "How long after its due time each scheduled run started.",
    );
    f.histogram(
        "nasfleet_scheduler_lag_seconds",
        &state.scheduler_lag.snapshot(),
    );
    let mut f = Family::new(
        out,
        "nasfleet_store_write_seconds",
        "histogram",
        "How long each store write took from submission until durable (queue, apply, flush).",
    );
    f.histogram(
        "nasfleet_store_write_seconds",
        &state.store.telemetry.write_latency.snapshot(),
    );
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

/// With `metrics_tls`, only a user whose certificate this controller issued
/// (and who sees every system: the metrics cover the whole fleet) may read.
async fn require_fleet_reader(
    State(state): State<SharedState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let refuse = |message: String| (StatusCode::FORBIDDEN, format!("{message}\n")).into_response();
    let Some(leaf) = request
        .extensions()
        .get::<PeerCertificates>()
        .and_then(|c| c.0.first().cloned())
    else {
        return refuse("metrics: a client certificate is required".into());
    };
    let actor = match person_by_certificate(&state.store, &leaf) {
        Ok(actor) => actor,
        Err(e) => return refuse(format!("metrics: {e}")),
    };
    if let Err(e) = actor.require(Access::Read) {
        return refuse(format!("metrics: {e}"));
    }
    if !matches!(
        actor,
        Actor::Person {
            scope: Scope::All,
            ..
        }
    ) {
        return refuse(format!(
            "metrics: user '{}' sees only some systems; the metrics cover the whole fleet",
            actor.name()
        ));
    }
    next.run(request).await
}

/// The TLS settings of `/metrics` behind mTLS: the controller's server
/// certificate, and client certificates issued by its CA required.
pub async fn tls_config(data_dir: &DataDir) -> Result<Arc<rustls::ServerConfig>, String> {
    let (chain, key) =
        crate::web::read_identity((&data_dir.server_chain(), &data_dir.server_key()))
            .await
            .map_err(|e| e.to_string())?;
    let ca_path = data_dir.ca_cert();
    let ca_pem = tokio::fs::read(&ca_path)
        .await
        .map_err(|e| format!("reading {}: {e}", ca_path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca_pem) {
        let cert = cert.map_err(|e| format!("{}: {e}", ca_path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca_path.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("client certificate verifier: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("TLS: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn router(state: SharedState, tls: bool) -> Router {
    let app = Router::new().route("/metrics", get(metrics));
    let app = if tls {
        app.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_fleet_reader,
        ))
    } else {
        app
    };
    app.with_state(state)
}

/// Serves `/metrics` over HTTPS with client certificates on `listener`
/// until shutdown.
pub async fn serve_tls(
    state: SharedState,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: watch::Receiver<bool>,
    grace: std::time::Duration,
) {
    let app = router(state, true);
    crate::web::serve_https("metrics", app, listener, tls, shutdown, grace).await
}

/// Serves `/metrics` as plain HTTP on `listener` until shutdown.
pub async fn serve(state: SharedState, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let app = router(state, false);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { wait_for_shutdown(&mut shutdown).await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "metrics listener failed");
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
