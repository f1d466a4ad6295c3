//! A small simulated fleet against the real controller, through the fleet benchmark in its checking mode: all connect at once, tasks due in the same minute are each started once, Run-Now reaches every agent, a system's 25,000 snapshots arrive in pages and are all counted, and a restart brings every agent back.

use anyhow::{Context, Result, ensure};
use nasfleet_tests::binary;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Agents of the simulated fleet: enough for storms on a 2-core machine,
/// small enough for a minute or two.
const SYSTEMS: &str = "300";
/// Snapshot tasks due in the same minute.
const DUE_TASKS: &str = "150";
/// The due phase waits for a whole minute; the rest takes well under one.
const TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn a_small_fleet_survives_a_connect_storm_many_due_tasks_and_a_restart_storm() -> Result<()> {
    let bin_dir = binary("fleet_load")?
        .parent()
        .context("the binaries' directory")?
        .to_path_buf();
    binary("nasfleet-controller")?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/bench-fleet.sh");
    let mut child = Command::new("bash")
        .arg(&script)
        .args([SYSTEMS, DUE_TASKS])
        .env("NASFLEET_BENCH_BIN_DIR", &bin_dir)
        .env(
            "NASFLEET_BENCH_ARGS",
            "--check --steady-secs 5 --list-calls 5 --run-now 30 --online-timeout 60 --big-snapshots 25000",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", script.display()))?;
    // Read both pipes while waiting, so a chatty run cannot block on a full pipe.
    let stdout = child.stdout.take().context("stdout")?;
    let stderr = child.stderr.take().context("stderr")?;
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > TIMEOUT {
            // The script stops its controller on exit (its trap); SIGTERM lets it.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    let shown = format!("--- stdout ---\n{out}\n--- stderr ---\n{err}");
    let status = status.with_context(|| format!("no end within {TIMEOUT:?}\n{shown}"))?;
    ensure!(status.success(), "the fleet run failed ({status})\n{shown}");
    for wanted in [
        format!("all {SYSTEMS} ONLINE after"),
        format!("{DUE_TASKS} tasks due at"),
        "0 run ids received twice, 0 extra runs of one task".to_owned(),
        "the controller counted 25003".to_owned(),
        "restart storm: stop + start took".to_owned(),
    ] {
        ensure!(
            out.contains(&wanted),
            "the report lacks {wanted:?}\n{shown}"
        );
    }
    ensure!(!out.contains("==== wrong"), "something went wrong\n{shown}");
    Ok(())
}
