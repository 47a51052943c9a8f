//! Blobs in an object store: an S3-compatible bucket, or object_store's
//! in-memory store for fast tests. The layout is [`LocalDir`]'s:
//! `<prefix>/<first two hex>/<hash>` plus `<hash>.br`, `<hash>.gz`, or an
//! empty `<hash>.raw` marker when compression does not pay. An upload is
//! hashed while it is spooled on local disk and goes to its key only once
//! its hash is verified; small blobs go up in one create-if-absent put,
//! large ones in a multipart upload that becomes visible only when it
//! completes. Every request is bounded in time, so a store that is down
//! or hangs gives a [`StoreError::Unavailable`] instead of a hang.
//!
//! [`LocalDir`]: crate::LocalDir

mod remote;
mod s3;
mod upload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions};
use skewless_core::BlobHash;

use crate::compress::{self, MAX_COMPRESS};
use crate::hot::HOT_MAX_BLOB;
use crate::{BlobInfo, BlobStore, ByteStream, Put, Readable, StoreError, Variant, Variants};

pub use s3::{S3Settings, S3Url};

/// How long a remote store may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To open a connection.
    pub connect: Duration,
    /// For one request, from sending it to the end of its answer.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(30),
        }
    }
}

/// Requests in flight at once for batch lookups (which blobs are missing,
/// sizes before a delete, variants to make).
const LOOKUPS_IN_FLIGHT: usize = 32;
/// From this many blobs on, which are stored and which variants are made
/// is found by listing the store rather than by asking per blob.
const LIST_FROM: usize = 64;
/// Compressions running at once, whatever the number of variant lookups:
/// each holds a blob (up to [`MAX_COMPRESS`]) in memory.
const COMPRESSIONS: usize = 4;

/// A blob store in an object store.
#[derive(Debug, Clone)]
pub struct ObjectBlobs {
    store: Arc<dyn ObjectStore>,
    /// Key prefix, without a trailing slash; empty for the bucket's root.
    prefix: String,
    /// Where the store is, for messages (`s3://bucket/prefix`).
    name: String,
    /// Local directory where uploads are spooled while they are hashed.
    spool: PathBuf,
    timeouts: Timeouts,
    compressions: Arc<tokio::sync::Semaphore>,
}

impl ObjectBlobs {
    /// Blobs in `store` under `prefix`, named `name` in messages; uploads
    /// are spooled in `spool` (created, and cleared of what an earlier
    /// process left).
    pub fn new(
        store: Arc<dyn ObjectStore>,
        name: impl Into<String>,
        prefix: &str,
        spool: impl Into<PathBuf>,
        timeouts: Timeouts,
    ) -> Result<Self, StoreError> {
        let spool = spool.into();
        upload::clear_spool(&spool)?;
        Ok(ObjectBlobs {
            store,
            prefix: prefix.trim_matches('/').to_owned(),
            name: name.into(),
            spool,
            timeouts,
            compressions: Arc::new(tokio::sync::Semaphore::new(COMPRESSIONS)),
        })
    }

    /// Blobs in a fresh in-memory object store (for tests).
    pub fn in_memory(spool: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::new(
            Arc::new(object_store::memory::InMemory::new()),
            "memory://",
            "",
            spool,
            Timeouts::default(),
        )
    }

    /// Where the store is, as given (`s3://bucket/prefix`).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn key(&self, hash: &BlobHash, suffix: &str) -> Path {
        let h = hash.as_str();
        if self.prefix.is_empty() {
            Path::from(format!("{}/{h}{suffix}", &h[..2]))
        } else {
            Path::from(format!("{}/{}/{h}{suffix}", self.prefix, &h[..2]))
        }
    }

    /// Size of the object at `key`, `None` if there is none.
    async fn size_of(&self, key: &Path, hash: &BlobHash) -> Result<Option<u64>, StoreError> {
        match self.bounded("look up", hash, self.store.head(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores small server-made bytes at `key` unless something is there;
    /// whether they were stored.
    async fn put_small(
        &self,
        key: &Path,
        hash: &BlobHash,
        data: Bytes,
    ) -> Result<bool, StoreError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let put = self.store.put_opts(key, data.into(), opts);
        match tokio::time::timeout(self.limit(), put).await {
            Err(_) => Err(self.timed_out("store", Some(hash))),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            )) => Ok(false),
            Ok(Err(e)) => Err(self.error("store", Some(hash), e)),
        }
    }

    /// Deletes `keys`, in batches where the store has them; keys already
    /// gone are fine.
    async fn delete_keys(&self, keys: Vec<(Path, BlobHash)>) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let by_key: HashMap<Path, BlobHash> = keys.iter().cloned().collect();
        let stream = futures::stream::iter(keys.into_iter().map(|(k, _)| Ok(k))).boxed();
        let mut results = self.store.delete_stream(stream);
        let limit = self.limit();
        loop {
            let next = match tokio::time::timeout(limit, results.next()).await {
                Ok(next) => next,
                Err(_) => return Err(self.timed_out("delete", by_key.values().next())),
            };
            match next {
                None => return Ok(()),
                Some(Ok(_)) | Some(Err(object_store::Error::NotFound { .. })) => {}
                Some(Err(e)) => {
                    let hash = match &e {
                        object_store::Error::Generic { .. } => None,
                        _ => by_key.values().next(),
                    };
                    return Err(self.error("delete", hash, e));
                }
            }
        }
    }
}

impl ObjectBlobs {
    /// Calls `f(hash, suffix, size, written_at)` for every blob object
    /// under the prefix (other keys are skipped).
    async fn each_object(
        &self,
        mut f: impl FnMut(BlobHash, &str, u64, u64) + Send,
    ) -> Result<(), StoreError> {
        let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
        let mut objects = self.store.list(prefix.as_ref());
        let limit = self.limit();
        loop {
            let next = tokio::time::timeout(limit, objects.next())
                .await
                .map_err(|_| self.timed_out("list", None))?;
            let Some(meta) = next else { return Ok(()) };
            let meta = meta.map_err(|e| self.error("list", None, e))?;
            let Some(name) = meta.location.filename() else {
                continue;
            };
            let (stem, _) = name.split_once('.').unwrap_or((name, ""));
            let Ok(hash) = BlobHash::parse(stem) else {
                continue;
            };
            let suffix = &name[stem.len()..];
            if meta.location != self.key(&hash, suffix) {
                continue;
            }
            let written_at = meta.last_modified.timestamp().max(0) as u64;
            f(hash, suffix, meta.size, written_at);
        }
    }
}

/// The key suffix of a form.
fn suffix(v: Variant) -> &'static str {
    match v {
        Variant::Identity => "",
        Variant::Br => ".br",
        Variant::Gzip => ".gz",
    }
}

/// A `GetRange` for `len` bytes from `offset`.
fn get_range(range: Option<(u64, u64)>) -> Option<GetRange> {
    range.map(|(offset, len)| GetRange::Bounded(offset..offset.saturating_add(len)))
}

#[async_trait]
impl BlobStore for ObjectBlobs {
    async fn contains(&self, hash: &BlobHash) -> Result<bool, StoreError> {
        Ok(self.size_of(&self.key(hash, ""), hash).await?.is_some())
    }

    fn variants_in_flight(&self) -> usize {
        LOOKUPS_IN_FLIGHT
    }

    async fn known_variants(
        &self,
        hashes: &[BlobHash],
    ) -> Result<HashMap<BlobHash, Variants>, StoreError> {
        if hashes.len() < LIST_FROM {
            return Ok(HashMap::new());
        }
        let wanted: std::collections::HashSet<&BlobHash> = hashes.iter().collect();
        // Per blob: (br size, gzip size, raw marker).
        let mut seen: HashMap<BlobHash, (Option<u64>, Option<u64>, bool)> = HashMap::new();
        self.each_object(|hash, suffix, size, _| {
            if !wanted.contains(&hash) {
                return;
            }
            let e = seen.entry(hash).or_default();
            match suffix {
                ".br" => e.0 = Some(size),
                ".gz" => e.1 = Some(size),
                ".raw" => e.2 = true,
                _ => {}
            }
        })
        .await?;
        Ok(seen
            .into_iter()
            .filter_map(|(h, (br, gzip, raw))| match (br, gzip, raw) {
                (_, _, true) => Some((h, Variants::default())),
                (Some(_), Some(_), false) => Some((h, Variants { br, gzip })),
                _ => None,
            })
            .collect())
    }

    /// One lookup per blob for a few; for many, one listing of the store
    /// (a page per thousand objects) instead.
    async fn missing(&self, hashes: &[BlobHash]) -> Result<Vec<BlobHash>, StoreError> {
        if hashes.len() >= LIST_FROM {
            let wanted: std::collections::HashSet<&BlobHash> = hashes.iter().collect();
            let mut present = std::collections::HashSet::new();
            self.each_object(|hash, suffix, _, _| {
                if suffix.is_empty() && wanted.contains(&hash) {
                    present.insert(hash);
                }
            })
            .await?;
            return Ok(hashes
                .iter()
                .filter(|h| !present.contains(*h))
                .cloned()
                .collect());
        }
        let found: Vec<(BlobHash, bool)> = futures::stream::iter(hashes.iter().cloned())
            .map(|h| async move { self.contains(&h).await.map(|c| (h, c)) })
            .buffered(LOOKUPS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(found
            .into_iter()
            .filter(|(_, present)| !present)
            .map(|(h, _)| h)
            .collect())
    }

    async fn put(
        &self,
        hash: &BlobHash,
        body: ByteStream,
        max_size: u64,
    ) -> Result<Put, StoreError> {
        let spooled = upload::spool(&self.spool, body, max_size).await?;
        if &spooled.hash != hash {
            return Err(StoreError::HashMismatch {
                expected: hash.to_string(),
                actual: spooled.hash.to_string(),
            });
        }
        let size = spooled.size;
        let key = self.key(hash, "");
        let stored = self.upload(&key, hash, spooled).await?;
        Ok(if stored {
            Put::Stored { size }
        } else {
            Put::Existed { size }
        })
    }

    async fn ensure_variants(&self, hash: &BlobHash) -> Result<Variants, StoreError> {
        let keys = [".raw", ".br", ".gz", ""].map(|s| self.key(hash, s));
        let (raw, br, gz, len) = futures::try_join!(
            self.size_of(&keys[0], hash),
            self.size_of(&keys[1], hash),
            self.size_of(&keys[2], hash),
            self.size_of(&keys[3], hash),
        )?;
        let len = len.ok_or_else(|| StoreError::NotFound(hash.to_string()))?;
        if raw.is_some() || len > MAX_COMPRESS {
            return Ok(Variants::default());
        }
        if let (Some(b), Some(g)) = (br, gz) {
            return Ok(Variants {
                br: Some(b),
                gzip: Some(g),
            });
        }
        // Closed never: the semaphore lives as long as the store.
        let _turn = self.compressions.acquire().await.ok();
        let data = self.read(hash, Variant::Identity, None).await?;
        let made = tokio::task::spawn_blocking(move || compress::variants(&data))
            .await
            .map_err(|e| StoreError::Interrupted(e.to_string()))?;
        let mut v = Variants::default();
        if made.br.is_none() && made.gzip.is_none() {
            self.put_small(&self.key(hash, ".raw"), hash, Bytes::new())
                .await?;
            return Ok(v);
        }
        if let Some(g) = made.gzip {
            v.gzip = Some(g.len() as u64);
            self.put_small(&self.key(hash, ".gz"), hash, Bytes::from(g))
                .await?;
        }
        if let Some(b) = made.br {
            v.br = Some(b.len() as u64);
            self.put_small(&self.key(hash, ".br"), hash, Bytes::from(b))
                .await?;
        }
        Ok(v)
    }

    async fn read(
        &self,
        hash: &BlobHash,
        variant: Variant,
        range: Option<(u64, u64)>,
    ) -> Result<Bytes, StoreError> {
        if matches!(range, Some((_, 0))) {
            return Ok(Bytes::new());
        }
        let key = self.key(hash, suffix(variant));
        let opts = GetOptions {
            range: get_range(range),
            ..Default::default()
        };
        let store = self.store.clone();
        let read = async move { store.get_opts(&key, opts).await?.bytes().await };
        self.bounded("read", hash, read).await
    }

    async fn open(
        &self,
        hash: &BlobHash,
        variant: Variant,
        range: Option<(u64, u64)>,
    ) -> Result<Readable, StoreError> {
        if matches!(range, Some((_, 0))) {
            return Ok(Readable::Bytes(Bytes::new()));
        }
        let key = self.key(hash, suffix(variant));
        let opts = GetOptions {
            range: get_range(range),
            ..Default::default()
        };
        let got = self
            .bounded("read", hash, self.store.get_opts(&key, opts))
            .await?;
        let len = got.range.end - got.range.start;
        if let Some((_, want)) = range {
            if len < want {
                return Err(StoreError::Remote {
                    store: self.name.clone(),
                    detail: format!("{hash}: asked for {want} bytes, the store has {len}"),
                });
            }
        }
        if len <= HOT_MAX_BLOB {
            let bytes = self.bounded("read", hash, got.bytes()).await?;
            return Ok(Readable::Bytes(bytes));
        }
        Ok(Readable::Stream {
            body: remote::rechunk(got.into_stream(), self.timeouts.request, len),
            len,
        })
    }

    async fn stat(&self, hash: &BlobHash, variant: Variant) -> Result<Option<u64>, StoreError> {
        self.size_of(&self.key(hash, suffix(variant)), hash).await
    }

    async fn verify(&self, hash: &BlobHash) -> Result<bool, StoreError> {
        let key = self.key(hash, "");
        let got = self
            .bounded(
                "read",
                hash,
                self.store.get_opts(&key, GetOptions::default()),
            )
            .await?;
        let mut body = remote::rechunk(got.into_stream(), self.timeouts.request, u64::MAX);
        let mut h = blake3::Hasher::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                StoreError::Unavailable(format!("{}: reading {hash} broke off: {e}", self.name))
            })?;
            h.update(&chunk);
        }
        Ok(BlobHash::from_bytes(h.finalize().as_bytes()) == *hash)
    }

    async fn delete_variants(&self, hash: &BlobHash) -> Result<(), StoreError> {
        let keys = [".br", ".gz", ".raw"]
            .into_iter()
            .map(|s| (self.key(hash, s), hash.clone()))
            .collect();
        self.delete_keys(keys).await
    }

    async fn leftovers(&self) -> Result<usize, StoreError> {
        Ok(std::fs::read_dir(&self.spool).map_or(0, |d| d.count()))
    }

    async fn delete(&self, hash: &BlobHash) -> Result<u64, StoreError> {
        self.delete_many(std::slice::from_ref(hash)).await
    }

    async fn delete_many(&self, hashes: &[BlobHash]) -> Result<u64, StoreError> {
        let keys: Vec<(Path, BlobHash)> = hashes
            .iter()
            .flat_map(|h| {
                [".br", ".gz", ".raw", ""]
                    .into_iter()
                    .map(move |s| (self.key(h, s), h.clone()))
            })
            .collect();
        let sizes: Vec<Option<u64>> = futures::stream::iter(keys.clone())
            .map(|(k, h)| async move { self.size_of(&k, &h).await })
            .buffered(LOOKUPS_IN_FLIGHT)
            .try_collect()
            .await?;
        let freed = sizes.iter().flatten().sum();
        // Keys already gone are skipped; a batch cut short is finished by
        // the next collection, which deletes the same blobs again.
        let present: Vec<(Path, BlobHash)> = keys
            .into_iter()
            .zip(sizes)
            .filter(|(_, s)| s.is_some())
            .map(|(k, _)| k)
            .collect();
        self.delete_keys(present).await?;
        Ok(freed)
    }

    async fn list(&self) -> Result<Vec<BlobInfo>, StoreError> {
        let mut found: HashMap<BlobHash, BlobInfo> = HashMap::new();
        self.each_object(|hash, _, size, written_at| {
            let b = found.entry(hash.clone()).or_insert(BlobInfo {
                hash,
                bytes: 0,
                written_at,
            });
            b.bytes += size;
            // The latest write counts: a form written recently means a
            // deploy may still be at work on this blob.
            b.written_at = b.written_at.max(written_at);
        })
        .await?;
        let mut out: Vec<BlobInfo> = found.into_values().collect();
        out.sort_by(|a, b| a.hash.cmp(&b.hash));
        Ok(out)
    }
}
