//! The reaper: on a schedule, retires draining releases whose clients are
//! gone (or that are too old), and collects garbage, through
//! [`Operations`] like any other caller.

use std::sync::Arc;
use std::time::{Duration, Instant};

use skewless_core::retention::{to_retire, Candidate, Policy};

use crate::operations::Operations;
use crate::snapshot::Routing;
use crate::Retention;

/// The actor name the reaper's actions are recorded under.
pub const ACTOR: &str = "reaper";

/// Runs until the task is aborted.
pub async fn run(ops: Arc<Operations>, routing: Arc<Routing>, retention: Retention) {
    let interval = Duration::from_millis(retention.reaper_interval_ms.max(50));
    let gc_every =
        (retention.gc_interval_secs > 0).then(|| Duration::from_secs(retention.gc_interval_secs));
    let mut last_gc = Instant::now();
    loop {
        tokio::time::sleep(interval).await;
        // In a cluster only the lease holder runs each job (to avoid
        // duplicate work; the operations are safe anyway).
        let holds = |job| ops.cluster().is_none_or(|c| c.holds(job));
        let fresh = ops.cluster().is_none_or(|c| c.view_is_fresh());
        if holds("reaper") && fresh {
            reap(&ops, &routing, &retention).await;
        }
        if holds("gc") && gc_every.is_some_and(|every| last_gc.elapsed() >= every) {
            last_gc = Instant::now();
            match ops.collect_garbage(false, ACTOR).await {
                Ok(report) => tracing::info!(
                    blobs = report.blobs.len(),
                    bytes = report.bytes,
                    "scheduled gc"
                ),
                Err(e) => tracing::error!(error = %e, "scheduled gc failed"),
            }
        }
    }
}

/// One pass: retire what the retention policy says. Returns how many
/// releases were retired.
pub async fn reap(ops: &Operations, routing: &Routing, r: &Retention) -> usize {
    let policy = Policy {
        keep_last: r.keep_last,
        min_drain_secs: r.min_drain_secs,
        idle_secs: r.idle_secs,
        max_age_secs: r.max_age_secs,
    };
    let now = ops.now();
    let snap = routing.load_full();
    // Over every node in a cluster: a release is retired only when no node
    // has a client.
    let counts = ops.counts();
    let candidates: Vec<Candidate<'_>> = snap
        .ordered
        .iter()
        .map(|v| Candidate {
            id: &v.record.id,
            seq: v.record.seq,
            state: v.record.state,
            created_at: v.record.created_at,
            drained_at: v.record.drained_at,
            last_seen: ops.last_seen(&v.record.id),
            live: counts.get(&v.record.id).map_or(0, |c| c.total),
        })
        .collect();
    let doomed = to_retire(
        &candidates,
        snap.pointer.current.as_ref(),
        snap.pointer.canary.as_ref(),
        policy,
        now,
    );
    let mut retired = 0;
    for (id, reason) in doomed {
        match ops.retire(id, ACTOR).await {
            Ok(()) => {
                tracing::info!(release = %id, reason = reason.as_str(), "reaped");
                retired += 1;
            }
            Err(e) => tracing::warn!(release = %id, error = %e, "could not retire"),
        }
    }
    retired
}
