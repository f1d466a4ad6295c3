//! The list of every system's summary, kept between calls (and, once asked for, its encoded form): rebuilt at most once a second unless a system record changed or a session started or ended.

use nasfleet_proto::v1::{ListSystemsResponse, SystemSummary};
use prost::bytes::Bytes;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How old a kept list may be: an ONLINE system's "last seen" (its last
/// heartbeat) is up to this much older than the truth.
const MAX_AGE: Duration = Duration::from_secs(1);

/// Building the summaries of 10,000 systems costs tens of milliseconds of
/// scattered reads; copying a built list costs a few, and sending its
/// encoded form to another caller nothing.
#[derive(Default)]
pub struct SummaryCache {
    built: Mutex<Option<Built>>,
}

struct Built {
    /// What the records and sessions were at when it was built (see `get`).
    generations: (u64, u64),
    at: Instant,
    summaries: Summaries,
}

/// One built list of every system's summary.
#[derive(Clone, Default)]
pub struct Summaries {
    pub list: Arc<Vec<SystemSummary>>,
    /// `list` as `ListSystemsResponse` carries it, encoded by the first
    /// caller that sends it whole.
    encoded: Arc<OnceLock<Bytes>>,
}

impl Summaries {
    fn new(list: Vec<SystemSummary>) -> Self {
        Summaries {
            list: Arc::new(list),
            encoded: Arc::default(),
        }
    }

    /// The whole list as a response, encoded once per built list.
    pub fn response(&self) -> ListSystemsResponse {
        let encoded = self
            .encoded
            .get_or_init(|| ListSystemsResponse::encode_systems(&self.list));
        ListSystemsResponse::encoded(encoded.clone())
    }
}

impl SummaryCache {
    /// The list built at `generations` (the store's count of system record
    /// changes and the sessions' count of starts and ends), or a new one
    /// from `build`. Callers wait while another builds it.
    pub fn get<E>(
        &self,
        generations: (u64, u64),
        build: impl FnOnce() -> Result<Vec<SystemSummary>, E>,
    ) -> Result<Summaries, E> {
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = built.as_ref()
            && b.generations == generations
            && b.at.elapsed() < MAX_AGE
        {
            return Ok(b.summaries.clone());
        }
        let summaries = Summaries::new(build()?);
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
        assert!(Arc::ptr_eq(&first.list, &kept.list));
        let rebuilt = cache.get::<()>((1, 2), || Ok(named("c"))).unwrap();
        assert_eq!(rebuilt.list[0].name, "c");
        assert_eq!(cache.get((1, 2), || Err("no")).unwrap().list[0].name, "c");
        assert!(cache.get((2, 2), || Err("no")).is_err());
    }

    #[test]
    fn the_response_is_encoded_once_per_list_and_decodes_to_it() {
        use prost::Message;
        let cache = SummaryCache::default();
        let built = cache.get::<()>((1, 1), || Ok(named("a"))).unwrap();
        let first = built.response().encode_to_vec();
        let kept = cache.get::<()>((1, 1), || Ok(named("b"))).unwrap();
        assert!(Arc::ptr_eq(&built.encoded, &kept.encoded));
        assert!(kept.encoded.get().is_some());
        assert_eq!(kept.response().encode_to_vec(), first);
        let decoded = ListSystemsResponse::decode(first.as_slice()).unwrap();
        assert_eq!(decoded.systems, named("a"));
    }
}
