//! Cluster mode: several nodes over one shared state store. Each node
//! follows state changes (notices, a reconnect resync and a version poll),
//! reports itself and its live clients with a heartbeat, and runs the
//! singleton jobs (reaper, scheduled gc, cleanup of stale rows) only while
//! it holds their lease. Correctness never depends on a lease: every job
//! goes through the same transactional operations as an admin request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skewless_core::ReleaseId;
use skewless_state::{Change, PresenceRow, StateStore};
use skewless_wire::{Counts, Health, Node, NodeReport};
use tokio::task::JoinHandle;

use crate::gateway::Gateway;
use crate::operations::Operations;
use crate::presence::Presence;
use crate::snapshot::Routing;
use crate::supervisor::Supervisor;
use crate::ClusterTiming;

/// The singleton jobs, each under a lease of its own name.
pub const JOBS: [&str; 4] = ["reaper", "gc", "cleanup", "samples"];

/// What this node knows of the others, refreshed with each heartbeat.
#[derive(Debug, Default)]
pub struct ClusterView {
    /// Live clients per release over every live node, with when a client
    /// was last seen anywhere.
    pub presence: HashMap<ReleaseId, (Counts, Option<i64>)>,
    /// Event streams open on every live node.
    pub event_streams: usize,
    /// Every node that reported.
    pub nodes: Vec<Node>,
    /// When it was read (never, until the first heartbeat).
    pub read_at: Option<Instant>,
}

/// This node's part in a cluster.
pub struct Cluster {
    /// Its id.
    pub node_id: String,
    /// The address it listens on.
    pub address: String,
    timing: ClusterTiming,
    /// Lease → when this node last renewed it.
    leases: Mutex<HashMap<&'static str, Instant>>,
    view: arc_swap::ArcSwap<ClusterView>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cluster {
    /// This node, named `node_id`, listening on `address`.
    pub fn new(node_id: String, address: String, timing: ClusterTiming) -> Self {
        Cluster {
            node_id,
            address,
            timing,
            leases: Mutex::new(HashMap::new()),
            view: Default::default(),
        }
    }

    /// Seconds after which a silent node is ignored: three heartbeats,
    /// rounded up to whole seconds of the database's clock.
    pub fn live_within_secs(&self) -> i64 {
        (3 * self.timing.heartbeat_ms).div_ceil(1000).max(1) as i64
    }

    /// Whether this node holds `job`'s lease now. It counts only for two
    /// thirds of the lease time after the last renewal, so a node whose
    /// renewals stopped gives up before another may take over.
    pub fn holds(&self, job: &str) -> bool {
        let valid = Duration::from_secs(self.timing.lease_ttl_secs) * 2 / 3;
        lock(&self.leases)
            .get(job)
            .is_some_and(|t| t.elapsed() < valid)
    }

    /// The leases this node holds now.
    pub fn held(&self) -> Vec<String> {
        JOBS.iter()
            .filter(|j| self.holds(j))
            .map(|j| (*j).to_owned())
            .collect()
    }

    /// Whether the view is recent enough to decide on: read within three
    /// heartbeats. The reaper waits for it, so a node that just started or
    /// lost the database never retires a release whose clients are on
    /// other nodes.
    pub fn view_is_fresh(&self) -> bool {
        let window = Duration::from_millis(3 * self.timing.heartbeat_ms);
        self.view().read_at.is_some_and(|t| t.elapsed() < window)
    }

    /// The latest view of the cluster.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.load_full()
    }

    /// Live clients of every release over the cluster, never fewer than
    /// this node's own (its last report may be a heartbeat old).
    pub fn counts(&self, local: HashMap<ReleaseId, Counts>) -> HashMap<ReleaseId, Counts> {
        let view = self.view();
        let mut out: HashMap<ReleaseId, Counts> = view
            .presence
            .iter()
            .map(|(id, (c, _))| (id.clone(), *c))
            .collect();
        for (id, l) in local {
            let c = out.entry(id).or_default();
            c.streams = c.streams.max(l.streams);
            c.recent = c.recent.max(l.recent);
            c.total = c.total.max(l.total);
        }
        out
    }

    /// When a client of `release` was last seen on any node.
    pub fn last_seen(&self, release: &ReleaseId, local: Option<i64>) -> Option<i64> {
        let cluster = self.view().presence.get(release).and_then(|(_, t)| *t);
        cluster.max(local)
    }

    /// Event streams open over the cluster (at least this node's own).
    pub fn event_streams(&self, local: usize) -> usize {
        let view = self.view();
        let others: usize = view
            .nodes
            .iter()
            .filter(|n| n.live && n.report.id != self.node_id)
            .map(|n| n.report.event_streams)
            .sum();
        others + local
    }
}

/// Starts the cluster tasks of a gateway: following state, heartbeats and
/// leases. They run until aborted.
pub fn spawn(gw: &Arc<Gateway>, cluster: &Arc<Cluster>) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(follow(
            gw.operations().clone(),
            gw.operations().state().clone(),
            Duration::from_millis(cluster.timing.poll_ms),
        )),
        tokio::spawn(heartbeat(gw.clone(), cluster.clone())),
        tokio::spawn(keep_leases(
            gw.operations().state().clone(),
            cluster.clone(),
        )),
    ]
}

/// Refreshes the routing snapshot when state reached a newer version
/// (notice or poll) and after every (re)connection of the listener.
async fn follow(ops: Arc<Operations>, state: Arc<dyn StateStore>, poll: Duration) {
    let Some(shared) = state.cluster() else {
        return;
    };
    let mut feed = shared.changes();
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A refresh that failed (database down) is retried at the next poll,
    // as is the first one of a node serving its saved routing state.
    let mut stale = ops.serving_saved();
    loop {
        let newer = tokio::select! {
            change = feed.recv() => match change {
                Some(Change::Version(v)) => v > ops.applied_version(),
                Some(Change::Resync) => true,
                None => return,
            },
            _ = tick.tick() => match state.version().await {
                Ok(v) => stale || v > ops.applied_version(),
                Err(e) => {
                    tracing::debug!(error = %e, "version poll failed");
                    false
                }
            },
        };
        if newer {
            match ops.refresh().await {
                Ok(()) => stale = false,
                Err(e) => {
                    stale = true;
                    tracing::warn!(error = %e, "cannot refresh from state; serving the last snapshot");
                }
            }
        }
    }
}

/// Who a node is: its id, its address and the leases it holds.
pub(crate) struct Identity<'a> {
    /// Its id.
    pub id: &'a str,
    /// The address it listens on.
    pub address: &'a str,
    /// The singleton leases it holds.
    pub leases: Vec<String>,
}

impl<'a> From<&'a Cluster> for Identity<'a> {
    fn from(c: &'a Cluster) -> Self {
        Identity {
            id: &c.node_id,
            address: &c.address,
            leases: c.held(),
        }
    }
}

/// This node's report now.
pub(crate) fn report(
    routing: &Routing,
    presence: &Presence,
    supervisor: &Supervisor,
    now: i64,
    node: Identity<'_>,
) -> (NodeReport, Vec<PresenceRow>) {
    let snap = routing.load_full();
    let counts = presence.counts(now);
    let rows: Vec<PresenceRow> = counts
        .iter()
        .map(|(id, c)| PresenceRow {
            release: id.to_string(),
            streams: c.streams as u64,
            recent: c.recent as u64,
            total: c.total as u64,
            last_seen: presence.last_seen(id, now),
        })
        .collect();
    let backends = snap
        .ordered
        .iter()
        .filter(|v| v.record.backend_cmd.is_some() && v.record.state.is_served())
        .map(|v| {
            let health = supervisor
                .status(&v.record.id)
                .map_or(Health::Stopped, |s| s.health);
            (v.record.id.to_string(), health)
        })
        .collect();
    let report = NodeReport {
        id: node.id.to_owned(),
        address: node.address.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        cluster_version: snap.version,
        event_streams: routing.streams(),
        clients: counts.values().map(|c| c.total).sum(),
        leases: node.leases,
        backends,
    };
    (report, rows)
}

/// Reads every node's report and the summed presence into the view.
pub async fn read_view(
    state: &dyn StateStore,
    cluster: &Cluster,
) -> Result<ClusterView, crate::ServerError> {
    let shared = state
        .cluster()
        .ok_or_else(|| crate::ServerError::NotFound("this server is not in a cluster".into()))?;
    let live_within = cluster.live_within_secs();
    let rows = shared.cluster_presence(live_within).await?;
    let mut presence = HashMap::new();
    for r in rows {
        let Ok(id) = ReleaseId::parse(&r.release) else {
            continue;
        };
        let counts = Counts {
            streams: r.streams as usize,
            recent: r.recent as usize,
            total: r.total as usize,
        };
        presence.insert(id, (counts, r.last_seen));
    }
    let mut nodes = Vec::new();
    for n in shared.nodes().await? {
        let report: NodeReport = match serde_json::from_str(&n.report) {
            Ok(r) => r,
            Err(_) => NodeReport {
                id: n.id.clone(),
                ..NodeReport::default()
            },
        };
        nodes.push(Node {
            report,
            last_heartbeat: n.heard_at,
            silent_secs: n.age_secs,
            live: n.age_secs <= live_within,
        });
    }
    let event_streams = nodes
        .iter()
        .filter(|n| n.live)
        .map(|n| n.report.event_streams)
        .sum();
    Ok(ClusterView {
        presence,
        event_streams,
        nodes,
        read_at: Some(Instant::now()),
    })
}

/// Every heartbeat: reports this node and its presence, then reads the
/// cluster's; the cleanup lease's holder deletes long-silent nodes.
async fn heartbeat(gw: Arc<Gateway>, cluster: Arc<Cluster>) {
    let state = gw.operations().state().clone();
    let mut tick = tokio::time::interval(Duration::from_millis(cluster.timing.heartbeat_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = state.cluster() else {
            return;
        };
        let (report, rows) = gw.node_report(&cluster);
        let json = serde_json::to_string(&report).unwrap_or_default();
        if let Err(e) = shared.heartbeat(&cluster.node_id, &json, &rows).await {
            tracing::debug!(error = %e, "heartbeat failed");
            continue;
        }
        match read_view(state.as_ref(), &cluster).await {
            Ok(view) => cluster.view.store(Arc::new(view)),
            Err(e) => tracing::debug!(error = %e, "cannot read the cluster view"),
        }
        if cluster.holds("cleanup") {
            match shared
                .forget_nodes(cluster.timing.forget_node_secs as i64)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(nodes = n, "forgot long-silent nodes"),
                Err(e) => tracing::debug!(error = %e, "cleanup failed"),
            }
        }
    }
}

/// Takes or renews every job's lease every third of the lease time.
async fn keep_leases(state: Arc<dyn StateStore>, cluster: Arc<Cluster>) {
    let ttl = cluster.timing.lease_ttl_secs;
    let mut tick = tokio::time::interval(Duration::from_millis(ttl * 1000 / 3));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = state.cluster() else {
            return;
        };
        for job in JOBS {
            let asked = Instant::now();
            match shared.take_lease(job, &cluster.node_id, ttl as i64).await {
                Ok(Some(epoch)) => {
                    let had = lock(&cluster.leases).insert(job, asked).is_some();
                    if !had {
                        tracing::info!(job, epoch, "took the lease");
                    }
                }
                Ok(None) => {
                    if lock(&cluster.leases).remove(job).is_some() {
                        tracing::info!(job, "lost the lease");
                    }
                }
                Err(e) => tracing::debug!(job, error = %e, "cannot renew the lease"),
            }
        }
    }
}

/// Gives up every lease this node holds (on shutdown).
pub async fn release_leases(state: &dyn StateStore, cluster: &Cluster) {
    let Some(shared) = state.cluster() else {
        return;
    };
    let held: Vec<&'static str> = lock(&cluster.leases).drain().map(|(j, _)| j).collect();
    for job in held {
        if let Err(e) = shared.release_lease(job, &cluster.node_id).await {
            tracing::warn!(job, error = %e, "cannot release the lease");
        }
    }
}

/// Waits until every live node reports `release`'s managed back end
/// healthy, for at most `timeout`; else names the nodes that do not.
pub async fn wait_backends_healthy(
    state: &dyn StateStore,
    cluster: &Cluster,
    release: &ReleaseId,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let view = read_view(state, cluster).await.map_err(|e| e.to_string())?;
        let not_ready: Vec<String> = view
            .nodes
            .iter()
            .filter(|n| n.live)
            .filter(|n| n.report.backends.get(release.as_str()) != Some(&Health::Healthy))
            .map(|n| {
                let h = n
                    .report
                    .backends
                    .get(release.as_str())
                    .map_or("not started", |h| h.as_str());
                format!("{} ({h})", n.report.id)
            })
            .collect();
        if not_ready.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the back end of release {release} is not healthy on every node after {}s: {}",
                timeout.as_secs(),
                not_ready.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ReleaseId {
        ReleaseId::parse(s).unwrap()
    }

    fn counts(streams: usize, total: usize) -> Counts {
        Counts {
            streams,
            recent: total - streams,
            total,
        }
    }

    #[test]
    fn the_cluster_view_never_counts_fewer_clients_than_this_node_sees() {
        let c = Cluster::new("n1".into(), "127.0.0.1:1".into(), ClusterTiming::default());
        let mut view = ClusterView::default();
        view.presence.insert(id("a"), (counts(2, 5), Some(100)));
        view.presence.insert(id("b"), (counts(0, 1), Some(90)));
        c.view.store(Arc::new(view));
        assert!(!c.view_is_fresh(), "never read from the database");
        // Its own report may be a heartbeat old: a stream opened since counts.
        let local = HashMap::from([(id("a"), counts(1, 2)), (id("c"), counts(1, 1))]);
        let merged = c.counts(local);
        assert_eq!(merged[&id("a")], counts(2, 5));
        assert_eq!(merged[&id("b")], counts(0, 1));
        assert_eq!(merged[&id("c")], counts(1, 1));
        assert_eq!(c.last_seen(&id("b"), Some(95)), Some(95));
        assert_eq!(c.last_seen(&id("a"), None), Some(100));
        assert_eq!(c.last_seen(&id("z"), None), None);
    }

    #[test]
    fn a_lease_counts_only_for_two_thirds_of_its_time_after_renewal() {
        let timing = ClusterTiming {
            lease_ttl_secs: 15,
            heartbeat_ms: 300,
            ..ClusterTiming::default()
        };
        let c = Cluster::new("n1".into(), "127.0.0.1:1".into(), timing);
        assert!(!c.holds("reaper"));
        lock(&c.leases).insert("reaper", Instant::now());
        let stale = Instant::now()
            .checked_sub(Duration::from_secs(11))
            .expect("uptime over 11 s");
        lock(&c.leases).insert("gc", stale);
        assert!(c.holds("reaper"));
        assert!(
            !c.holds("gc"),
            "renewed 11 s ago: past 10 s of a 15 s lease"
        );
        assert_eq!(c.held(), vec!["reaper".to_owned()]);
        // Three heartbeats of 300 ms: ignored after 1 s of database time.
        assert_eq!(c.live_within_secs(), 1);
        let default = Cluster::new("n".into(), "a".into(), ClusterTiming::default());
        assert_eq!(default.live_within_secs(), 6);
    }
}
