//! The one place that stamps `Skewless-Current` and `Skewless-Required` on
//! responses, for every way in: the router's middleware, the direct
//! resolution path and the lean event-stream transport. It also counts the
//! client as live on the release it runs (presence) and counts the request.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use super::pin::RequestPin;
use super::{AppState, Gateway};
use crate::metrics::{self, Kind};

/// The request header carrying a tab's random client id.
pub const CLIENT_HEADER: &str = "skewless-client";

const CURRENT_HEADER: HeaderName = HeaderName::from_static("skewless-current");
const REQUIRED_HEADER: HeaderName = HeaderName::from_static("skewless-required");

/// The `Skewless-*` values of one response.
#[derive(Debug, Default)]
pub(crate) struct Stamp {
    /// `Skewless-Current`: the release the client should run.
    current: Option<HeaderValue>,
    /// `Skewless-Required`: set when the client's release must upgrade now.
    required: Option<HeaderValue>,
}

impl Stamp {
    /// The values for a request with this pin (see [`RequestPin`]) and
    /// client id; records the client as live on its release.
    pub(crate) fn for_request(gw: &Gateway, pin_str: Option<&str>, client: Option<&str>) -> Stamp {
        let snap = gw.routing.load();
        let current = snap.current_for(pin_str);
        let stamp = if current.is_empty() {
            Stamp::default()
        } else {
            Stamp {
                required: snap.upgrade_required(pin_str).then(|| current.clone()),
                current: Some(current.clone()),
            }
        };
        if let (Some(pin), Some(client)) = (pin_str, client) {
            if let Some(view) = snap.view(pin) {
                gw.presence.seen(&view.record.id, client, gw.clock.now());
            }
        }
        stamp
    }

    /// Adds the headers to a response's header map.
    pub(crate) fn apply(self, headers: &mut HeaderMap) {
        if let Some(required) = self.required {
            headers.insert(REQUIRED_HEADER, required);
        }
        if let Some(current) = self.current {
            headers.insert(CURRENT_HEADER, current);
        }
    }

    /// Writes the headers as lines of a raw HTTP/1.1 response head.
    pub(crate) fn write_head(&self, out: &mut Vec<u8>) {
        for (name, value) in [
            (&CURRENT_HEADER, &self.current),
            (&REQUIRED_HEADER, &self.required),
        ] {
            if let Some(v) = value {
                out.extend_from_slice(name.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(v.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

/// Runs on every request: afterwards adds `Skewless-Current` (the release this
/// client should run) and, when its release must upgrade now,
/// `Skewless-Required`; records presence and request metrics.
pub(super) async fn stamp(
    State(AppState(gw)): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let seen = Seen::of(&req);
    let resp = next.run(req).await;
    let kind = Kind::of(&resp);
    seen.stamp(&gw, resp, kind)
}

/// What [`Seen::stamp`] needs of a request once its response is built:
/// its pin, worked out once for everything that answers it, and with it
/// its client id (see [`RequestPin::client`]).
pub(super) struct Seen {
    pub(super) pin: RequestPin,
}

impl Seen {
    pub(super) fn of<B>(req: &axum::http::Request<B>) -> Seen {
        Seen::with_pin(RequestPin::of(req.method(), req.headers()))
    }

    /// With the pin already worked out for the request.
    pub(super) fn with_pin(pin: RequestPin) -> Seen {
        Seen { pin }
    }

    /// Stamps the response to a request of this kind, and counts it.
    pub(super) fn stamp(&self, gw: &Gateway, mut resp: Response, kind: Kind) -> Response {
        let client = self.pin.client();
        Stamp::for_request(gw, self.pin.as_str(), client).apply(resp.headers_mut());
        metrics::request(kind, resp.status().as_u16());
        resp
    }
}
