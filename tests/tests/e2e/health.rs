//! Health for systemd and monitoring: `nasfleet-controller check` and `nasfleet-agent check` exit 0 with what they checked on a healthy fleet, and non-zero with the reason once the controller is gone.

use super::common::*;
use anyhow::{Result, ensure};
use nasfleet_tests::{TestDir, TestPool, binary, ensure_zfs, run_output};
use std::process::Command;
use std::time::Duration;

const CHECK_DEADLINE: Duration = Duration::from_secs(30);

/// Exit code and stdout + stderr of a check command.
fn check(program: &str, args: &[&std::ffi::OsStr]) -> Result<(Option<i32>, String)> {
    let mut cmd = Command::new(binary(program)?);
    cmd.arg("check").args(args);
    let out = run_output(&mut cmd, CHECK_DEADLINE)?;
    Ok((
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[test]
fn check_commands_say_whether_the_controller_and_the_agent_are_healthy() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("health")?;
    let pool = TestPool::create(dir.path(), "hlth")?;
    let (mut controller, agent) = one_system(&dir, &pool, "nas1")?;
    let data_dir_path = controller.data_dir().to_path_buf();
    let state_dir_path = agent.state_dir().to_path_buf();
    let data_dir = [
        std::ffi::OsStr::new("--data-dir"),
        data_dir_path.as_os_str(),
    ];
    let state_dir = [
        std::ffi::OsStr::new("--state-dir"),
        state_dir_path.as_os_str(),
    ];

    let (code, said) = check("nasfleet-controller", &data_dir)?;
    ensure!(code == Some(0), "{said}");
    for part in ["SERVING", "console", "metrics", "accepting connections"] {
        ensure!(said.contains(part), "{part} not in: {said}");
    }
    let (code, said) = check("nasfleet-agent", &state_dir)?;
    ensure!(code == Some(0), "{said}");
    for part in [
        "enrolled as 'nas1'",
        "certificate: valid until",
        "SERVING",
        "zfs: answers",
    ] {
        ensure!(said.contains(part), "{part} not in: {said}");
    }

    controller.stop()?;
    let (code, said) = check("nasfleet-controller", &data_dir)?;
    ensure!(code == Some(1), "{code:?}: {said}");
    ensure!(
        said.contains("unhealthy") && said.contains("cannot reach the controller"),
        "{said}"
    );
    let (code, said) = check("nasfleet-agent", &state_dir)?;
    ensure!(code == Some(1), "{code:?}: {said}");
    ensure!(
        said.contains("controller: cannot reach the controller"),
        "{said}"
    );
    Ok(())
}
