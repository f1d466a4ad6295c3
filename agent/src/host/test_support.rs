//! Process trees the host modules' unit tests start and check are gone.

use std::time::Duration;

/// Whether `pid` is still running (a zombie has finished running).
pub(crate) fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A shell that writes its own pid and its background sleep's pid to
/// `pids` and then sleeps too: a tree of three processes.
pub(crate) fn tree_script(pids: &std::path::Path) -> Vec<String> {
    let file = pids.display();
    vec![
        "-c".to_owned(),
        format!("sleep 30 & echo $$ $! > {file}.tmp; mv {file}.tmp {file}; sleep 30"),
    ]
}

/// Waits (bounded) until the script has written both pids.
pub(crate) async fn read_pids(pids: &std::path::Path) -> Vec<i32> {
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(pids) {
            let found: Vec<i32> = text
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            if found.len() == 2 {
                return found;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the script did not write its pids");
}

/// Waits (bounded) until none of `pids` runs: SIGKILL is delivered
/// asynchronously, and init reaps orphans when it gets to them.
pub(crate) async fn assert_all_gone(pids: &[i32]) {
    for _ in 0..100 {
        if !pids.iter().any(|p| running(*p)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let alive: Vec<_> = pids.iter().filter(|p| running(**p)).collect();
    panic!("still running: {alive:?}");
}
