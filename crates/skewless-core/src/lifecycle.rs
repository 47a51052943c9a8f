//! Release lifecycle: `uploaded → current → draining → retired → collected`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// Where a release stands in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Registered, never current yet.
    Uploaded,
    /// New page loads get it.
    Current,
    /// Was current; still served to the clients that run it.
    Draining,
    /// No longer served; its blobs are kept until the next collection.
    Retired,
    /// Its unique blobs have been deleted.
    Collected,
}

impl Lifecycle {
    /// The state's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Uploaded => "uploaded",
            Lifecycle::Current => "current",
            Lifecycle::Draining => "draining",
            Lifecycle::Retired => "retired",
            Lifecycle::Collected => "collected",
        }
    }

    /// Whether the gateway serves this release's files (by URL prefix or pin).
    pub fn is_served(self) -> bool {
        matches!(
            self,
            Lifecycle::Uploaded | Lifecycle::Current | Lifecycle::Draining
        )
    }

    /// Whether the release is a candidate for the content-hashed fallback:
    /// it has been live and is not retired.
    pub fn is_fallback(self) -> bool {
        matches!(self, Lifecycle::Current | Lifecycle::Draining)
    }

    /// Whether the release's blobs must be kept.
    pub fn holds_blobs(self) -> bool {
        self != Lifecycle::Collected
    }

    /// State after becoming current.
    pub fn promote(self, id: &str) -> Result<Lifecycle, CoreError> {
        match self {
            Lifecycle::Uploaded | Lifecycle::Current | Lifecycle::Draining => {
                Ok(Lifecycle::Current)
            }
            from => Err(self.refuse(id, from, "promoted")),
        }
    }

    /// State after another release became current.
    pub fn demote(self) -> Lifecycle {
        match self {
            Lifecycle::Current => Lifecycle::Draining,
            other => other,
        }
    }

    /// State after `retire`.
    pub fn retire(self, id: &str) -> Result<Lifecycle, CoreError> {
        match self {
            Lifecycle::Uploaded | Lifecycle::Draining | Lifecycle::Retired => {
                Ok(Lifecycle::Retired)
            }
            from => Err(self.refuse(id, from, "retired")),
        }
    }

    /// State after garbage collection.
    pub fn collect(self, id: &str) -> Result<Lifecycle, CoreError> {
        match self {
            Lifecycle::Retired | Lifecycle::Collected => Ok(Lifecycle::Collected),
            from => Err(self.refuse(id, from, "collected")),
        }
    }

    fn refuse(self, id: &str, from: Lifecycle, action: &'static str) -> CoreError {
        CoreError::Transition {
            id: id.to_owned(),
            from: from.as_str(),
            action,
        }
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Lifecycle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "uploaded" => Lifecycle::Uploaded,
            "current" => Lifecycle::Current,
            "draining" => Lifecycle::Draining,
            "retired" => Lifecycle::Retired,
            "collected" => Lifecycle::Collected,
            other => return Err(format!("unknown lifecycle state {other:?}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Lifecycle::*;
    use super::*;

    #[test]
    fn promote_only_live_releases() {
        assert_eq!(Uploaded.promote("a"), Ok(Current));
        assert_eq!(Draining.promote("a"), Ok(Current));
        assert!(Retired.promote("a").is_err());
        assert!(Collected.promote("a").is_err());
    }

    #[test]
    fn current_cannot_be_retired() {
        let err = Current.retire("v1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "release v1 is current and cannot be retired"
        );
        assert_eq!(Draining.retire("a"), Ok(Retired));
    }

    #[test]
    fn only_retired_is_collected() {
        assert!(Draining.collect("a").is_err());
        assert_eq!(Retired.collect("a"), Ok(Collected));
    }

    #[test]
    fn round_trips_names() {
        for s in [Uploaded, Current, Draining, Retired, Collected] {
            assert_eq!(s.as_str().parse::<Lifecycle>(), Ok(s));
        }
        assert_eq!(Current.demote(), Draining);
        assert_eq!(Uploaded.demote(), Uploaded);
    }
}
