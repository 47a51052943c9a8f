//! Release state: releases with their manifests, the current pointer with its
//! generation number, and the history of every change. [`StateStore`] is the
//! seam; [`Sqlite`] is the embedded implementation (WAL, full sync), so an
//! acknowledged promotion survives `kill -9`; [`Postgres`] is shared by the
//! nodes of a cluster and also implements [`ClusterState`]. The release rules are not here:
//! an adapter stores what [`skewless_core::transition::decide`] decided.

mod error;
mod model;
mod postgres;
mod record;
mod sqlite;

use async_trait::async_trait;
use skewless_core::transition::{Decision, Operation};
use skewless_core::{BlobHash, Lifecycle, ReleaseId};

pub use error::StateError;
pub use model::{ClientSample, NewRelease, ReleaseRecord};
pub use postgres::{Change, ChangeFeed, Lease, NodeRow, Postgres, PresenceRow, TimeSource};
pub use skewless_core::transition::{HistoryEntry, Pointer};
pub use sqlite::Sqlite;

/// What the routing snapshot is built from, read at one point in time.
#[derive(Debug, Clone)]
pub struct RoutingState {
    /// The cluster version this reflects (0 for a store that is not shared).
    pub version: u64,
    /// The current pointer.
    pub pointer: Pointer,
    /// Every release, collected ones included, without manifests.
    pub releases: Vec<ReleaseRecord>,
}

/// Where release state lives. Every mutating call is one atomic transaction
/// and is durable when it returns.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Registers a release in state `uploaded`. Fails with
    /// [`StateError::Exists`] if the id is taken (nothing is overwritten), and
    /// with [`StateError::MissingBlobs`] unless every blob of its files and
    /// shell is present; touches them in the same transaction.
    async fn create_release(
        &self,
        new: NewRelease,
        actor: &str,
    ) -> Result<ReleaseRecord, StateError>;

    /// Every release that is not collected, oldest first, with manifests.
    async fn releases(&self) -> Result<Vec<ReleaseRecord>, StateError>;

    /// Every release including collected ones, oldest first, without
    /// manifests (for listings).
    async fn release_summaries(&self) -> Result<Vec<ReleaseRecord>, StateError>;

    /// One release with its manifest.
    async fn release(&self, id: &ReleaseId) -> Result<ReleaseRecord, StateError>;

    /// The current pointer.
    async fn pointer(&self) -> Result<Pointer, StateError>;

    /// Decides `op` with the pointer rules of [`skewless_core::transition`]
    /// over the stored pointer and releases, and stores the outcome (pointer,
    /// release standings, history) in the same transaction.
    async fn apply(&self, op: Operation, actor: &str, at: i64) -> Result<Decision, StateError>;

    /// Makes `id` current; the previous current starts draining. With
    /// `required`, clients of older releases must upgrade now.
    async fn promote(
        &self,
        id: &ReleaseId,
        required: bool,
        actor: &str,
        at: i64,
    ) -> Result<Pointer, StateError> {
        let op = Operation::Promote {
            release: id.clone(),
            required,
        };
        Ok(self.apply(op, actor, at).await?.pointer)
    }

    /// Makes the release that was current before the current one current
    /// again.
    async fn rollback(&self, actor: &str, at: i64) -> Result<Pointer, StateError> {
        Ok(self.apply(Operation::Rollback, actor, at).await?.pointer)
    }

    /// Stops serving a release. The current release and the canary cannot be
    /// retired.
    async fn retire(&self, id: &ReleaseId, actor: &str, at: i64) -> Result<(), StateError> {
        let op = Operation::Retire {
            release: id.clone(),
        };
        self.apply(op, actor, at).await.map(|_| ())
    }

    /// Gives `id` to `percent` % of new sessions (`None` ends the canary).
    async fn set_canary(
        &self,
        id: Option<&ReleaseId>,
        percent: u8,
        actor: &str,
        at: i64,
    ) -> Result<Pointer, StateError> {
        let op = match id {
            Some(id) => Operation::Canary {
                release: id.clone(),
                percent,
            },
            None => Operation::CanaryAbort,
        };
        Ok(self.apply(op, actor, at).await?.pointer)
    }

    /// Sets (or clears) the release every client must run at least.
    async fn set_required_min(
        &self,
        id: Option<&ReleaseId>,
        actor: &str,
        at: i64,
    ) -> Result<Pointer, StateError> {
        let op = Operation::Require {
            release: id.cloned(),
        };
        Ok(self.apply(op, actor, at).await?.pointer)
    }

    /// Marks every retired release collected; returns their ids.
    async fn collect_retired(&self, actor: &str, at: i64) -> Result<Vec<ReleaseId>, StateError> {
        Ok(self.apply(Operation::Collect, actor, at).await?.collected())
    }

    /// Every (blob, release state) pair: each release's files and rewritten
    /// shell, for garbage collection.
    async fn blob_refs(&self) -> Result<Vec<(BlobHash, Lifecycle)>, StateError>;

    /// Records that deploys want these stored blobs now: each is touched
    /// (and recorded present if state did not know it yet). Returns those
    /// being deleted by a garbage collection: they must be uploaded again.
    async fn touch_blobs(&self, hashes: &[BlobHash], at: i64) -> Result<Vec<BlobHash>, StateError>;

    /// In one transaction: records the `stored` blobs state does not know
    /// yet (hash, unix seconds written) as present, marks `deleting` every
    /// present blob that [`skewless_core::gc::deletable`] allows, and returns
    /// every blob marked `deleting` (including those a crashed collection
    /// left). A dry run changes nothing and returns what would be marked.
    async fn mark_garbage(
        &self,
        stored: &[(BlobHash, i64)],
        dry_run: bool,
        now: i64,
        grace_secs: i64,
    ) -> Result<Vec<BlobHash>, StateError>;

    /// Blobs marked `deleting` (a collection that did not finish).
    async fn deleting_blobs(&self) -> Result<Vec<BlobHash>, StateError>;

    /// Forgets blobs marked `deleting` once their bytes are gone.
    async fn forget_blobs(&self, hashes: &[BlobHash]) -> Result<(), StateError>;

    /// Appends a history entry for an action with no state change of its own.
    async fn record(&self, entry: HistoryEntry) -> Result<(), StateError>;

    /// The newest `limit` history entries, oldest first.
    async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, StateError>;

    /// Records the live clients of each release at `at` (a sample already
    /// stored for a release at that time is replaced), then prunes the ring:
    /// drops every sample older than `oldest` and keeps at most the newest
    /// `keep` of each release. One transaction.
    async fn record_samples(
        &self,
        at: i64,
        samples: &[(ReleaseId, u64)],
        keep: usize,
        oldest: i64,
    ) -> Result<(), StateError>;

    /// Every sample taken at or after `since`, by release, oldest first.
    async fn samples(&self, since: i64) -> Result<Vec<ClientSample>, StateError>;

    /// The version of what gateways route: raised by every change to
    /// releases or the pointer (always 0 for a store only one node uses).
    async fn version(&self) -> Result<u64, StateError> {
        Ok(0)
    }

    /// Version, pointer and release summaries, consistent with each other.
    async fn routing_state(&self) -> Result<RoutingState, StateError> {
        let version = self.version().await?;
        let pointer = self.pointer().await?;
        let releases = self.release_summaries().await?;
        Ok(RoutingState {
            version,
            pointer,
            releases,
        })
    }

    /// The cluster side of a store several nodes share.
    fn cluster(&self) -> Option<&dyn ClusterState> {
        None
    }
}

/// What the nodes of a cluster share besides releases. Heartbeats and
/// leases never notify: only routing changes do.
#[async_trait]
pub trait ClusterState: Send + Sync {
    /// Starts listening for changes (reconnecting by itself).
    fn changes(&self) -> ChangeFeed;

    /// Records that `node` is alive with this report (JSON) and these live
    /// clients per release (replacing its earlier rows).
    async fn heartbeat(
        &self,
        node: &str,
        report: &str,
        presence: &[PresenceRow],
    ) -> Result<(), StateError>;

    /// Every node that reported, with the age of its report.
    async fn nodes(&self) -> Result<Vec<NodeRow>, StateError>;

    /// Live clients per release summed over the nodes heard from within
    /// `live_within_secs`; last seen is the latest of every row.
    async fn cluster_presence(&self, live_within_secs: i64)
        -> Result<Vec<PresenceRow>, StateError>;

    /// Takes or renews the lease `name` for `ttl_secs`: its epoch if
    /// `holder` holds it now, `None` if another node holds it unexpired.
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_secs: i64,
    ) -> Result<Option<i64>, StateError>;

    /// Gives up a lease `holder` holds, so another node may take it at once.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StateError>;

    /// Every lease with its holder.
    async fn leases(&self) -> Result<Vec<Lease>, StateError>;

    /// Deletes nodes (and their presence) not heard from for this long;
    /// returns how many.
    async fn forget_nodes(&self, silent_for_secs: i64) -> Result<u64, StateError>;
}
