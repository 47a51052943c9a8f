//! Hashing for maps keyed by [`skewless_core::BlobHash`]: the key is
//! already the hex of a cryptographic digest, so its first bytes are as
//! good a hash as any, at a fraction of SipHash's cost on every lookup of
//! the serving path. Keys come from deploys (admin-only), never from
//! clients, so there is no flooding to defend against.

use std::hash::{BuildHasherDefault, Hasher};

/// Bytes of a key folded into the hash: 16 hex digits, 64 bits.
const FOLDED: usize = 16;

/// A [`Hasher`] over the first bytes of each write.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(FOLDED) {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builds [`DigestHasher`]s for a `HashMap`.
pub(crate) type DigestHash = BuildHasherDefault<DigestHasher>;

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use skewless_core::BlobHash;

    use super::*;

    #[test]
    fn distinct_digests_spread_over_buckets() {
        let build = DigestHash::default();
        let hashes: std::collections::HashSet<u64> = (0..10_000u32)
            .map(|i| {
                build.hash_one(BlobHash::from_bytes(
                    blake3::hash(&i.to_le_bytes()).as_bytes(),
                ))
            })
            .collect();
        assert_eq!(hashes.len(), 10_000);
        let low_bits: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 0xff).collect();
        assert_eq!(low_bits.len(), 256);
    }
}
