//! In-memory copies of small blobs that have been read ([`HotBlobs`]).

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use skewless_core::BlobHash;

use crate::digest_hasher::DigestHash;
use crate::Variant;

/// Largest stored form kept in memory once read.
pub(crate) const HOT_MAX_BLOB: u64 = 1024 * 1024;
/// Memory the in-memory copies may take in total.
pub(crate) const HOT_BUDGET: u64 = 128 * 1024 * 1024;
const HOT_SHARDS: usize = 16;
/// Smallest in-memory form whose file is kept open beside it: from about
/// this size, the kernel sending the file (`sendfile`) costs less than
/// copying the bytes into the socket.
pub(crate) const HOLD_FILE_MIN: u64 = 32 * 1024;
/// Most files kept open beside their in-memory copies, so the descriptors
/// they take stay a small part of the process's limit.
pub(crate) const MAX_HELD_FILES: usize = 256;

/// In-memory copies of small blobs that have been read, by hash and variant.
/// Blobs are immutable, so a copy is valid until the store deletes the blob
/// or its variants, which remove it here too. Reads take a shard's shared
/// lock only; eviction (second chance: entries read since the last sweep
/// stay) runs when an insert would exceed the budget. A form of at least
/// [`HOLD_FILE_MIN`] bytes also keeps its file open (up to
/// [`MAX_HELD_FILES`] of them), for sending with `sendfile`; the
/// descriptor goes with the copy.
#[derive(Debug)]
pub(crate) struct HotBlobs {
    shards: [RwLock<HashMap<BlobHash, HotEntry, DigestHash>>; HOT_SHARDS],
    bytes: AtomicU64,
    sweep_from: AtomicUsize,
    budget: u64,
    /// Bumped by every removal, so a read that raced a delete does not put
    /// the deleted bytes back.
    removals: AtomicU64,
    /// Open files held beside their copies.
    held: AtomicUsize,
}

#[derive(Debug, Default)]
struct HotEntry {
    forms: [Option<Bytes>; 3],
    files: [Option<Arc<File>>; 3],
    used: AtomicBool,
}

impl HotEntry {
    fn len(&self) -> u64 {
        self.forms.iter().flatten().map(|b| b.len() as u64).sum()
    }

    fn held(&self) -> usize {
        self.files.iter().flatten().count()
    }
}

/// A form's in-memory copy, and its open file when one is held.
pub(crate) type HotForm = (Bytes, Option<Arc<File>>);

fn form_index(v: Variant) -> usize {
    match v {
        Variant::Identity => 0,
        Variant::Br => 1,
        Variant::Gzip => 2,
    }
}

impl HotBlobs {
    pub(crate) fn new(budget: u64) -> Self {
        HotBlobs {
            shards: std::array::from_fn(|_| RwLock::new(HashMap::default())),
            bytes: AtomicU64::new(0),
            sweep_from: AtomicUsize::new(0),
            budget,
            removals: AtomicU64::new(0),
            held: AtomicUsize::new(0),
        }
    }

    fn shard(&self, hash: &BlobHash) -> &RwLock<HashMap<BlobHash, HotEntry, DigestHash>> {
        // Hashes are hex, so the last digit spreads evenly over 16 shards.
        let digit = hash.as_str().as_bytes().last().copied().unwrap_or(b'0');
        let i = (digit as char).to_digit(16).unwrap_or(0) as usize;
        &self.shards[i % HOT_SHARDS]
    }

    pub(crate) fn get(&self, hash: &BlobHash, v: Variant) -> Option<HotForm> {
        // A poisoned lock only means a panic elsewhere mid-insert; the map
        // itself is always consistent.
        let map = self.shard(hash).read().unwrap_or_else(|e| e.into_inner());
        let entry = map.get(hash)?;
        let i = form_index(v);
        let bytes = entry.forms[i].clone()?;
        if !entry.used.load(Ordering::Relaxed) {
            entry.used.store(true, Ordering::Relaxed);
        }
        Some((bytes, entry.files[i].clone()))
    }

    /// Keeps `bytes`, read from disk after [`Self::removals`] returned
    /// `seen`, unless something was removed meanwhile; and `file`, the open
    /// file they were read from, if they are large enough for it to be
    /// worth holding and fewer than [`MAX_HELD_FILES`] are held.
    pub(crate) fn insert(
        &self,
        hash: &BlobHash,
        v: Variant,
        bytes: Bytes,
        file: Option<Arc<File>>,
        seen: u64,
    ) {
        let len = bytes.len() as u64;
        if len > HOT_MAX_BLOB || len > self.budget {
            return;
        }
        if self.bytes.load(Ordering::Relaxed) + len > self.budget {
            self.evict(len);
        }
        let mut map = self.shard(hash).write().unwrap_or_else(|e| e.into_inner());
        if self.removals.load(Ordering::Acquire) != seen {
            return;
        }
        let entry = map.entry(hash.clone()).or_default();
        let i = form_index(v);
        if let Some(old) = entry.forms[i].replace(bytes) {
            self.bytes.fetch_sub(old.len() as u64, Ordering::Relaxed);
        }
        self.bytes.fetch_add(len, Ordering::Relaxed);
        if entry.files[i].take().is_some() {
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(file) = file.filter(|_| len >= HOLD_FILE_MIN) {
            let room = self
                .held
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < MAX_HELD_FILES).then_some(n + 1)
                })
                .is_ok();
            if room {
                entry.files[i] = Some(file);
            }
        }
    }

    /// Open files held.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Frees at least `need` bytes (if that much is held): first entries not
    /// read since the last sweep, then, if that was not enough, any.
    fn evict(&self, need: u64) {
        let target = self.budget.saturating_sub(need);
        for pass in 0..3 {
            for _ in 0..HOT_SHARDS {
                if self.bytes.load(Ordering::Relaxed) <= target {
                    return;
                }
                let i = self.sweep_from.fetch_add(1, Ordering::Relaxed) % HOT_SHARDS;
                let mut map = self.shards[i].write().unwrap_or_else(|e| e.into_inner());
                map.retain(|_, e| {
                    if pass < 2 && e.used.swap(false, Ordering::Relaxed) {
                        return true;
                    }
                    self.bytes.fetch_sub(e.len(), Ordering::Relaxed);
                    self.held.fetch_sub(e.held(), Ordering::Relaxed);
                    false
                });
            }
        }
    }

    pub(crate) fn removals(&self) -> u64 {
        self.removals.load(Ordering::Acquire)
    }

    pub(crate) fn remove(&self, hash: &BlobHash, forms: &[Variant]) {
        let mut map = self.shard(hash).write().unwrap_or_else(|e| e.into_inner());
        self.removals.fetch_add(1, Ordering::AcqRel);
        let Some(entry) = map.get_mut(hash) else {
            return;
        };
        for &v in forms {
            let i = form_index(v);
            if let Some(old) = entry.forms[i].take() {
                self.bytes.fetch_sub(old.len() as u64, Ordering::Relaxed);
            }
            if entry.files[i].take().is_some() {
                self.held.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if entry.forms.iter().all(Option::is_none) {
            map.remove(hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_of(data: &[u8]) -> BlobHash {
        BlobHash::from_bytes(blake3::hash(data).as_bytes())
    }

    #[test]
    fn hot_blobs_stay_within_budget_and_keep_what_is_read() {
        let hot = HotBlobs::new(1000);
        let hashes: Vec<BlobHash> = (0..8u8).map(|i| hash_of(&[i])).collect();
        for h in &hashes[..4] {
            hot.insert(h, Variant::Identity, Bytes::from(vec![0u8; 250]), None, 0);
        }
        assert_eq!(hot.bytes.load(Ordering::Relaxed), 1000);
        // The first is read again, so it survives the next sweep.
        assert!(hot.get(&hashes[0], Variant::Identity).is_some());
        hot.insert(
            &hashes[4],
            Variant::Identity,
            Bytes::from(vec![0u8; 250]),
            None,
            0,
        );
        assert!(hot.bytes.load(Ordering::Relaxed) <= 1000);
        assert!(hot.get(&hashes[0], Variant::Identity).is_some());
        assert!(hot.get(&hashes[4], Variant::Identity).is_some());
        // Too large for the budget: not kept, nothing evicted for it.
        hot.insert(
            &hashes[5],
            Variant::Identity,
            Bytes::from(vec![0u8; 1001]),
            None,
            0,
        );
        assert!(hot.get(&hashes[5], Variant::Identity).is_none());
        assert!(hot.get(&hashes[0], Variant::Identity).is_some());
    }

    #[test]
    fn a_read_that_raced_a_delete_is_not_kept() {
        let hot = HotBlobs::new(1000);
        let h = hash_of(b"x");
        let seen = hot.removals();
        hot.remove(&h, &[Variant::Identity]);
        hot.insert(&h, Variant::Identity, Bytes::from_static(b"x"), None, seen);
        assert!(hot.get(&h, Variant::Identity).is_none());
        hot.insert(
            &h,
            Variant::Identity,
            Bytes::from_static(b"x"),
            None,
            hot.removals(),
        );
        assert!(hot.get(&h, Variant::Identity).is_some());
    }

    #[test]
    fn large_forms_hold_their_files_within_the_limit_and_let_go_with_them() {
        let hot = HotBlobs::new(u64::MAX);
        let file = || Some(Arc::new(tempfile::tempfile().unwrap()));
        let big = || Bytes::from(vec![1u8; HOLD_FILE_MIN as usize]);
        // A small form keeps no file.
        let small = hash_of(b"small");
        hot.insert(
            &small,
            Variant::Identity,
            Bytes::from_static(b"s"),
            file(),
            0,
        );
        assert!(hot.get(&small, Variant::Identity).unwrap().1.is_none());
        let hashes: Vec<BlobHash> = (0..MAX_HELD_FILES as u32 + 2)
            .map(|i| hash_of(&i.to_le_bytes()))
            .collect();
        for h in &hashes {
            hot.insert(h, Variant::Br, big(), file(), 0);
        }
        assert_eq!(hot.held(), MAX_HELD_FILES);
        let with_file = |h: &BlobHash| hot.get(h, Variant::Br).unwrap().1.is_some();
        assert!(with_file(&hashes[0]));
        assert!(!with_file(&hashes[MAX_HELD_FILES]));
        // Replacing a form lets its old file go; removing one frees room.
        hot.insert(&hashes[0], Variant::Br, big(), None, 0);
        assert!(!with_file(&hashes[0]));
        assert_eq!(hot.held(), MAX_HELD_FILES - 1);
        hot.remove(&hashes[1], &[Variant::Br]);
        assert_eq!(hot.held(), MAX_HELD_FILES - 2);
        let last = &hashes[MAX_HELD_FILES + 1];
        hot.insert(last, Variant::Br, big(), file(), hot.removals());
        assert!(with_file(last));
        assert_eq!(hot.held(), MAX_HELD_FILES - 1);
    }

    #[test]
    fn eviction_lets_the_files_go_with_the_copies() {
        let len = HOLD_FILE_MIN;
        let hot = HotBlobs::new(2 * len);
        let file = || Some(Arc::new(tempfile::tempfile().unwrap()));
        for i in 0..3u8 {
            let bytes = Bytes::from(vec![i; len as usize]);
            hot.insert(&hash_of(&[i]), Variant::Gzip, bytes, file(), 0);
        }
        assert_eq!(hot.bytes.load(Ordering::Relaxed), 2 * len);
        assert_eq!(hot.held(), 2);
    }
}
