//! Presence: who runs which release. Exact for open event streams; for the
//! rest, the distinct client ids (`Skewless-Client`) seen within a window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use skewless_core::ReleaseId;

/// Most client ids remembered per release; beyond it the oldest are dropped.
const MAX_IDS_PER_RELEASE: usize = 100_000;

pub use skewless_wire::Counts;

#[derive(Debug, Default)]
struct Release {
    /// Open streams by client id ("" for streams without one).
    streams: HashMap<String, usize>,
    /// Client id → last seen (unix seconds).
    seen: HashMap<String, i64>,
    /// When any client was last seen.
    last_seen: Option<i64>,
}

/// The presence table.
#[derive(Debug)]
pub struct Presence {
    releases: Mutex<HashMap<ReleaseId, Release>>,
    window_secs: i64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain counters: a panic elsewhere leaves them usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Holds a stream's place in the table; dropping it closes the stream.
pub struct StreamGuard {
    presence: Arc<Presence>,
    release: ReleaseId,
    client: String,
    now: Arc<dyn crate::Clock>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let now = self.now.now();
        let mut all = lock(&self.presence.releases);
        if let Some(r) = all.get_mut(&self.release) {
            if let Some(n) = r.streams.get_mut(&self.client) {
                *n -= 1;
                if *n == 0 {
                    r.streams.remove(&self.client);
                }
            }
            r.last_seen = Some(now);
            if !self.client.is_empty() {
                r.seen.insert(self.client.clone(), now);
            }
        }
    }
}

/// Whether a client id is acceptable: 8 to 64 of `[A-Za-z0-9_-]`.
pub fn valid_client_id(id: &str) -> bool {
    (8..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Presence {
    /// An empty table counting ids seen within `window_secs`.
    pub fn new(window_secs: i64) -> Self {
        Presence {
            releases: Mutex::new(HashMap::new()),
            window_secs,
        }
    }

    /// Records a request from `client` running `release`.
    pub fn seen(&self, release: &ReleaseId, client: &str, now: i64) {
        if !valid_client_id(client) {
            return;
        }
        let mut all = lock(&self.releases);
        let r = all.entry(release.clone()).or_default();
        r.last_seen = Some(now);
        if let Some(t) = r.seen.get_mut(client) {
            *t = now;
            return;
        }
        if r.seen.len() >= MAX_IDS_PER_RELEASE {
            let window = self.window_secs;
            r.seen.retain(|_, t| now - *t < window);
            if r.seen.len() >= MAX_IDS_PER_RELEASE {
                return;
            }
        }
        r.seen.insert(client.to_owned(), now);
    }

    /// Registers an open event stream; it counts until the guard is dropped.
    pub fn open_stream(
        self: &Arc<Self>,
        release: &ReleaseId,
        client: Option<&str>,
        clock: Arc<dyn crate::Clock>,
    ) -> StreamGuard {
        let client = client
            .filter(|c| valid_client_id(c))
            .unwrap_or("")
            .to_owned();
        let now = clock.now();
        {
            let mut all = lock(&self.releases);
            let r = all.entry(release.clone()).or_default();
            *r.streams.entry(client.clone()).or_default() += 1;
            r.last_seen = Some(now);
        }
        StreamGuard {
            presence: self.clone(),
            release: release.clone(),
            client,
            now: clock,
        }
    }

    /// Live clients of every release, dropping ids older than the window.
    pub fn counts(&self, now: i64) -> HashMap<ReleaseId, Counts> {
        let window = self.window_secs;
        let mut all = lock(&self.releases);
        all.iter_mut()
            .map(|(id, r)| {
                r.seen.retain(|_, t| now - *t < window);
                let streams: usize = r.streams.values().sum();
                let anonymous = r.streams.get("").copied().unwrap_or(0);
                let streaming_ids = r
                    .streams
                    .keys()
                    .filter(|k| !k.is_empty() && !r.seen.contains_key(*k))
                    .count();
                let recent = r.seen.len() + streaming_ids;
                (
                    id.clone(),
                    Counts {
                        streams,
                        recent,
                        total: recent + anonymous,
                    },
                )
            })
            .collect()
    }

    /// When a client of `release` was last seen; now if a stream is open.
    pub fn last_seen(&self, release: &ReleaseId, now: i64) -> Option<i64> {
        let all = lock(&self.releases);
        let r = all.get(release)?;
        if r.streams.values().any(|n| *n > 0) {
            Some(now)
        } else {
            r.last_seen
        }
    }

    /// Forgets a release (retired: its clients are sent elsewhere).
    pub fn forget(&self, release: &ReleaseId) {
        let mut all = lock(&self.releases);
        if all.get(release).is_some_and(|r| r.streams.is_empty()) {
            all.remove(release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(i64);
    impl crate::Clock for Fixed {
        fn now(&self) -> i64 {
            self.0
        }
    }

    #[test]
    fn counts_streams_and_recent_ids() {
        let p = Arc::new(Presence::new(60));
        let v1 = ReleaseId::parse("v1").unwrap();
        let clock: Arc<dyn crate::Clock> = Arc::new(Fixed(100));
        p.seen(&v1, "tab-aaaaaaaa", 100);
        p.seen(&v1, "tab-aaaaaaaa", 101);
        p.seen(&v1, "tab-bbbbbbbb", 102);
        p.seen(&v1, "bad id!", 102);
        let s1 = p.open_stream(&v1, Some("tab-aaaaaaaa"), clock.clone());
        let s2 = p.open_stream(&v1, None, clock.clone());
        let s3 = p.open_stream(&v1, Some("tab-cccccccc"), clock.clone());
        let c = p.counts(110)[&v1];
        assert_eq!(
            c,
            Counts {
                streams: 3,
                recent: 3,
                total: 4
            }
        );
        drop((s1, s2, s3));
        let c = p.counts(110)[&v1];
        assert_eq!(
            c,
            Counts {
                streams: 0,
                recent: 3,
                total: 3
            }
        );
        // Past the window, ids age out.
        assert_eq!(p.counts(200)[&v1], Counts::default());
        assert_eq!(p.last_seen(&v1, 200), Some(100));
        let _s = p.open_stream(&v1, None, clock);
        assert_eq!(p.last_seen(&v1, 300), Some(300));
    }
}
