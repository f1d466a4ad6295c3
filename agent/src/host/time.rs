//! How the agent's messages tell a duration (`30s`, `250ms`); the current time itself is [`nasfleet_common::status::now_unix_ms`], shared with the controller.

use std::time::Duration;

/// Whole seconds as `Ns`, anything finer as `Nms`: timeouts read the way
/// they were configured.
pub fn display_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
