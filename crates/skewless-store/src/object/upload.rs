//! Uploads: the body is hashed while it is spooled (in memory while
//! small, then in a local temporary file, so memory stays bounded
//! whatever the size), and sent to the store only once its hash is known
//! to match: in one create-if-absent put while small, else in parts.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path as FsPath;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::PutMultipartOptions;
use skewless_core::BlobHash;
use tokio::io::AsyncWriteExt;

use super::ObjectBlobs;
use crate::{ByteStream, StoreError};

/// Uploads up to this size are held in memory while they are hashed.
const SPOOL_IN_MEMORY: usize = 1024 * 1024;
/// Blobs up to this size go up in one request; larger ones in parts.
pub(super) const SINGLE_PUT_MAX: u64 = 8 * 1024 * 1024;
/// Size of each part of a multipart upload (S3 wants at least 5 MiB).
const PART: u64 = 8 * 1024 * 1024;

/// A verified-size, hashed upload waiting to be sent.
pub(super) struct Spooled {
    pub hash: BlobHash,
    pub size: u64,
    body: Body,
}

enum Body {
    Memory(Bytes),
    File(tempfile::NamedTempFile),
}

/// Removes what an earlier process left in the spool directory (each
/// node has its own), creating it if needed.
pub(super) fn clear_spool(dir: &FsPath) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// Reads `body` to its end, hashing it, refusing more than `max_size`.
pub(super) async fn spool(
    dir: &FsPath,
    mut body: ByteStream,
    max_size: u64,
) -> Result<Spooled, StoreError> {
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    let mut memory: Vec<u8> = Vec::new();
    let mut file: Option<(tempfile::NamedTempFile, tokio::fs::File)> = None;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| StoreError::Interrupted(e.to_string()))?;
        size += chunk.len() as u64;
        if size > max_size {
            return Err(StoreError::TooLarge { limit: max_size });
        }
        hasher.update(&chunk);
        if file.is_none() && memory.len() + chunk.len() > SPOOL_IN_MEMORY {
            let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| StoreError::io(dir, e))?;
            let mut f =
                tokio::fs::File::from_std(tmp.reopen().map_err(|e| StoreError::io(tmp.path(), e))?);
            f.write_all(&memory)
                .await
                .map_err(|e| StoreError::io(tmp.path(), e))?;
            memory = Vec::new();
            file = Some((tmp, f));
        }
        match &mut file {
            Some((tmp, f)) => f
                .write_all(&chunk)
                .await
                .map_err(|e| StoreError::io(tmp.path(), e))?,
            None => memory.extend_from_slice(&chunk),
        }
    }
    let hash = BlobHash::from_bytes(hasher.finalize().as_bytes());
    let body = match file {
        Some((tmp, mut f)) => {
            f.flush().await.map_err(|e| StoreError::io(tmp.path(), e))?;
            Body::File(tmp)
        }
        None => Body::Memory(Bytes::from(memory)),
    };
    Ok(Spooled { hash, size, body })
}

/// Reads `len` bytes from `offset` of a spooled file (blocking pool).
async fn read_part(
    file: &tempfile::NamedTempFile,
    offset: u64,
    len: u64,
) -> Result<Bytes, StoreError> {
    let mut f = file.reopen().map_err(|e| StoreError::io(file.path(), e))?;
    let path = file.path().to_owned();
    tokio::task::spawn_blocking(move || {
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(len as usize);
        f.take(len).read_to_end(&mut buf)?;
        Ok::<_, std::io::Error>(Bytes::from(buf))
    })
    .await
    .map_err(|e| StoreError::Interrupted(e.to_string()))?
    .map_err(|e| StoreError::io(path, e))
}

impl ObjectBlobs {
    /// Sends a verified upload to `key`; whether it was stored (false: an
    /// object was there already, which for content-addressed keys holds
    /// the same bytes).
    pub(super) async fn upload(
        &self,
        key: &Path,
        hash: &BlobHash,
        spooled: Spooled,
    ) -> Result<bool, StoreError> {
        if spooled.size <= SINGLE_PUT_MAX {
            let data = match &spooled.body {
                Body::Memory(b) => b.clone(),
                Body::File(f) => read_part(f, 0, spooled.size).await?,
            };
            return self.put_small(key, hash, data).await;
        }
        if self.size_of(key, hash).await?.is_some() {
            return Ok(false);
        }
        let Body::File(file) = &spooled.body else {
            // Bodies past the in-memory limit are always spooled to a file.
            return Err(StoreError::Interrupted("upload spool lost".into()));
        };
        let mut up = self
            .bounded(
                "start uploading",
                hash,
                self.store
                    .put_multipart_opts(key, PutMultipartOptions::default()),
            )
            .await?;
        let sent = async {
            let mut offset = 0;
            while offset < spooled.size {
                let len = PART.min(spooled.size - offset);
                let part = read_part(file, offset, len).await?;
                self.bounded("upload a part", hash, up.put_part(part.into()))
                    .await?;
                offset += len;
            }
            self.bounded("finish uploading", hash, up.complete()).await
        }
        .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) => {
                // Parts of an upload that never completes are not visible;
                // aborting frees them now rather than at the bucket's
                // lifecycle rule.
                let _ = tokio::time::timeout(self.limit(), up.abort()).await;
                Err(e)
            }
        }
    }
}
