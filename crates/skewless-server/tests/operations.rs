//! The release operations in-process, over the embedded adapters and a
//! clock the test moves: lifecycle, reaper and garbage collection without
//! waiting on real time, and registrations interleaved with collections.

use std::sync::Arc;

use skewless_core::manifest::FileSpec;
use skewless_core::transition::Operation;
use skewless_core::{BlobHash, Lifecycle, ReleaseId};
use skewless_server::{Adapters, Gateway, ManualClock, Operations, ServerConfig, ServerError};
use skewless_state::{Sqlite, StateError, StateStore};
use skewless_store::{BlobStore, ByteStream, LocalDir, ObjectBlobs, Variant};
use skewless_wire::{CreateRelease, PromoteRequest};

const START: i64 = 1_700_000_000;

struct Fixture {
    _data: tempfile::TempDir,
    gw: Arc<Gateway>,
    clock: Arc<ManualClock>,
    state: Arc<dyn StateStore>,
    blobs: Arc<dyn BlobStore>,
    _shutdown: tokio::sync::watch::Sender<bool>,
}

impl Fixture {
    async fn new(tune: impl FnOnce(&mut ServerConfig)) -> Fixture {
        Self::over(tune, |data| {
            Arc::new(LocalDir::open(data.join("blobs")).unwrap())
        })
        .await
    }

    /// Over the blob store `blobs` makes in the data directory.
    async fn over(
        tune: impl FnOnce(&mut ServerConfig),
        blobs: impl FnOnce(&std::path::Path) -> Arc<dyn BlobStore>,
    ) -> Fixture {
        let data = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), data.path().into());
        config.admin_token = Some("in-process-test-token".into());
        tune(&mut config);
        let clock = Arc::new(ManualClock::at(START));
        let state: Arc<dyn StateStore> =
            Arc::new(Sqlite::open(&data.path().join("state.db")).unwrap());
        let blobs = blobs(data.path());
        let (tx, rx) = tokio::sync::watch::channel(false);
        let adapters = Adapters {
            state: state.clone(),
            blobs: blobs.clone(),
            clock: clock.clone(),
        };
        let gw = Gateway::new(config, adapters, rx).await.unwrap();
        Fixture {
            _data: data,
            gw,
            clock,
            state,
            blobs,
            _shutdown: tx,
        }
    }

    fn ops(&self) -> &Operations {
        self.gw.operations()
    }
}

fn id(s: &str) -> ReleaseId {
    ReleaseId::parse(s).unwrap()
}

fn body(data: Vec<u8>) -> ByteStream {
    Box::pin(futures::stream::once(async move {
        Ok(bytes::Bytes::from(data))
    }))
}

/// Deploys files as a client does: asks which blobs are missing, uploads
/// them, registers; another round when a collection took a blob in between
/// (one whose last user was retired after the deploy asked). Returns the
/// release and how many rounds it took.
async fn deploy(
    ops: &Operations,
    release: &str,
    files: &[(&str, Vec<u8>)],
) -> Result<(ReleaseId, usize), ServerError> {
    let specs: Vec<FileSpec> = files
        .iter()
        .map(|(path, data)| FileSpec {
            path: (*path).into(),
            hash: BlobHash::from_bytes(blake3::hash(data).as_bytes()),
            size: data.len() as u64,
        })
        .collect();
    const ROUNDS: usize = 5;
    for round in 1..=ROUNDS {
        let missing = ops
            .missing_blobs(specs.iter().map(|s| s.hash.clone()).collect())
            .await?;
        for (spec, (_, data)) in specs.iter().zip(files) {
            if missing.contains(&spec.hash) {
                upload(ops, &spec.hash, data).await?;
            }
        }
        let req = CreateRelease {
            id: Some(release.into()),
            files: specs.clone(),
            ..CreateRelease::default()
        };
        match ops.register(req, "test").await {
            Ok(rec) => return Ok((rec.id, round)),
            Err(ServerError::State(StateError::MissingBlobs(_))) if round < ROUNDS => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("the last round returns")
}

/// Uploads a blob as the CLI does: again, after a pause, while a
/// collection is deleting it, until the collection has forgotten it.
async fn upload(ops: &Operations, hash: &BlobHash, data: &[u8]) -> Result<(), ServerError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match ops.put_blob(hash.clone(), body(data.to_vec())).await {
            Err(ServerError::BeingCollected(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            other => return other.map(drop),
        }
    }
}

/// Every blob of every release that is not retired or collected is stored
/// and reads back whole.
async fn assert_served_releases_complete(state: &dyn StateStore, blobs: &dyn BlobStore) {
    for r in state.releases().await.unwrap() {
        if !r.state.is_served() {
            continue;
        }
        let entries = r.manifest.files.values().chain(std::iter::once(&r.shell));
        for e in entries {
            let bytes = blobs.read(&e.hash, Variant::Identity, None).await;
            assert!(
                bytes.is_ok_and(|b| b.len() as u64 == e.size),
                "release {} ({}) misses blob {}",
                r.id,
                r.state,
                e.hash
            );
        }
    }
}

fn app(n: usize, shared: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "index.html",
            format!("<!doctype html><title>{n}</title><script src=\"/app.js\"></script>")
                .into_bytes(),
        ),
        ("app.js", format!("console.log({n})").into_bytes()),
        ("shared.css", shared.to_vec()),
        // A chunk of the release before the previous one, which a
        // collection may be deleting.
        (
            "prev.js",
            format!("chunk {}", n.saturating_sub(2)).into_bytes(),
        ),
        ("this.js", format!("chunk {n}").into_bytes()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_and_collections_interleaved_never_lose_a_blob() {
    let f = Fixture::new(|c| {
        c.gc_grace_secs = 2;
    })
    .await;
    interleave_registrations_and_collections(Arc::new(f)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_object_store_registrations_and_collections_never_lose_a_blob() {
    let f = Fixture::over(
        |c| c.gc_grace_secs = 2,
        |data| Arc::new(ObjectBlobs::in_memory(data.join("spool")).unwrap()),
    )
    .await;
    interleave_registrations_and_collections(Arc::new(f)).await;
}

/// An upload of a blob that a collection has marked for deletion is not
/// acknowledged (its object may vanish at any moment); once the collection
/// has deleted and forgotten it, the same upload stores it anew and a
/// release can be registered on it.
#[tokio::test]
async fn an_upload_of_a_blob_being_collected_is_refused_until_the_collection_is_done() {
    let f = Fixture::new(|c| c.gc_grace_secs = 60).await;
    let data = b"a blob a collection is deleting".to_vec();
    let hash = BlobHash::from_bytes(blake3::hash(&data).as_bytes());
    let first = f
        .ops()
        .put_blob(hash.clone(), body(data.clone()))
        .await
        .unwrap();
    assert!(first.stored);
    // A collection past the grace marks it and has not deleted it yet.
    f.clock.advance(120);
    let stored = [(hash.clone(), START)];
    let marked = f
        .state
        .mark_garbage(&stored, false, f.ops().now(), 60)
        .await
        .unwrap();
    assert_eq!(marked, vec![hash.clone()]);
    let refused = f.ops().put_blob(hash.clone(), body(data.clone())).await;
    match refused {
        Err(e @ ServerError::BeingCollected(_)) => {
            assert_eq!(e.status(), axum::http::StatusCode::CONFLICT);
            assert!(e.to_string().contains(hash.as_str()), "{e}");
        }
        other => panic!("upload of a blob being deleted answered {other:?}"),
    }
    // Still listed as missing, so a deploy uploads it again.
    let missing = f.ops().missing_blobs(vec![hash.clone()]).await.unwrap();
    assert_eq!(missing, vec![hash.clone()]);
    assert_eq!(f.ops().finish_collection().await.unwrap(), 1);
    assert!(!f.blobs.contains(&hash).await.unwrap());
    let again = f
        .ops()
        .put_blob(hash.clone(), body(data.clone()))
        .await
        .unwrap();
    assert!(again.stored, "stored anew after the collection");
    assert!(f.blobs.contains(&hash).await.unwrap());
    let (rel, rounds) = deploy(f.ops(), "after-gc", &[("index.html", data)])
        .await
        .unwrap();
    assert_eq!(rounds, 1);
    assert!(f.state.release(&rel).await.is_ok());
    let report = f.ops().fsck(false, "test").await.unwrap();
    assert!(report.ok, "{:?}", report.problems);
}

/// Objects the state has no record of (an upload whose deploy died before
/// it touched them) are kept for the grace period after they were written,
/// then collected; deletions a collection left are finished by the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_orphans_go_after_the_grace_and_unfinished_deletes_are_finished() {
    let f = Fixture::over(
        |c| c.gc_grace_secs = 600,
        |data| Arc::new(ObjectBlobs::in_memory(data.join("spool")).unwrap()),
    )
    .await;
    // The in-memory store stamps objects with the real time.
    let real_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    f.clock.advance(real_now - START);
    let (rel, _) = deploy(f.ops(), "kept", &app(1, b"x{}")).await.unwrap();
    let orphan = b"uploaded by a deploy that never registered".to_vec();
    let orphan_hash = BlobHash::from_bytes(blake3::hash(&orphan).as_bytes());
    f.blobs
        .put(&orphan_hash, body(orphan), u64::MAX)
        .await
        .unwrap();
    let report = f.ops().collect_garbage(false, "test").await.unwrap();
    assert!(report.blobs.is_empty(), "{:?}", report.blobs);
    assert!(f.blobs.contains(&orphan_hash).await.unwrap());
    f.clock.advance(700);
    let report = f.ops().collect_garbage(false, "test").await.unwrap();
    let gone: Vec<_> = report.blobs.iter().map(|b| b.hash.clone()).collect();
    assert_eq!(gone, vec![orphan_hash.clone()]);
    assert!(!f.blobs.contains(&orphan_hash).await.unwrap());
    assert_served_releases_complete(f.state.as_ref(), f.blobs.as_ref()).await;

    // A collection that marked blobs and died before deleting them.
    f.ops().retire(&rel, "test").await.unwrap();
    let stored: Vec<(BlobHash, i64)> = f
        .blobs
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|b| (b.hash, b.written_at as i64))
        .collect();
    f.state
        .apply(Operation::Collect, "test", f.ops().now())
        .await
        .unwrap();
    let marked = f
        .state
        .mark_garbage(&stored, false, f.ops().now(), 600)
        .await
        .unwrap();
    assert!(!marked.is_empty());
    assert_eq!(f.ops().finish_collection().await.unwrap(), marked.len());
    for h in &marked {
        assert!(!f.blobs.contains(h).await.unwrap());
    }
    assert!(f.state.deleting_blobs().await.unwrap().is_empty());
    let report = f.ops().fsck(false, "test").await.unwrap();
    assert!(report.ok, "{:?}", report.problems);
}

async fn interleave_registrations_and_collections(f: Arc<Fixture>) {
    const ROUNDS: usize = 60;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ReleaseId>();
    let deployer = {
        let f = f.clone();
        tokio::spawn(async move {
            for n in 0..ROUNDS {
                let name = format!("r{n}");
                let (rel, _) = deploy(f.ops(), &name, &app(n, b"body{}"))
                    .await
                    .unwrap_or_else(|e| panic!("deploy of {name} failed: {e}"));
                // Registered: complete now, whatever the collector does.
                let rec = f.state.release(&rel).await.unwrap();
                for e in rec
                    .manifest
                    .files
                    .values()
                    .chain(std::iter::once(&rec.shell))
                {
                    assert!(
                        f.blobs.contains(&e.hash).await.unwrap(),
                        "{name} registered without blob {}",
                        e.hash
                    );
                }
                f.ops()
                    .promote(&rel, &PromoteRequest::default(), "test")
                    .await
                    .unwrap();
                if n > 0 {
                    tx.send(id(&format!("r{}", n - 1))).unwrap();
                }
                f.clock.advance(1);
                tokio::task::yield_now().await;
            }
        })
    };
    let collector = {
        let f = f.clone();
        tokio::spawn(async move {
            let mut collections = 0;
            let mut open = true;
            while open {
                // Retire what the deployer is done with, then collect.
                loop {
                    match rx.try_recv() {
                        Ok(old) => f.ops().retire(&old, "test").await.unwrap(),
                        Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
                f.ops().collect_garbage(false, "test").await.unwrap();
                collections += 1;
                assert_served_releases_complete(f.state.as_ref(), f.blobs.as_ref()).await;
                tokio::task::yield_now().await;
            }
            collections
        })
    };
    deployer.await.unwrap();
    let collections = collector.await.unwrap();
    assert!(collections > 10, "only {collections} collections ran");
    f.ops().collect_garbage(false, "test").await.unwrap();
    assert_served_releases_complete(f.state.as_ref(), f.blobs.as_ref()).await;
    let report = f.ops().fsck(false, "test").await.unwrap();
    assert!(report.ok, "{:?}", report.problems);
    let current = f.state.pointer().await.unwrap().current;
    assert_eq!(current, Some(id(&format!("r{}", ROUNDS - 1))));
}

#[tokio::test]
async fn the_reaper_retires_drained_idle_releases_by_the_clock() {
    let f = Fixture::new(|c| {
        c.retention.keep_last = 0;
        c.retention.min_drain_secs = 100;
        c.retention.idle_secs = 50;
        c.retention.max_age_secs = 10_000;
        c.retention.presence_window_secs = 30;
    })
    .await;
    let ops = f.ops();
    for n in 1..=3 {
        deploy(ops, &format!("v{n}"), &app(n, b"shared"))
            .await
            .unwrap();
    }
    let promote = PromoteRequest::default();
    ops.promote(&id("v1"), &promote, "t").await.unwrap();
    ops.promote(&id("v2"), &promote, "t").await.unwrap();
    // v1 drains from now; v3 was never current and is not the reaper's.
    f.clock.advance(99);
    assert_eq!(f.gw.reap().await, 0, "drained 99 s of 100");
    f.clock.advance(1);
    // A client seen on v1 within the idle time keeps it.
    f.gw.seen(&id("v1"), "tab-00000001");
    f.clock.advance(49);
    assert_eq!(f.gw.reap().await, 0, "client seen 49 s ago");
    f.clock.advance(1);
    assert_eq!(f.gw.reap().await, 1);
    let state = |r: &str| {
        let state = f.state.clone();
        let r = id(r);
        async move { state.release(&r).await.unwrap().state }
    };
    assert_eq!(state("v1").await, Lifecycle::Retired);
    assert_eq!(state("v2").await, Lifecycle::Current);
    assert_eq!(state("v3").await, Lifecycle::Uploaded);
    let history = ops.history(100).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(
        (last.action.as_str(), last.actor.as_str()),
        ("retire", "reaper")
    );

    // Collection: v1's own files go at once, shared ones stay.
    let v1_only = BlobHash::from_bytes(blake3::hash(b"console.log(1)").as_bytes());
    let shared = BlobHash::from_bytes(blake3::hash(b"shared").as_bytes());
    assert!(f.blobs.contains(&v1_only).await.unwrap());
    let dry = ops.collect_garbage(true, "t").await.unwrap();
    assert_eq!(dry.collected_releases, vec![id("v1")]);
    assert!(dry.blobs.iter().any(|b| b.hash == v1_only));
    assert!(
        f.blobs.contains(&v1_only).await.unwrap(),
        "a dry run deletes nothing"
    );
    let gc = ops.collect_garbage(false, "t").await.unwrap();
    assert_eq!(gc.collected_releases, vec![id("v1")]);
    assert!(gc.bytes > 0);
    assert!(!f.blobs.contains(&v1_only).await.unwrap());
    assert!(f.blobs.contains(&shared).await.unwrap());
    assert_eq!(state("v1").await, Lifecycle::Collected);
}

#[tokio::test]
async fn past_the_maximum_age_a_release_is_retired_whatever_its_clients() {
    let f = Fixture::new(|c| {
        c.retention.keep_last = 0;
        c.retention.min_drain_secs = 100;
        c.retention.idle_secs = 50;
        c.retention.max_age_secs = 1000;
    })
    .await;
    let ops = f.ops();
    deploy(ops, "a", &app(1, b"s")).await.unwrap();
    deploy(ops, "b", &app(2, b"s")).await.unwrap();
    let promote = PromoteRequest::default();
    ops.promote(&id("a"), &promote, "t").await.unwrap();
    ops.promote(&id("b"), &promote, "t").await.unwrap();
    f.clock.advance(999);
    f.gw.seen(&id("a"), "tab-00000001");
    assert_eq!(f.gw.reap().await, 0);
    f.clock.advance(1);
    f.gw.seen(&id("a"), "tab-00000001");
    assert_eq!(f.gw.reap().await, 1);
    // The current release is never retired, however old.
    f.clock.advance(10_000);
    assert_eq!(f.gw.reap().await, 0);
}

#[tokio::test]
async fn an_unfinished_collection_is_finished_at_start_up() {
    let data = tempfile::tempdir().unwrap();
    let state = Sqlite::open(&data.path().join("state.db")).unwrap();
    let blobs = LocalDir::open(data.path().join("blobs")).unwrap();
    let orphan = b"left by a crashed gc".to_vec();
    let hash = BlobHash::from_bytes(blake3::hash(&orphan).as_bytes());
    blobs.put(&hash, body(orphan), u64::MAX).await.unwrap();
    // A collection marked it and stopped before deleting it.
    let stored = [(hash.clone(), 0)];
    assert_eq!(
        state.mark_garbage(&stored, false, START, 60).await.unwrap(),
        vec![hash.clone()]
    );
    drop((state, blobs));
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), data.path().into());
    config.admin_token = Some("in-process-test-token".into());
    let state: Arc<dyn StateStore> = Arc::new(Sqlite::open(&data.path().join("state.db")).unwrap());
    let blobs: Arc<dyn BlobStore> = Arc::new(LocalDir::open(data.path().join("blobs")).unwrap());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let adapters = Adapters {
        state: state.clone(),
        blobs: blobs.clone(),
        clock: Arc::new(ManualClock::at(START)),
    };
    let _gw = Gateway::new(config, adapters, rx).await.unwrap();
    assert!(!blobs.contains(&hash).await.unwrap());
    assert!(state.deleting_blobs().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_sampler_keeps_a_ring_of_live_clients_per_release_by_the_clock() {
    let f = Fixture::new(|c| {
        c.samples.interval_secs = 10;
        c.samples.kept_secs = 30;
        c.retention.presence_window_secs = 1000;
        c.retention.keep_last = 0;
    })
    .await;
    let ops = f.ops();
    let promote = PromoteRequest::default();
    let series = |h: &skewless_wire::ClientHistory, r: &str| -> Vec<(i64, u64)> {
        h.releases
            .iter()
            .find(|s| s.release.as_str() == r)
            .map(|s| s.points.iter().map(|p| (p.at - START, p.clients)).collect())
            .unwrap_or_default()
    };
    deploy(ops, "v1", &app(1, b"shared")).await.unwrap();
    ops.promote(&id("v1"), &promote, "t").await.unwrap();
    f.gw.seen(&id("v1"), "tab-00000001");
    f.gw.seen(&id("v1"), "tab-00000002");
    assert_eq!(f.gw.sample().await.unwrap(), 1);

    deploy(ops, "v2", &app(2, b"shared")).await.unwrap();
    ops.promote(&id("v2"), &promote, "t").await.unwrap();
    f.clock.advance(10);
    f.gw.seen(&id("v2"), "tab-00000003");
    assert_eq!(f.gw.sample().await.unwrap(), 2);
    // Later in the same slot: the point is replaced, not added.
    f.clock.advance(5);
    f.gw.seen(&id("v2"), "tab-00000004");
    f.gw.sample().await.unwrap();
    let h = ops.client_history(3600).await.unwrap();
    assert_eq!(series(&h, "v1"), vec![(0, 2), (10, 2)]);
    assert_eq!(series(&h, "v2"), vec![(10, 2)]);
    assert_eq!((h.interval_secs, h.kept_secs), (10, 30));
    assert_eq!(h.from, h.now - 30, "clamped to what is kept");

    // Ten more slots: state keeps a ring of four per release (30 s, both
    // ends); the answer shows the last 30 s of it.
    for _ in 0..10 {
        f.clock.advance(10);
        f.gw.sample().await.unwrap();
    }
    let kept: Vec<i64> = f
        .state
        .samples(0)
        .await
        .unwrap()
        .iter()
        .filter(|s| s.release.as_str() == "v2")
        .map(|s| s.at - START)
        .collect();
    assert_eq!(kept, vec![80, 90, 100, 110]);
    let h = ops.client_history(3600).await.unwrap();
    assert_eq!(series(&h, "v2"), vec![(90, 2), (100, 2), (110, 2)]);
    // A shorter window shows fewer samples.
    let short = ops.client_history(10).await.unwrap();
    assert_eq!(series(&short, "v2"), vec![(110, 2)]);

    // A retired release is no longer sampled; its points age out.
    ops.retire(&id("v1"), "t").await.unwrap();
    f.clock.advance(10);
    assert_eq!(f.gw.sample().await.unwrap(), 1);
    let h = ops.client_history(3600).await.unwrap();
    assert_eq!(series(&h, "v1"), vec![(100, 2), (110, 2)]);
    f.clock.advance(40);
    f.gw.sample().await.unwrap();
    let h = ops.client_history(3600).await.unwrap();
    assert!(series(&h, "v1").is_empty(), "{h:?}");
    assert_eq!(series(&h, "v2").last(), Some(&(160, 2)));

    assert!(matches!(
        ops.client_history(0).await,
        Err(ServerError::BadRequest(_))
    ));
    // A single node lists itself, holding every job.
    let nodes = ops.nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert!(nodes[0].live);
    assert_eq!(nodes[0].report.clients, 2);
    assert!(nodes[0].report.leases.contains(&"samples".to_owned()));
}
