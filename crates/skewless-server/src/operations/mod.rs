//! The release operations: register, promote, canary, require, rollback,
//! retire, collect garbage and fsck, each one function of [`Operations`].
//! Each asks the domain ([`skewless_core::transition`]) through the state
//! store, which stores the decision in one transaction, and then refreshes
//! the routing snapshot, the managed back ends, the open event streams and
//! the prefetch of release files into this node's blob cache.
//! Admin handlers, the reaper and tests call these functions; nobody else
//! writes state.

mod collect;
mod fsck;
mod register;
mod views;

use std::collections::HashSet;
use std::sync::Arc;

use skewless_core::transition::{Decision, Operation};
use skewless_core::{HistoryEntry, ReleaseId};
use skewless_state::StateStore;
use skewless_store::BlobStore;
use skewless_wire::PromoteRequest;

use crate::cluster::Cluster;
use crate::presence::Presence;
use crate::restyle::Diffs;
use crate::snapshot::{ReleaseView, Routing, Snapshot};
use crate::supervisor::{Supervisor, Wanted};
use crate::{Clock, ServerError};

pub use fsck::check;
pub use skewless_state::Pointer;

/// The settings the operations need.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Health-check path of managed back ends that name none.
    pub default_health_path: String,
    /// Blobs untouched for this long may be collected even if no release
    /// ever referred to them.
    pub gc_grace_secs: i64,
    /// Largest blob upload accepted, in bytes.
    pub max_upload_bytes: u64,
    /// Seconds a promotion waits for every node's managed back end.
    pub cluster_backend_wait_secs: u64,
    /// How live clients are sampled (for reading the series back).
    pub samples: crate::Sampling,
}

/// The one home of every release operation.
pub struct Operations {
    state: Arc<dyn StateStore>,
    blobs: Arc<dyn BlobStore>,
    clock: Arc<dyn Clock>,
    routing: Arc<Routing>,
    presence: Arc<Presence>,
    supervisor: Arc<Supervisor>,
    settings: Settings,
    /// This node's part in a cluster, when state is shared.
    cluster: Option<Arc<Cluster>>,
    /// Rename-aware release diffs, once per pair; started for every new
    /// current release and canary as the snapshot changes.
    diffs: Arc<Diffs>,
    /// Brings the files of served releases into this node's blob cache.
    prefetch: crate::prefetch::Prefetch,
    /// Serialises snapshot rebuilds.
    refresh_lock: tokio::sync::Mutex<()>,
    /// This node's id and address, once it listens (single-node mode; a
    /// cluster node's are in its [`Cluster`]).
    identity: std::sync::OnceLock<(String, String)>,
    /// Keeps the routing state on this node's disk (shared state only).
    last_state: Option<crate::last_state::Keeper>,
    /// Set while the routing state is one read from this node's disk.
    serving_saved: std::sync::atomic::AtomicBool,
}

impl Operations {
    /// The service over these adapters, publishing to `routing`.
    pub fn new(
        state: Arc<dyn StateStore>,
        blobs: Arc<dyn BlobStore>,
        clock: Arc<dyn Clock>,
        routing: Arc<Routing>,
        presence: Arc<Presence>,
        supervisor: Arc<Supervisor>,
        settings: Settings,
    ) -> Self {
        Operations {
            cluster: None,
            state,
            blobs,
            clock,
            routing,
            presence,
            supervisor,
            settings,
            diffs: Arc::default(),
            prefetch: Default::default(),
            refresh_lock: tokio::sync::Mutex::new(()),
            identity: std::sync::OnceLock::new(),
            last_state: None,
            serving_saved: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The rename-aware release diffs, kept for the pairs the snapshot
    /// serves.
    pub(crate) fn diffs(&self) -> &Arc<Diffs> {
        &self.diffs
    }

    /// Time now, by the injected clock.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Makes this node a member of a cluster (state shared with others).
    pub fn with_cluster(mut self, cluster: Option<Arc<Cluster>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// Keeps every routing snapshot applied from now on on this node's disk
    /// through `keeper`.
    pub fn with_last_state(mut self, keeper: Option<crate::last_state::Keeper>) -> Self {
        self.last_state = keeper;
        self
    }

    /// Names this node for `nodes` once it listens (single-node mode).
    pub fn identify(&self, id: String, address: String) {
        let _ = self.identity.set((id, address));
    }

    /// The state store.
    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.state
    }

    /// This node's part in a cluster, if state is shared.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// The state version the routing snapshot reflects.
    pub fn applied_version(&self) -> u64 {
        self.routing.load().version
    }

    /// Live clients per release: over every live node in a cluster.
    pub fn counts(&self) -> std::collections::HashMap<ReleaseId, skewless_wire::Counts> {
        let local = self.presence.counts(self.clock.now());
        match &self.cluster {
            Some(c) => c.counts(local),
            None => local,
        }
    }

    /// When a client of `release` was last seen (on any node).
    pub fn last_seen(&self, release: &ReleaseId) -> Option<i64> {
        let local = self.presence.last_seen(release, self.clock.now());
        match &self.cluster {
            Some(c) => c.last_seen(release, local),
            None => local,
        }
    }

    /// Open event streams (over every live node in a cluster).
    pub fn event_streams(&self) -> usize {
        let local = self.routing.streams();
        match &self.cluster {
            Some(c) => c.event_streams(local),
            None => local,
        }
    }

    /// Rebuilds the routing snapshot from state, brings the managed back
    /// ends in line with it and, if what a client should run changed,
    /// notifies every open event stream. Manifests are immutable, so those
    /// already loaded are reused.
    pub async fn refresh(&self) -> Result<(), ServerError> {
        let _guard = self.refresh_lock.lock().await;
        let old = self.routing.load_full();
        let state = self.state.routing_state().await?;
        if state.version < old.version {
            // Read from a lagging view: never go backwards.
            return Ok(());
        }
        let mut views = Vec::with_capacity(state.releases.len());
        let mut gone = HashSet::new();
        for mut rec in state.releases {
            if !rec.state.holds_blobs() {
                gone.insert(rec.id);
                continue;
            }
            rec.manifest = match old.releases.get(&rec.id) {
                Some(v) => v.record.manifest.clone(),
                None => self.state.release(&rec.id).await?.manifest,
            };
            views.push(Arc::new(ReleaseView::new(rec)));
        }
        let mut snap = Snapshot::build(state.pointer, views, gone);
        snap.version = state.version;
        self.install(snap, &old, true);
        if self
            .serving_saved
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            tracing::info!(
                version = state.version,
                "the state store is reachable again; serving its state"
            );
        }
        Ok(())
    }

    /// Serves a routing state this node saved before (read from its disk)
    /// while the state store cannot be reached at start: pages, assets, API
    /// routing and managed back ends as they were. The next refresh that
    /// reaches the state store replaces it.
    pub(crate) async fn adopt_saved(&self, saved: crate::last_state::LastState) {
        let _guard = self.refresh_lock.lock().await;
        let old = self.routing.load_full();
        let views = saved
            .releases
            .into_iter()
            .filter(|r| r.state.holds_blobs())
            .map(|r| Arc::new(ReleaseView::new(r)))
            .collect();
        let mut snap = Snapshot::build(saved.pointer, views, saved.gone);
        snap.version = saved.version;
        self.serving_saved
            .store(true, std::sync::atomic::Ordering::Release);
        // Already on disk: not written again.
        self.install(snap, &old, false);
    }

    /// Whether the routing state is one saved on this node's disk, not yet
    /// confirmed by the state store.
    pub fn serving_saved(&self) -> bool {
        self.serving_saved
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Publishes `snap` (replacing `old`) and brings what depends on it in
    /// line: presence, diffs, prefetch, managed back ends and, when `save`,
    /// the routing state kept on this node's disk.
    fn install(&self, snap: Snapshot, old: &Snapshot, save: bool) {
        for id in snap.gone.difference(&old.gone) {
            self.presence.forget(id);
        }
        let wanted = snap
            .ordered
            .iter()
            .filter(|v| v.record.state.is_served())
            .filter_map(|v| {
                Some(Wanted {
                    id: v.record.id.clone(),
                    command: v.record.backend_cmd.clone()?,
                    health_path: v
                        .record
                        .health_path
                        .clone()
                        .unwrap_or_else(|| self.settings.default_health_path.clone()),
                })
            })
            .collect();
        self.diffs.refresh(&self.blobs, &snap);
        self.routing.publish(snap);
        self.prefetch.refresh(&self.blobs, &self.routing);
        self.supervisor.sync(wanted);
        if let (true, Some(keeper)) = (save, &self.last_state) {
            keeper.offer(self.routing.load_full());
        }
    }

    /// Asks the domain through the state store, then refreshes.
    async fn apply(&self, op: Operation, actor: &str) -> Result<Decision, ServerError> {
        let decision = self.state.apply(op, actor, self.clock.now()).await?;
        self.refresh().await?;
        Ok(decision)
    }

    /// Appends a history entry for an action with no pointer change.
    async fn record(
        &self,
        action: skewless_core::Action,
        actor: &str,
        detail: String,
    ) -> Result<(), ServerError> {
        self.state
            .record(HistoryEntry {
                seq: 0,
                at: self.clock.now(),
                action,
                release: None,
                before: None,
                after: None,
                actor: actor.to_owned(),
                detail: Some(detail),
            })
            .await?;
        Ok(())
    }

    /// Makes a release current, or the canary below 100 %. A release with a
    /// managed back end must be healthy first unless `force`.
    pub async fn promote(
        &self,
        id: &ReleaseId,
        req: &PromoteRequest,
        actor: &str,
    ) -> Result<Pointer, ServerError> {
        let rec = self.state.release(id).await?;
        if rec.backend_cmd.is_some() && !req.force {
            if let Err(why) = self.supervisor.wait_healthy(id).await {
                return Err(ServerError::Conflict(format!(
                    "the back end of release {id} is not healthy ({why}); fix it or promote with --force"
                )));
            }
            if let Some(cluster) = &self.cluster {
                let wait = std::time::Duration::from_secs(self.settings.cluster_backend_wait_secs);
                crate::cluster::wait_backends_healthy(self.state.as_ref(), cluster, id, wait)
                    .await
                    .map_err(|why| {
                        ServerError::Conflict(format!("{why}; fix it or promote with --force"))
                    })?;
            }
        }
        match req.percent {
            Some(0) | Some(101..) => {
                Err(ServerError::BadRequest("--percent must be 1 to 100".into()))
            }
            Some(percent @ 1..=99) => {
                if req.required {
                    return Err(ServerError::BadRequest(
                        "a canary cannot be required; promote it to 100 % with --required".into(),
                    ));
                }
                let op = Operation::Canary {
                    release: id.clone(),
                    percent,
                };
                let p = self.apply(op, actor).await?.pointer;
                tracing::info!(release = %id, percent, "canary");
                Ok(p)
            }
            _ => {
                let op = Operation::Promote {
                    release: id.clone(),
                    required: req.required,
                };
                let p = self.apply(op, actor).await?.pointer;
                crate::metrics::promotion();
                tracing::info!(release = %id, generation = p.generation, required = req.required, "promoted");
                Ok(p)
            }
        }
    }

    /// Ends the canary; its clients stay on it until they navigate.
    pub async fn abort_canary(&self, actor: &str) -> Result<Pointer, ServerError> {
        let p = self.apply(Operation::CanaryAbort, actor).await?.pointer;
        tracing::info!("canary aborted");
        Ok(p)
    }

    /// Sets (or clears) the release every client must run at least.
    pub async fn require(
        &self,
        release: Option<ReleaseId>,
        actor: &str,
    ) -> Result<Pointer, ServerError> {
        Ok(self
            .apply(Operation::Require { release }, actor)
            .await?
            .pointer)
    }

    /// Makes the release current again that was current before.
    pub async fn rollback(&self, actor: &str) -> Result<Pointer, ServerError> {
        let p = self.apply(Operation::Rollback, actor).await?.pointer;
        crate::metrics::rollback();
        tracing::info!(current = ?p.current, generation = p.generation, "rolled back");
        Ok(p)
    }

    /// Stops serving a release.
    pub async fn retire(&self, id: &ReleaseId, actor: &str) -> Result<(), ServerError> {
        let op = Operation::Retire {
            release: id.clone(),
        };
        self.apply(op, actor).await?;
        tracing::info!(release = %id, "retired");
        Ok(())
    }
}
