//! In-memory copies of small blobs that have been read ([`HotBlobs`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::RwLock;

use bytes::Bytes;
use skewless_core::BlobHash;

use crate::digest_hasher::DigestHash;
use crate::Variant;

/// Largest stored form kept in memory once read.
pub(crate) const HOT_MAX_BLOB: u64 = 1024 * 1024;
/// Memory the in-memory copies may take in total.
pub(crate) const HOT_BUDGET: u64 = 128 * 1024 * 1024;
const HOT_SHARDS: usize = 16;

/// In-memory copies of small blobs that have been read, by hash and variant.
/// Blobs are immutable, so a copy is valid until the store deletes the blob
/// or its variants, which remove it here too. Reads take a shard's shared
/// lock only; eviction (second chance: entries read since the last sweep
/// stay) runs when an insert would exceed the budget.
#[derive(Debug)]
pub(crate) struct HotBlobs {
    shards: [RwLock<HashMap<BlobHash, HotEntry, DigestHash>>; HOT_SHARDS],
    bytes: AtomicU64,
    sweep_from: AtomicUsize,
    budget: u64,
    /// Bumped by every removal, so a read that raced a delete does not put
    /// the deleted bytes back.
    removals: AtomicU64,
}

#[derive(Debug, Default)]
struct HotEntry {
    forms: [Option<Bytes>; 3],
    used: AtomicBool,
}

impl HotEntry {
    fn len(&self) -> u64 {
        self.forms.iter().flatten().map(|b| b.len() as u64).sum()
    }
}

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
        }
    }

    fn shard(&self, hash: &BlobHash) -> &RwLock<HashMap<BlobHash, HotEntry, DigestHash>> {
        // Hashes are hex, so the last digit spreads evenly over 16 shards.
        let digit = hash.as_str().as_bytes().last().copied().unwrap_or(b'0');
        let i = (digit as char).to_digit(16).unwrap_or(0) as usize;
        &self.shards[i % HOT_SHARDS]
    }

    pub(crate) fn get(&self, hash: &BlobHash, v: Variant) -> Option<Bytes> {
        // A poisoned lock only means a panic elsewhere mid-insert; the map
        // itself is always consistent.
        let map = self.shard(hash).read().unwrap_or_else(|e| e.into_inner());
        let entry = map.get(hash)?;
        let bytes = entry.forms[form_index(v)].clone()?;
        if !entry.used.load(Ordering::Relaxed) {
            entry.used.store(true, Ordering::Relaxed);
        }
        Some(bytes)
    }

    /// Keeps `bytes`, read from disk after [`Self::removals`] returned
    /// `seen`, unless something was removed meanwhile.
    pub(crate) fn insert(&self, hash: &BlobHash, v: Variant, bytes: Bytes, seen: u64) {
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
        let slot = &mut entry.forms[form_index(v)];
        if let Some(old) = slot.replace(bytes) {
            self.bytes.fetch_sub(old.len() as u64, Ordering::Relaxed);
        }
        self.bytes.fetch_add(len, Ordering::Relaxed);
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
            if let Some(old) = entry.forms[form_index(v)].take() {
                self.bytes.fetch_sub(old.len() as u64, Ordering::Relaxed);
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
            hot.insert(h, Variant::Identity, Bytes::from(vec![0u8; 250]), 0);
        }
        assert_eq!(hot.bytes.load(Ordering::Relaxed), 1000);
        // The first is read again, so it survives the next sweep.
        assert!(hot.get(&hashes[0], Variant::Identity).is_some());
        hot.insert(
            &hashes[4],
            Variant::Identity,
            Bytes::from(vec![0u8; 250]),
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
        hot.insert(&h, Variant::Identity, Bytes::from_static(b"x"), seen);
        assert!(hot.get(&h, Variant::Identity).is_none());
        hot.insert(
            &h,
            Variant::Identity,
            Bytes::from_static(b"x"),
            hot.removals(),
        );
        assert!(hot.get(&h, Variant::Identity).is_some());
    }
}
