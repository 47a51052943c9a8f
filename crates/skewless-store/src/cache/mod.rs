//! A read-through cache of a remote blob store on this node's disk
//! ([`Cached`]). Forms are kept by hash and variant in a [`LocalDir`], so a
//! cached file is served exactly as a local blob is (same open, same
//! chunked streaming, same in-memory copies of small files). Blobs are
//! immutable, so a cached form is never invalidated; it is verified when
//! fetched (see `fill`), fetched once however many requests wait for it,
//! and evicted least recently used first when the cache holds more than its
//! byte budget. Writes go to the remote store.

mod fill;
mod index;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use skewless_core::BlobHash;

use crate::{
    BlobInfo, BlobStore, ByteStream, LocalDir, Put, Readable, StoreError, Variant, Variants,
};
use index::{Index, Key};

/// How the cache behaves.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// Bytes the cache directory may hold; least recently used forms go
    /// first when a fill goes over.
    pub max_bytes: u64,
    /// How long a read waits for the remote store to answer (per request,
    /// and per chunk of a fetch) before it fails as unavailable.
    pub remote_timeout: Duration,
}

/// Counters of a cache since its start, and what it holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads served from the cache directory.
    pub hits: u64,
    /// Reads that had to wait for a fetch.
    pub misses: u64,
    /// Forms fetched from the remote store and kept.
    pub fills: u64,
    /// Bytes of those.
    pub fill_bytes: u64,
    /// Fetches that failed (remote unavailable, corrupt copy, local I/O).
    pub fill_failures: u64,
    /// Reads that joined a fetch already in flight instead of starting one.
    pub waits: u64,
    /// Forms evicted to stay within the budget.
    pub evictions: u64,
    /// Bytes of those.
    pub evicted_bytes: u64,
    /// Bytes held now.
    pub bytes: u64,
    /// Forms held now.
    pub files: u64,
    /// The byte budget.
    pub max_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    fills: AtomicU64,
    fill_bytes: AtomicU64,
    fill_failures: AtomicU64,
    waits: AtomicU64,
    evictions: AtomicU64,
    evicted_bytes: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A fetch in flight, shared by every read that waits for it.
type Flight = Shared<BoxFuture<'static, Result<(), Arc<StoreError>>>>;

/// A remote blob store with a verified, bounded copy on this node's disk.
#[derive(Clone)]
pub struct Cached {
    inner: Arc<Inner>,
}

struct Inner {
    remote: Arc<dyn BlobStore>,
    local: LocalDir,
    index: Index,
    flights: Mutex<HashMap<Key, Flight>>,
    settings: CacheSettings,
    counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An owned copy of a shared error, for each read that waited on it.
fn owned(e: &StoreError) -> StoreError {
    match e {
        StoreError::HashMismatch { expected, actual } => StoreError::HashMismatch {
            expected: expected.clone(),
            actual: actual.clone(),
        },
        StoreError::TooLarge { limit } => StoreError::TooLarge { limit: *limit },
        StoreError::NotFound(h) => StoreError::NotFound(h.clone()),
        StoreError::Interrupted(m) => StoreError::Interrupted(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        StoreError::Remote { store, detail } => StoreError::Remote {
            store: store.clone(),
            detail: detail.clone(),
        },
        StoreError::Io { path, source } => StoreError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
    }
}

/// A remote read's failure, as a reader of the cache sees it: anything but
/// a missing blob means the remote cannot serve now.
fn unavailable(e: StoreError) -> StoreError {
    match e {
        StoreError::NotFound(_) | StoreError::Unavailable(_) | StoreError::Corrupt(_) => e,
        other => StoreError::Unavailable(other.to_string()),
    }
}

impl Cached {
    /// The cache in `dir` (created if needed) in front of `remote`. What the
    /// directory holds is indexed, oldest first by modification time;
    /// fetches a crash interrupted are removed; the budget is enforced.
    pub fn open(
        remote: Arc<dyn BlobStore>,
        dir: impl Into<PathBuf>,
        settings: CacheSettings,
    ) -> Result<Self, StoreError> {
        let local = LocalDir::open(dir)?;
        let index = Index::default();
        for (i, (key, size)) in scan(&local)?.into_iter().enumerate() {
            index.insert(key, size, Some(i as u64 + 1));
        }
        let inner = Arc::new(Inner {
            remote,
            local,
            index,
            flights: Mutex::new(HashMap::new()),
            settings,
            counters: Counters::default(),
        });
        inner.evict(None);
        Ok(Cached { inner })
    }

    /// Counters and holdings now.
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: get(&c.hits),
            misses: get(&c.misses),
            fills: get(&c.fills),
            fill_bytes: get(&c.fill_bytes),
            fill_failures: get(&c.fill_failures),
            waits: get(&c.waits),
            evictions: get(&c.evictions),
            evicted_bytes: get(&c.evicted_bytes),
            bytes: self.inner.index.bytes(),
            files: self.inner.index.len() as u64,
            max_bytes: self.inner.settings.max_bytes,
        }
    }
}

impl Cached {
    /// Pins a cached form, fetching it first if needed.
    async fn pinned(&self, hash: &BlobHash, variant: Variant) -> Result<index::Pin, StoreError> {
        let inner = &self.inner;
        if let Some(pin) = inner.index.hit(hash, variant) {
            add(&inner.counters.hits, 1);
            return Ok(pin);
        }
        add(&inner.counters.misses, 1);
        // A form evicted between its fetch and its pinning (a cache too
        // small for what is being read at once) is fetched again, once.
        for _ in 0..2 {
            inner.ensure(hash, variant).await?;
            if let Some(pin) = inner.index.hit(hash, variant) {
                return Ok(pin);
            }
        }
        Err(StoreError::Unavailable(format!(
            "blob {hash} was evicted as soon as it was fetched: the cache is too small for what is being read"
        )))
    }
}

impl Inner {
    /// Makes sure a form is cached: fetches it unless it is, or joins the
    /// fetch in flight. True if this call found it missing.
    async fn ensure(
        self: &Arc<Self>,
        hash: &BlobHash,
        variant: Variant,
    ) -> Result<bool, StoreError> {
        let flight = {
            let mut flights = lock(&self.flights);
            // Checked under the flights lock: a fetch indexes its form
            // before it leaves the map, so none is fetched twice.
            if self.index.size(hash, variant).is_some() {
                return Ok(false);
            }
            let key = (hash.clone(), variant);
            match flights.get(&key) {
                Some(f) => {
                    add(&self.counters.waits, 1);
                    f.clone()
                }
                None => {
                    let me = self.clone();
                    let k = key.clone();
                    // Spawned, so the fetch goes on if the reader that
                    // started it goes away.
                    let task = tokio::spawn(async move {
                        let r = me.fill(&k).await;
                        if r.is_err() {
                            add(&me.counters.fill_failures, 1);
                        }
                        lock(&me.flights).remove(&k);
                        r.map_err(Arc::new)
                    });
                    let f = async move {
                        match task.await {
                            Ok(r) => r,
                            Err(e) => Err(Arc::new(StoreError::Interrupted(e.to_string()))),
                        }
                    }
                    .boxed()
                    .shared();
                    flights.insert(key, f.clone());
                    f
                }
            }
        };
        flight.await.map_err(|e| owned(&e))?;
        Ok(true)
    }

    /// Fetches one form from the remote store into the directory.
    async fn fill(self: &Arc<Self>, key: &Key) -> Result<(), StoreError> {
        let (hash, variant) = key;
        let wait = self.settings.remote_timeout;
        let readable = tokio::time::timeout(wait, self.remote.open(hash, *variant, None))
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "no answer within {} ms for blob {hash}",
                    wait.as_millis()
                ))
            })?
            .map_err(unavailable)?;
        let len = readable.len();
        let body = readable.into_stream();
        let size = fill::write_verified(&self.local, hash, *variant, body, len, wait).await?;
        self.index.insert(key.clone(), size, None);
        add(&self.counters.fills, 1);
        add(&self.counters.fill_bytes, size);
        let me = self.clone();
        let keep = key.clone();
        tokio::task::spawn_blocking(move || me.evict(Some(&keep)))
            .await
            .map_err(|e| StoreError::Interrupted(e.to_string()))?;
        Ok(())
    }

    /// Evicts down to the budget, never `keep` (just fetched for readers).
    fn evict(&self, keep: Option<&Key>) {
        let ev = self.index.evict(self.settings.max_bytes, keep, |(h, v)| {
            self.local.remove_form(h, *v).is_ok()
        });
        add(&self.counters.evictions, ev.files);
        add(&self.counters.evicted_bytes, ev.bytes);
    }

    /// Drops a form from the directory and the index.
    fn forget(&self, key: &Key) {
        let _ = self
            .index
            .remove(key, || self.local.remove_form(&key.0, key.1).map(|_| ()));
    }

    async fn bounded<T>(
        &self,
        what: &str,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let wait = self.settings.remote_timeout;
        tokio::time::timeout(wait, f).await.map_err(|_| {
            StoreError::Unavailable(format!(
                "no answer within {} ms to {what}",
                wait.as_millis()
            ))
        })?
    }
}

/// Every form in the cache directory with its size, oldest first; `.raw`
/// markers and stray names are ignored.
fn scan(local: &LocalDir) -> Result<Vec<(Key, u64)>, StoreError> {
    let mut found: Vec<_> = crate::local::stored_files(local.root())?
        .into_iter()
        .filter_map(|f| Some((f.modified, (f.hash, f.variant?), f.len)))
        .collect();
    found.sort_by_key(|a| a.0);
    Ok(found.into_iter().map(|(_, k, s)| (k, s)).collect())
}

#[async_trait]
impl BlobStore for Cached {
    async fn contains(&self, hash: &BlobHash) -> Result<bool, StoreError> {
        if self.inner.index.size(hash, Variant::Identity).is_some() {
            return Ok(true);
        }
        self.inner
            .bounded("a blob lookup", self.inner.remote.contains(hash))
            .await
    }

    /// Asks the remote store: a deploy must know what the shared store
    /// holds, not what this node happens to keep.
    async fn missing(&self, hashes: &[BlobHash]) -> Result<Vec<BlobHash>, StoreError> {
        self.inner.remote.missing(hashes).await
    }

    async fn put(
        &self,
        hash: &BlobHash,
        body: ByteStream,
        max_size: u64,
    ) -> Result<Put, StoreError> {
        self.inner.remote.put(hash, body, max_size).await
    }

    async fn ensure_variants(&self, hash: &BlobHash) -> Result<Variants, StoreError> {
        self.inner.remote.ensure_variants(hash).await
    }

    fn variants_in_flight(&self) -> usize {
        self.inner.remote.variants_in_flight()
    }

    async fn known_variants(
        &self,
        hashes: &[BlobHash],
    ) -> Result<HashMap<BlobHash, Variants>, StoreError> {
        self.inner.remote.known_variants(hashes).await
    }

    async fn read(
        &self,
        hash: &BlobHash,
        variant: Variant,
        range: Option<(u64, u64)>,
    ) -> Result<Bytes, StoreError> {
        // A file gone from under the index is forgotten and fetched again.
        for _ in 0..2 {
            let pin = self.pinned(hash, variant).await?;
            let r = self.inner.local.read_form(hash, variant, range).await;
            drop(pin);
            match r {
                Err(StoreError::NotFound(_)) => self.inner.forget(&(hash.clone(), variant)),
                r => return r,
            }
        }
        Err(StoreError::NotFound(hash.to_string()))
    }

    async fn open(
        &self,
        hash: &BlobHash,
        variant: Variant,
        range: Option<(u64, u64)>,
    ) -> Result<Readable, StoreError> {
        // A file gone from under the index is forgotten and fetched again.
        for _ in 0..2 {
            let pin = self.pinned(hash, variant).await?;
            let r = self.inner.local.open_form(hash, variant, range).await;
            drop(pin);
            match r {
                Err(StoreError::NotFound(_)) => self.inner.forget(&(hash.clone(), variant)),
                r => return r,
            }
        }
        Err(StoreError::NotFound(hash.to_string()))
    }

    async fn stat(&self, hash: &BlobHash, variant: Variant) -> Result<Option<u64>, StoreError> {
        if let Some(size) = self.inner.index.size(hash, variant) {
            return Ok(Some(size));
        }
        self.inner
            .bounded("a blob lookup", self.inner.remote.stat(hash, variant))
            .await
    }

    /// Verifies the remote copy; a cached copy that no longer hashes right
    /// (changed on this node's disk) is dropped, to be fetched again.
    async fn verify(&self, hash: &BlobHash) -> Result<bool, StoreError> {
        if self.inner.index.size(hash, Variant::Identity).is_some()
            && !self.inner.local.verify(hash).await.unwrap_or(false)
        {
            self.inner.forget(&(hash.clone(), Variant::Identity));
        }
        self.inner.remote.verify(hash).await
    }

    async fn delete_variants(&self, hash: &BlobHash) -> Result<(), StoreError> {
        self.inner.remote.delete_variants(hash).await?;
        for v in [Variant::Br, Variant::Gzip] {
            self.inner.forget(&(hash.clone(), v));
        }
        Ok(())
    }

    /// The remote store's: the cache's own temp files are fetches in
    /// flight, and those a crash left are removed at start.
    async fn leftovers(&self) -> Result<usize, StoreError> {
        self.inner.remote.leftovers().await
    }

    async fn delete(&self, hash: &BlobHash) -> Result<u64, StoreError> {
        let freed = self.inner.remote.delete(hash).await?;
        for v in [Variant::Identity, Variant::Br, Variant::Gzip] {
            self.inner.forget(&(hash.clone(), v));
        }
        Ok(freed)
    }

    async fn delete_many(&self, hashes: &[BlobHash]) -> Result<u64, StoreError> {
        let freed = self.inner.remote.delete_many(hashes).await?;
        for hash in hashes {
            for v in [Variant::Identity, Variant::Br, Variant::Gzip] {
                self.inner.forget(&(hash.clone(), v));
            }
        }
        Ok(freed)
    }

    async fn list(&self) -> Result<Vec<BlobInfo>, StoreError> {
        self.inner.remote.list().await
    }

    /// This node's cached copy, if it still hashes right.
    async fn local_copy(&self, hash: &BlobHash) -> Result<Option<ByteStream>, StoreError> {
        if self.inner.index.size(hash, Variant::Identity).is_none()
            || !self.inner.local.verify(hash).await.unwrap_or(false)
        {
            return Ok(None);
        }
        let copy = self.inner.local.open(hash, Variant::Identity, None).await?;
        Ok(Some(copy.into_stream()))
    }

    async fn prefetch(&self, hash: &BlobHash, variant: Variant) -> Result<bool, StoreError> {
        self.inner.ensure(hash, variant).await
    }

    fn cache_stats(&self) -> Option<CacheStats> {
        Some(self.stats())
    }
}
