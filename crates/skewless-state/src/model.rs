//! The records the state store keeps.

use serde::{Deserialize, Serialize};
use skewless_core::{Entry, Lifecycle, Manifest, ReleaseId};

/// A release as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// Its id.
    pub id: ReleaseId,
    /// Registration order: larger is newer.
    pub seq: i64,
    /// Unix seconds of registration.
    pub created_at: i64,
    /// Lifecycle state.
    pub state: Lifecycle,
    /// Back end bound at deploy, if any.
    pub backend: Option<String>,
    /// Command of a managed back end (`{port}` is replaced), if any.
    pub backend_cmd: Option<String>,
    /// Health-check path of the managed back end.
    pub health_path: Option<String>,
    /// The rewritten shell the gateway serves for this release.
    pub shell: Entry,
    /// Unix seconds of the last promotion, if ever promoted.
    pub promoted_at: Option<i64>,
    /// Unix seconds of retirement.
    pub retired_at: Option<i64>,
    /// Unix seconds when it last stopped being current.
    pub drained_at: Option<i64>,
    /// Number of files.
    pub files: u64,
    /// Total bytes of its files.
    pub size: u64,
    /// Its files (empty in summaries).
    #[serde(skip)]
    pub manifest: Manifest,
}

/// What `deploy` registers.
#[derive(Debug, Clone)]
pub struct NewRelease {
    /// Its id.
    pub id: ReleaseId,
    /// Its files, variants filled in.
    pub manifest: Manifest,
    /// The rewritten shell.
    pub shell: Entry,
    /// Back end URL, if bound.
    pub backend: Option<String>,
    /// Managed back-end command, if bound.
    pub backend_cmd: Option<String>,
    /// Health-check path of the managed back end.
    pub health_path: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// Live clients of one release at one time, as the sampler recorded them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSample {
    /// The release.
    pub release: ReleaseId,
    /// Unix seconds of the sampling slot.
    pub at: i64,
    /// Live clients over every node then.
    pub clients: u64,
}
