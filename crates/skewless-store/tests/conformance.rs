//! The conformance suite every `BlobStore` implementation must pass, run
//! against the local directory, object_store's in-memory store and S3
//! (a moto server).

mod moto;

use std::io::Read;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use skewless_core::BlobHash;
use skewless_store::{
    BlobStore, ByteStream, LocalDir, ObjectBlobs, Put, Readable, S3Settings, S3Url, StoreError,
    Timeouts, Variant, CHUNK,
};

fn hash_of(data: &[u8]) -> BlobHash {
    BlobHash::from_bytes(blake3::hash(data).as_bytes())
}

/// `data` as an upload arriving in pieces of `piece` bytes.
fn body(data: &[u8], piece: usize) -> ByteStream {
    let parts: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(piece.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures::stream::iter(parts))
}

/// Bytes that do not compress.
fn noise(len: usize, seed: u8) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&[seed])
        .finalize_xof()
        .fill(&mut out);
    out
}

async fn all(r: Readable) -> Vec<u8> {
    match r {
        Readable::Bytes(b) => b.to_vec(),
        r => {
            let len = r.len();
            let mut body = r.into_stream();
            let mut out = Vec::new();
            while let Some(c) = body.next().await {
                let c = c.expect("stream chunk");
                assert!(c.len() <= CHUNK, "chunk of {} bytes", c.len());
                out.extend_from_slice(&c);
            }
            assert_eq!(out.len() as u64, len);
            out
        }
    }
}

/// Upload, lookups, reads, ranges, listing and deletion.
async fn stores_reads_lists_and_deletes(store: &dyn BlobStore) {
    let data = b"hello object store ".repeat(50);
    let h = hash_of(&data);
    let other = noise(3000, 1);
    let h2 = hash_of(&other);
    assert!(!store.contains(&h).await.unwrap());
    assert_eq!(store.stat(&h, Variant::Identity).await.unwrap(), None);
    assert_eq!(
        store.put(&h, body(&data, 7), 1 << 20).await.unwrap(),
        Put::Stored {
            size: data.len() as u64
        }
    );
    assert_eq!(
        store.put(&h, body(&data, 100), 1 << 20).await.unwrap(),
        Put::Existed {
            size: data.len() as u64
        }
    );
    store.put(&h2, body(&other, 1000), 1 << 20).await.unwrap();
    assert!(store.contains(&h).await.unwrap());
    let absent = hash_of(b"never stored");
    assert_eq!(
        store
            .missing(&[h.clone(), absent.clone(), h2.clone()])
            .await
            .unwrap(),
        vec![absent.clone()]
    );
    assert_eq!(
        &store.read(&h, Variant::Identity, None).await.unwrap()[..],
        &data[..]
    );
    assert_eq!(
        &store
            .read(&h, Variant::Identity, Some((6, 6)))
            .await
            .unwrap()[..],
        b"object"
    );
    assert_eq!(
        all(store
            .open(&h2, Variant::Identity, Some((100, 50)))
            .await
            .unwrap())
        .await,
        &other[100..150]
    );
    assert_eq!(
        store.stat(&h, Variant::Identity).await.unwrap(),
        Some(data.len() as u64)
    );
    assert!(store.verify(&h).await.unwrap());
    assert!(matches!(
        store.read(&absent, Variant::Identity, None).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.open(&absent, Variant::Identity, None).await,
        Err(StoreError::NotFound(_))
    ));

    let listed = store.list().await.unwrap();
    let mut want = vec![h.clone(), h2.clone()];
    want.sort();
    assert_eq!(
        listed.iter().map(|b| b.hash.clone()).collect::<Vec<_>>(),
        want
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for b in &listed {
        assert!(
            b.written_at + 600 > now && b.written_at <= now + 600,
            "{b:?}"
        );
    }
    assert_eq!(
        listed.iter().map(|b| b.bytes).sum::<u64>(),
        (data.len() + other.len()) as u64
    );

    let freed = store.delete_many(&[h.clone(), h2.clone()]).await.unwrap();
    assert_eq!(freed, (data.len() + other.len()) as u64);
    assert!(!store.contains(&h).await.unwrap());
    assert!(store.list().await.unwrap().is_empty());
    // Deleting what is gone is no error.
    assert_eq!(store.delete(&h).await.unwrap(), 0);
}

/// A wrong hash or an oversize upload is refused and leaves nothing.
async fn refuses_bad_uploads_keeping_nothing(store: &dyn BlobStore) {
    let wrong = hash_of(b"other");
    let err = store
        .put(&wrong, body(b"data", 2), 1 << 20)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::HashMismatch { .. }), "{err}");
    // Past the in-memory spool: refused as well.
    let big = noise(3 << 20, 2);
    let err = store
        .put(&hash_of(b"x"), body(&big, 64 << 10), 1 << 30)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::HashMismatch { .. }), "{err}");
    let h = hash_of(b"0123456789");
    let err = store.put(&h, body(b"0123456789", 3), 5).await.unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { limit: 5 }), "{err}");
    let broken: ByteStream = Box::pin(futures::stream::iter(vec![
        Ok(Bytes::from_static(b"0123")),
        Err(std::io::Error::other("connection reset")),
    ]));
    let err = store.put(&h, broken, 1 << 20).await.unwrap_err();
    assert!(matches!(err, StoreError::Interrupted(_)), "{err}");
    assert!(store.list().await.unwrap().is_empty());
    assert!(!store.contains(&wrong).await.unwrap());
    assert!(!store.contains(&h).await.unwrap());
    assert_eq!(store.leftovers().await.unwrap(), 0);
}

/// br and gzip variants beside compressible blobs, none beside others.
async fn makes_variants_once(store: &dyn BlobStore) {
    let text = b"body { color: red; margin: 0 auto; } ".repeat(300);
    let h = hash_of(&text);
    store.put(&h, body(&text, 512), 1 << 20).await.unwrap();
    let v = store.ensure_variants(&h).await.unwrap();
    let (br, gz) = (v.br.expect("br"), v.gzip.expect("gzip"));
    assert!(br < text.len() as u64 && gz < text.len() as u64);
    assert_eq!(store.ensure_variants(&h).await.unwrap(), v);
    assert_eq!(store.stat(&h, Variant::Br).await.unwrap(), Some(br));
    let mut back = Vec::new();
    let b = store.read(&h, Variant::Br, None).await.unwrap();
    brotli::Decompressor::new(&b[..], 4096)
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, text);
    let mut back = Vec::new();
    let g = all(store.open(&h, Variant::Gzip, None).await.unwrap()).await;
    flate2::read::GzDecoder::new(&g[..])
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, text);
    store.delete_variants(&h).await.unwrap();
    assert_eq!(store.stat(&h, Variant::Br).await.unwrap(), None);
    assert!(store.contains(&h).await.unwrap());
    assert_eq!(store.ensure_variants(&h).await.unwrap(), v);

    let raw = noise(5000, 3);
    let hr = hash_of(&raw);
    store.put(&hr, body(&raw, 512), 1 << 20).await.unwrap();
    assert_eq!(
        store.ensure_variants(&hr).await.unwrap(),
        Default::default()
    );
    assert_eq!(
        store.ensure_variants(&hr).await.unwrap(),
        Default::default()
    );
    assert!(matches!(
        store.read(&hr, Variant::Br, None).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.ensure_variants(&hash_of(b"none")).await,
        Err(StoreError::NotFound(_))
    ));
    // Variants and markers count as the blob's bytes and go with it.
    assert_eq!(store.list().await.unwrap().len(), 2);
    assert!(store.delete(&h).await.unwrap() > text.len() as u64);
    store.delete(&hr).await.unwrap();
    assert!(store.list().await.unwrap().is_empty());
}

/// What `known_variants` reports agrees with `ensure_variants`, and only
/// for blobs whose variants were made.
async fn known_variants_agree(store: &dyn BlobStore) {
    let mut hashes = Vec::new();
    let mut made = std::collections::HashMap::new();
    for i in 0..80u32 {
        let data = if i % 5 == 0 {
            noise(2000, i as u8)
        } else {
            format!("body {{ margin: {i}px; }} ")
                .repeat(100)
                .into_bytes()
        };
        let h = hash_of(&data);
        store.put(&h, body(&data, 4096), 1 << 20).await.unwrap();
        if i % 2 == 0 {
            made.insert(h.clone(), store.ensure_variants(&h).await.unwrap());
        }
        hashes.push(h);
    }
    // Many at once, some absent.
    let mut asked = hashes.clone();
    let absent: Vec<BlobHash> = (0..5u8).map(|i| hash_of(&[i, 9, 9])).collect();
    asked.extend(absent.iter().cloned());
    assert_eq!(store.missing(&asked).await.unwrap(), absent);
    let known = store.known_variants(&hashes).await.unwrap();
    for (h, v) in &known {
        assert_eq!(made.get(h), Some(v), "{h}");
    }
    let again = store.known_variants(&hashes[..10]).await.unwrap();
    for (h, v) in &again {
        assert_eq!(made.get(h), Some(v), "{h}");
    }
}

/// A blob too large for one request: uploaded in parts, streamed back in
/// bounded chunks, whole or in ranges.
async fn large_blobs_go_in_parts_and_stream_back(store: &dyn BlobStore) {
    let data = noise(19 * 1024 * 1024 + 123, 4);
    let h = hash_of(&data);
    assert_eq!(
        store
            .put(&h, body(&data, 256 * 1024), 1 << 30)
            .await
            .unwrap(),
        Put::Stored {
            size: data.len() as u64
        }
    );
    assert_eq!(
        store.put(&h, body(&data, 1 << 20), 1 << 30).await.unwrap(),
        Put::Existed {
            size: data.len() as u64
        }
    );
    let r = store.open(&h, Variant::Identity, None).await.unwrap();
    assert!(
        matches!(r, Readable::Stream { .. } | Readable::File(_)),
        "a large form is not read into memory"
    );
    assert!(all(r).await == data, "bytes differ");
    let r = store
        .open(&h, Variant::Identity, Some((5, 9_000_000)))
        .await
        .unwrap();
    assert!(all(r).await == data[5..9_000_005], "range differs");
    assert!(store.verify(&h).await.unwrap());
    assert_eq!(store.delete(&h).await.unwrap(), data.len() as u64);
    assert_eq!(store.leftovers().await.unwrap(), 0);
}

/// Several uploads of one blob at once all succeed and store it once.
async fn concurrent_uploads_of_one_blob(store: Arc<dyn BlobStore>) {
    let data = noise(200_000, 5);
    let h = hash_of(&data);
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let (store, data, h) = (store.clone(), data.clone(), h.clone());
            tokio::spawn(async move { store.put(&h, body(&data, 1000 + i * 997), 1 << 20).await })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Put::Stored { .. } => stored += 1,
            Put::Existed { .. } => {}
        }
    }
    assert!(stored >= 1);
    assert!(store.verify(&h).await.unwrap());
    assert_eq!(store.list().await.unwrap().len(), 1);
}

macro_rules! conformance {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn stores_reads_lists_and_deletes() {
                let (store, _keep) = $make;
                super::stores_reads_lists_and_deletes(store.as_ref()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn refuses_bad_uploads_keeping_nothing() {
                let (store, _keep) = $make;
                super::refuses_bad_uploads_keeping_nothing(store.as_ref()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn makes_variants_once() {
                let (store, _keep) = $make;
                super::makes_variants_once(store.as_ref()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn large_blobs_go_in_parts_and_stream_back() {
                let (store, _keep) = $make;
                super::large_blobs_go_in_parts_and_stream_back(store.as_ref()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn known_variants_agree() {
                let (store, _keep) = $make;
                super::known_variants_agree(store.as_ref()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_uploads_of_one_blob() {
                let (store, _keep) = $make;
                super::concurrent_uploads_of_one_blob(store).await;
            }
        }
    };
}

fn local() -> (Arc<dyn BlobStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Arc::new(LocalDir::open(dir.path()).unwrap()), dir)
}

fn memory() -> (Arc<dyn BlobStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Arc::new(ObjectBlobs::in_memory(dir.path()).unwrap()), dir)
}

/// One moto server for this test binary; a bucket per test.
fn moto() -> &'static moto::Moto {
    static MOTO: OnceLock<moto::Moto> = OnceLock::new();
    MOTO.get_or_init(moto::Moto::start)
}

fn s3_settings(endpoint: String, bucket: &str, timeouts: Timeouts) -> S3Settings {
    S3Settings {
        url: Some(
            S3Url::parse(&format!("s3://{bucket}/blobs"))
                .unwrap()
                .unwrap(),
        ),
        endpoint: Some(endpoint),
        region: Some("us-east-1".into()),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        session_token: None,
        allow_http: true,
        timeouts,
    }
}

fn s3() -> (Arc<dyn BlobStore>, tempfile::TempDir) {
    static N: AtomicU32 = AtomicU32::new(0);
    let m = moto();
    let bucket = format!(
        "conf-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    m.create_bucket(&bucket);
    let dir = tempfile::tempdir().unwrap();
    let settings = s3_settings(m.endpoint(), &bucket, Timeouts::default());
    (
        Arc::new(ObjectBlobs::s3(&settings, dir.path()).unwrap()),
        dir,
    )
}

conformance!(local_dir, local());
conformance!(in_memory, memory());
conformance!(s3_moto, s3());

/// A store that accepts connections and never answers, or refuses them,
/// gives a one-line `Unavailable` error, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_hanging_store_is_unavailable() {
    // Accepted by the kernel into the backlog, never answered.
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let timeouts = Timeouts {
        connect: Duration::from_millis(300),
        request: Duration::from_millis(500),
    };
    for addr in [hanging.local_addr().unwrap(), closed_addr] {
        let dir = tempfile::tempdir().unwrap();
        let settings = s3_settings(format!("http://{addr}"), "some-bucket", timeouts);
        let store = ObjectBlobs::s3(&settings, dir.path()).unwrap();
        let data = b"payload".to_vec();
        let h = hash_of(&data);
        for err in [
            store.put(&h, body(&data, 3), 1 << 20).await.unwrap_err(),
            store.read(&h, Variant::Identity, None).await.unwrap_err(),
            store.contains(&h).await.unwrap_err(),
            store.list().await.unwrap_err(),
            store.delete(&h).await.unwrap_err(),
        ] {
            assert!(matches!(err, StoreError::Unavailable(_)), "{addr}: {err}");
            let msg = err.to_string();
            assert!(!msg.contains('\n'), "{msg}");
            assert!(msg.contains("s3://some-bucket/blobs"), "{msg}");
        }
    }
}
