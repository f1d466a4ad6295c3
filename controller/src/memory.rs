//! Handing freed heap memory back to the system: glibc keeps what a burst freed (a connect storm's handshakes, a million-snapshot inventory) for reuse, scattered between live allocations, so without this the controller's resident size stays at the burst's peak.

use nasfleet_common::daemon::wait_for_shutdown;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often free heap pages are handed back. The trim runs on a blocking
/// thread and logs how long it took (debug).
const TRIM_INTERVAL: Duration = Duration::from_secs(30);

/// Hands the heap's free pages back to the system (glibc's `malloc_trim`,
/// which since 2.8 releases whole free pages inside every arena, not only
/// at the top). Blocking: call it off the async runtime.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and locks glibc's arenas itself.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// [`release_free_memory`] every [`TRIM_INTERVAL`] until the shutdown signal.
pub async fn trim_periodically(mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(TRIM_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = wait_for_shutdown(&mut shutdown) => return,
        }
        let started = Instant::now();
        let _ = tokio::task::spawn_blocking(release_free_memory).await;
        tracing::debug!(
            took_ms = started.elapsed().as_millis(),
            "free heap pages handed back"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_trimmer_trims_on_its_interval_and_stops_at_the_shutdown_signal() {
        let (stop, shutdown) = watch::channel(false);
        let trimmer = tokio::spawn(trim_periodically(shutdown));
        tokio::time::sleep(TRIM_INTERVAL * 2).await;
        assert!(!trimmer.is_finished());
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), trimmer)
            .await
            .expect("stops at the signal")
            .unwrap();
    }
}
