//! The way in for API calls (resolution rule 3): each goes to the back end
//! of the release its client runs while that release still has one, else
//! the current release's, else the default upstream.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use skewless_core::upstream;

use super::Gateway;
use crate::error::json_error;
use crate::metrics::{self, Kind};
use crate::proxy::Upstream;

/// Where an API call goes: the back end, and the release it answers for
/// (`Skewless-Served-By`).
pub(crate) struct Route {
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) served_by: HeaderValue,
}

/// What [`route`] decided.
pub(crate) enum Routed {
    /// The call goes there.
    To(Route),
    /// It is answered at once, with this.
    Refused(Response),
}

/// Resolution rule 3, decided before anything is awaited: the back end
/// for an API call with this pin, or the answer when there is none or the
/// body is over the limit. The request's body gets the proxy's limit.
pub(crate) fn route(gw: &Gateway, req: &mut Request, pin: Option<&str>) -> Routed {
    let limit = gw.config.max_proxy_body_bytes;
    // A declared length is the body's least size (no header look-up).
    if hyper::body::Body::size_hint(req.body()).lower() > limit {
        return Routed::Refused(json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body is larger than the proxy limit of {limit} bytes"),
        ));
    }
    // In place: the request is large, and most API calls have no body.
    if !hyper::body::Body::is_end_stream(req.body()) {
        let body = std::mem::take(req.body_mut());
        *req.body_mut() = axum::body::Body::new(http_body_util::Limited::new(body, limit as usize));
    }
    let snap = gw.routing.load();
    let ordered = &snap.ordered;
    let index_of = |id: &str| ordered.iter().position(|v| v.record.id.as_str() == id);
    let pinned = pin.and_then(index_of);
    let current = snap
        .pointer
        .current
        .as_ref()
        .and_then(|c| index_of(c.as_str()));
    // Only the releases the decision reaches are looked at: no list of
    // candidates, and a managed back end's health is read only when asked.
    let found = upstream::route(
        |i| ordered[i].record.state.is_served(),
        |i| {
            let v = &ordered[i];
            match &v.upstream {
                Some(u) => Some(u.clone()),
                None if v.record.backend_cmd.is_some() => gw.supervisor.upstream(&v.record.id),
                None => None,
            }
        },
        pinned,
        current,
    );
    if let Some((i, upstream)) = found {
        if Some(i) != current && pinned.is_some() {
            metrics::skew_saved(Kind::Api);
        }
        return Routed::To(Route {
            upstream,
            served_by: ordered[i].id_header.clone(),
        });
    }
    let routed = pinned
        .filter(|&p| ordered[p].record.state.is_served())
        .or(current)
        .map(|i| ordered[i].id_header.clone());
    match &gw.default_upstream {
        Some(upstream) => Routed::To(Route {
            upstream: upstream.clone(),
            served_by: routed.unwrap_or(HeaderValue::from_static("default")),
        }),
        None => Routed::Refused(json_error(
            StatusCode::BAD_GATEWAY,
            "no back end for this API call: no live release has a healthy back end and no default_upstream is configured",
        )),
    }
}
