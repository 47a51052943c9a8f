//! The admin API's wire contract: every request and response body under
//! `/_skewless/api/v1/`, shared by the server (which serialises them) and
//! `skewless-client-api` (which deserialises them), so a renamed field fails
//! to compile on both sides.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use skewless_core::manifest::FileSpec;
use skewless_core::{BlobHash, Entry, Lifecycle, ReleaseId};

pub use skewless_core::{Action, HistoryEntry};

/// Body of `POST /blobs/missing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingRequest {
    /// The blobs a deploy needs.
    pub hashes: Vec<BlobHash>,
}

/// Answer of `POST /blobs/missing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingResponse {
    /// The blobs the server lacks: upload these.
    pub missing: Vec<BlobHash>,
}

/// Answer of `PUT /blobs/{hash}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobStored {
    /// The blob.
    pub hash: BlobHash,
    /// Its size in bytes.
    pub size: u64,
    /// Whether it was new (`false`: it was there already).
    pub stored: bool,
}

/// Body of `POST /releases`: register a release from uploaded blobs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRelease {
    /// Release id; the server generates one when absent.
    pub id: Option<String>,
    /// Every file: path, hash, size.
    pub files: Vec<FileSpec>,
    /// Back end URL to bind.
    pub backend: Option<String>,
    /// Managed back-end command to bind (`{port}` is replaced).
    pub backend_cmd: Option<String>,
    /// Health-check path of the managed back end.
    pub health: Option<String>,
}

/// Live clients of one release.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Open event streams.
    pub streams: usize,
    /// Distinct client ids seen within the window (streams' included).
    pub recent: usize,
    /// Distinct clients: ids seen recently or holding a stream, plus streams
    /// that sent no id.
    pub total: usize,
}

/// What a managed back end is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Started, health check not passed yet.
    Starting,
    /// Passing its health check; takes traffic.
    Healthy,
    /// Exited or failing its health check.
    Unhealthy,
    /// Stopped on purpose.
    Stopped,
}

impl Health {
    /// The name as shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Stopped => "stopped",
        }
    }
}

/// The observable state of one managed back end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// The command as deployed.
    pub command: String,
    /// Health now.
    pub health: Health,
    /// Why it is unhealthy, if it is.
    pub reason: Option<String>,
    /// The port it was given.
    pub port: Option<u16>,
    /// Its process id.
    pub pid: Option<u32>,
    /// How many times it was restarted.
    pub restarts: u32,
    /// How its last run ended.
    pub last_exit: Option<String>,
    /// Its last output lines.
    pub last_lines: VecDeque<String>,
}

/// A release as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Its id.
    pub id: ReleaseId,
    /// Lifecycle state.
    pub state: Lifecycle,
    /// Unix seconds of registration.
    pub created_at: i64,
    /// Unix seconds of its last promotion.
    pub promoted_at: Option<i64>,
    /// Unix seconds of retirement.
    pub retired_at: Option<i64>,
    /// Number of files.
    pub files: u64,
    /// Total bytes of its files.
    pub size: u64,
    /// Back end URL, if bound.
    pub backend: Option<String>,
    /// Managed back-end command, if bound.
    pub backend_cmd: Option<String>,
    /// Health-check path of the managed back end.
    pub health_path: Option<String>,
    /// The managed back end now, while one runs.
    pub backend_status: Option<BackendStatus>,
    /// Whether it is the current release.
    pub current: bool,
    /// Whether it is the canary.
    pub canary: bool,
    /// Unix seconds when it last stopped being current.
    pub drained_at: Option<i64>,
    /// Its live clients.
    pub clients: Counts,
}

/// Answer of `GET /releases/{id}`: the release and its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseDetail {
    /// The release.
    #[serde(flatten)]
    pub release: Release,
    /// Path → file.
    pub manifest: BTreeMap<String, Entry>,
}

/// Body of `POST /releases/{id}/promote`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteRequest {
    /// Clients of older releases must reload now.
    #[serde(default)]
    pub required: bool,
    /// Promote even when the managed back end is not healthy.
    #[serde(default)]
    pub force: bool,
    /// Below 100: make the release the canary for this share of new sessions.
    pub percent: Option<u8>,
}

/// The canary while one runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    /// The canary release.
    pub release: ReleaseId,
    /// Share of new sessions it gets.
    pub percent: u8,
}

/// The pointer after a promote, canary, require or rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointerState {
    /// The current release.
    pub current: Option<ReleaseId>,
    /// Bumped by every promote, rollback and requirement change.
    pub generation: u64,
    /// Clients of older releases must upgrade now.
    pub required_min: Option<ReleaseId>,
    /// The canary, while one runs.
    pub canary: Option<Canary>,
}

impl From<&skewless_core::Pointer> for PointerState {
    fn from(p: &skewless_core::Pointer) -> Self {
        PointerState {
            current: p.current.clone(),
            generation: p.generation,
            required_min: p.required_min.clone(),
            canary: canary_of(p),
        }
    }
}

/// The canary of a pointer, as the API shows it.
pub fn canary_of(p: &skewless_core::Pointer) -> Option<Canary> {
    p.canary.as_ref().map(|c| Canary {
        release: c.clone(),
        percent: p.canary_percent,
    })
}

/// Body of `POST /required`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequiredRequest {
    /// The release every client must run at least; null clears it.
    pub min: Option<String>,
}

/// Answer of `POST /releases/{id}/retire`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    /// The release.
    pub id: ReleaseId,
    /// Its state now (`retired`).
    pub state: Lifecycle,
}

/// Body of `POST /gc`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRequest {
    /// Report what would go; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// One blob a gc deleted (or would delete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcBlob {
    /// The blob.
    pub hash: BlobHash,
    /// Bytes it held, variants included.
    pub bytes: u64,
}

/// Answer of `POST /gc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Releases marked collected (or that would be).
    pub collected_releases: Vec<ReleaseId>,
    /// Blobs deleted (or that would be).
    pub blobs: Vec<GcBlob>,
    /// Bytes freed (or that would be).
    pub bytes: u64,
}

/// Body of `POST /fsck`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsckRequest {
    /// Mend what can be mended.
    #[serde(default)]
    pub repair: bool,
}

/// One finding of fsck.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `missing-blob`, `corrupt-blob`, `missing-variant`, `bad-variant`,
    /// `orphan-blob`, `leftover-upload`, `dangling-pointer`.
    pub kind: String,
    /// The release concerned, if any.
    pub release: Option<String>,
    /// The file concerned, if any.
    pub path: Option<String>,
    /// The blob concerned, if any.
    pub hash: Option<String>,
    /// What was found.
    pub detail: String,
    /// What `repair` did about it, if anything.
    pub repaired: Option<String>,
}

/// Answer of `GET /fsck` and `POST /fsck`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsckReport {
    /// No problem found (orphans and leftovers do not count: gc and restarts
    /// clear them).
    pub ok: bool,
    /// Releases checked.
    pub releases: usize,
    /// Distinct blobs checked.
    pub blobs: usize,
    /// Findings.
    pub problems: Vec<Problem>,
}

/// Answer of `GET /status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The current release.
    pub current: Option<ReleaseId>,
    /// Its generation.
    pub generation: u64,
    /// Clients of older releases must upgrade now.
    pub required_min: Option<ReleaseId>,
    /// Unix seconds of the last pointer change.
    pub changed_at: i64,
    /// The canary, while one runs.
    pub canary: Option<Canary>,
    /// Releases per lifecycle state.
    pub releases: BTreeMap<String, u64>,
    /// Live clients per served release.
    pub clients: BTreeMap<String, Counts>,
    /// Event streams open now.
    pub event_streams: usize,
}

/// Query of `GET /history`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryQuery {
    /// Newest entries to return (default 100, at most 10 000).
    pub limit: Option<usize>,
}

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Reads only (GET).
    Read,
}

/// Answer of `GET /whoami`: the token the request carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Its name, as history records it.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// Query of `GET /clients/history`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHistoryQuery {
    /// How far back, in seconds (default 3600, at most what the server
    /// keeps).
    pub seconds: Option<i64>,
}

/// Live clients of a release at one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientPoint {
    /// Unix seconds of the sample.
    pub at: i64,
    /// Live clients over every node then.
    pub clients: u64,
}

/// The samples of one release, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseClients {
    /// The release.
    pub release: ReleaseId,
    /// Its samples.
    pub points: Vec<ClientPoint>,
}

/// Answer of `GET /clients/history`: live clients per release over time,
/// the same from every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHistory {
    /// Unix seconds (the answering node's clock) the window ends at.
    pub now: i64,
    /// Unix seconds the window starts at.
    pub from: i64,
    /// Seconds between samples.
    pub interval_secs: u64,
    /// Seconds of samples the server keeps (the longest window).
    pub kept_secs: u64,
    /// Every release sampled in the window.
    pub releases: Vec<ReleaseClients>,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// One line a user can act on.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_state_names_the_canary_as_before() {
        let p = skewless_core::Pointer {
            current: Some(ReleaseId::parse("v1").unwrap()),
            generation: 3,
            required_min: None,
            changed_at: 9,
            canary: Some(ReleaseId::parse("v2").unwrap()),
            canary_percent: 30,
        };
        let json = serde_json::to_value(PointerState::from(&p)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "current": "v1",
                "generation": 3,
                "required_min": null,
                "canary": { "release": "v2", "percent": 30 },
            })
        );
    }

    #[test]
    fn request_bodies_take_their_defaults() {
        let p: PromoteRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(p, PromoteRequest::default());
        let g: GcRequest = serde_json::from_str("{}").unwrap();
        assert!(!g.dry_run);
        let c: CreateRelease = serde_json::from_str(r#"{"files": []}"#).unwrap();
        assert_eq!(c.id, None);
    }
}

/// What a node of a cluster reports with each heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node's id.
    pub id: String,
    /// The address it listens on.
    pub address: String,
    /// The skewless version it runs.
    pub version: String,
    /// The state version its routing snapshot reflects.
    pub cluster_version: u64,
    /// Event streams open on it.
    pub event_streams: usize,
    /// Live clients on it, over every release.
    pub clients: usize,
    /// The singleton leases it holds.
    pub leases: Vec<String>,
    /// Health of its managed back end per release.
    pub backends: BTreeMap<String, Health>,
}

/// One node as `GET /nodes` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Its last report.
    #[serde(flatten)]
    pub report: NodeReport,
    /// Unix seconds (the database's clock) of its last heartbeat.
    pub last_heartbeat: i64,
    /// Seconds since then.
    pub silent_secs: i64,
    /// Whether it counts (heard from within three heartbeats).
    pub live: bool,
}
