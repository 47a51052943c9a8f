use std::sync::atomic::{AtomicU8, AtomicUsize};
use std::time::Instant;

use futures::StreamExt;

use super::*;
use crate::{brotli_compress, gzip_compress};

const OK: u8 = 0;
const HANG: u8 = 1;
const FAIL: u8 = 2;
const CORRUPT: u8 = 3;

/// A remote: a real [`LocalDir`] whose reads can be held at a gate, made to
/// hang, fail or return wrong bytes, and are counted.
struct Remote {
    dir: LocalDir,
    mode: AtomicU8,
    opens: AtomicUsize,
    gate: tokio::sync::Semaphore,
    gated: std::sync::atomic::AtomicBool,
}

impl Remote {
    fn new(dir: &std::path::Path) -> Arc<Self> {
        Arc::new(Remote {
            dir: LocalDir::open(dir).unwrap(),
            mode: AtomicU8::new(OK),
            opens: AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(0),
            gated: Default::default(),
        })
    }

    fn opens(&self) -> usize {
        self.opens.load(Ordering::SeqCst)
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    async fn add(&self, data: &[u8]) -> BlobHash {
        let h = hash_of(data);
        let body: ByteStream = Box::pin(futures::stream::iter([Ok(Bytes::from(data.to_vec()))]));
        self.dir.put(&h, body, u64::MAX).await.unwrap();
        h
    }
}

#[async_trait]
impl BlobStore for Remote {
    async fn contains(&self, hash: &BlobHash) -> Result<bool, StoreError> {
        self.dir.contains(hash).await
    }
    async fn put(&self, h: &BlobHash, b: ByteStream, m: u64) -> Result<Put, StoreError> {
        self.dir.put(h, b, m).await
    }
    async fn ensure_variants(&self, hash: &BlobHash) -> Result<Variants, StoreError> {
        self.dir.ensure_variants(hash).await
    }
    async fn read(
        &self,
        hash: &BlobHash,
        variant: Variant,
        range: Option<(u64, u64)>,
    ) -> Result<Bytes, StoreError> {
        self.dir.read(hash, variant, range).await
    }
    async fn open(
        &self,
        hash: &BlobHash,
        variant: Variant,
        range: Option<(u64, u64)>,
    ) -> Result<Readable, StoreError> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        if self.gated.load(Ordering::SeqCst) {
            // Closed when the test is done with the gate.
            let _ = self.gate.acquire().await;
        }
        match self.mode.load(Ordering::SeqCst) {
            HANG => std::future::pending().await,
            FAIL => Err(StoreError::Io {
                path: "remote".into(),
                source: std::io::Error::other("connection refused"),
            }),
            CORRUPT => {
                let mut data = self.dir.read(hash, variant, range).await?.to_vec();
                data[0] ^= 1;
                Ok(Readable::Bytes(Bytes::from(data)))
            }
            _ => self.dir.open(hash, variant, range).await,
        }
    }
    async fn stat(&self, hash: &BlobHash, variant: Variant) -> Result<Option<u64>, StoreError> {
        if self.mode.load(Ordering::SeqCst) == HANG {
            return std::future::pending().await;
        }
        self.dir.stat(hash, variant).await
    }
    async fn verify(&self, hash: &BlobHash) -> Result<bool, StoreError> {
        self.dir.verify(hash).await
    }
    async fn delete_variants(&self, hash: &BlobHash) -> Result<(), StoreError> {
        self.dir.delete_variants(hash).await
    }
    async fn leftovers(&self) -> Result<usize, StoreError> {
        self.dir.leftovers().await
    }
    async fn delete(&self, hash: &BlobHash) -> Result<u64, StoreError> {
        self.dir.delete(hash).await
    }
    async fn list(&self) -> Result<Vec<BlobInfo>, StoreError> {
        self.dir.list().await
    }
}

fn hash_of(data: &[u8]) -> BlobHash {
    BlobHash::from_bytes(blake3::hash(data).as_bytes())
}

fn settings(max_bytes: u64) -> CacheSettings {
    CacheSettings {
        max_bytes,
        remote_timeout: Duration::from_millis(200),
    }
}

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32 * 7 + seed as u32) as u8 ^ seed)
        .collect()
}

async fn collect(r: Readable) -> Vec<u8> {
    match r {
        Readable::Bytes(b) => b.to_vec(),
        r => {
            let mut body = r.into_stream();
            let mut out = Vec::new();
            while let Some(c) = body.next().await {
                out.extend_from_slice(&c.unwrap());
            }
            out
        }
    }
}

/// Waits, with a deadline, until `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn files_in(dir: &std::path::Path) -> usize {
    walk(dir).len()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_readers_of_a_missing_blob_share_one_fetch() {
    let (r, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let remote = Remote::new(r.path());
    let body = data(1, 300_000);
    let h = remote.add(&body).await;
    remote.gated.store(true, Ordering::SeqCst);
    let cache = Cached::open(remote.clone(), c.path(), settings(1 << 30)).unwrap();
    let readers: Vec<_> = (0..20)
        .map(|_| {
            let (cache, h) = (cache.clone(), h.clone());
            tokio::spawn(async move {
                let r = cache.open(&h, Variant::Identity, None).await?;
                Ok::<_, StoreError>(collect(r).await)
            })
        })
        .collect();
    until("every reader to wait on the fetch", || {
        cache.stats().waits == 19 && remote.opens() == 1
    })
    .await;
    remote.gate.close();
    for r in readers {
        assert_eq!(r.await.unwrap().unwrap(), body);
    }
    let s = cache.stats();
    assert_eq!(remote.opens(), 1);
    assert_eq!(
        (s.misses, s.fills, s.waits, s.fill_bytes),
        (20, 1, 19, 300_000)
    );
    // Now a hit, from the same code as a local blob: no remote read.
    let range = cache
        .read(&h, Variant::Identity, Some((10, 5)))
        .await
        .unwrap();
    assert_eq!(&range[..], &body[10..15]);
    assert_eq!(remote.opens(), 1);
    assert_eq!(cache.stats().hits, 1);
    assert_eq!(
        cache.stat(&h, Variant::Identity).await.unwrap(),
        Some(300_000)
    );
}

#[tokio::test]
async fn compressed_forms_are_checked_by_their_decompressed_hash() {
    let (r, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let remote = Remote::new(r.path());
    let text = b"body { color: red } ".repeat(500);
    let h = remote.add(&text).await;
    let v = remote.ensure_variants(&h).await.unwrap();
    assert!(v.br.is_some() && v.gzip.is_some());
    let cache = Cached::open(remote.clone(), c.path(), settings(1 << 30)).unwrap();
    let br = cache.read(&h, Variant::Br, None).await.unwrap();
    assert_eq!(br, remote.dir.read(&h, Variant::Br, None).await.unwrap());
    let gz = cache.read(&h, Variant::Gzip, None).await.unwrap();
    assert_eq!(gz.len() as u64, v.gzip.unwrap());
    assert_eq!(cache.stats().fills, 2);

    // A br form that decodes to other bytes, a truncated gzip form: refused.
    let other = hash_of(b"x");
    let h2 = remote.add(&b"other text ".repeat(300)).await;
    let wrong = brotli_compress(&b"not the blob ".repeat(300));
    std::fs::create_dir_all(remote.dir.form_path(&h2, Variant::Br).parent().unwrap()).unwrap();
    std::fs::write(remote.dir.form_path(&h2, Variant::Br), wrong).unwrap();
    let gz = gzip_compress(&b"other text ".repeat(300));
    std::fs::write(
        remote.dir.form_path(&h2, Variant::Gzip),
        &gz[..gz.len() - 9],
    )
    .unwrap();
    for v in [Variant::Br, Variant::Gzip] {
        let err = cache.read(&h2, v, None).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{v:?}: {err}");
    }
    assert!(matches!(
        cache.read(&other, Variant::Identity, None).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(cache.stats().fill_failures, 3);
    // Nothing half-written is left or kept.
    assert_eq!(files_in(c.path()), 2);
}

#[tokio::test]
async fn corrupt_remote_bytes_are_refused_and_a_later_read_fetches_again() {
    let (r, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let remote = Remote::new(r.path());
    let body = data(2, 5000);
    let h = remote.add(&body).await;
    let cache = Cached::open(remote.clone(), c.path(), settings(1 << 30)).unwrap();
    remote.set(CORRUPT);
    let err = cache.open(&h, Variant::Identity, None).await.err().unwrap();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert_eq!(files_in(c.path()), 0);
    assert_eq!(cache.stats().files, 0);
    remote.set(OK);
    let got = collect(cache.open(&h, Variant::Identity, None).await.unwrap()).await;
    assert_eq!(got, body);
    assert_eq!(remote.opens(), 2);
}

#[tokio::test]
async fn an_unavailable_remote_fails_uncached_reads_in_bounded_time_and_cached_ones_still_serve() {
    let (r, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let remote = Remote::new(r.path());
    let cached_body = data(3, 2000);
    let a = remote.add(&cached_body).await;
    let b = remote.add(&data(4, 2000)).await;
    let cache = Cached::open(remote.clone(), c.path(), settings(1 << 30)).unwrap();
    assert!(cache.prefetch(&a, Variant::Identity).await.unwrap());
    assert!(!cache.prefetch(&a, Variant::Identity).await.unwrap());

    for mode in [HANG, FAIL] {
        remote.set(mode);
        let err = cache.read(&b, Variant::Identity, None).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
        // Lookups are bounded too.
        if mode == HANG {
            let err = cache.stat(&b, Variant::Identity).await.unwrap_err();
            assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
        }
        let got = cache.read(&a, Variant::Identity, None).await.unwrap();
        assert_eq!(&got[..], &cached_body[..]);
        assert_eq!(cache.stat(&a, Variant::Identity).await.unwrap(), Some(2000));
    }
    assert_eq!(cache.stats().fill_failures, 2);
    // The failed fetches are not remembered: the next read tries again.
    remote.set(OK);
    assert_eq!(
        cache.read(&b, Variant::Identity, None).await.unwrap(),
        Bytes::from(data(4, 2000))
    );
}

#[tokio::test]
async fn evicts_least_recently_used_by_bytes_and_an_open_file_keeps_streaming() {
    let (r, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let remote = Remote::new(r.path());
    // Larger than what is kept in memory, so they are streamed from disk.
    let big = 2 * 1024 * 1024;
    let bodies: Vec<Vec<u8>> = (0..4).map(|i| data(10 + i, big)).collect();
    let mut hashes = Vec::new();
    for b in &bodies {
        hashes.push(remote.add(b).await);
    }
    let cache = Cached::open(remote.clone(), c.path(), settings(5 * big as u64 / 2)).unwrap();
    let path = |i: usize| {
        c.path()
            .join(&hashes[i].as_str()[..2])
            .join(hashes[i].as_str())
    };
    cache
        .read(&hashes[0], Variant::Identity, None)
        .await
        .unwrap();
    cache
        .read(&hashes[1], Variant::Identity, None)
        .await
        .unwrap();
    // 0 is used again: 1 is now the least recent.
    let mut open = match cache
        .open(&hashes[0], Variant::Identity, None)
        .await
        .unwrap()
    {
        Readable::File(part) => part.into_stream(),
        _ => panic!("a large cached form is sent from its open file"),
    };
    let first = open.next().await.unwrap().unwrap();
    cache
        .read(&hashes[2], Variant::Identity, None)
        .await
        .unwrap();
    assert!(!path(1).exists(), "the least recently used goes first");
    assert!(path(0).exists() && path(2).exists());
    let s = cache.stats();
    assert_eq!(
        (s.evictions, s.evicted_bytes, s.bytes),
        (1, big as u64, 2 * big as u64)
    );
    // 0 is now the least recent and goes, while its reader is mid-file.
    cache
        .read(&hashes[3], Variant::Identity, None)
        .await
        .unwrap();
    assert!(!path(0).exists());
    let mut got = first.to_vec();
    while let Some(c) = open.next().await {
        got.extend_from_slice(&c.unwrap());
    }
    assert_eq!(got, bodies[0]);
    assert!(cache.stats().bytes <= 5 * big as u64 / 2);
}

#[tokio::test]
async fn the_index_is_rebuilt_from_disk_and_leftovers_are_removed() {
    let (r, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let remote = Remote::new(r.path());
    let mut hashes = Vec::new();
    for i in 0..3 {
        hashes.push(remote.add(&data(20 + i, 1000)).await);
    }
    {
        let cache = Cached::open(remote.clone(), c.path(), settings(1 << 30)).unwrap();
        for h in &hashes {
            cache.prefetch(h, Variant::Identity).await.unwrap();
        }
    }
    // A fetch a crash cut short.
    std::fs::write(c.path().join("tmp").join("0123456789abcdef"), b"half").unwrap();
    let cache = Cached::open(remote.clone(), c.path(), settings(1 << 30)).unwrap();
    assert_eq!(std::fs::read_dir(c.path().join("tmp")).unwrap().count(), 0);
    let s = cache.stats();
    assert_eq!((s.files, s.bytes), (3, 3000));
    let opens = remote.opens();
    for (i, h) in hashes.iter().enumerate() {
        let got = cache.read(h, Variant::Identity, None).await.unwrap();
        assert_eq!(got, Bytes::from(data(20 + i as u8, 1000)));
    }
    assert_eq!(remote.opens(), opens);
    assert_eq!(cache.stats().hits, 3);
    drop(cache);
    // A smaller budget at start evicts the oldest.
    let cache = Cached::open(remote.clone(), c.path(), settings(2000)).unwrap();
    let s = cache.stats();
    assert_eq!((s.files, s.bytes, s.evictions), (2, 2000, 1));
    assert_eq!(files_in(c.path()), 2);
}

#[tokio::test]
async fn writes_go_to_the_remote_and_deletes_drop_the_cached_copy() {
    let (r, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let remote = Remote::new(r.path());
    let cache = Cached::open(remote.clone(), c.path(), settings(1 << 30)).unwrap();
    let text = b"let x = 1; ".repeat(400);
    let h = hash_of(&text);
    assert_eq!(
        cache.missing(std::slice::from_ref(&h)).await.unwrap(),
        vec![h.clone()]
    );
    let body: ByteStream = Box::pin(futures::stream::iter([Ok(Bytes::from(text.clone()))]));
    cache.put(&h, body, u64::MAX).await.unwrap();
    assert!(remote.contains(&h).await.unwrap());
    assert!(cache
        .missing(std::slice::from_ref(&h))
        .await
        .unwrap()
        .is_empty());
    let v = cache.ensure_variants(&h).await.unwrap();
    assert_eq!(remote.stat(&h, Variant::Br).await.unwrap(), v.br);
    cache.prefetch(&h, Variant::Br).await.unwrap();
    cache.prefetch(&h, Variant::Identity).await.unwrap();
    assert!(cache.verify(&h).await.unwrap());
    assert_eq!(cache.list().await.unwrap().len(), 1);
    cache.delete_variants(&h).await.unwrap();
    assert_eq!(cache.stats().files, 1);
    assert!(cache.delete(&h).await.unwrap() > 0);
    assert_eq!(cache.stats().files, 0);
    assert_eq!(files_in(c.path()), 0);
    assert!(!remote.contains(&h).await.unwrap());
}
