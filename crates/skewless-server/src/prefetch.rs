//! Prefetch: every file of every served release (uploaded, current,
//! draining), its rewritten shell included, is brought into this node's blob cache as soon as the node
//! learns of the release, so a promotion finds every node warm. Each
//! snapshot refresh wakes one background task that walks the releases,
//! current and canary first, then newest first, and fetches what the cache
//! lacks, a few at a time. Already-cached files cost an index lookup, so a
//! walk is idempotent; a walk with failures is retried with a growing
//! pause. What is wanted is capped below the cache's budget, so prefetch
//! never evicts what it just fetched. Nothing happens without a cache.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use skewless_core::BlobHash;
use skewless_store::{BlobStore, Variant};
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
                    last_error = Some(e.to_string());
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
