//! The controller's shared state handed to every service and task: store, CA, live sessions, settings.

use crate::engine::run_hub::RunHub;
use crate::pki::CertificateAuthority;
use crate::sessions::{EndedSession, Sessions};
use crate::store::{AuditRetention, Store};
use std::sync::Arc;
use tokio::sync::Notify;

pub struct ControllerState {
    pub store: Store,
    pub ca: CertificateAuthority,
    pub sessions: Sessions,
    /// URL agents and the CLI dial, as printed in join commands.
    pub url: String,
    /// Zone schedules are evaluated in and snapshot names are rendered in.
    pub timezone: chrono_tz::Tz,
    pub runs: RunHub,
    /// Runs kept per task.
    pub history_limit: usize,
    /// Tells the scheduler that tasks changed.
    pub scheduler_wake: Arc<Notify>,
    /// How late a scheduled fire missed while the controller was down may still run.
    pub grace: std::time::Duration,
    /// How much of the audit log is kept.
    pub audit_retention: AuditRetention,
    /// Console sign-in links not yet opened and failed password attempts.
    pub signins: crate::engine::signins::SignIns,
    /// Where the web console is reached (`https://HOST:PORT`), when it is served.
    pub console_url: Option<String>,
    /// How late scheduled runs started after their due times.
    pub scheduler_lag: nasfleet_common::histogram::Histogram,
    /// The last list of every system's summary (see `systems::list`).
    pub system_summaries: crate::engine::summaries::SummaryCache,
}

pub type SharedState = Arc<ControllerState>;

/// A time in the controller's zone (`2026-12-01 01:02:03`), `-` for never.
pub fn local_time(tz: chrono_tz::Tz, unix_ms: i64) -> String {
    use chrono::TimeZone;
    if unix_ms <= 0 {
        return "-".into();
    }
    match tz.timestamp_millis_opt(unix_ms).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => "-".into(),
    }
}

impl ControllerState {
    /// Records when ended sessions were last heard from, so OFFLINE systems show a true "last seen".
    pub async fn record_ended(&self, ended: &[EndedSession]) {
        if ended.is_empty() {
            return;
        }
        let last_seen: Vec<(String, i64)> = ended
            .iter()
            .map(|s| {
                tracing::info!(system = %s.name, "system OFFLINE");
                (s.name.clone(), s.last_heartbeat_unix_ms)
            })
            .collect();
        // One write for all of them: a mass disconnect is one flush.
        let recorded = self
            .store
            .write(move |w| {
                for (name, at) in last_seen {
                    w.update_system(&name, |r| {
                        r.last_seen_unix_ms = r.last_seen_unix_ms.max(at);
                    })?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = recorded {
            tracing::error!(error = %e, "cannot record last-seen times");
        }
    }
}

/// A controller state on a fresh store in `dir`, with no agents connected.
#[cfg(test)]
pub(crate) fn test_state(dir: &std::path::Path) -> SharedState {
    Arc::new(ControllerState {
        store: Store::open(dir).expect("test store opens"),
        ca: CertificateAuthority::create("test")
            .expect("test CA is created")
            .0,
        sessions: Sessions::new(std::time::Duration::from_secs(10)),
        url: "https://127.0.0.1:1".into(),
        timezone: chrono_tz::UTC,
        runs: RunHub::default(),
        history_limit: 100,
        scheduler_wake: Default::default(),
        grace: std::time::Duration::from_secs(3600),
        audit_retention: crate::store::DEFAULT_AUDIT_RETENTION,
        signins: Default::default(),
        console_url: None,
        scheduler_lag: Default::default(),
        system_summaries: Default::default(),
    })
}
