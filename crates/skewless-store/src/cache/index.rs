//! What the cache directory holds: one slot per (hash, variant) with its
//! size, when it was last used and how many reads are opening it. Reads
//! take the shared lock only; filling and evicting take it exclusively.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use skewless_core::BlobHash;

use crate::digest_hasher::DigestHash;
use crate::Variant;

type Slots = HashMap<BlobHash, [Option<Arc<Slot>>; 3], DigestHash>;

/// A cached form.
pub(crate) type Key = (BlobHash, Variant);

#[derive(Debug)]
struct Slot {
    size: u64,
    /// Value of the use counter at the last use: larger is more recent.
    used: AtomicU64,
    /// Reads between finding the slot and opening its file.
    readers: AtomicUsize,
}

/// A read in progress: while held, the form's file is not evicted. Once the
/// file is open it may go; the open descriptor keeps reading.
#[derive(Debug)]
pub(crate) struct Pin(Arc<Slot>);

impl Drop for Pin {
    fn drop(&mut self) {
        self.0.readers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The forms in the cache directory, for least-recently-used eviction by
/// bytes.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// By hash (looked up without building a key), then by variant.
    slots: RwLock<Slots>,
    bytes: AtomicU64,
    clock: AtomicU64,
}

/// What one eviction pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Evicted {
    pub files: u64,
    pub bytes: u64,
}

const VARIANTS: [Variant; 3] = [Variant::Identity, Variant::Br, Variant::Gzip];

fn form(v: Variant) -> usize {
    match v {
        Variant::Identity => 0,
        Variant::Br => 1,
        Variant::Gzip => 2,
    }
}

impl Index {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Marks a form used and pins it, if it is cached.
    pub(crate) fn hit(&self, hash: &BlobHash, variant: Variant) -> Option<Pin> {
        // A poisoned lock only means a panic elsewhere; the map itself is
        // always consistent (every change is a single insert or remove).
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        let slot = slots.get(hash)?[form(variant)].as_ref()?;
        slot.used.store(self.tick(), Ordering::Relaxed);
        slot.readers.fetch_add(1, Ordering::AcqRel);
        Some(Pin(slot.clone()))
    }

    /// The size of a cached form.
    pub(crate) fn size(&self, hash: &BlobHash, variant: Variant) -> Option<u64> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots.get(hash)?[form(variant)].as_ref().map(|s| s.size)
    }

    /// Records a form now in the directory, as used now, or as used in the
    /// order of `used` when rebuilt from disk.
    pub(crate) fn insert(&self, key: Key, size: u64, used: Option<u64>) {
        let used = used.unwrap_or_else(|| self.tick());
        if used > self.clock.load(Ordering::Relaxed) {
            self.clock.store(used, Ordering::Relaxed);
        }
        let slot = Arc::new(Slot {
            size,
            used: AtomicU64::new(used),
            readers: AtomicUsize::new(0),
        });
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        let (hash, variant) = key;
        if let Some(old) = slots.entry(hash).or_default()[form(variant)].replace(slot) {
            self.bytes.fetch_sub(old.size, Ordering::Relaxed);
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
    }

    /// Takes a form out of the map (exclusive lock held).
    fn take(&self, slots: &mut Slots, key: &Key) -> Option<u64> {
        let forms = slots.get_mut(&key.0)?;
        let old = forms[form(key.1)].take()?;
        if forms.iter().all(Option::is_none) {
            slots.remove(&key.0);
        }
        self.bytes.fetch_sub(old.size, Ordering::Relaxed);
        Some(old.size)
    }

    /// Forgets a form, running `remove` (which deletes its file) under the
    /// exclusive lock, so no fill of the same form can interleave.
    pub(crate) fn remove<E>(
        &self,
        key: &Key,
        remove: impl FnOnce() -> Result<(), E>,
    ) -> Result<Option<u64>, E> {
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        remove()?;
        Ok(self.take(&mut slots, key))
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Forms held.
    pub(crate) fn len(&self) -> usize {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots.values().map(|f| f.iter().flatten().count()).sum()
    }

    /// Removes the least recently used forms, none of them pinned and none
    /// `keep`, until at most `max` bytes are held. `delete` removes a
    /// form's file; it runs under the exclusive lock so a fill of the same
    /// form cannot publish a file that this then deletes. A form whose
    /// file cannot be deleted stays.
    pub(crate) fn evict(
        &self,
        max: u64,
        keep: Option<&Key>,
        mut delete: impl FnMut(&Key) -> bool,
    ) -> Evicted {
        let mut out = Evicted::default();
        if self.bytes() <= max {
            return out;
        }
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        let mut order: Vec<(u64, Key)> = Vec::new();
        for (hash, forms) in slots.iter() {
            for (i, slot) in forms.iter().enumerate() {
                let Some(slot) = slot else { continue };
                let key = (hash.clone(), VARIANTS[i]);
                if slot.readers.load(Ordering::Acquire) == 0 && Some(&key) != keep {
                    order.push((slot.used.load(Ordering::Relaxed), key));
                }
            }
        }
        order.sort_unstable_by_key(|(used, _)| *used);
        for (_, key) in order {
            if self.bytes() <= max {
                break;
            }
            if !delete(&key) {
                continue;
            }
            if let Some(size) = self.take(&mut slots, &key) {
                out.files += 1;
                out.bytes += size;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> Key {
        (
            BlobHash::from_bytes(blake3::hash(&[i]).as_bytes()),
            Variant::Identity,
        )
    }

    #[test]
    fn evicts_least_recently_used_first_until_within_bytes() {
        let index = Index::default();
        for i in 0..4 {
            index.insert(key(i), 100, None);
        }
        assert_eq!(index.bytes(), 400);
        // 0 is used again, so 1 is now the least recent.
        drop(index.hit(&key(0).0, Variant::Identity));
        let mut deleted = Vec::new();
        let ev = index.evict(250, None, |k| {
            deleted.push(k.clone());
            true
        });
        assert_eq!(deleted, vec![key(1), key(2)]);
        assert_eq!(
            ev,
            Evicted {
                files: 2,
                bytes: 200
            }
        );
        assert_eq!(index.bytes(), 200);
        assert!(
            index.size(&key(0).0, Variant::Identity).is_some()
                && index.size(&key(3).0, Variant::Identity).is_some()
        );
        // Within budget: nothing to do.
        assert_eq!(index.evict(200, None, |_| true), Evicted::default());
    }

    #[test]
    fn pinned_kept_and_undeletable_forms_stay() {
        let index = Index::default();
        for i in 0..3 {
            index.insert(key(i), 100, None);
        }
        let pin = index.hit(&key(0).0, Variant::Identity).unwrap();
        // 0 is pinned, 1 is kept, 2 cannot be deleted: nothing goes.
        let ev = index.evict(0, Some(&key(1)), |k| *k != key(2));
        assert_eq!(ev, Evicted::default());
        assert_eq!(index.len(), 3);
        drop(pin);
        let ev = index.evict(0, Some(&key(1)), |_| true);
        assert_eq!(ev.files, 2);
        assert_eq!(index.bytes(), 100);
        assert!(index.size(&key(1).0, Variant::Identity).is_some());
    }

    #[test]
    fn rebuilt_order_is_respected_and_later_uses_are_newer() {
        let index = Index::default();
        index.insert(key(0), 10, Some(5));
        index.insert(key(1), 10, Some(2));
        index.insert(key(2), 10, None);
        let mut deleted = Vec::new();
        index.evict(0, None, |k| {
            deleted.push(k.clone());
            true
        });
        assert_eq!(deleted, vec![key(1), key(0), key(2)]);
    }
}
