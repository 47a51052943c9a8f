//! BLAKE3 blob hashes as 64 lowercase hex digits.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// The content address of a blob.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BlobHash(String);

impl BlobHash {
    /// Validates a hex digest.
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(BlobHash(s.to_owned()))
        } else {
            Err(CoreError::InvalidHash(s.chars().take(80).collect()))
        }
    }

    /// Wraps the 32 raw bytes of a digest.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in bytes {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
        BlobHash(s)
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for BlobHash {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        BlobHash::parse(&s)
    }
}

impl From<BlobHash> for String {
    fn from(h: BlobHash) -> String {
        h.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_digests_only() {
        let h = "a".repeat(64);
        assert!(BlobHash::parse(&h).is_ok());
        assert!(BlobHash::parse(&"A".repeat(64)).is_err());
        assert!(BlobHash::parse(&"a".repeat(63)).is_err());
        assert!(BlobHash::parse("../../etc/passwd").is_err());
    }

    #[test]
    fn from_bytes_is_hex() {
        let h = BlobHash::from_bytes(&[0xab; 32]);
        assert_eq!(h.as_str(), "ab".repeat(32));
    }
}
