//! The console's sign-in state kept in memory: links minted but not yet opened, and recent failed password attempts per user name and per address. A restart forgets both, which only asks people to sign in again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Failed attempts are counted within windows of this length.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failure counters kept at most; expired windows go first, and beyond
/// it new keys are not counted (the per-address limit still holds).
const MAX_FAILURE_KEYS: usize = 10_000;

struct PendingLink {
    user: String,
    expires_unix_ms: i64,
}

struct Failures {
    count: u32,
    window_start_unix_ms: i64,
}

#[derive(Default)]
pub struct SignIns {
    /// Keyed by the hash of the link's secret.
    links: Mutex<HashMap<String, PendingLink>>,
    failures: Mutex<HashMap<String, Failures>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl SignIns {
    /// Keeps a new link for `user`, after dropping expired ones; refused
    /// (false) when `max` links are waiting.
    pub fn add_link(
        &self,
        hash: String,
        user: &str,
        expires_unix_ms: i64,
        now: i64,
        max: usize,
    ) -> bool {
        let mut links = lock(&self.links);
        links.retain(|_, link| link.expires_unix_ms > now);
        if links.len() >= max {
            return false;
        }
        links.insert(
            hash,
            PendingLink {
                user: user.to_owned(),
                expires_unix_ms,
            },
        );
        true
    }

    /// Takes a link out (it works once): its user, if it has not expired.
    pub fn take_link(&self, hash: &str, now: i64) -> Option<String> {
        lock(&self.links)
            .remove(hash)
            .filter(|link| link.expires_unix_ms > now)
            .map(|link| link.user)
    }

    /// How long `key` stays refused, when it has `limit` failures or more
    /// in its current window.
    pub fn blocked(&self, key: &str, limit: u32, now: i64) -> Option<Duration> {
        let failures = lock(&self.failures);
        let entry = failures.get(key)?;
        let ends = entry.window_start_unix_ms + FAILURE_WINDOW.as_millis() as i64;
        (entry.count >= limit && ends > now).then(|| Duration::from_millis((ends - now) as u64))
    }

    pub fn count_failure(&self, key: &str, now: i64) {
        let mut failures = lock(&self.failures);
        let window = FAILURE_WINDOW.as_millis() as i64;
        if failures.len() >= MAX_FAILURE_KEYS {
            failures.retain(|_, f| f.window_start_unix_ms + window > now);
        }
        if failures.len() >= MAX_FAILURE_KEYS && !failures.contains_key(key) {
            return;
        }
        let entry = failures.entry(key.to_owned()).or_insert(Failures {
            count: 0,
            window_start_unix_ms: now,
        });
        if entry.window_start_unix_ms + window <= now {
            entry.count = 0;
            entry.window_start_unix_ms = now;
        }
        entry.count += 1;
    }

    pub fn forget_failures(&self, key: &str) {
        lock(&self.failures).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_block_a_key_for_the_window_only() {
        let signins = SignIns::default();
        for _ in 0..5 {
            assert!(signins.blocked("user:ann", 5, 1000).is_none());
            signins.count_failure("user:ann", 1000);
        }
        assert!(signins.blocked("user:ann", 5, 2000).is_some());
        assert!(signins.blocked("user:bob", 5, 2000).is_none());
        let after = 1000 + FAILURE_WINDOW.as_millis() as i64;
        assert!(signins.blocked("user:ann", 5, after).is_none());
    }

    #[test]
    fn a_link_works_once_and_not_after_it_expires() {
        let signins = SignIns::default();
        assert!(signins.add_link("h1".into(), "ann", 2000, 1000, 10));
        assert_eq!(signins.take_link("h1", 1500).as_deref(), Some("ann"));
        assert_eq!(signins.take_link("h1", 1500), None);
        assert!(signins.add_link("h2".into(), "ann", 2000, 1000, 10));
        assert_eq!(signins.take_link("h2", 2000), None);
        assert!(signins.add_link("h3".into(), "ann", 2000, 1000, 1));
        assert!(!signins.add_link("h4".into(), "bob", 2000, 1000, 1));
    }
}
