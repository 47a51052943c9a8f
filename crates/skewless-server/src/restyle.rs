//! Release diffs as `/_skewless/diff` serves them: the rename-aware diff of
//! [`skewless_core::restyle`], computed once per release pair and kept while
//! both releases are served. A promote computes the diff from every served
//! release to the new current release (and canary) in the background, so
//! the tabs that ask right after it find the answer ready.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use skewless_core::restyle::{plan, same_but_renames, Renamer, MAX_COMPARED_BYTES};
use skewless_core::{Manifest, ReleaseId};
use skewless_store::{BlobStore, Variant};
use tokio::sync::OnceCell;

use crate::snapshot::{ReleaseView, Snapshot};
use crate::ServerError;

type Cell = Arc<OnceCell<Bytes>>;

/// Diffs by (older, newer) release, each computed at most once.
#[derive(Default)]
pub struct Diffs {
    cells: Mutex<HashMap<(ReleaseId, ReleaseId), Cell>>,
}

impl Diffs {
    fn cell(&self, from: &ReleaseId, to: &ReleaseId) -> Cell {
        let mut cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        cells.entry((from.clone(), to.clone())).or_default().clone()
    }

    /// The JSON answer for `from` → `to`: computed by the first caller (the
    /// others wait for it), then kept. A failed computation is not kept.
    pub async fn get(
        &self,
        store: &Arc<dyn BlobStore>,
        from: &ReleaseView,
        to: &ReleaseView,
    ) -> Result<Bytes, ServerError> {
        let cell = self.cell(&from.record.id, &to.record.id);
        cell.get_or_try_init(|| compute(store, from, to))
            .await
            .cloned()
    }

    /// Forgets pairs with a release no longer served, and starts computing
    /// the diff from every served release to the current release and the
    /// canary.
    pub fn refresh(self: &Arc<Self>, store: &Arc<dyn BlobStore>, snap: &Snapshot) {
        {
            let mut cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
            cells
                .retain(|(a, b), _| snap.releases.contains_key(a) && snap.releases.contains_key(b));
        }
        let targets = [
            snap.pointer.current.as_ref(),
            snap.canary.as_ref().map(|(id, _, _)| id),
        ];
        for target in targets.into_iter().flatten() {
            let Some(to) = snap.releases.get(target) else {
                continue;
            };
            for from in &snap.ordered {
                if from.record.id == *target || !from.record.state.is_served() {
                    continue;
                }
                if self.cell(&from.record.id, target).initialized() {
                    continue;
                }
                let (diffs, store, from, to) =
                    (self.clone(), store.clone(), from.clone(), to.clone());
                tokio::spawn(async move {
                    if let Err(e) = diffs.get(&store, &from, &to).await {
                        tracing::warn!(from = %from.record.id, to = %to.record.id, "release diff: {e}");
                    }
                });
            }
        }
    }
}

async fn compute(
    store: &Arc<dyn BlobStore>,
    from: &ReleaseView,
    to: &ReleaseView,
) -> Result<Bytes, ServerError> {
    let (older, newer) = (&from.record.manifest, &to.record.manifest);
    let plan = plan(older, newer);
    let renamer = plan.renamer();
    let mut identical = true;
    for (old, new) in &plan.compare {
        if !same_file(store, &renamer, older, old, newer, new).await? {
            identical = false;
            break;
        }
    }
    let diff = plan.conclude(identical);
    let mut body = serde_json::to_value(&diff).unwrap_or_default();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("from".into(), from.record.id.as_str().into());
        obj.insert("to".into(), to.record.id.as_str().into());
    }
    Ok(Bytes::from(body.to_string()))
}

async fn same_file(
    store: &Arc<dyn BlobStore>,
    renamer: &Renamer,
    older: &Manifest,
    old: &str,
    newer: &Manifest,
    new: &str,
) -> Result<bool, ServerError> {
    let (Some(a), Some(b)) = (older.get(old), newer.get(new)) else {
        return Ok(false);
    };
    if a.size > MAX_COMPARED_BYTES || b.size > MAX_COMPARED_BYTES {
        return Ok(false);
    }
    let a_bytes = store.read(&a.hash, Variant::Identity, None).await?;
    let b_bytes = store.read(&b.hash, Variant::Identity, None).await?;
    Ok(same_but_renames(renamer, &a_bytes, &b_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use skewless_core::manifest::FileSpec;
    use skewless_core::{BlobHash, Lifecycle};
    use skewless_store::{ByteStream, LocalDir};

    use crate::snapshot::fixtures::record;

    async fn release(
        store: &Arc<dyn BlobStore>,
        id: &str,
        files: &[(&str, &str)],
    ) -> Arc<ReleaseView> {
        let mut specs = Vec::new();
        for (path, body) in files {
            let hash = BlobHash::from_bytes(blake3::hash(body.as_bytes()).as_bytes());
            let data = Bytes::from(body.to_string());
            let stream: ByteStream = Box::pin(futures::stream::once(async move { Ok(data) }));
            store.put(&hash, stream, u64::MAX).await.unwrap();
            specs.push(FileSpec {
                path: (*path).into(),
                hash,
                size: body.len() as u64,
            });
        }
        let manifest = Manifest::from_specs(&specs).unwrap();
        let shell = manifest.get("/index.html").unwrap().clone();
        Arc::new(ReleaseView::new(record(
            id,
            1,
            Lifecycle::Current,
            shell,
            manifest,
        )))
    }

    /// The second answer for a pair reads no blob: with the blobs gone, it is
    /// still the first one.
    #[tokio::test]
    async fn a_pair_is_computed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn BlobStore> = Arc::new(LocalDir::open(dir.path()).unwrap());
        let v1 = release(
            &store,
            "v1",
            &[
                ("index.html", "<a href=/a-AAAA1111.js>"),
                ("a-AAAA1111.js", "x"),
                ("s-BBBB2222.css", "red"),
            ],
        )
        .await;
        let v2 = release(
            &store,
            "v2",
            &[
                ("index.html", "<a href=/a-AAAA1111.js>"),
                ("a-AAAA1111.js", "x"),
                ("s-CCCC3333.css", "blue"),
            ],
        )
        .await;
        let v3 = release(
            &store,
            "v3",
            &[
                ("index.html", "<a href=/a-DDDD4444.js>"),
                ("a-DDDD4444.js", "y"),
            ],
        )
        .await;
        let diffs = Diffs::default();
        let first = diffs.get(&store, &v1, &v2).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(json["only_stylesheets"], true);
        assert_eq!(json["renamed"]["/s-BBBB2222.css"], "/s-CCCC3333.css");
        for blob in store.list().await.unwrap() {
            store.delete(&blob.hash).await.unwrap();
        }
        assert_eq!(diffs.get(&store, &v1, &v2).await.unwrap(), first);
        // A pair not computed yet needs the bytes: the failure is reported, not kept.
        assert!(diffs.get(&store, &v2, &v3).await.is_err());
        assert!(!diffs.cell(&v2.record.id, &v3.record.id).initialized());
    }
}
