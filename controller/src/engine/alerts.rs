//! Alerts: the conditions the controller watches for in what it already knows (systems, certificates, pools, SSH, tasks and their runs, snapshots, notification channels that keep failing), each raised when it appears and cleared when it goes, one record per occurrence, with a hook that queues the notifications of each change in the same write; listing them and dismissing one.

use crate::engine::access::{Access, Actor};
use crate::engine::error::FleetError;
use crate::engine::kinds::systems_named;
use crate::engine::state::{SharedState, local_time};
use crate::engine::systems::{dataset_snapshots, inventory_header};
use crate::store::{AlertRecord, Write, is_final, is_success};
use chrono::TimeZone;
use nasfleet_common::duration::parse_duration;
use nasfleet_common::naming::NamingSchema;
use nasfleet_common::replication_summary::task_schedule;
use nasfleet_common::schedule::Schedule;
use nasfleet_common::status::{now_unix_ms, task_kind_word};
use nasfleet_proto::v1::task_spec::Kind;
use nasfleet_proto::v1::{Inventory, Run, RunState, Snapshot, Task};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio::sync::watch;

/// Runs of a task read for the last successful transfer of each dataset.
const STALE_LOOKBACK_RUNS: usize = 50;
/// A task is stale after this many of its schedule's periods without success.
const STALE_PERIODS: i64 = 2;
/// A notification channel whose deliveries failed this many times in a row
/// raises an alert.
pub const CHANNEL_FAILING_AFTER: u32 = 3;

/// What else happens in the write that records an evaluation's changes
/// (queueing notifications): `(write, changes, now)`.
pub type ChangeHook = fn(&Write<'_>, &AlertChanges, i64) -> Result<usize, crate::store::StoreError>;

/// How serious an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Info,
    Warning,
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }
}

/// What the controller's configuration says about alerts.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// How often conditions are evaluated.
    pub interval: Duration,
    /// A system unheard of for longer is OFFLINE as an alert.
    pub offline_grace: Duration,
    /// A certificate that expires within this is an alert.
    pub cert_warning: Duration,
    pub pool_warning_percent: u64,
    pub pool_critical_percent: u64,
    /// When this controller started: agents get the grace from then to
    /// reconnect, so a restart raises no OFFLINE alerts by itself.
    pub started_unix_ms: i64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            interval: Duration::from_secs(30),
            offline_grace: Duration::from_secs(300),
            cert_warning: Duration::from_secs(30 * 24 * 3600),
            pool_warning_percent: 80,
            pool_critical_percent: 90,
            started_unix_ms: 0,
        }
    }
}

/// A condition seen now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub key: String,
    pub kind: &'static str,
    pub level: Level,
    pub systems: Vec<String>,
    pub object: String,
    pub text: String,
}

/// How long ago, as people say it: `3 h 5 min`, `42 s`.
fn ago(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600),
    }
}

fn time_of(state: &SharedState, unix_ms: i64) -> String {
    local_time(state.timezone, unix_ms)
}

/// The length of one period of a task's schedule (the gap between its next
/// two fires), or `None` when it has none.
fn period_ms(state: &SharedState, task: &Task, now_ms: i64) -> Option<i64> {
    let schedule = Schedule::parse(task_schedule(task)).ok()?;
    let now = state.timezone.timestamp_millis_opt(now_ms).single()?;
    let fires = schedule.upcoming(&now, 2);
    match fires.as_slice() {
        [a, b] => Some((*b - *a).num_milliseconds()),
        _ => None,
    }
}

/// How long a task may go without protecting anything new: its own
/// `stale_after`, or [`STALE_PERIODS`] periods of its schedule.
fn stale_after_ms(task: &Task, period_ms: i64) -> i64 {
    task.spec
        .as_ref()
        .map(|s| s.stale_after.as_str())
        .filter(|s| !s.is_empty())
        .and_then(|s| parse_duration("stale_after", s).ok())
        .map_or(period_ms * STALE_PERIODS, |d| d.as_millis() as i64)
}

/// Every condition that holds now.
pub fn conditions(
    state: &SharedState,
    settings: &AlertSettings,
    now_ms: i64,
) -> Result<Vec<Condition>, FleetError> {
    let mut found = Vec::new();
    let tasks = state.store.tasks()?;
    // Systems whose SSH replication needs: every source and target.
    let replicating: BTreeSet<String> = tasks
        .iter()
        .filter(|t| {
            matches!(
                t.spec.as_ref().and_then(|s| s.kind.as_ref()),
                Some(Kind::Replication(_))
            )
        })
        .flat_map(systems_named)
        .collect();
    let mut inventories: HashMap<String, Inventory> = HashMap::new();
    for system in state.store.systems()? {
        let name = system.name.clone();
        if state.sessions.live(&name).is_none() {
            let since = system.last_seen_unix_ms.max(system.enrolled_unix_ms);
            let grace_from = since.max(settings.started_unix_ms);
            if now_ms - grace_from > settings.offline_grace.as_millis() as i64 {
                found.push(Condition {
                    key: format!("offline:{name}"),
                    kind: "system-offline",
                    level: Level::Critical,
                    systems: vec![name.clone()],
                    object: format!("system {name}"),
                    text: format!(
                        "{name} is OFFLINE: not heard from since {} ({} ago); check that its agent runs \
                         (systemctl status nasfleet-agent) and reaches the controller",
                        time_of(state, since),
                        ago(now_ms - since)
                    ),
                });
            }
        }
        if system.cert_expires_unix_ms > 0
            && system.cert_expires_unix_ms - now_ms < settings.cert_warning.as_millis() as i64
        {
            found.push(Condition {
                key: format!("certificate:{name}"),
                kind: "certificate-expiring",
                level: Level::Warning,
                systems: vec![name.clone()],
                object: format!("certificate of {name}"),
                text: format!(
                    "the certificate of {name} expires at {}; its agent renews it while connected, \
                     so bring it online (or enroll it again)",
                    time_of(state, system.cert_expires_unix_ms)
                ),
            });
        }
        if let Some(reason) = &system.inventory_problem {
            found.push(Condition {
                key: format!("inventory-stale:{name}"),
                kind: "inventory-stale",
                level: Level::Warning,
                systems: vec![name.clone()],
                object: format!("inventory of {name}"),
                text: format!(
                    "the controller's inventory of {name} (pools, datasets, snapshots) is from {} and \
                     stale: {reason}; see the agent's log on {name}",
                    time_of(state, system.inventory_unix_ms)
                ),
            });
        }
        // Without snapshots: those of the few datasets tasks name are read below.
        let Some(inv) = inventory_header(state, &name)? else {
            continue;
        };
        for pool in &inv.pools {
            if !pool.health.eq_ignore_ascii_case("ONLINE") {
                found.push(Condition {
                    key: format!("pool-health:{name}:{}", pool.name),
                    kind: "pool-health",
                    level: Level::Critical,
                    systems: vec![name.clone()],
                    object: format!("pool '{}' of {name}", pool.name),
                    text: format!(
                        "pool '{}' of {name} is {}: see `zpool status {}` on {name}",
                        pool.name, pool.health, pool.name
                    ),
                });
            }
            let used = pool.size.saturating_sub(pool.free);
            let percent = used.saturating_mul(100).checked_div(pool.size).unwrap_or(0);
            let level = if percent >= settings.pool_critical_percent {
                Some(Level::Critical)
            } else if percent >= settings.pool_warning_percent {
                Some(Level::Warning)
            } else {
                None
            };
            if let Some(level) = level {
                found.push(Condition {
                    key: format!("pool-capacity:{name}:{}", pool.name),
                    kind: "pool-capacity",
                    level,
                    systems: vec![name.clone()],
                    object: format!("pool '{}' of {name}", pool.name),
                    text: format!(
                        "pool '{}' of {name} is {percent}% full; free space or add capacity before \
                         writes and snapshots fail",
                        pool.name
                    ),
                });
            }
        }
        if replicating.contains(&name) && !inv.services.iter().any(|s| s.name == "ssh" && s.running)
        {
            found.push(Condition {
                key: format!("ssh:{name}"),
                kind: "ssh-not-running",
                level: Level::Critical,
                systems: vec![name.clone()],
                object: format!("SSH service of {name}"),
                text: format!(
                    "sshd is not running on {name}, which replication tasks use; start it \
                     (systemctl start ssh) or replications will fail"
                ),
            });
        }
        inventories.insert(name, inv);
    }
    for task in &tasks {
        task_conditions(state, task, &inventories, now_ms, &mut found)?;
    }
    for channel in state.store.channels()? {
        let stats = &channel.delivery;
        if stats.failures_in_a_row >= CHANNEL_FAILING_AFTER {
            let name = &channel.name;
            found.push(Condition {
                key: format!("channel:{name}"),
                kind: "notification-failing",
                level: Level::Warning,
                systems: Vec::new(),
                object: format!("notification channel '{name}'"),
                text: format!(
                    "{} deliveries in a row to notification channel '{name}' failed, the last at {}: {}; \
                     fix the channel (then `nasfleet notify test {name}`) or remove it",
                    stats.failures_in_a_row,
                    time_of(state, stats.last_error_unix_ms),
                    stats.last_error.as_deref().unwrap_or("-")
                ),
            });
        }
    }
    Ok(found)
}

/// A task's failed latest run, and datasets it no longer protects.
fn task_conditions(
    state: &SharedState,
    task: &Task,
    inventories: &HashMap<String, Inventory>,
    now_ms: i64,
    found: &mut Vec<Condition>,
) -> Result<(), FleetError> {
    let kind = task_kind_word(task.kind());
    let systems = systems_named(task);
    let latest = state.store.latest_run_of_task(task.id, 20, |r| {
        !matches!(r.state(), RunState::Skipped | RunState::Missed)
    })?;
    if let Some(run) = latest.filter(|r| r.state() == RunState::Failed) {
        found.push(Condition {
            key: format!("task-failed:{}", task.id),
            kind: "task-failed",
            level: Level::Warning,
            systems: systems.clone(),
            object: format!("{kind} task '{}'", task.name),
            text: format!(
                "the latest run of {kind} task '{}' (run {}, {}) FAILED: {}",
                task.name,
                run.id,
                time_of(state, run.started_unix_ms),
                run.reason
            ),
        });
    }
    let enabled = task.spec.as_ref().is_some_and(|s| s.enabled);
    let Some(period) = period_ms(state, task, now_ms).filter(|_| enabled) else {
        return Ok(());
    };
    let stale_after = stale_after_ms(task, period);
    match task.spec.as_ref().and_then(|s| s.kind.as_ref()) {
        Some(Kind::Replication(spec)) => {
            let wanted: BTreeSet<String> = spec
                .sources
                .iter()
                .flat_map(|s| s.datasets.iter().map(move |d| format!("{}:{d}", s.system)))
                .collect();
            // Newest first, stopping once every source dataset has a success.
            let mut successes = HashMap::new();
            state
                .store
                .visit_runs_of_task(task.id, STALE_LOOKBACK_RUNS, |run| {
                    record_successes(&run, &mut successes);
                    !wanted.iter().all(|d| successes.contains_key(d))
                })?;
            for source in &spec.sources {
                for dataset in &source.datasets {
                    let name = format!("{}:{dataset}", source.system);
                    let since = successes
                        .get(&name)
                        .copied()
                        .unwrap_or(task.created_unix_ms);
                    if now_ms - since <= stale_after {
                        continue;
                    }
                    let last = match successes.get(&name) {
                        Some(at) => format!("last at {}", time_of(state, *at)),
                        None => "never".into(),
                    };
                    found.push(Condition {
                        key: format!("stale-replication:{}:{name}", task.id),
                        kind: "stale-protection",
                        level: Level::Warning,
                        systems: systems.clone(),
                        object: format!("{name} in replication task '{}'", task.name),
                        text: format!(
                            "{name} has had no successful transfer for {} ({last}; the task runs every {}, \
                             stale after {}); see `nasfleet replication show {}` for why",
                            ago(now_ms - since),
                            ago(period),
                            ago(stale_after),
                            task.name
                        ),
                    });
                }
            }
        }
        Some(Kind::Snapshot(spec)) => {
            let newest = if inventories.contains_key(&spec.system) {
                let snapshots = dataset_snapshots(state, &spec.system, &spec.dataset)?;
                newest_snapshot(&snapshots, &spec.naming_schema)
            } else {
                None
            };
            let since = newest.unwrap_or(task.created_unix_ms);
            if now_ms - since > stale_after {
                let last = match newest {
                    Some(at) => format!("the newest is from {}", time_of(state, at)),
                    None => "there is none".into(),
                };
                found.push(Condition {
                    key: format!("stale-snapshots:{}", task.id),
                    kind: "stale-protection",
                    level: Level::Warning,
                    systems: systems.clone(),
                    object: format!(
                        "{}:{} in snapshot task '{}'",
                        spec.system, spec.dataset, task.name
                    ),
                    text: format!(
                        "{}:{} has no snapshot of its task for {} ({last}; the task runs every {}, \
                         stale after {})",
                        spec.system,
                        spec.dataset,
                        ago(now_ms - since),
                        ago(period),
                        ago(stale_after)
                    ),
                });
            }
        }
        Some(Kind::Rsync(spec)) => {
            let mut last_success = None;
            state
                .store
                .visit_runs_of_task(task.id, STALE_LOOKBACK_RUNS, |run| {
                    if is_success(run.state()) {
                        last_success = Some(run.finished_unix_ms.max(run.started_unix_ms));
                    }
                    last_success.is_none()
                })?;
            let since = last_success.unwrap_or(task.created_unix_ms);
            if now_ms - since > stale_after {
                let last = match last_success {
                    Some(at) => format!("last at {}", time_of(state, at)),
                    None => "never".into(),
                };
                found.push(Condition {
                    key: format!("stale-rsync:{}", task.id),
                    kind: "stale-protection",
                    level: Level::Warning,
                    systems: systems.clone(),
                    object: format!("{}:{} in rsync task '{}'", spec.system, spec.path, task.name),
                    text: format!(
                        "{}:{} has had no successful rsync run for {} ({last}; the task runs every {}, \
                         stale after {}); see `nasfleet rsync show {}` for why",
                        spec.system,
                        spec.path,
                        ago(now_ms - since),
                        ago(period),
                        ago(stale_after),
                        task.id
                    ),
                });
            }
        }
        None => {}
    }
    Ok(())
}

/// Adds when each source dataset (`system:dataset`) of `run` transferred
/// successfully, from its dataset steps (`SYSTEM:SOURCE → TARGET`,
/// FINISHED), keeping the newest time per dataset.
pub fn record_successes(run: &Run, last: &mut HashMap<String, i64>) {
    if !is_final(run.state()) {
        return;
    }
    let at = if run.finished_unix_ms > 0 {
        run.finished_unix_ms
    } else {
        run.started_unix_ms
    };
    for step in &run.steps {
        if step.state() != RunState::Finished {
            continue;
        }
        if let Some((source, _)) = step.name.split_once(" → ") {
            let entry = last.entry(source.to_owned()).or_insert(at);
            *entry = (*entry).max(at);
        }
    }
}

/// The creation time (unix ms) of the newest snapshot of `dataset` whose
/// name the task's naming schema made.
fn newest_snapshot(snapshots: &[Snapshot], schema: &str) -> Option<i64> {
    let schema = if schema.is_empty() {
        NamingSchema::default_periodic()
    } else {
        NamingSchema::new(schema).ok()?
    };
    snapshots
        .iter()
        .filter_map(|s| {
            let (_, name) = s.name.split_once('@')?;
            schema
                .parse(name)
                .is_some()
                .then_some(s.creation_unix * 1000)
        })
        .max()
}

/// What one evaluation changed.
#[derive(Debug, Default)]
pub struct AlertChanges {
    pub raised: Vec<AlertRecord>,
    pub cleared: Vec<AlertRecord>,
}

/// Compares the conditions that hold now with the active alerts: raises
/// the new ones, clears the gone ones (and one whose level changed, which
/// is raised again at its new level), and records when each was last seen.
pub async fn evaluate(
    state: &SharedState,
    settings: &AlertSettings,
    on_change: ChangeHook,
) -> Result<AlertChanges, FleetError> {
    let now = now_unix_ms();
    // Reads every system, inventory and task: off the runtime.
    let (reading, read_settings) = (state.clone(), settings.clone());
    let found = tokio::task::spawn_blocking(move || conditions(&reading, &read_settings, now))
        .await
        .map_err(|e| FleetError::Internal(format!("evaluating alerts: {e}")))??;
    let changes = state
        .store
        .write(move |w| {
            let mut active: HashMap<String, AlertRecord> = w
                .alerts()?
                .into_iter()
                .filter(|a| a.cleared_unix_ms.is_none())
                .map(|a| (a.key.clone(), a))
                .collect();
            let mut changes = AlertChanges::default();
            for condition in found {
                match active.remove(&condition.key) {
                    Some(mut alert) if alert.level == condition.level.as_str() => {
                        alert.last_seen_unix_ms = now;
                        alert.text = condition.text;
                        w.put_alert(&alert)?;
                    }
                    previous => {
                        if let Some(mut old) = previous {
                            old.cleared_unix_ms = Some(now);
                            w.put_alert(&old)?;
                            changes.cleared.push(old);
                        }
                        let alert = AlertRecord {
                            id: w.next_id()?,
                            key: condition.key,
                            kind: condition.kind.to_owned(),
                            level: condition.level.as_str().to_owned(),
                            systems: condition.systems,
                            object: condition.object,
                            text: condition.text,
                            first_seen_unix_ms: now,
                            last_seen_unix_ms: now,
                            cleared_unix_ms: None,
                            dismissed_by: None,
                        };
                        w.put_alert(&alert)?;
                        changes.raised.push(alert);
                    }
                }
            }
            for (_, mut gone) in active {
                gone.cleared_unix_ms = Some(now);
                w.put_alert(&gone)?;
                changes.cleared.push(gone);
            }
            w.prune_cleared_alerts()?;
            on_change(w, &changes, now)?;
            Ok(changes)
        })
        .await?;
    for alert in &changes.raised {
        tracing::warn!(id = alert.id, level = %alert.level, kind = %alert.kind, "alert raised: {}", alert.text);
    }
    for alert in &changes.cleared {
        tracing::info!(id = alert.id, kind = %alert.kind, "alert cleared: {}", alert.object);
    }
    Ok(changes)
}

/// Evaluates every `settings.interval` until shutdown.
pub async fn run(
    state: SharedState,
    settings: AlertSettings,
    on_change: ChangeHook,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = nasfleet_common::daemon::wait_for_shutdown(&mut shutdown) => return,
        }
        if let Err(e) = evaluate(&state, &settings, on_change).await {
            tracing::error!(error = %e, "cannot evaluate alerts");
        }
    }
}

fn visible(actor: &Actor, alert: &AlertRecord) -> bool {
    actor.sees_all(alert.systems.iter().map(String::as_str))
}

/// The alerts `actor` sees: active ones, or with `all` the cleared too;
/// newest first.
pub fn list(state: &SharedState, actor: &Actor, all: bool) -> Result<Vec<AlertRecord>, FleetError> {
    actor.require(Access::Read)?;
    Ok(state
        .store
        .alerts()?
        .into_iter()
        .filter(|a| all || a.cleared_unix_ms.is_none())
        .filter(|a| visible(actor, a))
        .collect())
}

/// Quiets an active alert until its condition clears (and comes back).
pub async fn dismiss(
    state: &SharedState,
    actor: &Actor,
    id: u64,
) -> Result<AlertRecord, FleetError> {
    actor.require(Access::Operate)?;
    let missing = || FleetError::NotFound(format!("alert {id} does not exist"));
    let alert = state.store.alert(id)?.ok_or_else(missing)?;
    if !visible(actor, &alert) {
        return Err(missing());
    }
    if alert.cleared_unix_ms.is_some() {
        return Err(FleetError::Conflict(format!(
            "alert {id} has cleared already; nothing to dismiss"
        )));
    }
    let by = actor.label();
    state
        .store
        .write(move |w| {
            let Some(mut alert) = w.alert(id)? else {
                return Ok(None);
            };
            alert.dismissed_by = Some(by);
            w.put_alert(&alert)?;
            Ok(Some(alert))
        })
        .await?
        .ok_or_else(missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nasfleet_proto::v1::RunStep;

    fn run(id: u64, state: RunState, finished: i64, steps: &[(&str, RunState)]) -> Run {
        let mut run = Run {
            id,
            finished_unix_ms: finished,
            steps: steps
                .iter()
                .map(|(name, s)| {
                    let mut step = RunStep {
                        name: (*name).into(),
                        ..Default::default()
                    };
                    step.set_state(*s);
                    step
                })
                .collect(),
            ..Default::default()
        };
        run.set_state(state);
        run
    }

    #[test]
    fn each_dataset_keeps_its_own_last_success() {
        let runs = [
            run(
                2,
                RunState::Failed,
                2000,
                &[
                    ("nas1:tank/a → nas3:backup/nas1/tank/a", RunState::Finished),
                    ("nas2:tank/b → nas3:backup/nas2/tank/b", RunState::Failed),
                ],
            ),
            run(
                1,
                RunState::Finished,
                1000,
                &[
                    ("nas1 pre-flight", RunState::Finished),
                    ("nas1:tank/a → nas3:backup/nas1/tank/a", RunState::Finished),
                    ("nas2:tank/b → nas3:backup/nas2/tank/b", RunState::Finished),
                ],
            ),
        ];
        let mut last = HashMap::new();
        for run in &runs {
            record_successes(run, &mut last);
        }
        assert_eq!(last.get("nas1:tank/a"), Some(&2000));
        assert_eq!(last.get("nas2:tank/b"), Some(&1000));
        assert!(!last.contains_key("nas1 pre-flight"));
    }

    #[test]
    fn times_ago_read_like_people_say_them() {
        assert_eq!(ago(42_000), "42 s");
        assert_eq!(ago(3 * 3600 * 1000 + 5 * 60 * 1000), "3 h 5 min");
        assert_eq!(ago(2 * 86_400_000 + 3_600_000), "2 d 1 h");
    }
}
