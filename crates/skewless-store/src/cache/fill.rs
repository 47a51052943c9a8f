//! Writing a form fetched from the remote store into the cache directory,
//! verified as it streams: the identity form must hash (BLAKE3) to the
//! blob's hash; a br or gzip form is decompressed as it arrives and the
//! decompressed bytes must hash to the blob's hash, so a corrupt or
//! truncated compressed copy is refused as surely as a wrong original.
//! Bytes go to a temp file that is synced and renamed into place only once
//! verified, so a crash never leaves a partial form visible.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use skewless_core::BlobHash;

use crate::local::{publish, LocalDir};
use crate::{ByteStream, StoreError, Variant};

/// Checks the bytes of one form against the blob's hash.
enum Check {
    Identity(Box<blake3::Hasher>),
    Br(Box<brotli::DecompressorWriter<blake3::Hasher>>),
    Gzip(Box<flate2::write::GzDecoder<blake3::Hasher>>),
}

impl Check {
    fn new(variant: Variant) -> Self {
        let h = blake3::Hasher::new();
        match variant {
            Variant::Identity => Check::Identity(Box::new(h)),
            Variant::Br => Check::Br(Box::new(brotli::DecompressorWriter::new(h, 64 * 1024))),
            Variant::Gzip => Check::Gzip(Box::new(flate2::write::GzDecoder::new(h))),
        }
    }

    fn update(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Check::Identity(h) => {
                h.update(data);
                Ok(())
            }
            Check::Br(w) => w.write_all(data),
            Check::Gzip(w) => w.write_all(data),
        }
    }

    /// The hash of the (decompressed) bytes, or why they do not decode.
    fn finish(self) -> Result<BlobHash, String> {
        let h = match self {
            Check::Identity(h) => *h,
            Check::Br(w) => w
                .into_inner()
                .map_err(|_| "the br form ends mid-stream".to_owned())?,
            Check::Gzip(w) => w
                .finish()
                .map_err(|e| format!("the gzip form does not decode: {e}"))?,
        };
        Ok(BlobHash::from_bytes(h.finalize().as_bytes()))
    }
}

/// A form being written: its temp file and its check.
struct Partial {
    file: File,
    check: Check,
    written: u64,
}

/// Removes the temp file unless it was published.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn join_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::Interrupted(e.to_string())
}

/// Writes `body` (the remote's `len` bytes of `variant`) into `local`,
/// verified; returns the bytes written. Each chunk must arrive within
/// `wait`, so a store that stops answering fails the fill instead of
/// holding it.
pub(crate) async fn write_verified(
    local: &LocalDir,
    hash: &BlobHash,
    variant: Variant,
    mut body: ByteStream,
    len: u64,
    wait: Duration,
) -> Result<u64, StoreError> {
    let tmp = local.tmp_path();
    let dest = local.form_path(hash, variant);
    let mut guard = TempGuard(Some(tmp.clone()));
    let t = tmp.clone();
    let mut partial = tokio::task::spawn_blocking(move || {
        File::create(&t)
            .map(|file| Partial {
                file,
                check: Check::new(variant),
                written: 0,
            })
            .map_err(|e| StoreError::io(&t, e))
    })
    .await
    .map_err(join_error)??;
    loop {
        let chunk = match tokio::time::timeout(wait, body.next()).await {
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "no data for {} ms while fetching blob {hash}",
                    wait.as_millis()
                )))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(StoreError::Unavailable(format!(
                    "fetching blob {hash} broke off: {e}"
                )))
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        if partial.written + chunk.len() as u64 > len {
            return Err(StoreError::Corrupt(format!(
                "blob {hash} ({variant:?}) from the blob store is longer than its stated {len} bytes"
            )));
        }
        let (t, hash) = (tmp.clone(), hash.clone());
        partial = tokio::task::spawn_blocking(move || {
            partial
                .file
                .write_all(&chunk)
                .map_err(|e| StoreError::io(&t, e))?;
            partial.check.update(&chunk).map_err(|e| {
                StoreError::Corrupt(format!(
                    "blob {hash} ({variant:?}) from the blob store does not decode: {e}"
                ))
            })?;
            partial.written += chunk.len() as u64;
            Ok::<_, StoreError>(partial)
        })
        .await
        .map_err(join_error)??;
    }
    if partial.written != len {
        return Err(StoreError::Unavailable(format!(
            "blob {hash} ({variant:?}) ended after {} of {len} bytes",
            partial.written
        )));
    }
    let want = hash.clone();
    let t = tmp.clone();
    let size = tokio::task::spawn_blocking(move || {
        let actual = partial.check.finish().map_err(|why| {
            StoreError::Corrupt(format!(
                "blob {want} ({variant:?}) from the blob store: {why}"
            ))
        })?;
        if actual != want {
            return Err(StoreError::Corrupt(format!(
                "blob {want} ({variant:?}) from the blob store hashes to {actual}"
            )));
        }
        partial.file.sync_all().map_err(|e| StoreError::io(&t, e))?;
        drop(partial.file);
        publish(&t, &dest)?;
        Ok(partial.written)
    })
    .await
    .map_err(join_error)??;
    guard.0 = None;
    Ok(size)
}
