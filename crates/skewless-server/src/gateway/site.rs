//! The direct way in for every path that is not under `/_skewless/` nor an
//! API prefix: a release's files and shells (resolution rules 2, 4 and 5),
//! without the router's matching and boxing. `/_skewless/…` paths no system
//! route claims come here through the router's fallback.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Version};
use axum::response::Response;
use skewless_core::content::is_content_hashed;
use skewless_core::path::normalize_request_path;
use skewless_core::resolve::{resolve, Resolution, Source};
use skewless_core::retention::{choose_shell, ShellChoice};

use super::pin::RequestPin;
use super::{api_proxy, AppState, Beside, Gateway};
use crate::error::json_error;
use crate::metrics::{self, Kind};
use crate::serve::{file_response, Caching, FileRequest};

/// `/_skewless/…` paths no system route claimed.
pub(super) async fn resolve_fallback(
    State(AppState(gw)): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let pin = RequestPin::of(req.method(), req.headers());
    let (mut resp, beside) = resolve_request(&gw, req, peer, &pin).await;
    // The router's way: the kind in the extensions, where its middleware
    // reads it, and every field in the map.
    resp.extensions_mut().insert(beside.kind);
    if let Some(raw) = beside.raw {
        raw.into_map(resp.headers_mut());
    }
    resp
}

/// Resolution rules 2 to 5 for every path no system route claimed, for a
/// request with this pin.
pub(super) async fn resolve_request(
    gw: &Arc<Gateway>,
    mut req: Request,
    peer: SocketAddr,
    pin: &RequestPin,
) -> (Response, Beside) {
    match place(gw, &mut req, pin) {
        Place::Api(to) => {
            let (resp, raw) = gw
                .proxy
                .forward(req, &to.upstream, peer, &to.served_by)
                .await;
            (
                resp,
                Beside {
                    kind: Kind::Api,
                    raw,
                },
            )
        }
        Place::Refused(resp, kind) => (resp, kind.into()),
        Place::Site(normalized) => {
            let path = normalized.as_deref().unwrap_or_else(|| req.uri().path());
            resolve_site(gw, &Asked::of(&req), path, pin).await
        }
    }
}

/// Where a request with a pin goes, decided before anything is awaited.
pub(super) enum Place {
    /// An API call, to this back end (resolution rule 3).
    Api(api_proxy::Route),
    /// Answered at once, as a request of this kind: a path that cannot
    /// be normalized, or an API call with no back end or a body over the
    /// limit.
    Refused(Response, Kind),
    /// A release's files and shells, with the normalized path when it
    /// differs from the request's own.
    Site(Option<String>),
}

/// Where a request with this pin goes. An API call's body gets the proxy's
/// limit here.
pub(super) fn place(gw: &Gateway, req: &mut Request, pin: &RequestPin) -> Place {
    let path = match normalize_request_path(req.uri().path()) {
        Ok(p) => p,
        Err(e) => {
            return Place::Refused(
                json_error(StatusCode::BAD_REQUEST, &e.to_string()),
                Kind::Asset,
            )
        }
    };
    let is_api = gw
        .config
        .api_prefixes
        .iter()
        .any(|p| path.starts_with(p.as_str()) || p.strip_suffix('/') == Some(&*path));
    if !is_api {
        return Place::Site(match path {
            std::borrow::Cow::Owned(p) => Some(p),
            std::borrow::Cow::Borrowed(_) => None,
        });
    }
    match api_proxy::route(gw, req, pin.as_str()) {
        api_proxy::Routed::To(to) => Place::Api(to),
        api_proxy::Routed::Refused(resp) => Place::Refused(resp, Kind::Api),
    }
}

/// What [`resolve_site`] needs of a request: its body is no part of it.
pub(super) struct Asked<'a> {
    method: &'a Method,
    headers: &'a HeaderMap,
    version: Version,
}

impl<'a> Asked<'a> {
    pub(super) fn of(req: &'a Request) -> Asked<'a> {
        Asked {
            method: req.method(),
            headers: req.headers(),
            version: req.version(),
        }
    }
}

/// Resolution rules 2, 4 and 5: a release's file or shell for a request
/// whose path, normalized, is `path` and is no API call's.
pub(super) async fn resolve_site(
    gw: &Arc<Gateway>,
    req: &Asked<'_>,
    path: &str,
    pin: &RequestPin,
) -> (Response, Beside) {
    let method = req.method;
    if method != Method::GET && method != Method::HEAD {
        let mut resp = json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served here",
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return (resp, Kind::Asset.into());
    }
    let (headers, version) = (req.headers, req.version);
    let (pin_str, navigation) = (pin.as_str(), pin.navigation());
    let snap = gw.routing.load();
    let resolution = resolve(
        &**snap,
        skewless_core::resolve::Request {
            path,
            pin: pin_str,
            navigation,
        },
    );
    match resolution {
        Resolution::File {
            release,
            path,
            source,
        } => {
            let Some(view) = snap.releases.get(release) else {
                return (not_found(), Kind::Asset.into());
            };
            let Some(entry) = view.record.manifest.get(path) else {
                return (not_found(), Kind::Asset.into());
            };
            let older = snap.pointer.current.as_ref() != Some(release);
            if older
                && matches!(
                    source,
                    Source::Pinned | Source::Fallback | Source::Versioned
                )
            {
                metrics::skew_saved(Kind::Asset);
            }
            let immutable = source == Source::Versioned || is_content_hashed(path);
            let resp = file_response(
                &*gw.blobs,
                method,
                headers,
                FileRequest {
                    entry,
                    etags: None,
                    caching: if immutable {
                        Caching::Immutable
                    } else {
                        Caching::Revalidate
                    },
                    varies_by_pin: source != Source::Versioned && !immutable,
                    served_by: &view.id_header,
                    version,
                },
            )
            .await;
            (resp, Kind::Asset.into())
        }
        Resolution::Shell { release } => {
            let mut view = snap.releases.get(release);
            if !path.starts_with("/_r/") {
                if let Some((canary, percent, _)) = &snap.canary {
                    let choice = choose_shell(
                        pin_str,
                        snap.pointer.current.as_ref(),
                        Some((canary, *percent)),
                        rand::random::<f64>(),
                    );
                    if choice == ShellChoice::Canary {
                        view = snap.releases.get(canary).or(view);
                    }
                }
            }
            let Some(view) = view else {
                return (not_found(), Kind::Shell.into());
            };
            let mut resp = file_response(
                &*gw.blobs,
                method,
                headers,
                FileRequest {
                    entry: &view.record.shell,
                    etags: Some(&view.shell_etags),
                    caching: Caching::Revalidate,
                    varies_by_pin: false,
                    served_by: &view.id_header,
                    version,
                },
            )
            .await;
            if resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED {
                resp.headers_mut()
                    .insert(header::SET_COOKIE, view.pin_cookie.clone());
            }
            (resp, Kind::Shell.into())
        }
        Resolution::NoCurrent => (
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no release is current yet: deploy one with `skewless deploy DIR --promote`",
            ),
            Kind::Shell.into(),
        ),
        Resolution::System(_) => (
            json_error(StatusCode::NOT_FOUND, "no such skewless endpoint"),
            Kind::System.into(),
        ),
        Resolution::NotFound => {
            if is_content_hashed(path) {
                metrics::skew_missed();
            }
            (not_found(), Kind::Asset.into())
        }
    }
}

fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "not found")
}
