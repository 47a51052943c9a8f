//! Blobs in a local directory: `<root>/<first two hex>/<hash>` plus
//! `<hash>.br`, `<hash>.gz`, or a `<hash>.raw` marker when compression does
//! not pay. Uploads land in `<root>/tmp/` and are renamed into place only
//! after their hash is verified and their bytes are on disk. Small blobs
//! that are read are kept in memory ([`HotBlobs`]), so serving them costs
//! no file system call and no hop to the blocking thread pool.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use skewless_core::BlobHash;
use tokio::io::AsyncWriteExt;

use crate::chunks;
use crate::compress::{brotli_compress, gzip_compress, worth_it, MAX_COMPRESS};
use crate::hot::{HotBlobs, HOLD_FILE_MIN, HOT_BUDGET, HOT_MAX_BLOB};
use crate::{BlobInfo, BlobStore, ByteStream, Put, Readable, StoreError, Variant, Variants};

/// A blob store in a local directory.
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
    hot: Arc<HotBlobs>,
}

impl LocalDir {
    /// Opens (creating if needed) a store rooted at `root`, and clears
    /// uploads that a crash left half-written.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::open_with(root.into(), std::time::Duration::ZERO)
    }

    /// Opens a directory other processes (the nodes of a cluster) use at
    /// the same time: only uploads left for over a day are cleared, as
    /// younger ones may be another node's in flight.
    pub fn open_shared(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::open_with(root.into(), std::time::Duration::from_secs(86_400))
    }

    fn open_with(root: PathBuf, older_than: std::time::Duration) -> Result<Self, StoreError> {
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_none_or(|age| age >= older_than);
                if old {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(LocalDir {
            root,
            hot: Arc::new(HotBlobs::new(HOT_BUDGET)),
        })
    }

    /// The same store, keeping no in-memory copies of what is read: for a
    /// directory read only through a cache that keeps its own.
    pub fn without_memory_copies(mut self) -> Self {
        self.hot = Arc::new(HotBlobs::new(0));
        self
    }

    fn path(&self, hash: &BlobHash, suffix: &str) -> PathBuf {
        let h = hash.as_str();
        self.root.join(&h[..2]).join(format!("{h}{suffix}"))
    }

    pub(crate) fn tmp_path(&self) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("{:016x}", rand::random::<u64>()))
    }

    /// Where a stored form lives.
    pub(crate) fn form_path(&self, hash: &BlobHash, variant: Variant) -> PathBuf {
        self.path(hash, suffix(variant))
    }

    /// The directory the store is rooted at.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Deletes one stored form and its in-memory copy (blocking); true if
    /// there was a file.
    pub(crate) fn remove_form(&self, hash: &BlobHash, variant: Variant) -> std::io::Result<bool> {
        let p = self.form_path(hash, variant);
        let removed = match std::fs::remove_file(&p) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        // After the file is gone (see `HotBlobs::removals`).
        self.hot.remove(hash, &[variant]);
        Ok(removed)
    }

    /// [`BlobStore::read`], without boxing its future (the cache calls it
    /// on every hit).
    pub(crate) async fn read_form(
        &self,
        hash: &BlobHash,
        variant: Variant,
        range: Option<(u64, u64)>,
    ) -> Result<Bytes, StoreError> {
        if let Some((bytes, _)) = self.hot.get(hash, variant) {
            return Ok(slice(bytes, range));
        }
        let seen = self.hot.removals();
        let path = self.path(hash, suffix(variant));
        let not_found = |e: std::io::Error, path: &Path| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::NotFound(hash.to_string())
            } else {
                StoreError::io(path, e)
            }
        };
        match range {
            None => {
                let bytes = tokio::fs::read(&path)
                    .await
                    .map(Bytes::from)
                    .map_err(|e| not_found(e, &path))?;
                self.hot.insert(hash, variant, bytes.clone(), None, seen);
                Ok(bytes)
            }
            Some((offset, len)) => {
                let p = path.clone();
                let r = tokio::task::spawn_blocking(move || {
                    let mut f = std::fs::File::open(&p)?;
                    f.seek(SeekFrom::Start(offset))?;
                    let mut buf = Vec::with_capacity(len as usize);
                    f.take(len).read_to_end(&mut buf)?;
                    Ok::<_, std::io::Error>(Bytes::from(buf))
                })
                .await
                .map_err(|e| StoreError::Interrupted(e.to_string()))?;
                r.map_err(|e| not_found(e, &path))
            }
        }
    }

    /// [`BlobStore::open`], without boxing its future.
    pub(crate) async fn open_form(
        &self,
        hash: &BlobHash,
        variant: Variant,
        range: Option<(u64, u64)>,
    ) -> Result<Readable, StoreError> {
        if let Some((bytes, file)) = self.hot.get(hash, variant) {
            return Ok(held(bytes, file, range));
        }
        let seen = self.hot.removals();
        let path = self.path(hash, suffix(variant));
        let p = path.clone();
        // Small forms are read at once (and kept when whole, with their
        // open file when large enough to be sent from it); larger ones
        // are sent from the open file chunk by chunk.
        let opened = tokio::task::spawn_blocking(move || {
            let mut o = chunks::open(&p)?;
            let (offset, len) = range.unwrap_or((0, o.len));
            if len <= HOT_MAX_BLOB {
                let bytes = chunks::read_at(&mut o.file, offset, len)?;
                let keep = (range.is_none() && len >= HOLD_FILE_MIN).then_some(o.file);
                return Ok(Ok((bytes, keep)));
            }
            if offset.saturating_add(len) > o.len {
                return Err(chunks::shrank());
            }
            Ok(Err((o.file, offset, len)))
        })
        .await
        .map_err(|e| StoreError::Interrupted(e.to_string()))?;
        match opened {
            Ok(Ok((bytes, file))) => {
                let file = file.map(Arc::new);
                if range.is_none() {
                    self.hot
                        .insert(hash, variant, bytes.clone(), file.clone(), seen);
                }
                Ok(held(bytes, file, None))
            }
            Ok(Err((file, offset, len))) => Ok(Readable::File(crate::FilePart {
                file: Arc::new(file),
                offset,
                len,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(hash.to_string()))
            }
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }
}

/// An in-memory form (or `range` of it), with its open file when one is
/// held.
fn held(bytes: Bytes, file: Option<Arc<std::fs::File>>, range: Option<(u64, u64)>) -> Readable {
    let full = bytes.len() as u64;
    let (offset, len) = match range {
        None => (0, full),
        Some((offset, len)) => {
            let offset = offset.min(full);
            (offset, len.min(full - offset))
        }
    };
    let bytes = bytes.slice(offset as usize..(offset + len) as usize);
    match file {
        Some(file) => Readable::Held {
            bytes,
            file: crate::FilePart { file, offset, len },
        },
        None => Readable::Bytes(bytes),
    }
}

pub(crate) fn suffix(v: Variant) -> &'static str {
    match v {
        Variant::Identity => "",
        Variant::Br => ".br",
        Variant::Gzip => ".gz",
    }
}

/// Writes `data` to `dest` crash-safely: temp file, fsync, rename, fsync dir.
pub fn write_atomic(tmp: &Path, dest: &Path, data: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    let mut f = std::fs::File::create(tmp).map_err(|e| StoreError::io(tmp, e))?;
    f.write_all(data).map_err(|e| StoreError::io(tmp, e))?;
    f.sync_all().map_err(|e| StoreError::io(tmp, e))?;
    drop(f);
    publish(tmp, dest)
}

/// Moves a written, synced temp file into place and syncs the directory.
pub(crate) fn publish(tmp: &Path, dest: &Path) -> Result<(), StoreError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    std::fs::rename(tmp, dest).map_err(|e| StoreError::io(dest, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// `len` bytes from `offset` of an in-memory form (clamped to it).
fn slice(bytes: Bytes, range: Option<(u64, u64)>) -> Bytes {
    match range {
        None => bytes,
        Some((offset, len)) => {
            let start = (offset as usize).min(bytes.len());
            let end = start.saturating_add(len as usize).min(bytes.len());
            bytes.slice(start..end)
        }
    }
}

fn file_len(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.len())
}

#[async_trait]
impl BlobStore for LocalDir {
    async fn contains(&self, hash: &BlobHash) -> Result<bool, StoreError> {
        Ok(tokio::fs::try_exists(self.path(hash, ""))
            .await
            .unwrap_or(false))
    }

    async fn put(
        &self,
        hash: &BlobHash,
        mut body: ByteStream,
        max_size: u64,
    ) -> Result<Put, StoreError> {
        let tmp = self.tmp_path();
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| StoreError::io(&tmp, e))?;
        let result = async {
            let mut hasher = blake3::Hasher::new();
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| StoreError::Interrupted(e.to_string()))?;
                size += chunk.len() as u64;
                if size > max_size {
                    return Err(StoreError::TooLarge { limit: max_size });
                }
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(|e| StoreError::io(&tmp, e))?;
            }
            let actual = BlobHash::from_bytes(hasher.finalize().as_bytes());
            if &actual != hash {
                return Err(StoreError::HashMismatch {
                    expected: hash.to_string(),
                    actual: actual.to_string(),
                });
            }
            file.sync_all().await.map_err(|e| StoreError::io(&tmp, e))?;
            Ok(size)
        }
        .await;
        drop(file);
        let size = match result {
            Ok(size) => size,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        let dest = self.path(hash, "");
        if tokio::fs::try_exists(&dest).await.unwrap_or(false) {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Ok(Put::Existed { size });
        }
        tokio::task::spawn_blocking(move || publish(&tmp, &dest))
            .await
            .map_err(|e| StoreError::Interrupted(e.to_string()))??;
        Ok(Put::Stored { size })
    }

    async fn ensure_variants(&self, hash: &BlobHash) -> Result<Variants, StoreError> {
        let store = self.clone();
        let hash = hash.clone();
        tokio::task::spawn_blocking(move || {
            let src = store.path(&hash, "");
            let br = store.path(&hash, ".br");
            let gz = store.path(&hash, ".gz");
            let raw = store.path(&hash, ".raw");
            let len = file_len(&src).ok_or_else(|| StoreError::NotFound(hash.to_string()))?;
            if file_len(&raw).is_some() || len > MAX_COMPRESS {
                return Ok(Variants::default());
            }
            if let (Some(b), Some(g)) = (file_len(&br), file_len(&gz)) {
                return Ok(Variants {
                    br: Some(b),
                    gzip: Some(g),
                });
            }
            let data = std::fs::read(&src).map_err(|e| StoreError::io(&src, e))?;
            let b = brotli_compress(&data);
            let g = gzip_compress(&data);
            if !worth_it(data.len(), b.len().min(g.len())) {
                write_atomic(&store.tmp_path(), &raw, b"")?;
                return Ok(Variants::default());
            }
            let mut v = Variants::default();
            if worth_it(data.len(), g.len()) {
                write_atomic(&store.tmp_path(), &gz, &g)?;
                v.gzip = Some(g.len() as u64);
            }
            if worth_it(data.len(), b.len()) {
                write_atomic(&store.tmp_path(), &br, &b)?;
                v.br = Some(b.len() as u64);
            }
            Ok(v)
        })
        .await
        .map_err(|e| StoreError::Interrupted(e.to_string()))?
    }

    async fn read(
        &self,
        hash: &BlobHash,
        variant: Variant,
        range: Option<(u64, u64)>,
    ) -> Result<Bytes, StoreError> {
        self.read_form(hash, variant, range).await
    }

    async fn open(
        &self,
        hash: &BlobHash,
        variant: Variant,
        range: Option<(u64, u64)>,
    ) -> Result<Readable, StoreError> {
        self.open_form(hash, variant, range).await
    }

    async fn stat(&self, hash: &BlobHash, variant: Variant) -> Result<Option<u64>, StoreError> {
        Ok(tokio::fs::metadata(self.path(hash, suffix(variant)))
            .await
            .ok()
            .map(|m| m.len()))
    }

    async fn verify(&self, hash: &BlobHash) -> Result<bool, StoreError> {
        let path = self.path(hash, "");
        let want = hash.clone();
        tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::open(&path).map_err(|e| StoreError::io(&path, e))?;
            let mut h = blake3::Hasher::new();
            std::io::copy(&mut f, &mut h).map_err(|e| StoreError::io(&path, e))?;
            Ok(BlobHash::from_bytes(h.finalize().as_bytes()) == want)
        })
        .await
        .map_err(|e| StoreError::Interrupted(e.to_string()))?
    }

    async fn delete_variants(&self, hash: &BlobHash) -> Result<(), StoreError> {
        let result = async {
            for s in [".br", ".gz", ".raw"] {
                let p = self.path(hash, s);
                match tokio::fs::remove_file(&p).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io(&p, e)),
                }
            }
            Ok(())
        }
        .await;
        self.hot.remove(hash, &[Variant::Br, Variant::Gzip]);
        result
    }

    async fn leftovers(&self) -> Result<usize, StoreError> {
        let tmp = self.root.join("tmp");
        Ok(std::fs::read_dir(&tmp).map_or(0, |d| d.count()))
    }

    async fn delete(&self, hash: &BlobHash) -> Result<u64, StoreError> {
        let result = async {
            let mut freed = 0;
            for s in [".br", ".gz", ".raw", ""] {
                let p = self.path(hash, s);
                if let Some(len) = file_len(&p) {
                    match tokio::fs::remove_file(&p).await {
                        Ok(()) => freed += len,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(StoreError::io(&p, e)),
                    }
                }
            }
            Ok(freed)
        }
        .await;
        // After the files are gone, so a read racing this cannot bring the
        // bytes back (see `HotBlobs::removals`).
        self.hot
            .remove(hash, &[Variant::Identity, Variant::Br, Variant::Gzip]);
        result
    }

    async fn list(&self) -> Result<Vec<BlobInfo>, StoreError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut files = stored_files(&root)?;
            files.sort_by(|a, b| a.hash.cmp(&b.hash));
            let mut out: Vec<BlobInfo> = Vec::new();
            for f in files {
                match out.last_mut() {
                    Some(b) if b.hash == f.hash => b.bytes += f.len,
                    _ => out.push(BlobInfo {
                        hash: f.hash,
                        bytes: f.len,
                        written_at: f.modified.as_secs(),
                    }),
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Interrupted(e.to_string()))?
    }
}

/// One file of a blob directory.
pub(crate) struct StoredFile {
    pub(crate) hash: BlobHash,
    /// The form it holds; `None` for another file of the blob (a marker).
    pub(crate) variant: Option<Variant>,
    pub(crate) len: u64,
    /// Modification time since the epoch.
    pub(crate) modified: std::time::Duration,
}

/// Every file under `<root>/<2 hex>/` named after a blob (blocking); temp
/// files and stray names are skipped.
pub(crate) fn stored_files(root: &Path) -> Result<Vec<StoredFile>, StoreError> {
    let mut out = Vec::new();
    let dirs = std::fs::read_dir(root).map_err(|e| StoreError::io(root, e))?;
    for d in dirs.flatten() {
        if d.file_name().len() != 2 || !d.path().is_dir() {
            continue;
        }
        let files = std::fs::read_dir(d.path()).map_err(|e| StoreError::io(d.path(), e))?;
        for f in files.flatten() {
            let fname = f.file_name();
            let fname = fname.to_string_lossy();
            let (stem, ext) = fname.split_once('.').unwrap_or((&fname, ""));
            let Ok(hash) = BlobHash::parse(stem) else {
                continue;
            };
            let Ok(meta) = f.metadata() else { continue };
            out.push(StoredFile {
                hash,
                variant: match ext {
                    "" => Some(Variant::Identity),
                    "br" => Some(Variant::Br),
                    "gz" => Some(Variant::Gzip),
                    _ => None,
                },
                len: meta.len(),
                modified: meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunks::CHUNK;

    fn stream(data: &'static [u8]) -> ByteStream {
        Box::pin(futures::stream::iter(
            data.chunks(7)
                .map(|c| Ok(Bytes::from_static(c)))
                .collect::<Vec<_>>(),
        ))
    }

    fn hash_of(data: &[u8]) -> BlobHash {
        BlobHash::from_bytes(blake3::hash(data).as_bytes())
    }

    #[tokio::test]
    async fn stores_verifies_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::open(dir.path()).unwrap();
        let data: &'static [u8] = Box::leak(b"hello ".repeat(100).into_boxed_slice());
        let h = hash_of(data);
        assert!(!store.contains(&h).await.unwrap());
        assert_eq!(
            store.put(&h, stream(data), 1 << 20).await.unwrap(),
            Put::Stored {
                size: data.len() as u64
            }
        );
        assert_eq!(
            store.put(&h, stream(data), 1 << 20).await.unwrap(),
            Put::Existed {
                size: data.len() as u64
            }
        );
        assert_eq!(
            &store.read(&h, Variant::Identity, None).await.unwrap()[..],
            data
        );
        assert_eq!(
            &store
                .read(&h, Variant::Identity, Some((6, 5)))
                .await
                .unwrap()[..],
            b"hello"
        );
        let v = store.ensure_variants(&h).await.unwrap();
        assert!(v.br.is_some() && v.gzip.is_some());
        assert_eq!(store.ensure_variants(&h).await.unwrap(), v);
        assert_eq!(store.list().await.unwrap().len(), 1);
        assert!(store.delete(&h).await.unwrap() > 0);
        assert!(!store.contains(&h).await.unwrap());
        assert!(store.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn refuses_mismatch_and_oversize_keeping_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::open(dir.path()).unwrap();
        let wrong = hash_of(b"other");
        let err = store
            .put(&wrong, stream(b"data"), 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::HashMismatch { .. }), "{err}");
        let h = hash_of(b"0123456789");
        let err = store.put(&h, stream(b"0123456789"), 5).await.unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { limit: 5 }));
        assert!(store.list().await.unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn reads_are_kept_in_memory_until_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::open(dir.path()).unwrap();
        let data: &'static [u8] = Box::leak(b"cached ".repeat(50).into_boxed_slice());
        let h = hash_of(data);
        store.put(&h, stream(data), 1 << 20).await.unwrap();
        store.ensure_variants(&h).await.unwrap();
        assert_eq!(&store.read(&h, Variant::Br, None).await.unwrap()[..], {
            let br = std::fs::read(store.path(&h, ".br")).unwrap();
            Box::leak(br.into_boxed_slice()) as &[u8]
        });
        assert_eq!(
            &store.read(&h, Variant::Identity, None).await.unwrap()[..],
            data
        );
        // Served from memory now: the file is not read again.
        std::fs::remove_file(store.path(&h, "")).unwrap();
        assert_eq!(
            &store.read(&h, Variant::Identity, None).await.unwrap()[..],
            data
        );
        assert_eq!(
            &store
                .read(&h, Variant::Identity, Some((7, 6)))
                .await
                .unwrap()[..],
            b"cached"
        );
        // Deleting the variants drops their copies, not the blob's.
        store.delete_variants(&h).await.unwrap();
        assert!(store.read(&h, Variant::Br, None).await.is_err());
        assert!(store.read(&h, Variant::Identity, None).await.is_ok());
        store.delete(&h).await.unwrap();
        assert!(matches!(
            store.read(&h, Variant::Identity, None).await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_store_without_memory_copies_reads_the_file_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::open(dir.path()).unwrap().without_memory_copies();
        let h = hash_of(b"remote bytes");
        store
            .put(&h, stream(b"remote bytes"), 1 << 20)
            .await
            .unwrap();
        assert_eq!(
            &store.read(&h, Variant::Identity, None).await.unwrap()[..],
            b"remote bytes"
        );
        std::fs::remove_file(store.path(&h, "")).unwrap();
        assert!(matches!(
            store.open(&h, Variant::Identity, None).await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn large_forms_are_opened_as_files_and_small_ones_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::open(dir.path()).unwrap();
        let data: &'static [u8] = Box::leak(b"streamed ".repeat(400_000).into_boxed_slice());
        let h = hash_of(data);
        let whole: ByteStream = Box::pin(futures::stream::iter([Ok(Bytes::from_static(data))]));
        store.put(&h, whole, 1 << 30).await.unwrap();
        // A precompressed form larger than what is kept in memory.
        let br: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(store.path(&h, ".br"), &br).unwrap();
        let collect = |r: Readable| async move {
            match r {
                Readable::File(part) => {
                    let len = part.len;
                    let mut body = part.into_stream();
                    let mut out = Vec::new();
                    while let Some(c) = body.next().await {
                        let c = c.unwrap();
                        assert!(c.len() <= CHUNK);
                        out.extend_from_slice(&c);
                    }
                    assert_eq!(out.len() as u64, len);
                    out
                }
                _ => panic!("a large form must be opened as a file"),
            }
        };
        let got = collect(store.open(&h, Variant::Br, None).await.unwrap()).await;
        assert_eq!(got, br);
        let got = collect(store.open(&h, Variant::Identity, None).await.unwrap()).await;
        assert_eq!(got, data);
        let got = collect(
            store
                .open(&h, Variant::Identity, Some((5, 2_000_000)))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(got, &data[5..2_000_005]);
        // A small range is read at once; a range past the stored end fails.
        match store.open(&h, Variant::Br, Some((10, 20))).await.unwrap() {
            Readable::Bytes(b) => assert_eq!(&b[..], &br[10..30]),
            _ => panic!("a small range is read at once"),
        }
        assert!(store
            .open(&h, Variant::Br, Some((2_000_000, 1_500_000)))
            .await
            .is_err());
        assert!(matches!(
            store.open(&h, Variant::Gzip, None).await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn forms_large_enough_are_held_in_memory_with_their_open_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::open(dir.path()).unwrap();
        let mut data = vec![0u8; HOLD_FILE_MIN as usize + 5000];
        blake3::Hasher::new().finalize_xof().fill(&mut data);
        let data: &'static [u8] = Box::leak(data.into_boxed_slice());
        let h = hash_of(data);
        store.put(&h, stream(data), 1 << 20).await.unwrap();
        let file_bytes = |part: crate::FilePart| async move {
            let mut body = part.into_stream();
            let mut out = Vec::new();
            while let Some(c) = body.next().await {
                out.extend_from_slice(&c.unwrap());
            }
            out
        };
        // From disk, then from memory: both times the copy and the file.
        for _ in 0..2 {
            match store.open(&h, Variant::Identity, None).await.unwrap() {
                Readable::Held { bytes, file } => {
                    assert_eq!(&bytes[..], data);
                    assert_eq!((file.offset, file.len), (0, data.len() as u64));
                    assert!(file_bytes(file).await == data);
                }
                _ => panic!("a form this large is held with its file"),
            }
        }
        // A range of a held form: the same part of both.
        match store
            .open(&h, Variant::Identity, Some((100, 20_000)))
            .await
            .unwrap()
        {
            Readable::Held { bytes, file } => {
                assert_eq!(&bytes[..], &data[100..20_100]);
                assert_eq!((file.offset, file.len), (100, 20_000));
                assert!(file_bytes(file).await == data[100..20_100]);
            }
            _ => panic!("a range of a held form is held too"),
        }
        // The blob deleted: neither is served any more.
        store.delete(&h).await.unwrap();
        assert!(matches!(
            store.open(&h, Variant::Identity, None).await,
            Err(StoreError::NotFound(_))
        ));
        // A small form is only in memory.
        let small: &'static [u8] = b"small enough to copy";
        let hs = hash_of(small);
        store.put(&hs, stream(small), 1 << 20).await.unwrap();
        for _ in 0..2 {
            assert!(matches!(
                store.open(&hs, Variant::Identity, None).await.unwrap(),
                Readable::Bytes(_)
            ));
        }
    }

    #[tokio::test]
    async fn incompressible_blobs_get_no_variants() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::open(dir.path()).unwrap();
        let mut data = vec![0u8; 4096];
        blake3::Hasher::new().finalize_xof().fill(&mut data);
        let data: &'static [u8] = Box::leak(data.into_boxed_slice());
        let h = hash_of(data);
        store.put(&h, stream(data), 1 << 20).await.unwrap();
        assert_eq!(
            store.ensure_variants(&h).await.unwrap(),
            Variants::default()
        );
        assert!(store.read(&h, Variant::Br, None).await.is_err());
    }
}
