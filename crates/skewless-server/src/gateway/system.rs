//! Public system endpoints under `/_skewless/`: version, events, diff and the
//! browser library.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use skewless_core::header::etag_matches;

use super::events::{general::events, state_json};
use super::AppState;
use crate::error::json_error;
use crate::supervisor::Health;
use ::metrics::gauge;

/// The public system routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_skewless/version", get(version))
        .route("/_skewless/events", get(events))
        .route("/_skewless/diff", get(diff))
        .route("/_skewless/metrics", get(metrics_endpoint))
        .route("/_skewless/dashboard", get(dashboard))
        .route("/_skewless/dashboard/{file}", get(dashboard))
        .route("/_skewless/{module}", get(client_module))
        .merge(crate::service_worker::routes())
}

fn json(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Query naming the client's release.
#[derive(Debug, Deserialize)]
pub struct ReleaseQuery {
    release: Option<String>,
    client: Option<String>,
}

/// `GET /_skewless/version[?release=<id>]`.
async fn version(
    State(AppState(gw)): State<AppState>,
    Query(q): Query<ReleaseQuery>,
    headers: HeaderMap,
) -> Response {
    let snap = gw.routing.load();
    // Everything the answer depends on besides the query: the pointer, the
    // retired releases, the canary.
    let etag = format!(
        "\"g{}.{}.{}{}\"",
        snap.pointer.generation,
        snap.gone.len(),
        snap.pointer.canary_percent,
        snap.pointer.canary.as_ref().map_or("", |c| c.as_str())
    );
    // A poll counts the tab as live whether or not anything changed.
    if let (Some(release), Some(client)) = (&q.release, &q.client) {
        if let Some(v) = snap.view(release) {
            gw.presence.seen(&v.record.id, client, gw.clock.now());
        }
    }
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let mut resp = if etag_matches(if_none_match, &etag) {
        Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .unwrap_or_default()
    } else {
        json(StatusCode::OK, state_json(&snap, q.release.as_deref()))
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Query of `/_skewless/diff`.
#[derive(Debug, Deserialize)]
pub struct DiffQuery {
    from: String,
    to: String,
}

/// `GET /_skewless/diff?from=<id>&to=<id>`: the rename-aware diff (see
/// [`skewless_core::restyle`]), computed once per pair.
async fn diff(State(AppState(gw)): State<AppState>, Query(q): Query<DiffQuery>) -> Response {
    let snap = gw.routing.load();
    let (Some(from), Some(to)) = (snap.view(&q.from), snap.view(&q.to)) else {
        return json_error(
            StatusCode::NOT_FOUND,
            "both releases must exist and be served",
        );
    };
    let (from, to) = (from.clone(), to.clone());
    drop(snap);
    let body = match gw.diffs.get(&gw.blobs, &from, &to).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let mut resp = json(StatusCode::OK, String::new());
    *resp.body_mut() = Body::from(body);
    // Both releases are immutable, so their diff is too.
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    resp
}

/// `GET /_skewless/<module>.js`: the embedded browser library.
async fn client_module(
    State(AppState(gw)): State<AppState>,
    Path(module): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(m) = gw.client_modules.get(module.as_str()) else {
        return json_error(StatusCode::NOT_FOUND, "no such skewless endpoint");
    };
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let builder = Response::builder()
        .header(header::ETAG, m.etag.clone())
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if etag_matches(if_none_match, m.etag.to_str().unwrap_or("")) {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .unwrap_or_default();
    }
    builder
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/javascript; charset=utf-8")
        .body(Body::from(m.body.clone()))
        .unwrap_or_default()
}

/// The Content-Security-Policy of every page the server itself produces: its
/// own scripts, styles and API only; no inline code, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `GET /_skewless/dashboard` and its script and stylesheet.
async fn dashboard(file: Option<Path<String>>) -> Response {
    let (body, content_type) = match file.as_ref().map(|p| p.0.as_str()) {
        None => (
            include_str!("../../dashboard/index.html"),
            "text/html; charset=utf-8",
        ),
        Some("app.js") => (
            include_str!("../../dashboard/app.js"),
            "text/javascript; charset=utf-8",
        ),
        Some("style.css") => (
            include_str!("../../dashboard/style.css"),
            "text/css; charset=utf-8",
        ),
        Some("icon.svg") => (include_str!("../../dashboard/icon.svg"), "image/svg+xml"),
        Some(_) => return json_error(StatusCode::NOT_FOUND, "no such dashboard file"),
    };
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::CONTENT_SECURITY_POLICY, CSP)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::X_FRAME_OPTIONS, "DENY")
        .header(header::REFERRER_POLICY, "no-referrer")
        .body(Body::from(body))
        .unwrap_or_default()
}

/// `GET /_skewless/metrics`.
async fn metrics_endpoint(State(AppState(gw)): State<AppState>) -> Response {
    let snap = gw.routing.load();
    let counts = gw.ops.counts();
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
    gauge!("skewless_event_streams").set(gw.ops.event_streams() as f64);
    gauge!("skewless_serving_saved_state").set(if gw.ops.serving_saved() { 1.0 } else { 0.0 });
    if let Some(stats) = gw.blobs.cache_stats() {
        crate::metrics::cache(&stats);
    }
    let mut resp = gw.metrics.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
