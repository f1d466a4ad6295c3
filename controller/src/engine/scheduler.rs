//! The scheduler: fires every enabled task at its due times, once per due time, and handles fires missed while the controller was down.
//!
//! Per task the store keeps a mark: every due time up to it has been
//! handled. On each wake the scheduler plans the fires between the mark and
//! now: the newest one runs if it is within the grace window, older ones are
//! recorded as MISSED. A fire is started before the mark moves past it, and
//! starting checks that no run exists for that due time yet, so a crash
//! between the two neither loses nor repeats a fire.

use crate::engine::runs::{self, Trigger};
use crate::engine::state::SharedState;
use crate::engine::tasks;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use nasfleet_common::daemon::wait_for_shutdown;
use nasfleet_common::schedule::Schedule;
use nasfleet_proto::v1::RunState;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Longest sleep between checks, so a wall clock that jumps (NTP, suspend)
/// is noticed within a minute.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Most MISSED records written for one task at start-up; older misses are
/// summarised in the log only (history keeps 100 runs anyway).
const MAX_RECORDED_MISSES: usize = 100;

/// Wall-clock time as the scheduler sees it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall time that advances with tokio's clock, so tests on a paused clock
/// move both the scheduler's sleeps and its idea of "now".
pub struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(base: DateTime<Utc>) -> Self {
        TokioClock {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        self.base + self.start.elapsed()
    }
}

/// A task as the scheduler needs it.
#[derive(Debug, Clone)]
pub struct ScheduledTask {
    pub id: u64,
    pub schedule: Schedule,
    pub enabled: bool,
    pub created: DateTime<Utc>,
}

/// Where tasks come from and where fires go; the store-backed one is
/// [`StoreBackend`], tests use an in-memory one.
pub trait Backend: Send + Sync + 'static {
    fn tasks(&self) -> Vec<ScheduledTask>;
    fn mark(&self, task_id: u64) -> Option<DateTime<Utc>>;
    fn set_mark(&self, task_id: u64, at: DateTime<Utc>) -> impl Future<Output = ()> + Send;
    fn fire(&self, task_id: u64, due: DateTime<Utc>) -> impl Future<Output = ()> + Send;
    fn missed(&self, task_id: u64, due: DateTime<Utc>) -> impl Future<Output = ()> + Send;
}

/// What to do with one task's fires between its mark and now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub run: Option<DateTime<Utc>>,
    pub missed: Vec<DateTime<Utc>>,
}

/// Plans the fires in (mark, now], evaluated in `tz`.
pub fn plan(
    schedule: &Schedule,
    tz: Tz,
    mark: DateTime<Utc>,
    now: DateTime<Utc>,
    grace: Duration,
) -> Plan {
    // A year of minutely fires at most: a bound on work after long downtime.
    let fires = schedule.fires_between(&mark.with_timezone(&tz), &now.with_timezone(&tz), 600_000);
    let mut fires: Vec<DateTime<Utc>> = fires.into_iter().map(|t| t.with_timezone(&Utc)).collect();
    let Some(newest) = fires.last().copied() else {
        return Plan::default();
    };
    let within_grace = (now - newest).to_std().is_ok_and(|age| age <= grace);
    let run = if within_grace {
        fires.pop();
        Some(newest)
    } else {
        None
    };
    if fires.len() > MAX_RECORDED_MISSES {
        let skipped = fires.len() - MAX_RECORDED_MISSES;
        tracing::warn!(
            skipped,
            "more missed fires than are recorded; keeping the newest"
        );
        fires.drain(..skipped);
    }
    Plan { run, missed: fires }
}

pub struct Scheduler<B: Backend, C: Clock> {
    pub backend: Arc<B>,
    pub clock: C,
    pub timezone: Tz,
    pub grace: Duration,
    /// Notified when tasks change, so a new or edited schedule takes effect at once.
    pub wake: Arc<Notify>,
}

impl<B: Backend, C: Clock> Scheduler<B, C> {
    /// Handles every due fire, then sleeps until the next one (or a change, or shutdown).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let next = self.tick().await;
            let now = self.clock.now();
            let sleep = next
                .and_then(|t| (t - now).to_std().ok())
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake.notified() => {}
                _ = wait_for_shutdown(&mut shutdown) => return,
            }
        }
    }

    /// One pass over all tasks; returns the earliest next due time. Each
    /// task's fires are handled in order, up to [`TASKS_AT_ONCE`] tasks side
    /// by side, so many tasks due in the same minute share store flushes
    /// instead of waiting for one each.
    pub async fn tick(&self) -> Option<DateTime<Utc>> {
        use futures_util::StreamExt;
        let now = self.clock.now();
        let mut earliest: Option<DateTime<Utc>> = None;
        let mut due = Vec::new();
        for task in self.backend.tasks() {
            if !task.enabled {
                continue;
            }
            let mark = self.backend.mark(task.id).unwrap_or(task.created);
            let plan = plan(&task.schedule, self.timezone, mark, now, self.grace);
            if plan.run.is_some() || !plan.missed.is_empty() {
                due.push((task.id, plan));
            }
            let next = task
                .schedule
                .next_after(&now.with_timezone(&self.timezone))
                .map(|t| t.with_timezone(&Utc));
            earliest = match (earliest, next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        futures_util::stream::iter(due.into_iter().map(|(id, plan)| self.handle(id, plan)))
            .buffer_unordered(TASKS_AT_ONCE)
            .collect::<Vec<()>>()
            .await;
        earliest
    }

    /// One task's missed fires, its fire, then its mark: a fire is started
    /// before the mark moves past it.
    async fn handle(&self, task_id: u64, plan: Plan) {
        for due in &plan.missed {
            self.backend.missed(task_id, *due).await;
        }
        if let Some(due) = plan.run {
            self.backend.fire(task_id, due).await;
        }
        if let Some(handled) = plan.run.or(plan.missed.last().copied()) {
            self.backend.set_mark(task_id, handled).await;
        }
    }
}

/// Tasks whose fires are handled at the same time in one pass.
const TASKS_AT_ONCE: usize = 256;

/// The scheduler's view of the controller's store and run engine.
pub struct StoreBackend {
    pub state: SharedState,
}

impl StoreBackend {
    fn task(&self, task_id: u64) -> Option<nasfleet_proto::v1::Task> {
        match self.state.store.task(task_id) {
            Ok(task) => task,
            Err(e) => {
                tracing::error!(task_id, error = %e, "cannot read task");
                None
            }
        }
    }

    /// Whether a run for this due time exists already (a fire started
    /// just before a crash, before its mark was written).
    fn already_fired(&self, task_id: u64, due: DateTime<Utc>) -> bool {
        self.state
            .store
            .runs_of_task(task_id, 5)
            .map(|runs| {
                runs.iter()
                    .any(|r| r.scheduled_for_unix_ms == due.timestamp_millis())
            })
            .unwrap_or(false)
    }
}

impl Backend for StoreBackend {
    fn tasks(&self) -> Vec<ScheduledTask> {
        let tasks = match self.state.store.tasks() {
            Ok(tasks) => tasks,
            Err(e) => {
                tracing::error!(error = %e, "scheduler cannot read tasks");
                return Vec::new();
            }
        };
        tasks
            .into_iter()
            .filter_map(|t| {
                let schedule = Schedule::parse(&t.schedule)
                    .map_err(|e| tracing::error!(task = %t.name, error = %e, "stored schedule is invalid"))
                    .ok()?;
                Some(ScheduledTask {
                    id: t.id,
                    schedule,
                    enabled: t.spec.as_ref().is_some_and(|s| s.enabled),
                    created: DateTime::from_timestamp_millis(t.created_unix_ms).unwrap_or_default(),
                })
            })
            .collect()
    }

    fn mark(&self, task_id: u64) -> Option<DateTime<Utc>> {
        self.state
            .store
            .schedule_mark(task_id)
            .ok()
            .flatten()
            .and_then(DateTime::from_timestamp_millis)
    }

    async fn set_mark(&self, task_id: u64, at: DateTime<Utc>) {
        let at = at.timestamp_millis();
        if let Err(e) = self
            .state
            .store
            .write(move |w| w.set_schedule_mark(task_id, at))
            .await
        {
            tracing::error!(task_id, error = %e, "cannot record schedule mark");
        }
    }

    async fn fire(&self, task_id: u64, due: DateTime<Utc>) {
        let Some(task) = self.task(task_id) else {
            return;
        };
        if self.already_fired(task_id, due) {
            tracing::info!(task = %task.name, %due, "fire already started before a restart; not repeated");
            return;
        }
        let parts = tasks::prepare(&self.state, &task, due).await;
        let started = runs::start(&self.state, &task, Trigger::Scheduled { at: due }, parts).await;
        let lag = (Utc::now() - due).to_std().unwrap_or_default();
        self.state.scheduler_lag.observe(lag);
        if let Err(status) = started {
            tracing::error!(task = %task.name, reason = %status, "scheduled run could not start");
        }
    }

    async fn missed(&self, task_id: u64, due: DateTime<Utc>) {
        let Some(task) = self.task(task_id) else {
            return;
        };
        if self.already_fired(task_id, due) {
            return;
        }
        let system = tasks::systems_of(&task).join(",");
        let reason = format!(
            "Missed: the controller was not running at {} and the grace window had passed when it started",
            due.with_timezone(&self.state.timezone)
                .format("%Y-%m-%d %H:%M %Z")
        );
        if let Err(status) =
            runs::record_not_run(&self.state, &task, &system, due, RunState::Missed, reason).await
        {
            tracing::error!(task = %task.name, reason = %status, "cannot record a missed run");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::collections::HashMap;
    use std::sync::Mutex;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).single().unwrap()
    }

    #[derive(Default)]
    struct Memory {
        tasks: Mutex<Vec<ScheduledTask>>,
        marks: Mutex<HashMap<u64, DateTime<Utc>>>,
        fired: Mutex<Vec<(u64, DateTime<Utc>)>>,
        missed: Mutex<Vec<(u64, DateTime<Utc>)>>,
    }

    impl Backend for Memory {
        fn tasks(&self) -> Vec<ScheduledTask> {
            self.tasks.lock().unwrap().clone()
        }
        fn mark(&self, id: u64) -> Option<DateTime<Utc>> {
            self.marks.lock().unwrap().get(&id).copied()
        }
        async fn set_mark(&self, id: u64, at: DateTime<Utc>) {
            self.marks.lock().unwrap().insert(id, at);
        }
        async fn fire(&self, id: u64, due: DateTime<Utc>) {
            self.fired.lock().unwrap().push((id, due));
        }
        async fn missed(&self, id: u64, due: DateTime<Utc>) {
            self.missed.lock().unwrap().push((id, due));
        }
    }

    fn scheduler(
        backend: Arc<Memory>,
        start: DateTime<Utc>,
        tz: Tz,
    ) -> Scheduler<Memory, TokioClock> {
        Scheduler {
            backend,
            clock: TokioClock::starting_at(start),
            timezone: tz,
            grace: Duration::from_secs(3600),
            wake: Arc::new(Notify::new()),
        }
    }

    fn task(id: u64, schedule: Schedule, created: DateTime<Utc>) -> ScheduledTask {
        ScheduledTask {
            id,
            schedule,
            enabled: true,
            created,
        }
    }

    #[test]
    fn plan_runs_newest_within_grace_and_records_older_as_missed() {
        let hourly = Schedule::hourly();
        let grace = Duration::from_secs(3600);
        let plan_at = |mark, now| plan(&hourly, chrono_tz::UTC, mark, now, grace);
        // Down from 07:30 to 10:20: 08:00 and 09:00 missed, 10:00 runs.
        let p = plan_at(utc(2026, 5, 1, 7, 30), utc(2026, 5, 1, 10, 20));
        assert_eq!(p.run, Some(utc(2026, 5, 1, 10, 0)));
        assert_eq!(p.missed, vec![utc(2026, 5, 1, 8, 0), utc(2026, 5, 1, 9, 0)]);
        // Weekly, down for two days past the fire: outside grace, missed only.
        let weekly = Schedule::weekly();
        let p = plan(
            &weekly,
            chrono_tz::UTC,
            utc(2026, 5, 2, 12, 0),
            utc(2026, 5, 5, 0, 0),
            grace,
        );
        assert_eq!(p.run, None);
        assert_eq!(p.missed, vec![utc(2026, 5, 3, 0, 0)]);
        // Nothing due.
        assert_eq!(
            plan_at(utc(2026, 5, 1, 10, 0), utc(2026, 5, 1, 10, 59)),
            Plan::default()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fires_each_due_time_exactly_once() {
        let start = utc(2026, 5, 1, 10, 20);
        let backend = Arc::new(Memory::default());
        backend
            .tasks
            .lock()
            .unwrap()
            .push(task(1, Schedule::hourly(), start));
        let s = scheduler(backend.clone(), start, chrono_tz::UTC);
        let wake = s.wake.clone();
        let (_tx, rx) = watch::channel(false);
        let handle = tokio::spawn(s.run(rx));
        // 50 minutes of spurious wakes, then three hours: 11:00 to 14:00, once each.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(600)).await;
            wake.notify_one();
        }
        tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
        handle.abort();
        let fired = backend.fired.lock().unwrap().clone();
        let expected: Vec<(u64, DateTime<Utc>)> =
            (11..=14).map(|h| (1, utc(2026, 5, 1, h, 0))).collect();
        assert_eq!(fired, expected);
        assert!(backend.missed.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn downtime_catch_up_runs_once_within_grace() {
        let now = utc(2026, 5, 1, 10, 20);
        let backend = Arc::new(Memory::default());
        backend
            .tasks
            .lock()
            .unwrap()
            .push(task(1, Schedule::hourly(), utc(2026, 4, 1, 0, 0)));
        backend.set_mark(1, utc(2026, 5, 1, 7, 0)).await;
        let s = scheduler(backend.clone(), now, chrono_tz::UTC);
        s.tick().await;
        s.tick().await;
        assert_eq!(
            backend.fired.lock().unwrap().clone(),
            vec![(1, utc(2026, 5, 1, 10, 0))]
        );
        assert_eq!(
            backend.missed.lock().unwrap().clone(),
            vec![(1, utc(2026, 5, 1, 8, 0)), (1, utc(2026, 5, 1, 9, 0))]
        );
        assert_eq!(backend.mark(1), Some(utc(2026, 5, 1, 10, 0)));
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_tasks_never_fire() {
        let start = utc(2026, 5, 1, 10, 20);
        let backend = Arc::new(Memory::default());
        let mut t = task(1, Schedule::hourly(), start);
        t.enabled = false;
        backend.tasks.lock().unwrap().push(t);
        let s = scheduler(backend.clone(), start, chrono_tz::UTC);
        let (_tx, rx) = watch::channel(false);
        let handle = tokio::spawn(s.run(rx));
        tokio::time::sleep(Duration::from_secs(5 * 3600)).await;
        handle.abort();
        assert!(backend.fired.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn hourly_across_dst_changes_in_berlin_fires_once_per_real_hour() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        for (start, hours) in [
            // Spring forward: 2026-03-29 02:00 local does not exist (01:00 UTC).
            (utc(2026, 3, 28, 23, 30), 6),
            // Fall back: 2026-10-25 02:00-03:00 local happens twice.
            (utc(2026, 10, 24, 22, 30), 6),
        ] {
            let backend = Arc::new(Memory::default());
            backend
                .tasks
                .lock()
                .unwrap()
                .push(task(1, Schedule::hourly(), start));
            let s = scheduler(backend.clone(), start, tz);
            let (_tx, rx) = watch::channel(false);
            let handle = tokio::spawn(s.run(rx));
            tokio::time::sleep(Duration::from_secs(hours * 3600)).await;
            handle.abort();
            let fired: Vec<DateTime<Utc>> =
                backend.fired.lock().unwrap().iter().map(|f| f.1).collect();
            let mut unique = fired.clone();
            unique.dedup();
            assert_eq!(unique, fired, "duplicate fire around {start}");
            // Each fire is on a full hour and no real hour is fired twice.
            for pair in fired.windows(2) {
                assert!(pair[1] - pair[0] >= chrono::Duration::hours(1), "{fired:?}");
            }
            assert!(fired.len() as u64 >= hours - 1, "{fired:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn daily_at_0230_on_berlin_dst_days_fires_once_each_day() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let daily = Schedule::cron("30 2 * * *").unwrap();
        for start in [utc(2026, 3, 28, 12, 0), utc(2026, 10, 24, 12, 0)] {
            let backend = Arc::new(Memory::default());
            backend
                .tasks
                .lock()
                .unwrap()
                .push(task(1, daily.clone(), start));
            let s = scheduler(backend.clone(), start, tz);
            let (_tx, rx) = watch::channel(false);
            let handle = tokio::spawn(s.run(rx));
            tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
            handle.abort();
            let fired = backend.fired.lock().unwrap().clone();
            assert_eq!(fired.len(), 1, "around {start}: {fired:?}");
        }
    }
}
