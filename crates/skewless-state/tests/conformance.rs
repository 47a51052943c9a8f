//! The conformance suite every `StateStore` implementation must pass.

use skewless_core::manifest::FileSpec;
use skewless_core::{BlobHash, Entry, Lifecycle, Manifest, ReleaseId};
use skewless_state::{NewRelease, Sqlite, StateError, StateStore};

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
