//! Garbage collection planning: which stored blobs no live release needs.

use std::collections::{HashMap, HashSet};

use crate::{BlobHash, Lifecycle};

/// A stored blob as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    /// Its hash.
    pub hash: BlobHash,
    /// Bytes on disk, variants included.
    pub bytes: u64,
    /// Unix seconds when it was written.
    pub written_at: i64,
}

/// The blobs to delete. A blob is kept while any release that is not
/// collected refers to it (with `retired_counts_as_collected`, retired
/// releases count as collected: the plan of a gc that will collect them). A
/// blob no release refers to at all is an upload whose deploy has not
/// registered yet, or a crash's leftover: it is deleted only once older than
/// `grace_secs`, so a deploy in flight never loses its blobs.
pub fn plan(
    refs: &[(BlobHash, Lifecycle)],
    stored: &[StoredBlob],
    retired_counts_as_collected: bool,
    now: i64,
    grace_secs: i64,
) -> Vec<StoredBlob> {
    let mut live: HashSet<&BlobHash> = HashSet::new();
    let mut known: HashMap<&BlobHash, ()> = HashMap::new();
    for (hash, state) in refs {
        known.insert(hash, ());
        let dead = match state {
            Lifecycle::Collected => true,
            Lifecycle::Retired => retired_counts_as_collected,
            _ => false,
        };
        if !dead {
            live.insert(hash);
        }
    }
    stored
        .iter()
        .filter(|b| !live.contains(&b.hash))
        .filter(|b| known.contains_key(&b.hash) || now - b.written_at >= grace_secs)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Lifecycle::*;

    fn h(n: u8) -> BlobHash {
        BlobHash::from_bytes(&[n; 32])
    }

    fn blob(n: u8, written_at: i64) -> StoredBlob {
        StoredBlob {
            hash: h(n),
            bytes: 10,
            written_at,
        }
    }

    #[test]
    fn keeps_live_and_young_orphans() {
        let refs = vec![
            (h(1), Current),
            (h(2), Collected),
            (h(3), Retired),
            (h(1), Collected),
            (h(5), Draining),
        ];
        let stored = vec![
            blob(1, 0),
            blob(2, 990),
            blob(3, 0),
            blob(4, 995),
            blob(6, 0),
            blob(5, 0),
        ];
        let hashes = |v: Vec<StoredBlob>| v.into_iter().map(|b| b.hash).collect::<Vec<_>>();
        // Shared blob 1 stays; collected-only 2 goes however young; retired 3
        // stays unless counted collected; young orphan 4 stays; old orphan 6 goes.
        assert_eq!(
            hashes(plan(&refs, &stored, false, 1000, 60)),
            vec![h(2), h(6)]
        );
        assert_eq!(
            hashes(plan(&refs, &stored, true, 1000, 60)),
            vec![h(2), h(3), h(6)]
        );
    }
}
