//! The skewless domain, free of I/O: release ids, blob hashes, manifests,
//! lifecycle transitions, request path normalisation, pins, HTTP header
//! parsing, the gateway's resolution order and the pointer rules.

pub mod content;
pub mod error;
pub mod gc;
pub mod hash;
pub mod header;
pub mod id;
pub mod lifecycle;
pub mod manifest;
pub mod path;
pub mod pin;
pub mod resolve;
pub mod restyle;
pub mod retention;
pub mod transition;
pub mod upstream;

pub use error::CoreError;
pub use hash::BlobHash;
pub use id::ReleaseId;
pub use lifecycle::Lifecycle;
pub use manifest::{Entry, Manifest, ManifestDiff};
pub use transition::{Action, HistoryEntry, Pointer};
