//! Errors of the blob store.

use thiserror::Error;

/// A blob store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The uploaded bytes do not hash to the claimed hash.
    #[error("blob hash mismatch: the upload claimed {expected} but its bytes hash to {actual}")]
    HashMismatch { expected: String, actual: String },
    /// The upload is larger than allowed.
    #[error("blob is larger than the upload limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// No such blob.
    #[error("blob {0} is not in the store")]
    NotFound(String),
    /// The upload stream broke off.
    #[error("upload interrupted: {0}")]
    Interrupted(String),
    /// The store behind this node's cache did not answer in time or
    /// failed to; the request may succeed when it is back.
    #[error("the blob store is unavailable: {0}")]
    Unavailable(String),
    /// A copy fetched from the store behind this node's cache failed its
    /// check and was not kept.
    #[error("corrupt copy: {0}")]
    Corrupt(String),
    /// A remote store refused or failed a request.
    #[error("blob store {store} failed: {detail}")]
    Remote { store: String, detail: String },
    /// The storage medium failed.
    #[error("blob store I/O error at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
