//! Registration: which blobs a deploy must upload, blob uploads, and the
//! release registered from them with its variants and rewritten shell.

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};
use skewless_core::manifest::SHELL;
use skewless_core::{BlobHash, Entry, Manifest, ReleaseId};
use skewless_state::{NewRelease, ReleaseRecord, StateError};
use skewless_store::{ByteStream, Put, StoreError, Variant, Variants};
use skewless_wire::{BlobStored, CreateRelease};

use super::Operations;
use crate::proxy::Upstream;
use crate::{shell, ServerError};

impl Operations {
    /// The blobs among `hashes` a deploy must upload. Those present are
    /// touched in state, so a garbage collection leaves them alone while the
    /// deploy goes on.
    pub async fn missing_blobs(&self, hashes: Vec<BlobHash>) -> Result<Vec<BlobHash>, ServerError> {
        let unique: Vec<BlobHash> = hashes
            .into_iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut missing = self.blobs.missing(&unique).await?;
        let absent: HashSet<&BlobHash> = missing.iter().collect();
        let stored: Vec<BlobHash> = unique
            .iter()
            .filter(|h| !absent.contains(h))
            .cloned()
            .collect();
        // Blobs a collection is deleting right now must come again.
        let deleting = self.state.touch_blobs(&stored, self.clock.now()).await?;
        missing.extend(deleting);
        Ok(missing)
    }

    /// Stores an uploaded blob (verified against its hash) and records it in
    /// state as present. A blob a garbage collection is deleting is refused
    /// ([`ServerError::BeingCollected`]): its object may go at any moment,
    /// so acknowledging the upload would promise bytes the store is about
    /// to lose; once the collection has forgotten it, the upload stores it
    /// anew.
    pub async fn put_blob(
        &self,
        hash: BlobHash,
        body: ByteStream,
    ) -> Result<BlobStored, ServerError> {
        let put = self
            .blobs
            .put(&hash, body, self.settings.max_upload_bytes)
            .await?;
        let deleting = self
            .state
            .touch_blobs(std::slice::from_ref(&hash), self.clock.now())
            .await?;
        if !deleting.is_empty() {
            return Err(ServerError::BeingCollected(hash));
        }
        let (size, stored) = match put {
            Put::Stored { size } => (size, true),
            Put::Existed { size } => (size, false),
        };
        Ok(BlobStored { hash, size, stored })
    }

    /// Registers a release from uploaded blobs: checks the request, makes
    /// the compressed variants, rewrites and stores the shell, and records
    /// the release, which the state store refuses if any blob is not
    /// present (a collection got there first).
    pub async fn register(
        &self,
        req: CreateRelease,
        actor: &str,
    ) -> Result<ReleaseRecord, ServerError> {
        let now = self.clock.now();
        let mut manifest = Manifest::from_specs(&req.files)?;
        let id = match &req.id {
            Some(id) => ReleaseId::parse(id)?,
            None => generated_id(now, &manifest)?,
        };
        let backend = req.backend.as_deref().map(validate_backend).transpose()?;
        if backend.is_some() && req.backend_cmd.is_some() {
            return Err(ServerError::BadRequest(
                "a release binds either a back-end URL or a back-end command, not both".into(),
            ));
        }
        if req
            .backend_cmd
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            return Err(ServerError::BadRequest(
                "the back-end command is empty".into(),
            ));
        }
        if let Some(h) = &req.health {
            if !h.starts_with('/') || h.chars().any(char::is_whitespace) {
                return Err(ServerError::BadRequest(format!(
                    "health path {h:?} must start with / and hold no spaces"
                )));
            }
            if req.backend_cmd.is_none() {
                return Err(ServerError::BadRequest(
                    "--health needs --backend-cmd".into(),
                ));
            }
        }
        if self.routing.load().releases.contains_key(&id) || self.state.release(&id).await.is_ok() {
            return Err(ServerError::Conflict(format!(
                "release {id} already exists; deploy under a new id"
            )));
        }

        let hashes: Vec<BlobHash> = manifest.files.values().map(|e| e.hash.clone()).collect();
        let missing = self.missing_blobs(hashes).await?;
        if !missing.is_empty() {
            return Err(StateError::MissingBlobs(missing).into());
        }
        // A collection may take a blob between the check above and here, if
        // the last release using it was retired meanwhile: the deploy then
        // hears that a blob is missing and uploads it again.
        self.fill_variants(&mut manifest)
            .await
            .map_err(taken_by_collection)?;
        let original = self
            .blobs
            .read(&manifest.files[SHELL].hash, Variant::Identity, None)
            .await
            .map_err(|e| taken_by_collection(e.into()))?;
        let html = std::str::from_utf8(&original)
            .map_err(|_| ServerError::Unprocessable("index.html is not valid UTF-8".into()))?;
        let rewritten = shell::rewrite(html, &id, &manifest).map_err(ServerError::Unprocessable)?;
        let shell_entry = self
            .store_bytes(rewritten.into_bytes(), "text/html; charset=utf-8")
            .await?;

        let rec = self
            .state
            .create_release(
                NewRelease {
                    id: id.clone(),
                    manifest,
                    shell: shell_entry,
                    backend,
                    backend_cmd: req.backend_cmd,
                    health_path: req.health,
                    created_at: now,
                },
                actor,
            )
            .await?;
        self.refresh().await?;
        tracing::info!(release = %id, files = rec.files, bytes = rec.size, "release registered");
        Ok(rec)
    }

    /// Makes the br/gzip variants of every compressible file (once per blob)
    /// and records their sizes in the manifest.
    async fn fill_variants(&self, manifest: &mut Manifest) -> Result<(), ServerError> {
        let mut todo: Vec<BlobHash> = manifest
            .files
            .values()
            .filter(|e| e.compressible())
            .map(|e| e.hash.clone())
            .collect();
        todo.sort();
        todo.dedup();
        let mut by_hash = self.blobs.known_variants(&todo).await?;
        todo.retain(|h| !by_hash.contains_key(h));
        let in_flight = self.blobs.variants_in_flight();
        let results: Vec<(BlobHash, Variants)> = futures::stream::iter(todo)
            .map(|h| {
                let store = self.blobs.clone();
                async move { store.ensure_variants(&h).await.map(|v| (h, v)) }
            })
            .buffer_unordered(in_flight)
            .try_collect()
            .await?;
        by_hash.extend(results);
        for e in manifest.files.values_mut() {
            if let Some(v) = by_hash.get(&e.hash) {
                e.br = v.br;
                e.gzip = v.gzip;
            }
        }
        Ok(())
    }

    /// Stores server-made bytes (the rewritten shell) as a blob with
    /// variants, present in state.
    async fn store_bytes(&self, data: Vec<u8>, content_type: &str) -> Result<Entry, ServerError> {
        let hash = BlobHash::from_bytes(blake3::hash(&data).as_bytes());
        let size = data.len() as u64;
        let body: ByteStream = Box::pin(futures::stream::once(async move {
            Ok(bytes::Bytes::from(data))
        }));
        self.blobs.put(&hash, body, u64::MAX).await?;
        self.state
            .touch_blobs(std::slice::from_ref(&hash), self.clock.now())
            .await?;
        let v = self.blobs.ensure_variants(&hash).await?;
        Ok(Entry {
            hash,
            size,
            content_type: content_type.to_owned(),
            br: v.br,
            gzip: v.gzip,
        })
    }
}

/// A blob that vanished under a registration, as the missing blob it is.
fn taken_by_collection(e: ServerError) -> ServerError {
    match e {
        ServerError::Store(StoreError::NotFound(h)) => match BlobHash::parse(&h) {
            Ok(hash) => StateError::MissingBlobs(vec![hash]).into(),
            Err(_) => ServerError::Store(StoreError::NotFound(h)),
        },
        other => other,
    }
}

fn validate_backend(url: &str) -> Result<String, ServerError> {
    Upstream::parse(url)
        .map(|_| url.to_owned())
        .map_err(ServerError::BadRequest)
}

fn generated_id(now: i64, manifest: &Manifest) -> Result<ReleaseId, ServerError> {
    let mut h = blake3::Hasher::new();
    for (p, e) in &manifest.files {
        h.update(p.as_bytes());
        h.update(e.hash.as_str().as_bytes());
    }
    let stamp = time::OffsetDateTime::from_unix_timestamp(now)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year][month][day]-[hour][minute][second]"
            ))
            .ok()
        })
        .unwrap_or_else(|| now.to_string());
    Ok(ReleaseId::parse(&format!(
        "{stamp}-{}",
        &h.finalize().to_hex()[..6]
    ))?)
}
