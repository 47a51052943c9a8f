//! The way in for API calls (resolution rule 3): each goes to the back end
//! of the release its client runs while that release still has one, else
//! the current release's, else the default upstream.

use std::net::SocketAddr;
use std::sync::Arc;

use arrayvec::ArrayVec;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use skewless_core::upstream::{self, Candidate};

use super::Gateway;
use crate::error::json_error;
use crate::h1::RawFields;
use crate::metrics::{self, Kind};
use crate::proxy::Upstream;
use crate::snapshot::ReleaseView;

/// Releases routed among without an allocation.
const FEW: usize = 16;

/// Resolution rule 3: API calls go to the back end of the client's release
/// (`pin`, see [`super::pin::RequestPin`]).
pub(super) async fn forward(
    gw: &Gateway,
    mut req: Request,
    client: SocketAddr,
    pin: Option<&str>,
) -> (Response, Option<RawFields>) {
    let limit = gw.config.max_proxy_body_bytes;
    // A declared length is the body's least size (no header look-up).
    if hyper::body::Body::size_hint(req.body()).lower() > limit {
        return (
            json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body is larger than the proxy limit of {limit} bytes"),
            ),
            None,
        );
    }
    // In place: the request is large, and most API calls have no body.
    if !hyper::body::Body::is_end_stream(req.body()) {
        let body = std::mem::take(req.body_mut());
        *req.body_mut() = axum::body::Body::new(http_body_util::Limited::new(body, limit as usize));
    }
    let snap = gw.routing.load();
    let candidate = |v: &Arc<ReleaseView>| Candidate {
        seq: v.record.seq,
        served: v.record.state.is_served(),
        backend: match &v.upstream {
            Some(u) => Some(u.clone()),
            None if v.record.backend_cmd.is_some() => gw.supervisor.upstream(&v.record.id),
            None => None,
        },
    };
    // A handful of live releases is the usual case: no allocation for it.
    let few: ArrayVec<Candidate<Arc<Upstream>>, FEW>;
    let many: Vec<Candidate<Arc<Upstream>>>;
    let candidates: &[Candidate<Arc<Upstream>>] = if snap.ordered.len() <= FEW {
        few = snap.ordered.iter().map(candidate).collect();
        &few
    } else {
        many = snap.ordered.iter().map(candidate).collect();
        &many
    };
    let index_of = |id: &str| snap.ordered.iter().position(|v| v.record.id.as_str() == id);
    let pinned = pin.and_then(index_of);
    let current = snap
        .pointer
        .current
        .as_ref()
        .and_then(|c| index_of(c.as_str()));
    if let Some((i, upstream)) = upstream::route(candidates, pinned, current) {
        let served_by = snap.ordered[i].id_header.clone();
        if Some(i) != current && pinned.is_some() {
            metrics::skew_saved(Kind::Api);
        }
        let upstream = upstream.clone();
        drop(snap);
        return gw.proxy.forward(req, &upstream, client, &served_by).await;
    }
    let routed = pinned
        .filter(|&p| candidates[p].served)
        .or(current)
        .map(|i| snap.ordered[i].id_header.clone());
    drop(snap);
    match (&gw.default_upstream, routed) {
        (Some(upstream), routed) => {
            let served_by = routed.unwrap_or(HeaderValue::from_static("default"));
            gw.proxy.forward(req, upstream, client, &served_by).await
        }
        (None, _) => (
            json_error(
                StatusCode::BAD_GATEWAY,
                "no back end for this API call: no live release has a healthy back end and no default_upstream is configured",
            ),
            None,
        ),
    }
}
