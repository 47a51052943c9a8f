//! The general transport of event streams: `GET /_skewless/events` through
//! the router, for every request the lean transport does not take (HTTP/2,
//! `HEAD`, a request line split across packets). Same opening, same bytes.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::{open, EventsQuery, Follow};
use crate::gateway::AppState;

/// `GET /_skewless/events?release=<id>`.
pub(crate) async fn events(
    State(AppState(gw)): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<EventsQuery>,
) -> Response {
    let opened = match open(&gw, peer.ip(), q) {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let follow = Follow::new(gw, opened);
    let stream = futures::stream::unfold(follow, |mut f| async move {
        f.next().await.map(|bytes| (Ok::<_, Infallible>(bytes), f))
    });
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}
