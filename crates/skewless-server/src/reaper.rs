//! The reaper: on a schedule, retires draining releases whose clients are
//! gone (or that are too old), and collects garbage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use skewless_core::retention::{to_retire, Candidate, Policy};

use crate::gateway::Gateway;

/// The actor name the reaper's actions are recorded under.
pub const ACTOR: &str = "reaper";

/// Runs until the task is aborted.
pub async fn run(gw: Arc<Gateway>) {
    let r = &gw.config.retention;
    let interval = Duration::from_millis(r.reaper_interval_ms.max(50));
    let gc_every = (r.gc_interval_secs > 0).then(|| Duration::from_secs(r.gc_interval_secs));
    let mut last_gc = Instant::now();
    loop {
        tokio::time::sleep(interval).await;
        if let Err(e) = reap(&gw).await {
            tracing::error!(error = %e, "reaper failed");
        }
        if gc_every.is_some_and(|every| last_gc.elapsed() >= every) {
            last_gc = Instant::now();
            match gw.collect_garbage(false, ACTOR).await {
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

/// One pass: retire what the retention policy says.
pub async fn reap(gw: &Gateway) -> Result<usize, crate::ServerError> {
    let r = &gw.config.retention;
    let policy = Policy {
        keep_last: r.keep_last,
        min_drain_secs: r.min_drain_secs,
        idle_secs: r.idle_secs,
        max_age_secs: r.max_age_secs,
    };
    let now = gw.clock.now();
    let snap = gw.snapshot.load_full();
    let counts = gw.presence.counts(now);
    let candidates: Vec<Candidate<'_>> = snap
        .ordered
        .iter()
        .map(|v| Candidate {
            id: &v.record.id,
            seq: v.record.seq,
            state: v.record.state,
            created_at: v.record.created_at,
            drained_at: v.record.drained_at,
            last_seen: gw.presence.last_seen(&v.record.id, now),
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
        match gw.state.retire(id, ACTOR, now).await {
            Ok(()) => {
                tracing::info!(release = %id, reason = reason.as_str(), "retired");
                retired += 1;
            }
            Err(e) => tracing::warn!(release = %id, error = %e, "could not retire"),
        }
    }
    if retired > 0 {
        gw.refresh().await?;
    }
    Ok(retired)
}
