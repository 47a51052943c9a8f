//! The conformance suite every `StateStore` implementation must pass.

use skewless_core::manifest::FileSpec;
use skewless_core::{BlobHash, Entry, Lifecycle, Manifest, ReleaseId};
use skewless_state::{NewRelease, Postgres, Sqlite, StateError, StateStore, TimeSource};

mod pg {
    //! A fresh PostgreSQL database per test, dropped afterwards even when
    //! the test fails. The server is `SKEWLESS_TEST_POSTGRES` (default: the
    //! local one on 127.0.0.1:5432, user postgres).
    use sqlx::Connection;

    pub fn server() -> String {
        std::env::var("SKEWLESS_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
    }

    pub struct Db {
        pub name: String,
    }

    impl Db {
        pub async fn create() -> Db {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let name = format!(
                "skewless_t_{}_{}_{}",
                std::process::id(),
                N.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos()
            );
            let mut c = sqlx::PgConnection::connect(&format!("{}/postgres", server()))
                .await
                .unwrap_or_else(|e| {
                    panic!("PostgreSQL at {} is needed for these tests: {e}", server())
                });
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut c)
                .await
                .unwrap();
            Db { name }
        }

        pub fn url(&self) -> String {
            format!("{}/{}", server(), self.name)
        }
    }

    impl Drop for Db {
        fn drop(&mut self) {
            let name = self.name.clone();
            // Its own runtime: this may run while the test's is unwinding.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut c) =
                        sqlx::PgConnection::connect(&format!("{}/postgres", server())).await
                    {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await;
                    }
                })
            })
            .join();
        }
    }
}

/// A store on a fresh database, taking the times the test passes.
async fn postgres() -> (Postgres, pg::Db) {
    let db = pg::Db::create().await;
    let store = Postgres::connect(&db.url())
        .await
        .unwrap()
        .with_time_source(TimeSource::Caller);
    (store, db)
}

fn hash(n: u8) -> BlobHash {
    BlobHash::from_bytes(&[n; 32])
}

fn new_release(id: &str, files: &[(&str, u8)]) -> NewRelease {
    let specs: Vec<FileSpec> = files
        .iter()
        .map(|(p, n)| FileSpec {
            path: (*p).into(),
            hash: hash(*n),
            size: 10,
        })
        .collect();
    let manifest = Manifest::from_specs(&specs).unwrap();
    NewRelease {
        id: ReleaseId::parse(id).unwrap(),
        shell: Entry {
            hash: hash(200),
            size: 5,
            content_type: "text/html; charset=utf-8".into(),
            br: None,
            gzip: None,
        },
        manifest,
        backend: None,
        backend_cmd: Some("./api --port {port}".into()),
        health_path: Some("/healthz".into()),
        created_at: 100,
    }
}

/// Registers a release whose blobs a deploy has just touched.
async fn create(
    store: &dyn StateStore,
    new: NewRelease,
    actor: &str,
) -> Result<skewless_state::ReleaseRecord, StateError> {
    let mut hashes: Vec<BlobHash> = new
        .manifest
        .files
        .values()
        .map(|e| e.hash.clone())
        .collect();
    hashes.push(new.shell.hash.clone());
    assert!(store
        .touch_blobs(&hashes, new.created_at)
        .await
        .unwrap()
        .is_empty());
    store.create_release(new, actor).await
}

fn id(s: &str) -> ReleaseId {
    ReleaseId::parse(s).unwrap()
}

async fn conformance(store: &dyn StateStore) {
    let v1 = new_release("v1", &[("index.html", 1), ("a.js", 2)]);
    let rec = create(store, v1.clone(), "test").await.unwrap();
    assert_eq!(rec.state, Lifecycle::Uploaded);
    assert_eq!(rec.files, 2);
    assert_eq!(rec.manifest, v1.manifest);
    assert_eq!(rec.backend_cmd.as_deref(), Some("./api --port {port}"));
    assert_eq!(rec.health_path.as_deref(), Some("/healthz"));
    assert!(matches!(
        create(store, v1, "test").await,
        Err(StateError::Exists(_))
    ));
    assert_eq!(store.pointer().await.unwrap().generation, 0);

    // Unknown release: NotFound and the pointer unchanged.
    assert!(matches!(
        store.promote(&id("nope"), false, "t", 1).await,
        Err(StateError::NotFound(_))
    ));
    assert!(matches!(
        store.rollback("t", 1).await,
        Err(StateError::NoRollback(_))
    ));

    let p = store.promote(&id("v1"), false, "t", 101).await.unwrap();
    assert_eq!(p.current, Some(id("v1")));
    assert_eq!(p.generation, 1);
    assert!(matches!(
        store.rollback("t", 1).await,
        Err(StateError::NoRollback(_))
    ));

    create(
        store,
        new_release("v2", &[("index.html", 3), ("a.js", 2)]),
        "t",
    )
    .await
    .unwrap();
    create(store, new_release("v3", &[("index.html", 4)]), "t")
        .await
        .unwrap();
    store.promote(&id("v2"), false, "t", 102).await.unwrap();
    let p = store.promote(&id("v3"), true, "t", 103).await.unwrap();
    assert_eq!(p.generation, 3);
    assert_eq!(p.required_min, Some(id("v3")));
    let states: Vec<_> = store
        .releases()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id.to_string(), r.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("v1".into(), Lifecycle::Draining),
            ("v2".into(), Lifecycle::Draining),
            ("v3".into(), Lifecycle::Current)
        ]
    );

    // Rollback walks back through promotions and drops a newer requirement.
    let p = store.rollback("t", 104).await.unwrap();
    assert_eq!(
        (p.current.clone(), p.generation, p.required_min.clone()),
        (Some(id("v2")), 4, None)
    );
    let p = store.rollback("t", 105).await.unwrap();
    assert_eq!(p.current, Some(id("v1")));

    // The current release cannot be retired; others can; retired is not promotable.
    assert!(matches!(
        store.retire(&id("v1"), "t", 106).await,
        Err(StateError::Rule(_))
    ));
    store.retire(&id("v3"), "t", 106).await.unwrap();
    assert!(store.promote(&id("v3"), false, "t", 107).await.is_err());
    assert_eq!(store.pointer().await.unwrap().current, Some(id("v1")));

    // Collection: v3's shell and files stop being referenced; shared ones stay.
    let refs = store.blob_refs().await.unwrap();
    assert!(refs.contains(&(hash(4), Lifecycle::Retired)));
    assert_eq!(
        store.collect_retired("t", 108).await.unwrap(),
        vec![id("v3")]
    );
    let refs = store.blob_refs().await.unwrap();
    assert!(refs.contains(&(hash(4), Lifecycle::Collected)));
    assert!(refs.contains(&(hash(2), Lifecycle::Current)));
    assert!(refs.contains(&(hash(200), Lifecycle::Draining)));
    assert_eq!(store.releases().await.unwrap().len(), 2);
    assert_eq!(store.release_summaries().await.unwrap().len(), 3);

    let history = store.history(100).await.unwrap();
    let actions: Vec<_> = history.iter().map(|h| h.action.as_str()).collect();
    assert_eq!(
        actions,
        vec![
            "deploy", "promote", "deploy", "deploy", "promote", "promote", "rollback", "rollback",
            "retire", "collect"
        ]
    );
    assert_eq!(history[5].before.as_deref(), Some("v2"));
    assert_eq!(history[5].detail.as_deref(), Some("required"));
}

async fn canary_and_requirements(store: &dyn StateStore) {
    for r in ["c1", "c2", "c3"] {
        create(store, new_release(r, &[("index.html", 1)]), "t")
            .await
            .unwrap();
    }
    store.promote(&id("c1"), false, "t", 10).await.unwrap();
    // Canary rules: a served, non-current release at 1..99 %.
    assert!(matches!(
        store.set_canary(Some(&id("c1")), 30, "t", 11).await,
        Err(StateError::Conflict(_))
    ));
    assert!(matches!(
        store.set_canary(Some(&id("c2")), 100, "t", 11).await,
        Err(StateError::Conflict(_))
    ));
    assert!(matches!(
        store.set_canary(None, 0, "t", 11).await,
        Err(StateError::Conflict(_))
    ));
    let p = store
        .set_canary(Some(&id("c2")), 30, "ci", 12)
        .await
        .unwrap();
    assert_eq!(
        (p.canary.clone(), p.canary_percent, p.current.clone()),
        (Some(id("c2")), 30, Some(id("c1")))
    );
    assert!(matches!(
        store.retire(&id("c2"), "t", 13).await,
        Err(StateError::Conflict(_))
    ));
    // Promoting the canary ends it; the old current drains from then.
    let p = store.promote(&id("c2"), false, "t", 14).await.unwrap();
    assert_eq!((p.canary, p.canary_percent), (None, 0));
    let c1 = store.release(&id("c1")).await.unwrap();
    assert_eq!((c1.state, c1.drained_at), (Lifecycle::Draining, Some(14)));
    assert_eq!(store.release(&id("c2")).await.unwrap().drained_at, None);
    store
        .set_canary(Some(&id("c3")), 10, "t", 15)
        .await
        .unwrap();
    let p = store.set_canary(None, 0, "t", 16).await.unwrap();
    assert_eq!(p.canary, None);
    // A server-wide minimum, set and cleared.
    let g = store.pointer().await.unwrap().generation;
    let p = store
        .set_required_min(Some(&id("c2")), "t", 17)
        .await
        .unwrap();
    assert_eq!(
        (p.required_min.clone(), p.generation),
        (Some(id("c2")), g + 1)
    );
    assert!(store
        .set_required_min(Some(&id("zz")), "t", 18)
        .await
        .is_err());
    assert_eq!(
        store
            .set_required_min(None, "t", 18)
            .await
            .unwrap()
            .required_min,
        None
    );
    let history = store.history(100).await.unwrap();
    let canary = history.iter().find(|h| h.action == "canary").unwrap();
    assert_eq!(
        (canary.actor.as_str(), canary.after.as_deref()),
        ("ci", Some("c2 at 30%"))
    );
    assert!(history.iter().any(|h| h.action == "canary-abort"));
    assert!(history.iter().any(|h| h.action == "require"));
}

async fn blobs_and_collection(store: &dyn StateStore) {
    // Registration needs every blob present, files and shell.
    let r1 = new_release("b1", &[("index.html", 1), ("a.js", 2)]);
    assert!(store.touch_blobs(&[hash(1)], 100).await.unwrap().is_empty());
    match store.create_release(r1.clone(), "t").await {
        Err(StateError::MissingBlobs(missing)) => assert_eq!(missing, vec![hash(2), hash(200)]),
        other => panic!("registered with missing blobs: {other:?}"),
    }
    create(store, r1, "t").await.unwrap();
    // A stored blob state never heard of is adopted; unused and old, it goes.
    let stored = [(hash(9), 0), (hash(1), 0)];
    assert_eq!(
        store.mark_garbage(&stored, true, 5000, 3600).await.unwrap(),
        vec![hash(9)]
    );
    assert!(
        store.deleting_blobs().await.unwrap().is_empty(),
        "a dry run marks nothing"
    );
    assert_eq!(
        store
            .mark_garbage(&stored, false, 5000, 3600)
            .await
            .unwrap(),
        vec![hash(9)]
    );
    assert_eq!(store.deleting_blobs().await.unwrap(), vec![hash(9)]);
    // A blob being deleted is not present: touching reports it, registration refuses it.
    assert_eq!(
        store.touch_blobs(&[hash(9)], 5001).await.unwrap(),
        vec![hash(9)]
    );
    let r2 = new_release("b2", &[("index.html", 9)]);
    assert!(matches!(
        store.create_release(r2.clone(), "t").await,
        Err(StateError::MissingBlobs(_))
    ));
    // An unfinished collection is finished by the next one.
    assert_eq!(
        store.mark_garbage(&[], false, 5002, 3600).await.unwrap(),
        vec![hash(9)]
    );
    store.forget_blobs(&[hash(9)]).await.unwrap();
    assert!(store.deleting_blobs().await.unwrap().is_empty());
    create(store, r2, "t").await.unwrap();

    // b1 retired and collected: its blobs go, unless a deploy touched one
    // after the retirement.
    store.retire(&id("b1"), "t", 6000).await.unwrap();
    store.collect_retired("t", 6000).await.unwrap();
    assert!(store
        .touch_blobs(&[hash(2)], 6001)
        .await
        .unwrap()
        .is_empty());
    let doomed = store.mark_garbage(&[], false, 6002, 3600).await.unwrap();
    assert_eq!(
        doomed,
        vec![hash(1)],
        "touched a.js and the shared shell stay"
    );
}

/// The client-count ring: samples replace their slot, old ones and those
/// beyond the ring size go, reads are by release then time.
async fn client_samples(store: &dyn StateStore) {
    let series = |all: &[skewless_state::ClientSample], r: &str| -> Vec<(i64, u64)> {
        all.iter()
            .filter(|s| s.release.as_str() == r)
            .map(|s| (s.at, s.clients))
            .collect()
    };
    assert!(store.samples(0).await.unwrap().is_empty());
    for (at, a, b) in [(100, 1, 0), (110, 3, 1), (120, 2, 2), (130, 5, 0)] {
        store
            .record_samples(at, &[(id("a"), a), (id("b"), b)], 3, 0)
            .await
            .unwrap();
    }
    let all = store.samples(0).await.unwrap();
    // A ring of three per release: the sample at 100 went.
    assert_eq!(series(&all, "a"), vec![(110, 3), (120, 2), (130, 5)]);
    assert_eq!(series(&all, "b"), vec![(110, 1), (120, 2), (130, 0)]);
    assert_eq!(all[0].release.as_str(), "a", "by release, then time");
    // The same slot again replaces it (two writers never double a point).
    store
        .record_samples(130, &[(id("a"), 7)], 3, 0)
        .await
        .unwrap();
    let all = store.samples(120).await.unwrap();
    assert_eq!(series(&all, "a"), vec![(120, 2), (130, 7)]);
    assert_eq!(series(&all, "b"), vec![(120, 2), (130, 0)]);
    // A release no longer sampled keeps its ring until its samples age out.
    store
        .record_samples(140, &[(id("a"), 4)], 3, 125)
        .await
        .unwrap();
    let all = store.samples(0).await.unwrap();
    assert_eq!(series(&all, "a"), vec![(130, 7), (140, 4)]);
    assert_eq!(series(&all, "b"), vec![(130, 0)]);
    // Nothing to record still prunes.
    store.record_samples(150, &[], 1, 0).await.unwrap();
    let all = store.samples(0).await.unwrap();
    assert_eq!(series(&all, "a"), vec![(140, 4)]);
    assert_eq!(series(&all, "b"), vec![(130, 0)]);
}

#[tokio::test]
async fn sqlite_keeps_a_ring_of_client_samples() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    client_samples(&Sqlite::open(&path).unwrap()).await;
    // They survive a restart.
    let store = Sqlite::open(&path).unwrap();
    assert_eq!(store.samples(0).await.unwrap().len(), 2);
}

#[tokio::test]
async fn postgres_keeps_a_ring_of_client_samples() {
    let (store, _db) = postgres().await;
    client_samples(&store).await;
}

#[tokio::test]
async fn sqlite_guards_blobs_between_registration_and_collection() {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(&dir.path().join("state.db")).unwrap();
    blobs_and_collection(&store).await;
}

#[tokio::test]
async fn sqlite_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(&dir.path().join("state.db")).unwrap();
    conformance(&store).await;
}

#[tokio::test]
async fn sqlite_canary_and_requirements() {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(&dir.path().join("state.db")).unwrap();
    canary_and_requirements(&store).await;
}

#[tokio::test]
async fn sqlite_state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let store = Sqlite::open(&path).unwrap();
        create(&store, new_release("v1", &[("index.html", 1)]), "t")
            .await
            .unwrap();
        store.promote(&id("v1"), false, "t", 1).await.unwrap();
    }
    let store = Sqlite::open(&path).unwrap();
    let p = store.pointer().await.unwrap();
    assert_eq!((p.current, p.generation), (Some(id("v1")), 1));
}

#[tokio::test]
async fn postgres_guards_blobs_between_registration_and_collection() {
    let (store, _db) = postgres().await;
    blobs_and_collection(&store).await;
}

#[tokio::test]
async fn postgres_conforms() {
    let (store, _db) = postgres().await;
    conformance(&store).await;
}

#[tokio::test]
async fn postgres_canary_and_requirements() {
    let (store, _db) = postgres().await;
    canary_and_requirements(&store).await;
}

#[tokio::test]
async fn postgres_state_survives_reconnect_and_bumps_the_version() {
    let (store, db) = postgres().await;
    assert_eq!(store.version().await.unwrap(), 0);
    create(&store, new_release("v1", &[("index.html", 1)]), "t")
        .await
        .unwrap();
    store.promote(&id("v1"), false, "t", 1).await.unwrap();
    assert_eq!(store.version().await.unwrap(), 2, "deploy and promote");
    // Failed decisions change nothing, the version included.
    assert!(store.promote(&id("nope"), false, "t", 2).await.is_err());
    store.close().await;
    // Another node connecting to the same database (migrations are idempotent).
    let other = Postgres::connect(&db.url()).await.unwrap();
    let s = other.routing_state().await.unwrap();
    assert_eq!(
        (
            s.version,
            s.pointer.current,
            s.pointer.generation,
            s.releases.len()
        ),
        (2, Some(id("v1")), 1, 1)
    );
}

#[tokio::test]
async fn postgres_takes_gc_times_from_the_database() {
    let db = pg::Db::create().await;
    let store = Postgres::connect(&db.url()).await.unwrap();
    // Callers' clocks far off in either direction do not matter.
    assert!(store.touch_blobs(&[hash(1)], 0).await.unwrap().is_empty());
    assert!(
        store
            .mark_garbage(&[], false, i64::MAX / 2, 3600)
            .await
            .unwrap()
            .is_empty(),
        "touched just now by the database's clock: kept however late the caller thinks it is"
    );
    assert_eq!(
        store.mark_garbage(&[], false, 0, 0).await.unwrap(),
        vec![hash(1)],
        "with no grace an unused blob goes, however early the caller thinks it is"
    );
}

#[tokio::test]
async fn postgres_registration_and_collection_interleave_safely() {
    // Two nodes: one deploys over and over, the other collects with no
    // grace at the same time. Every registered release keeps its blobs.
    let db = pg::Db::create().await;
    let deployer = Postgres::connect(&db.url()).await.unwrap();
    let collector = Postgres::connect(&db.url()).await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let doomed = collector.mark_garbage(&[], false, 0, 0).await.unwrap();
                collector.forget_blobs(&doomed).await.unwrap();
                runs += 1;
            }
            runs
        })
    };
    let mut registered = 0;
    for round in 0..60u8 {
        let r = new_release(
            &format!("r{round}"),
            &[("index.html", round), ("a.js", round + 100)],
        );
        let mut hashes: Vec<BlobHash> = r.manifest.files.values().map(|e| e.hash.clone()).collect();
        hashes.push(r.shell.hash.clone());
        // A deploy re-uploads what is being deleted, then registers; a
        // registration that lost the race fails cleanly and is retried.
        for _ in 0..20 {
            let _again = deployer.touch_blobs(&hashes, 0).await.unwrap();
            match deployer.create_release(r.clone(), "t").await {
                Ok(_) => {
                    registered += 1;
                    break;
                }
                Err(StateError::MissingBlobs(_)) => continue,
                Err(e) => panic!("{e}"),
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let runs = gc.await.unwrap();
    assert!(
        runs > 0 && registered == 60,
        "runs {runs}, registered {registered}"
    );
    let deleting: std::collections::HashSet<_> = deployer
        .deleting_blobs()
        .await
        .unwrap()
        .into_iter()
        .collect();
    let mut present = std::collections::HashSet::new();
    for (h, state) in deployer.blob_refs().await.unwrap() {
        assert_ne!(state, Lifecycle::Collected);
        assert!(
            !deleting.contains(&h),
            "registered release's blob {h} is being deleted"
        );
        present.insert(h);
    }
    // And state still knows each of them present.
    let missing = deployer
        .touch_blobs(&present.into_iter().collect::<Vec<_>>(), 0)
        .await
        .unwrap();
    assert!(missing.is_empty(), "{missing:?}");
}
