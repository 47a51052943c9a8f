//! The opt-in service worker: `/_skewless/sw.js` (allowed to control the
//! whole origin) and `/_skewless/sw-pin.js` (its pinning, for apps with a
//! service worker of their own), embedded from `client/sw/`.
//!
//! The kill switch: with `service_worker = false` in the configuration both
//! are served with `self.skewlessOff = true;` in front. The browser compares
//! a service worker's scripts byte for byte when it checks for an update (at
//! every page load, and whenever the client hears of a new release), so every
//! installed skewless worker then stops pinning and unregisters itself.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use skewless_core::header::etag_matches;

use crate::gateway::AppState;

const SW: &str = include_str!("../../../client/sw/sw.js");
const SW_PIN: &str = include_str!("../../../client/sw/sw-pin.js");
/// What the kill switch puts in front of both scripts.
pub const OFF: &str = "self.skewlessOff = true;\n";

const ALLOWED: HeaderName = HeaderName::from_static("service-worker-allowed");

/// The two routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_skewless/sw.js", get(|gw, h| script(gw, h, SW)))
        .route("/_skewless/sw-pin.js", get(|gw, h| script(gw, h, SW_PIN)))
}

async fn script(
    State(AppState(gw)): State<AppState>,
    headers: HeaderMap,
    source: &str,
) -> Response {
    let body = if gw.config().service_worker {
        source.to_owned()
    } else {
        format!("{OFF}{source}")
    };
    let etag = format!("\"{}\"", &blake3::hash(body.as_bytes()).to_hex()[..20]);
    let builder = Response::builder()
        .header(header::ETAG, &etag)
        // Never from a cache without asking: the kill switch must reach
        // every browser at its next check.
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(ALLOWED, "/");
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    if etag_matches(if_none_match, &etag) {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .unwrap_or_default();
    }
    builder
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/javascript; charset=utf-8")
        .body(Body::from(body))
        .unwrap_or_default()
}
