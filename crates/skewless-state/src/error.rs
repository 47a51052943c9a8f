//! Errors of the state store.

use skewless_core::CoreError;
use thiserror::Error;

/// A state operation failed.
#[derive(Debug, Error)]
pub enum StateError {
    /// A release with this id exists already.
    #[error("release {0} already exists; deploy under a new id")]
    Exists(String),
    /// No release with this id.
    #[error("release {0} does not exist")]
    NotFound(String),
    /// A lifecycle rule forbids the change.
    #[error(transparent)]
    Rule(CoreError),
    /// The change conflicts with the current pointer.
    #[error("{0}")]
    Conflict(String),
    /// There is no earlier release to go back to.
    #[error("nothing to roll back to: {0}")]
    NoRollback(String),
    /// Blobs of a release being registered are not stored (or are being
    /// collected).
    #[error("{} blob(s) of this release are not uploaded, e.g. {}", .0.len(), sample(.0))]
    MissingBlobs(Vec<skewless_core::BlobHash>),
    /// The database cannot be reached (down, restarting, out of
    /// connections); nothing was changed.
    #[error(
        "the state database is unavailable ({0}); nothing was changed, try again when it is back"
    )]
    Unavailable(String),
    /// The database failed or holds data this version cannot read.
    #[error("state database error: {0}")]
    Database(String),
}

impl From<rusqlite::Error> for StateError {
    fn from(e: rusqlite::Error) -> Self {
        StateError::Database(e.to_string())
    }
}

impl From<CoreError> for StateError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::UnknownRelease(id) => StateError::NotFound(id),
            CoreError::NoRollback(why) => StateError::NoRollback(why),
            CoreError::Refused(why) => StateError::Conflict(why),
            other => StateError::Rule(other),
        }
    }
}

fn sample(hashes: &[skewless_core::BlobHash]) -> String {
    let some: Vec<&str> = hashes.iter().take(3).map(|h| h.as_str()).collect();
    some.join(", ")
}
