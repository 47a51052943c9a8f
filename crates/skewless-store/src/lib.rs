//! Content-addressed blob storage. Every file of every release is stored once
//! under its BLAKE3 hash, with br and gzip variants made once at upload for
//! compressible types. [`BlobStore`] is the seam; [`LocalDir`] keeps blobs in a
//! directory, written crash-safely (temp file, fsync, rename, fsync dir);
//! [`ObjectBlobs`] keeps them in an S3-compatible object store, and
//! [`Cached`] keeps verified copies of a remote store's blobs on this
//! node's disk and serves them as a [`LocalDir`].

mod cache;
mod chunks;
mod compress;
mod digest_hasher;
mod error;
mod hot;
mod local;
mod object;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use skewless_core::BlobHash;

pub use cache::{CacheSettings, CacheStats, Cached};
pub use chunks::CHUNK;
pub use compress::{brotli_compress, gzip_compress};
pub use error::StoreError;
pub use local::{write_atomic, LocalDir};
pub use object::{ObjectBlobs, S3Settings, S3Url, Timeouts};

/// A stream of body chunks, as an upload arrives.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// A stored form (or a range of it) ready to be sent.
pub enum Readable {
    /// Held in memory.
    Bytes(Bytes),
    /// Held in memory and open on this node's disk as well (a form large
    /// enough that sending it from the file, with the kernel's `sendfile`,
    /// spares the copy of its bytes): the caller sends whichever suits its
    /// connection. Both hold the same bytes.
    Held {
        /// The bytes in memory.
        bytes: Bytes,
        /// The same bytes in the open file.
        file: FilePart,
    },
    /// Part of a stored file on this node's disk, open: the caller picks
    /// how to send it (the kernel's `sendfile`, or [`FilePart::into_stream`]).
    File(FilePart),
    /// Read as it is consumed (a remote store's answer), in chunks of at
    /// most [`CHUNK`] bytes: constant memory whatever the size.
    Stream {
        /// The chunks.
        body: ByteStream,
        /// The bytes the stream yields (the stored length for a whole form).
        len: u64,
    },
}

impl Readable {
    /// The bytes as a stream, however they are held.
    pub fn into_stream(self) -> ByteStream {
        match self {
            Readable::Bytes(b) | Readable::Held { bytes: b, .. } => {
                Box::pin(futures::stream::once(async move { Ok(b) }))
            }
            Readable::File(part) => part.into_stream(),
            Readable::Stream { body, .. } => body,
        }
    }

    /// The bytes this yields.
    pub fn len(&self) -> u64 {
        match self {
            Readable::Bytes(b) | Readable::Held { bytes: b, .. } => b.len() as u64,
            Readable::File(part) => part.len,
            Readable::Stream { len, .. } => *len,
        }
    }

    /// Whether this yields nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `len` bytes from `offset` of an open stored file. The descriptor stays
/// valid if the file is removed or replaced (by rename) meanwhile; a file
/// truncated in place is found shorter when it is read, which is an error.
#[derive(Debug, Clone)]
pub struct FilePart {
    /// The open file, shared (its position is never used: every read
    /// names its offset).
    pub file: std::sync::Arc<std::fs::File>,
    /// Where the part starts.
    pub offset: u64,
    /// Its length; `offset + len` was within the file when it was opened.
    pub len: u64,
}

impl FilePart {
    /// The part read in chunks of at most [`CHUNK`] bytes on the blocking
    /// pool as it is consumed: constant memory whatever the size.
    pub fn into_stream(self) -> ByteStream {
        chunks::stream(self.file, self.offset, self.len, CHUNK)
    }
}

/// Which stored form of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// The bytes as deployed.
    Identity,
    /// Brotli-compressed.
    Br,
    /// gzip-compressed.
    Gzip,
}

/// Sizes of the compressed variants kept for a blob; `None` where the variant
/// did not save enough to be worth serving.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Variants {
    /// Brotli size.
    pub br: Option<u64>,
    /// gzip size.
    pub gzip: Option<u64>,
}

/// The outcome of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// The blob was new and is now stored.
    Stored { size: u64 },
    /// The blob was already present; the upload was verified and dropped.
    Existed { size: u64 },
}

/// A stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its hash.
    pub hash: BlobHash,
    /// Bytes on disk, variants included.
    pub bytes: u64,
    /// Seconds since the epoch when it was written.
    pub written_at: u64,
}

/// Where blobs live. Implementations must never expose a partially written
/// blob and must verify every upload against its claimed hash.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Whether the blob is stored.
    async fn contains(&self, hash: &BlobHash) -> Result<bool, StoreError>;

    /// The hashes among `hashes` that are not stored.
    async fn missing(&self, hashes: &[BlobHash]) -> Result<Vec<BlobHash>, StoreError> {
        let mut out = Vec::new();
        for h in hashes {
            if !self.contains(h).await? {
                out.push(h.clone());
            }
        }
        Ok(out)
    }

    /// Stores a blob from a stream, refusing it (and keeping nothing) if its
    /// BLAKE3 differs from `hash` or it exceeds `max_size` bytes.
    async fn put(
        &self,
        hash: &BlobHash,
        body: ByteStream,
        max_size: u64,
    ) -> Result<Put, StoreError>;

    /// Makes the br and gzip variants of a stored blob if they do not exist
    /// yet, and reports their sizes.
    async fn ensure_variants(&self, hash: &BlobHash) -> Result<Variants, StoreError>;

    /// The variants already made for those of `hashes` that have them, as
    /// [`BlobStore::ensure_variants`] would report them; stores where
    /// asking per blob is costly answer many at once. Blobs left out are
    /// asked about one by one.
    async fn known_variants(
        &self,
        hashes: &[BlobHash],
    ) -> Result<std::collections::HashMap<BlobHash, Variants>, StoreError> {
        let _ = hashes;
        Ok(Default::default())
    }

    /// How many [`BlobStore::ensure_variants`] calls are worth running at
    /// once: a local store is bound by the CPUs that compress, a remote one
    /// by the round trips of finding what exists.
    fn variants_in_flight(&self) -> usize {
        4
    }

    /// Reads a variant, or `len` bytes of it from `offset` when a range is given.
    async fn read(
        &self,
        hash: &BlobHash,
        variant: Variant,
        range: Option<(u64, u64)>,
    ) -> Result<Bytes, StoreError>;

    /// Opens a variant (or `len` bytes of it from `offset`) for sending.
    /// Stores may answer large forms as a stream read as it is consumed;
    /// this default reads the whole form into memory.
    async fn open(
        &self,
        hash: &BlobHash,
        variant: Variant,
        range: Option<(u64, u64)>,
    ) -> Result<Readable, StoreError> {
        self.read(hash, variant, range).await.map(Readable::Bytes)
    }

    /// Size of a stored variant, `None` if it is not stored.
    async fn stat(&self, hash: &BlobHash, variant: Variant) -> Result<Option<u64>, StoreError>;

    /// Whether the stored bytes still hash to `hash`.
    async fn verify(&self, hash: &BlobHash) -> Result<bool, StoreError>;

    /// Deletes the compressed variants only, so they can be made again.
    async fn delete_variants(&self, hash: &BlobHash) -> Result<(), StoreError>;

    /// Files a crash left half-written.
    async fn leftovers(&self) -> Result<usize, StoreError>;

    /// Deletes a blob and its variants; returns the bytes freed.
    async fn delete(&self, hash: &BlobHash) -> Result<u64, StoreError>;

    /// Deletes several blobs and their variants; returns the bytes freed.
    /// Stores with a batch delete send few requests for many blobs.
    async fn delete_many(&self, hashes: &[BlobHash]) -> Result<u64, StoreError> {
        let mut freed = 0;
        for h in hashes {
            freed += self.delete(h).await?;
        }
        Ok(freed)
    }

    /// Every stored blob.
    async fn list(&self) -> Result<Vec<BlobInfo>, StoreError>;

    /// A copy of the blob kept apart from where this store keeps it (a
    /// node's cache in front of an object store), from which a lost or
    /// corrupt blob can be stored again; `None` where there is none.
    async fn local_copy(&self, hash: &BlobHash) -> Result<Option<ByteStream>, StoreError> {
        let _ = hash;
        Ok(None)
    }

    /// Brings a variant onto this node ahead of its first request, where
    /// the store keeps local copies of a remote one; true if bytes were
    /// fetched. A store that is local already has nothing to do.
    async fn prefetch(&self, _hash: &BlobHash, _variant: Variant) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// Counters of this node's cache, if the store has one.
    fn cache_stats(&self) -> Option<CacheStats> {
        None
    }
}
