//! The store under load and crashes: concurrent writes all answered, acknowledged writes survive `kill -9`, ids never reused, reconnect storms, and a prompt stop.

use super::common::*;
use anyhow::{Context, Result, bail, ensure};
use nasfleet_tests::{Agent, Controller, TestDir, TestPool, ensure_zfs};
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Runs `total` calls of `call(i)` with `in_flight` threads at a time and
/// returns every result in call order.
fn concurrently<T: Send>(
    total: usize,
    in_flight: usize,
    call: impl Fn(usize) -> Result<T> + Sync,
) -> Vec<Result<T>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<T>)>> = Mutex::new(Vec::with_capacity(total));
    std::thread::scope(|scope| {
        for _ in 0..in_flight {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= total {
                        break;
                    }
                    let result = call(i);
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((i, result));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Sends `signal` to the running controller and waits (30 s at most) until
/// it has exited; returns how long that took. The process stays unreaped
/// for the harness to collect.
fn signal_and_wait(controller: &Controller, signal: i32) -> Result<Duration> {
    let pid = controller.pid().context("controller not started")?;
    let started = Instant::now();
    // SAFETY: kill(2) on the pid of our own unreaped child.
    if unsafe { libc::kill(pid as i32, signal) } != 0 {
        bail!("kill {pid}: {}", std::io::Error::last_os_error());
    }
    nasfleet_tests::wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
        // An exited, unreaped child is a zombie: state 'Z' after the name.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        Ok(stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')))
    })?;
    Ok(started.elapsed())
}

/// Every result, or the first few failures with how many there were.
fn all_ok<T>(what: &str, results: Vec<Result<T>>) -> Result<Vec<T>> {
    let total = results.len();
    let mut ok = Vec::new();
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(value) => ok.push(value),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {total} {what} failed; first: {}",
            failures.len(),
            failures
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    Ok(ok)
}

#[test]
fn four_hundred_token_creates_with_32_in_flight_all_succeed_and_writes_still_answer() -> Result<()>
{
    let dir = TestDir::new("store-tokens")?;
    let mut controller = Controller::init(dir.path())?;
    controller.start()?;
    let tokens = all_ok(
        "token creates",
        concurrently(400, 32, |_| controller.create_token()),
    )?;
    let distinct: BTreeSet<&str> = tokens.iter().map(|t| t.token.as_str()).collect();
    ensure!(distinct.len() == 400, "{} distinct tokens", distinct.len());

    // The store is not wedged: the next write answers promptly (a hung
    // store made every later write time out).
    let started = Instant::now();
    controller.create_token()?;
    let took = started.elapsed();
    ensure!(
        took < Duration::from_secs(5),
        "a write after the storm took {took:?}"
    );
    // And a stop is prompt and clean.
    let status = controller.stop()?;
    ensure!(status.success(), "controller stopped with {status}");
    Ok(())
}

#[test]
fn sixty_four_concurrent_task_creates_all_succeed_and_are_listed() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("store-tasks")?;
    let pool = TestPool::create(dir.path(), "tasks")?;
    pool.create_dataset("data")?;
    let (controller, _agent) = one_system(&dir, &pool, "nas1")?;
    let dataset = format!("{}/data", pool.name());
    let ids = all_ok(
        "task creates",
        concurrently(64, 64, |i| {
            let schema = format!("t{i}-%Y-%m-%d_%H-%M");
            create_snapshot_task(
                &controller,
                &[
                    "--system",
                    "nas1",
                    "--dataset",
                    &dataset,
                    "--naming-schema",
                    &schema,
                    "--disabled",
                ],
            )
        }),
    )?;
    let created: BTreeSet<u64> = ids.iter().copied().collect();
    ensure!(created.len() == 64, "ids {ids:?} are not distinct");
    let listed = controller.cli_json(&["snapshot-task", "list"])?;
    let listed: BTreeSet<u64> = listed
        .as_array()
        .context("task list is an array")?
        .iter()
        .filter_map(|t| t["id"].as_u64())
        .collect();
    ensure!(listed == created, "listed {listed:?}, created {created:?}");
    Ok(())
}

/// Ten crashes in the middle of write storms: every token the CLI printed
/// still enrolls a system, and no task id is handed out twice.
#[test]
fn acknowledged_writes_survive_kill_9_in_a_write_storm() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("store-crash")?;
    let pool = TestPool::create(dir.path(), "crash")?;
    pool.create_dataset("data")?;
    let (mut controller, _agent) = one_system(&dir, &pool, "nas1")?;
    let dataset = format!("{}/data", pool.name());

    let mut tokens = Vec::new();
    let mut task_ids = Vec::new();
    for round in 0..10 {
        // Task checks use the stored inventory, so nas1 need not be back
        // ONLINE (its reconnect backoff grows with every crash).
        if round > 0 {
            controller.start()?;
        }
        let stop = AtomicBool::new(false);
        let round_tokens = Mutex::new(Vec::new());
        let round_tasks = Mutex::new(Vec::new());
        std::thread::scope(|scope| -> Result<()> {
            for writer in 0..8 {
                let (stop, round_tokens, round_tasks) = (&stop, &round_tokens, &round_tasks);
                let (controller, dataset) = (&controller, &dataset);
                scope.spawn(move || {
                    let mut i = 0;
                    // Bounded: the controller is killed once the storm is under way.
                    while !stop.load(Ordering::SeqCst) && i < 200 {
                        i += 1;
                        if writer % 2 == 0 {
                            if let Ok(token) = controller.create_token() {
                                round_tokens
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .push(token);
                            }
                        } else {
                            let schema = format!("r{round}w{writer}i{i}-%Y-%m-%d_%H-%M");
                            if let Ok(id) = create_snapshot_task(
                                controller,
                                &[
                                    "--system",
                                    "nas1",
                                    "--dataset",
                                    dataset,
                                    "--naming-schema",
                                    &schema,
                                    "--disabled",
                                ],
                            ) {
                                round_tasks
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .push(id);
                            }
                        }
                    }
                });
            }
            // Killed once the storm is under way and has been acknowledged
            // at least twice for tokens and once for tasks: a fixed delay
            // would kill a slow machine's controller (the OpenZFS guest's
            // is emulated) before it answered anything.
            let under_way = storm_under_way(Duration::from_secs(1), || {
                round_tokens.lock().map_or(0, |t| t.len()) >= 2
                    && round_tasks.lock().map_or(0, |t| t.len()) >= 1
            });
            let killed = signal_and_wait(&controller, libc::SIGKILL);
            stop.store(true, Ordering::SeqCst);
            under_way.with_context(|| format!("round {round}"))?;
            killed.map(drop)
        })?;
        // Reaps the killed process.
        controller.kill()?;
        tokens.extend(round_tokens.into_inner().unwrap_or_else(|p| p.into_inner()));
        task_ids.extend(round_tasks.into_inner().unwrap_or_else(|p| p.into_inner()));
    }
    controller.start()?;

    ensure!(
        tokens.len() >= 20,
        "only {} tokens acknowledged",
        tokens.len()
    );
    let distinct: BTreeSet<u64> = task_ids.iter().copied().collect();
    ensure!(
        distinct.len() == task_ids.len(),
        "a task id was handed out twice: {task_ids:?}"
    );
    let listed: BTreeSet<u64> = controller
        .cli_json(&["snapshot-task", "list"])?
        .as_array()
        .context("task list is an array")?
        .iter()
        .filter_map(|t| t["id"].as_u64())
        .collect();
    let lost: Vec<&u64> = distinct.difference(&listed).collect();
    ensure!(lost.is_empty(), "acknowledged tasks lost: {lost:?}");

    // Every 1 in n of the acknowledged tokens, 20 in all, spread over the rounds.
    let step = tokens.len() / 20;
    for (i, token) in tokens.iter().step_by(step).take(20).enumerate() {
        Agent::join_with_token(&controller, &format!("crash{i}"), token)
            .with_context(|| format!("acknowledged token {} of {}", i * step, tokens.len()))?;
    }
    Ok(())
}

/// 100 agents reconnecting at once after a controller crash all come back
/// ONLINE (a storm like this alone froze the old store).
#[test]
fn a_hundred_agents_reconnecting_at_once_all_come_back_online() -> Result<()> {
    const AGENTS: usize = 100;
    let dir = TestDir::new("store-storm")?;
    let mut controller = Controller::init(dir.path())?;
    controller.start()?;
    let tokens = all_ok(
        "token creates",
        concurrently(AGENTS, 8, |_| controller.create_token()),
    )?;
    let agents = all_ok(
        "joins",
        concurrently(AGENTS, 8, |i| {
            Agent::join_with_token(&controller, &format!("storm{i:03}"), &tokens[i])
        }),
    )?;
    let agents: Vec<Mutex<Agent>> = agents.into_iter().map(Mutex::new).collect();
    for agent in &agents {
        // No pool of their own: these agents only connect and report.
        agent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .start(&["storm-no-such-pool"], None)?;
    }
    let online = |controller: &Controller| -> Result<usize> {
        Ok(controller
            .systems()?
            .iter()
            .filter(|s| s["status"] == "ONLINE")
            .count())
    };
    nasfleet_tests::wait_until(Duration::from_secs(120), Duration::from_millis(500), || {
        Ok(online(&controller)? == AGENTS)
    })
    .context("all agents ONLINE the first time")?;

    controller.kill()?;
    controller.start()?;
    // Agents back off up to a few seconds after a lost connection.
    nasfleet_tests::wait_until(Duration::from_secs(120), Duration::from_millis(500), || {
        Ok(online(&controller)? == AGENTS)
    })
    .with_context(|| {
        format!(
            "after the restart only {:?} of {AGENTS} agents came back ONLINE",
            online(&controller).ok()
        )
    })?;
    // And the store still takes writes.
    controller.create_token()?;
    Ok(())
}

/// SIGTERM while writes are queued: the controller is gone within 10 s,
/// and every write it acknowledged is there after the next start.
#[test]
fn sigterm_during_a_write_storm_stops_within_ten_seconds() -> Result<()> {
    let dir = TestDir::new("store-sigterm")?;
    let mut controller = Controller::init(dir.path())?;
    controller.start()?;
    let stop = AtomicBool::new(false);
    let acknowledged = Mutex::new(Vec::new());
    let took = std::thread::scope(|scope| -> Result<Duration> {
        for _ in 0..32 {
            let (stop, acknowledged, controller) = (&stop, &acknowledged, &controller);
            scope.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) && i < 100 {
                    i += 1;
                    if let Ok(token) = controller.create_token() {
                        acknowledged
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(token);
                    }
                }
            });
        }
        let under_way = storm_under_way(Duration::from_millis(1500), || {
            acknowledged.lock().map_or(0, |a| a.len()) >= 32
        });
        let took = signal_and_wait(&controller, libc::SIGTERM);
        stop.store(true, Ordering::SeqCst);
        under_way?;
        took
    })?;
    let status = controller.stop()?;
    ensure!(status.success(), "controller stopped with {status}");
    ensure!(
        took < Duration::from_secs(10),
        "SIGTERM took {took:?} to stop the controller"
    );
    let acknowledged = acknowledged.into_inner().unwrap_or_else(|p| p.into_inner());
    ensure!(!acknowledged.is_empty(), "no write was acknowledged");
    controller.start()?;
    let last = acknowledged.last().context("one token")?;
    Agent::join_with_token(&controller, "after-sigterm", last)
        .context("the last token acknowledged before SIGTERM")?;
    Ok(())
}

/// Waits until a write storm has run for `at_least` and `answered` says
/// enough of its writes were acknowledged (at most 60 s), so that the
/// signal that follows lands with writes both done and in flight.
fn storm_under_way(at_least: Duration, answered: impl Fn() -> bool) -> Result<()> {
    let started = std::time::Instant::now();
    nasfleet_tests::wait_until(Duration::from_secs(60), Duration::from_millis(50), || {
        Ok(started.elapsed() >= at_least && answered())
    })
    .context("the write storm got too few acknowledgements")
}
