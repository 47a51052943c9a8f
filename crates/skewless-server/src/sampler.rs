//! The sampler: every interval, records the live clients of each served
//! release (over every node) in state, where the admin API reads the series
//! back for the dashboard's plot. In a cluster only the holder of the
//! `samples` lease writes, and only while its view of the other nodes is
//! fresh; two writers of one slot would store the same point twice over, not
//! two points, since a slot is named by time.

use std::sync::Arc;
use std::time::Duration;

use skewless_core::ReleaseId;

use crate::config::Sampling;
use crate::operations::Operations;
use crate::snapshot::Routing;
use crate::ServerError;

/// Runs until the task is aborted.
pub async fn run(ops: Arc<Operations>, routing: Arc<Routing>, sampling: Sampling) {
    let mut tick = tokio::time::interval(Duration::from_secs(sampling.interval() as u64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mine = ops
            .cluster()
            .is_none_or(|c| c.holds("samples") && c.view_is_fresh());
        if !mine {
            continue;
        }
        if let Err(e) = sample(&ops, &routing, &sampling).await {
            tracing::debug!(error = %e, "cannot record client samples");
        }
    }
}

/// One sample now: the live clients of every served release in the current
/// slot, and the ring pruned. Returns how many releases were sampled.
pub async fn sample(
    ops: &Operations,
    routing: &Routing,
    sampling: &Sampling,
) -> Result<usize, ServerError> {
    let at = sampling.slot(ops.now());
    let counts = ops.counts();
    let snap = routing.load_full();
    let samples: Vec<(ReleaseId, u64)> = snap
        .ordered
        .iter()
        .filter(|v| v.record.state.is_served())
        .map(|v| {
            let live = counts.get(&v.record.id).map_or(0, |c| c.total);
            (v.record.id.clone(), live as u64)
        })
        .collect();
    let ring = sampling.ring();
    let oldest = at - (ring as i64 - 1) * sampling.interval();
    ops.state()
        .record_samples(at, &samples, ring, oldest)
        .await?;
    Ok(samples.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_ring_follow_the_interval() {
        let s = Sampling {
            interval_secs: 15,
            kept_secs: 3600,
        };
        assert_eq!(s.slot(1_000), 990);
        assert_eq!(s.slot(990), 990);
        assert_eq!(s.slot(-1), -15);
        assert_eq!(s.ring(), 241, "an hour of 15 s samples, both ends");
        let odd = Sampling {
            interval_secs: 0,
            kept_secs: 0,
        };
        assert_eq!(
            (odd.interval(), odd.ring()),
            (1, 2),
            "never a zero interval or ring"
        );
    }
}
