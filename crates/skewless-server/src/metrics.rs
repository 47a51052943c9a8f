//! Prometheus metrics at `/_skewless/metrics`, through the `metrics` crate:
//! request counters by kind and status, skew saved and missed, promotions,
//! prefetches, and, at scrape time, live clients, event streams, back-end
//! health, releases by state and the blob cache's figures.

use std::sync::OnceLock;

use metrics::{counter, Counter};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// What a request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A page load: the shell.
    Shell,
    /// A file of a release.
    Asset,
    /// A proxied API call.
    Api,
    /// `/_skewless/…` (admin API included).
    System,
}

impl Kind {
    /// The kind a response of the router's (`/_skewless/…`) carries in
    /// its extensions; `System` when it carries none.
    pub fn of<B>(resp: &axum::http::Response<B>) -> Kind {
        resp.extensions()
            .get::<Kind>()
            .copied()
            .unwrap_or(Kind::System)
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::Shell => "shell",
            Kind::Asset => "asset",
            Kind::Api => "api",
            Kind::System => "system",
        }
    }
}

/// Installs the process-wide recorder (once) and returns its handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Only fails if another recorder is installed, which this crate never does.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "skewless_tls_reloads_total",
        "TLS certificate reloads (SIGHUP or a changed file), by result; a failed one keeps the previous certificate."
    );
    metrics::describe_counter!(
        "skewless_requests_total",
        "Requests answered, by kind and status."
    );
    metrics::describe_counter!(
        "skewless_skew_saved_total",
        "Requests an older release answered for a client that runs it (asset from an older retained release, API call to a pinned back end)."
    );
    metrics::describe_counter!(
        "skewless_skew_missed_total",
        "404s on content-hashed paths: a file no retained release has."
    );
    metrics::describe_counter!(
        "skewless_backend_body_timeouts_total",
        "Proxied responses cut off because the back end sent nothing for read_timeout_secs in the middle of the body."
    );
    metrics::describe_counter!("skewless_promotions_total", "Promotions.");
    metrics::describe_counter!("skewless_rollbacks_total", "Rollbacks.");
    metrics::describe_gauge!(
        "skewless_live_clients",
        "Live clients per release (open streams plus recent client ids)."
    );
    metrics::describe_gauge!("skewless_event_streams", "Open event streams.");
    metrics::describe_gauge!(
        "skewless_backend_healthy",
        "1 when a release's managed back end passes its health check."
    );
    metrics::describe_gauge!("skewless_releases", "Releases by lifecycle state.");
    metrics::describe_gauge!(
        "skewless_serving_saved_state",
        "1 while this node serves the routing state it saved last, because the state database could not be reached when it started."
    );
    for (name, help) in CACHE_COUNTERS {
        metrics::describe_counter!(name, help);
    }
    metrics::describe_gauge!(
        "skewless_cache_bytes",
        "Bytes held in this node's blob cache."
    );
    metrics::describe_gauge!(
        "skewless_cache_files",
        "Files (one per blob and encoding) held in this node's blob cache."
    );
    metrics::describe_gauge!(
        "skewless_cache_max_bytes",
        "The blob cache's byte budget (--cache-max-bytes)."
    );
    metrics::describe_counter!(
        "skewless_prefetch_total",
        "Files of served releases prefetched into the blob cache, by result (fetched, failed)."
    );
}

/// The blob cache's counters, in the order [`cache`] sets them.
const CACHE_COUNTERS: [(&str, &str); 8] = [
    (
        "skewless_cache_hits_total",
        "Reads served from this node's blob cache.",
    ),
    (
        "skewless_cache_misses_total",
        "Reads of files not in the blob cache, which waited for a fetch.",
    ),
    (
        "skewless_cache_fills_total",
        "Files fetched from the blob store, verified and kept in the cache.",
    ),
    (
        "skewless_cache_fill_bytes_total",
        "Bytes of the files fetched into the cache.",
    ),
    (
        "skewless_cache_fill_failures_total",
        "Fetches into the cache that failed (store unavailable, corrupt copy, local I/O).",
    ),
    (
        "skewless_cache_waits_total",
        "Reads that joined a fetch already in flight instead of starting another.",
    ),
    (
        "skewless_cache_evictions_total",
        "Files evicted from the cache to stay within its budget.",
    ),
    (
        "skewless_cache_evicted_bytes_total",
        "Bytes of the files evicted from the cache.",
    ),
];

/// Sets the blob cache's figures, at scrape time.
pub fn cache(s: &skewless_store::CacheStats) {
    let values = [
        s.hits,
        s.misses,
        s.fills,
        s.fill_bytes,
        s.fill_failures,
        s.waits,
        s.evictions,
        s.evicted_bytes,
    ];
    for ((name, _), v) in CACHE_COUNTERS.iter().zip(values) {
        metrics::counter!(*name).absolute(v);
    }
    metrics::gauge!("skewless_cache_bytes").set(s.bytes as f64);
    metrics::gauge!("skewless_cache_files").set(s.files as f64);
    metrics::gauge!("skewless_cache_max_bytes").set(s.max_bytes as f64);
}

/// Counts the files one prefetch walk fetched and failed to fetch.
pub fn prefetched(fetched: u64, failed: u64) {
    counter!("skewless_prefetch_total", "result" => "fetched").increment(fetched);
    counter!("skewless_prefetch_total", "result" => "failed").increment(failed);
}

/// Statuses counted under their own label; the rest are counted by class
/// (`1xx` … `5xx`).
const NAMED_STATUSES: [(u16, &str); 18] = [
    (200, "200"),
    (206, "206"),
    (101, "101"),
    (304, "304"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (409, "409"),
    (413, "413"),
    (416, "416"),
    (422, "422"),
    (429, "429"),
    (500, "500"),
    (502, "502"),
    (503, "503"),
    (504, "504"),
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const STATUS_SLOTS: usize = NAMED_STATUSES.len() + CLASSES.len();

/// The counter slot of a status and its label.
fn status_slot(code: u16) -> (usize, &'static str) {
    match NAMED_STATUSES.iter().position(|&(c, _)| c == code) {
        Some(i) => (i, NAMED_STATUSES[i].1),
        None => {
            let class = usize::from(code / 100).clamp(1, 5) - 1;
            (NAMED_STATUSES.len() + class, CLASSES[class])
        }
    }
}

/// Counter handles, each registered on its first use, so counting a
/// request is an atomic add, not a registry lookup.
static REQUESTS: [OnceLock<Counter>; 4 * STATUS_SLOTS] =
    [const { OnceLock::new() }; 4 * STATUS_SLOTS];
static SKEW_SAVED: [OnceLock<Counter>; 4] = [const { OnceLock::new() }; 4];

/// Counts one answered request.
pub fn request(kind: Kind, status: u16) {
    let (slot, label) = status_slot(status);
    REQUESTS[kind as usize * STATUS_SLOTS + slot]
        .get_or_init(
            || counter!("skewless_requests_total", "kind" => kind.as_str(), "status" => label),
        )
        .increment(1);
}

/// Counts a request an older release answered for its own client.
pub fn skew_saved(kind: Kind) {
    SKEW_SAVED[kind as usize]
        .get_or_init(|| counter!("skewless_skew_saved_total", "kind" => kind.as_str()))
        .increment(1);
}

/// Counts a miss on a content-hashed path.
pub fn skew_missed() {
    counter!("skewless_skew_missed_total").increment(1);
}

/// Counts a proxied response cut off because its back end went silent in
/// the middle of the body.
pub fn backend_body_timeout() {
    counter!("skewless_backend_body_timeouts_total").increment(1);
}

/// Counts a promotion.
pub fn promotion() {
    counter!("skewless_promotions_total").increment(1);
}

/// Counts a rollback.
pub fn rollback() {
    counter!("skewless_rollbacks_total").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_their_own_slot_or_their_class() {
        assert_eq!(status_slot(200), (0, "200"));
        assert_eq!(status_slot(504), (17, "504"));
        assert_eq!(status_slot(201), (19, "2xx"));
        assert_eq!(status_slot(418), (21, "4xx"));
        assert_eq!(status_slot(599), (22, "5xx"));
        assert_eq!(status_slot(99), (18, "1xx"));
        assert_eq!(status_slot(700), (22, "5xx"));
        let mut slots: Vec<usize> = (0..1000).map(|c| status_slot(c).0).collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots, (0..STATUS_SLOTS).collect::<Vec<_>>());
    }
}
