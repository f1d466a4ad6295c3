//! How statuses and times are spelled on the wire and to people, so CLI output and JSON agree.

use chrono::{DateTime, SecondsFormat, Utc};
use nasfleet_proto::v1::{RunState, RunTrigger, SystemStatus, TaskKind};

/// `ONLINE` / `OFFLINE`, as the CLI prints and JSON carries.
pub fn system_status_word(status: SystemStatus) -> &'static str {
    match status {
        SystemStatus::Online => "ONLINE",
        SystemStatus::Offline | SystemStatus::Unspecified => "OFFLINE",
    }
}

/// The word for a run state, as the controller stores it in a task's status
/// and the CLI prints it and JSON carries it: `FINISHED`, `FAILED`, ...
/// An unspecified state is `UNKNOWN`, not `PENDING`: a run the controller
/// never described is not waiting for anything.
pub fn run_state_word(state: RunState) -> &'static str {
    match state {
        RunState::Unspecified => "UNKNOWN",
        RunState::Pending => "PENDING",
        RunState::Running => "RUNNING",
        RunState::Finished => "FINISHED",
        RunState::Success => "SUCCESS",
        RunState::Failed => "FAILED",
        RunState::Skipped => "SKIPPED",
        RunState::Missed => "MISSED",
    }
}

/// `snapshot`, `replication` or `rsync`, as the CLI and JSON say it; empty
/// for an unspecified kind.
pub fn task_kind_word(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Unspecified => "",
        TaskKind::Snapshot => "snapshot",
        TaskKind::Replication => "replication",
        TaskKind::Rsync => "rsync",
    }
}

/// The kind a word names (the inverse of [`task_kind_word`]).
pub fn task_kind_from_word(word: &str) -> Option<TaskKind> {
    [TaskKind::Snapshot, TaskKind::Replication, TaskKind::Rsync]
        .into_iter()
        .find(|k| task_kind_word(*k) == word)
}

/// `manual` or `scheduled`, as the CLI and JSON say it.
pub fn trigger_word(trigger: RunTrigger) -> &'static str {
    match trigger {
        RunTrigger::Unspecified => "",
        RunTrigger::Manual => "manual",
        RunTrigger::Scheduled => "scheduled",
    }
}

/// RFC 3339 in UTC, or `None` for the "never" value 0.
pub fn rfc3339_from_unix_ms(unix_ms: i64) -> Option<String> {
    if unix_ms <= 0 {
        return None;
    }
    DateTime::<Utc>::from_timestamp_millis(unix_ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(
            rfc3339_from_unix_ms(1_700_000_000_000).as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(rfc3339_from_unix_ms(0), None);
    }

    #[test]
    fn every_run_state_has_its_word() {
        let words: Vec<(RunState, &str)> = vec![
            (RunState::Unspecified, "UNKNOWN"),
            (RunState::Pending, "PENDING"),
            (RunState::Running, "RUNNING"),
            (RunState::Finished, "FINISHED"),
            (RunState::Success, "SUCCESS"),
            (RunState::Failed, "FAILED"),
            (RunState::Skipped, "SKIPPED"),
            (RunState::Missed, "MISSED"),
        ];
        for (state, word) in words {
            assert_eq!(run_state_word(state), word, "{state:?}");
        }
    }

    #[test]
    fn systems_are_online_or_offline() {
        assert_eq!(system_status_word(SystemStatus::Online), "ONLINE");
        assert_eq!(system_status_word(SystemStatus::Offline), "OFFLINE");
        assert_eq!(system_status_word(SystemStatus::Unspecified), "OFFLINE");
    }
}
