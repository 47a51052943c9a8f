//! Prometheus metrics at `/_skewless/metrics`, through the `metrics` crate:
//! request counters by kind and status, skew saved and missed, promotions,
//! and, at scrape time, live clients, event streams, back-end health and
//! releases by state.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use metrics::{counter, gauge, Counter};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::gateway::Gateway;
use crate::supervisor::Health;

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
}

/// The status labels requests are counted under: common codes by name,
/// the rest by class.
const STATUS_LABELS: [&str; 23] = [
    "200", "206", "101", "304", "400", "401", "403", "404", "405", "409", "413", "416", "422",
    "429", "500", "502", "503", "504", "1xx", "2xx", "3xx", "4xx", "5xx",
];

fn status_index(code: u16) -> usize {
    match code {
        200 => 0,
        206 => 1,
        101 => 2,
        304 => 3,
        400 => 4,
        401 => 5,
        403 => 6,
        404 => 7,
        405 => 8,
        409 => 9,
        413 => 10,
        416 => 11,
        422 => 12,
        429 => 13,
        500 => 14,
        502 => 15,
        503 => 16,
        504 => 17,
        c if c < 200 => 18,
        c if c < 300 => 19,
        c if c < 400 => 20,
        c if c < 500 => 21,
        _ => 22,
    }
}

/// Counter handles, each registered on its first use, so counting a
/// request is an atomic add, not a registry lookup.
static REQUESTS: [OnceLock<Counter>; 4 * 23] = [const { OnceLock::new() }; 4 * 23];
static SKEW_SAVED: [OnceLock<Counter>; 4] = [const { OnceLock::new() }; 4];

/// Counts one answered request.
pub fn request(kind: Kind, status: u16) {
    let status = status_index(status);
    REQUESTS[kind as usize * 23 + status]
        .get_or_init(|| {
            counter!("skewless_requests_total", "kind" => kind.as_str(), "status" => STATUS_LABELS[status])
        })
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

/// Counts a promotion.
pub fn promotion() {
    counter!("skewless_promotions_total").increment(1);
}

/// Counts a rollback.
pub fn rollback() {
    counter!("skewless_rollbacks_total").increment(1);
}

/// `GET /_skewless/metrics`.
pub async fn endpoint(State(gw): State<Arc<Gateway>>) -> Response {
    let snap = gw.snapshot.load();
    let counts = gw.presence.counts(gw.clock.now());
    let mut by_state = std::collections::HashMap::<&'static str, f64>::new();
    for v in &snap.ordered {
        let id = v.record.id.to_string();
        let live = counts.get(&v.record.id).map_or(0, |c| c.total);
        gauge!("skewless_live_clients", "release" => id.clone()).set(live as f64);
        if v.record.backend_cmd.is_some() {
            let healthy = gw
                .supervisor
                .status(&v.record.id)
                .is_some_and(|s| s.health == Health::Healthy);
            gauge!("skewless_backend_healthy", "release" => id).set(if healthy {
                1.0
            } else {
                0.0
            });
        }
        *by_state.entry(v.record.state.as_str()).or_default() += 1.0;
    }
    for state in ["uploaded", "current", "draining", "retired"] {
        gauge!("skewless_releases", "state" => state)
            .set(by_state.get(state).copied().unwrap_or(0.0));
    }
    gauge!("skewless_event_streams").set(gw.notices.receiver_count() as f64);
    let mut resp = gw.metrics.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
