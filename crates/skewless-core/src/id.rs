//! Release ids: `[A-Za-z0-9._-]{1,64}`, never `.` or `..`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// The id of a release, validated on construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReleaseId(String);

impl ReleaseId {
    /// Longest id accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates `s` as a release id.
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        if is_valid(s) {
            Ok(ReleaseId(s.to_owned()))
        } else {
            Err(CoreError::InvalidReleaseId(truncate(s)))
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `s` is a valid release id.
pub fn is_valid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= ReleaseId::MAX_LEN
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

impl fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ReleaseId {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReleaseId::parse(s)
    }
}

impl TryFrom<String> for ReleaseId {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if is_valid(&s) {
            Ok(ReleaseId(s))
        } else {
            Err(CoreError::InvalidReleaseId(truncate(&s)))
        }
    }
}

impl From<ReleaseId> for String {
    fn from(id: ReleaseId) -> String {
        id.0
    }
}

// Hash and Eq are the inner String's, so maps keyed by ReleaseId can be
// looked up by &str without allocating.
impl std::borrow::Borrow<str> for ReleaseId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ReleaseId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_id_alphabet() {
        for ok in ["v1", "2026-11-22.a_b", "A", &"x".repeat(64), "..."] {
            assert!(ReleaseId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "ü",
            "a\0",
            "a%2e",
            &"x".repeat(65),
            "a\\b",
        ] {
            assert!(ReleaseId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn serde_validates() {
        let ok: ReleaseId = serde_json::from_str("\"v2\"").unwrap();
        assert_eq!(ok.as_str(), "v2");
        assert!(serde_json::from_str::<ReleaseId>("\"../x\"").is_err());
    }
}
