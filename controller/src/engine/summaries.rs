//! The list of every system's summary, kept between calls: rebuilt at most once a second unless a system record changed or a session started or ended.

use nasfleet_proto::v1::SystemSummary;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How old a kept list may be: an ONLINE system's "last seen" (its last
/// heartbeat) is up to this much older than the truth.
const MAX_AGE: Duration = Duration::from_secs(1);

/// Building the summaries of 10,000 systems costs tens of milliseconds of
/// scattered reads; copying a built list costs a few.
#[derive(Default)]
pub struct SummaryCache {
    built: Mutex<Option<Built>>,
}

struct Built {
    /// What the records and sessions were at when it was built (see `get`).
    generations: (u64, u64),
    at: Instant,
    summaries: Arc<Vec<SystemSummary>>,
}

impl SummaryCache {
    /// The list built at `generations` (the store's count of system record
    /// changes and the sessions' count of starts and ends), or a new one
    /// from `build`. Callers wait while another builds it.
    pub fn get<E>(
        &self,
        generations: (u64, u64),
        build: impl FnOnce() -> Result<Vec<SystemSummary>, E>,
    ) -> Result<Arc<Vec<SystemSummary>>, E> {
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = built.as_ref()
            && b.generations == generations
            && b.at.elapsed() < MAX_AGE
        {
            return Ok(b.summaries.clone());
        }
        let summaries = Arc::new(build()?);
        *built = Some(Built {
            generations,
            at: Instant::now(),
            summaries: summaries.clone(),
        });
        Ok(summaries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> Vec<SystemSummary> {
        vec![SystemSummary {
            name: name.into(),
            ..Default::default()
        }]
    }

    #[test]
    fn kept_while_nothing_changed_and_rebuilt_when_something_did() {
        let cache = SummaryCache::default();
        let first = cache.get::<()>((1, 1), || Ok(named("a"))).unwrap();
        let kept = cache.get::<()>((1, 1), || Ok(named("b"))).unwrap();
        assert!(Arc::ptr_eq(&first, &kept));
        let rebuilt = cache.get::<()>((1, 2), || Ok(named("c"))).unwrap();
        assert_eq!(rebuilt[0].name, "c");
        assert_eq!(cache.get((1, 2), || Err("no")).unwrap()[0].name, "c");
        assert_eq!(cache.get((2, 2), || Err("no")), Err("no"));
    }
}
