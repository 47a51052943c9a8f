//! The one error type of the domain crate.

use thiserror::Error;

/// A value from outside (a user, a client, a request) broke a domain rule.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// The release id does not match `[A-Za-z0-9._-]{1,64}`.
    #[error("invalid release id {0:?}: use 1 to 64 characters from A-Z a-z 0-9 . _ -")]
    InvalidReleaseId(String),
    /// A blob hash is not 64 lowercase hex digits.
    #[error("invalid blob hash {0:?}: expected 64 lowercase hex digits (BLAKE3)")]
    InvalidHash(String),
    /// A path inside a release is not a safe relative path.
    #[error("invalid file path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// A manifest lacks the shell.
    #[error("the release has no index.html at its root")]
    MissingShell,
    /// A manifest lists one path twice.
    #[error("the manifest lists {0:?} more than once")]
    DuplicatePath(String),
    /// A lifecycle transition that the rules forbid.
    #[error("release {id} is {from} and cannot be {action}")]
    Transition {
        id: String,
        from: &'static str,
        action: &'static str,
    },
    /// An operation names a release that does not exist.
    #[error("release {0} does not exist")]
    UnknownRelease(String),
    /// A rollback has no earlier release to go back to.
    #[error("nothing to roll back to: {0}")]
    NoRollback(String),
    /// The change conflicts with the current pointer.
    #[error("{0}")]
    Refused(String),
}
