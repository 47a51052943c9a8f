//! Prefetch: every file of every served release (uploaded, current,
//! draining), its rewritten shell included, is brought into this node's blob cache as soon as the node
//! learns of the release, so a promotion finds every node warm. Each
//! snapshot refresh wakes one background task that walks the releases,
//! current and canary first, then newest first, and fetches what the cache
//! lacks, a few at a time. Already-cached files cost an index lookup, so a
//! walk is idempotent; a walk with failures (stopped at the first sign that
//! the store is unavailable) is retried with a growing pause. What is wanted is capped below the cache's budget, so prefetch
//! never evicts what it just fetched. Nothing happens without a cache.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use skewless_core::BlobHash;
use skewless_store::{BlobStore, StoreError, Variant};
use tokio::sync::watch;

use crate::snapshot::{Routing, Snapshot};

/// Fetches running at once.
const CONCURRENCY: usize = 8;
/// Share of the cache budget prefetch may fill, in percent: the rest is
/// room for files requested that no served release has.
const BUDGET_PERCENT: u64 = 90;
/// Pauses between retries of a walk that had failures.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The prefetch task of one node, started on the first refresh.
pub(crate) struct Prefetch {
    wake: watch::Sender<u64>,
    started: AtomicBool,
}

impl Default for Prefetch {
    fn default() -> Self {
        Prefetch {
            wake: watch::channel(0).0,
            started: AtomicBool::new(false),
        }
    }
}

impl Prefetch {
    /// Tells the task the snapshot changed (starting it if needed).
    pub(crate) fn refresh(&self, store: &Arc<dyn BlobStore>, routing: &Arc<Routing>) {
        let Some(stats) = store.cache_stats() else {
            return;
        };
        if !self.started.swap(true, Ordering::AcqRel) {
            let budget = stats.max_bytes / 100 * BUDGET_PERCENT;
            tokio::spawn(run(
                store.clone(),
                routing.clone(),
                self.wake.subscribe(),
                budget,
            ));
        }
        self.wake.send_modify(|n| *n += 1);
    }
}

/// The forms the served releases need, in the order they are fetched,
/// up to `budget` bytes.
pub(crate) fn wanted(snap: &Snapshot, budget: u64) -> Vec<(BlobHash, Variant, u64)> {
    let first = [
        snap.pointer.current.as_ref(),
        snap.canary.as_ref().map(|(id, _, _)| id),
    ];
    let mut views: Vec<_> = first
        .into_iter()
        .flatten()
        .filter_map(|id| snap.releases.get(id))
        .collect();
    views.extend(snap.ordered.iter().rev());
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut bytes = 0u64;
    for v in views {
        if !v.record.state.is_served() {
            continue;
        }
        let files = std::iter::once(&v.record.shell).chain(v.record.manifest.files.values());
        for e in files {
            let forms = [
                (Variant::Identity, Some(e.size)),
                (Variant::Br, e.br),
                (Variant::Gzip, e.gzip),
            ];
            for (variant, size) in forms {
                let Some(size) = size else { continue };
                if !seen.insert((e.hash.clone(), variant)) {
                    continue;
                }
                bytes += size;
                if bytes > budget {
                    return out;
                }
                out.push((e.hash.clone(), variant, size));
            }
        }
    }
    out
}

async fn run(
    store: Arc<dyn BlobStore>,
    routing: Arc<Routing>,
    mut wake: watch::Receiver<u64>,
    budget: u64,
) {
    let mut retry = RETRY_FIRST;
    loop {
        wake.mark_unchanged();
        let snap = routing.load_full();
        let todo = wanted(&snap, budget);
        let (mut fetched, mut bytes, mut failed) = (0u64, 0u64, 0u64);
        let mut last_error = None;
        let mut results = futures::stream::iter(todo)
            .map(|(hash, variant, size)| {
                let store = store.clone();
                async move { (store.prefetch(&hash, variant).await, size) }
            })
            .buffer_unordered(CONCURRENCY);
        while let Some((r, size)) = results.next().await {
            match r {
                Ok(true) => {
                    fetched += 1;
                    bytes += size;
                }
                Ok(false) => {}
                Err(e) => {
                    failed += 1;
                    let down = matches!(e, StoreError::Unavailable(_));
                    last_error = Some(e.to_string());
                    // The store is down: the rest would each wait out the
                    // timeout too. The walk is retried later.
                    if down {
                        break;
                    }
                }
            }
        }
        drop(results);
        crate::metrics::prefetched(fetched, failed);
        if fetched > 0 || failed > 0 {
            tracing::info!(
                version = snap.version,
                fetched,
                bytes,
                failed,
                "prefetched files of served releases into the blob cache"
            );
        }
        if failed > 0 {
            tracing::warn!(
                failed,
                retry_in_ms = retry.as_millis() as u64,
                "prefetch incomplete: {}",
                last_error.unwrap_or_default()
            );
            // A new snapshot starts a new walk at once; else retry later.
            let _ = tokio::time::timeout(retry, wake.changed()).await;
            retry = (retry * 2).min(RETRY_MAX);
        } else {
            retry = RETRY_FIRST;
            if wake.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use skewless_core::manifest::FileSpec;
    use skewless_core::{Lifecycle, Manifest, ReleaseId};
    use skewless_state::Pointer;

    use super::*;
    use crate::snapshot::fixtures::record;
    use crate::snapshot::ReleaseView;

    fn hash(name: &str) -> BlobHash {
        BlobHash::from_bytes(blake3::hash(name.as_bytes()).as_bytes())
    }

    /// A release whose files are named by their contents (`index.html` by
    /// the release's id), each 100 bytes, `.js` ones with a 30-byte br and
    /// a 40-byte gzip form.
    fn release(id: &str, seq: i64, state: Lifecycle, files: &[&str]) -> Arc<ReleaseView> {
        let index = format!("{id}/index.html");
        let specs: Vec<FileSpec> = files
            .iter()
            .map(|f| (*f, hash(f)))
            .chain([("index.html", hash(&index))])
            .map(|(path, hash)| FileSpec {
                path: path.into(),
                hash,
                size: 100,
            })
            .collect();
        let mut manifest = Manifest::from_specs(&specs).unwrap();
        for (path, e) in manifest.files.iter_mut() {
            if path.ends_with(".js") {
                e.br = Some(30);
                e.gzip = Some(40);
            }
        }
        let shell = skewless_core::Entry {
            hash: hash(&format!("shell of {id}")),
            size: 100,
            content_type: "text/html; charset=utf-8".into(),
            br: None,
            gzip: None,
        };
        Arc::new(ReleaseView::new(record(id, seq, state, shell, manifest)))
    }

    fn snapshot() -> Snapshot {
        let mut pointer = Pointer::empty();
        pointer.current = Some(ReleaseId::parse("cur").unwrap());
        let views = vec![
            release("gone", 1, Lifecycle::Retired, &["gone.css"]),
            release("old", 2, Lifecycle::Draining, &["old.css", "a.js"]),
            release("cur", 3, Lifecycle::Current, &["a.js", "cur.css"]),
            release("new", 4, Lifecycle::Uploaded, &["new.css"]),
        ];
        Snapshot::build(pointer, views, HashSet::new())
    }

    #[test]
    fn the_current_release_comes_first_then_the_newest_and_each_form_once() {
        let got = wanted(&snapshot(), u64::MAX);
        let order: Vec<(BlobHash, Variant)> = got.iter().map(|(h, v, _)| (h.clone(), *v)).collect();
        let expect = vec![
            (hash("shell of cur"), Variant::Identity),
            (hash("a.js"), Variant::Identity),
            (hash("a.js"), Variant::Br),
            (hash("a.js"), Variant::Gzip),
            (hash("cur.css"), Variant::Identity),
            (hash("cur/index.html"), Variant::Identity),
            (hash("shell of new"), Variant::Identity),
            (hash("new/index.html"), Variant::Identity),
            (hash("new.css"), Variant::Identity),
            (hash("shell of old"), Variant::Identity),
            (hash("old/index.html"), Variant::Identity),
            (hash("old.css"), Variant::Identity),
        ];
        assert_eq!(order, expect);
        assert_eq!(got[2].2, 30);
        // The retired release is not fetched.
        assert!(!order.iter().any(|(h, _)| *h == hash("gone.css")));
    }

    #[test]
    fn what_is_wanted_stays_within_the_budget() {
        let got = wanted(&snapshot(), 300);
        let bytes: u64 = got.iter().map(|(_, _, s)| s).sum();
        assert_eq!(got.len(), 4);
        assert_eq!(bytes, 270);
        assert!(wanted(&snapshot(), 99).is_empty());
    }
}
