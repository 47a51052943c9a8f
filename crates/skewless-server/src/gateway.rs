//! The gateway: the state every way in shares, built over the adapters it
//! is given, the router, and the resolution handler.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRef, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use skewless_core::path::normalize_request_path;
use skewless_core::resolve::{is_navigation, resolve, Resolution, Source};
use skewless_core::retention::{choose_shell, ShellChoice};
use skewless_core::upstream::{self, Candidate};
use skewless_core::{content::is_content_hashed, pin, ReleaseId};
use skewless_state::StateStore;
use skewless_store::BlobStore;
use std::net::SocketAddr;
use tokio::sync::watch;

use crate::auth::Tokens;
use crate::client_js::{self, Module};
use crate::metrics::{self, Kind};
use crate::operations::{Operations, Settings};
use crate::presence::Presence;
use crate::proxy::{Proxy, Upstream};
use crate::serve::{file_response, Caching, FileRequest};
use crate::snapshot::Routing;
use crate::supervisor::Supervisor;
use crate::{admin, error::json_error, system, Clock, ServerConfig, ServerError};

/// The adapters the server runs on, chosen by the caller (the `serve`
/// command, or a test): where state lives, where blobs live, and time.
#[derive(Clone)]
pub struct Adapters {
    /// Release state.
    pub state: Arc<dyn StateStore>,
    /// Blob storage.
    pub blobs: Arc<dyn BlobStore>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// The state every way into the server shares. Admin handlers and the
/// reaper take only the [`Operations`] from it.
pub struct Gateway {
    /// The release operations; the only writer of state.
    pub(crate) ops: Arc<Operations>,
    /// The routing snapshot and the event-stream notices.
    pub(crate) routing: Arc<Routing>,
    /// Blob storage, read by the request path.
    pub(crate) blobs: Arc<dyn BlobStore>,
    /// Live clients per release.
    pub(crate) presence: Arc<Presence>,
    /// Time.
    pub(crate) clock: Arc<dyn Clock>,
    /// Accepted admin tokens.
    pub(crate) tokens: Arc<Tokens>,
    /// The metrics recorder's handle.
    pub(crate) metrics: PrometheusHandle,
    /// Embedded browser-library modules by file name.
    pub(crate) client_modules: HashMap<&'static str, Module>,
    /// The reverse proxy to back ends.
    pub(crate) proxy: Proxy,
    /// Managed back ends.
    pub(crate) supervisor: Arc<Supervisor>,
    /// Where API calls go when no release has a back end.
    pub(crate) default_upstream: Option<Arc<Upstream>>,
    /// Open event streams, in total and per client address.
    pub(crate) stream_slots: crate::events::StreamSlots,
    /// Flips to true when the server shuts down.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Configuration.
    pub(crate) config: ServerConfig,
}

/// The state the router's handlers extract their parts from.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Gateway>);

impl FromRef<AppState> for Arc<Operations> {
    fn from_ref(app: &AppState) -> Self {
        app.0.ops.clone()
    }
}

impl FromRef<AppState> for Arc<Tokens> {
    fn from_ref(app: &AppState) -> Self {
        app.0.tokens.clone()
    }
}

impl Gateway {
    /// Builds the gateway over the given adapters: finishes a garbage
    /// collection a crash interrupted and loads the routing snapshot.
    pub async fn new(
        config: ServerConfig,
        adapters: Adapters,
        cluster: Option<Arc<crate::cluster::Cluster>>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Self>, ServerError> {
        config.validate()?;
        let tokens = Arc::new(Tokens::from_config(&config)?);
        let default_upstream = config
            .default_upstream
            .as_deref()
            .map(Upstream::parse)
            .transpose()
            .map_err(ServerError::Startup)?
            .map(Arc::new);
        let routing = Arc::new(Routing::default());
        let presence = Arc::new(Presence::new(config.retention.presence_window_secs));
        let supervisor = Arc::new(Supervisor::new(config.backend.clone()));
        let ops = Arc::new(
            Operations::new(
                adapters.state,
                adapters.blobs.clone(),
                adapters.clock.clone(),
                routing.clone(),
                presence.clone(),
                supervisor.clone(),
                Settings {
                    default_health_path: config.backend.health_path.clone(),
                    gc_grace_secs: config.gc_grace_secs,
                    max_upload_bytes: config.max_upload_bytes,
                    cluster_backend_wait_secs: config.cluster.backend_wait_secs,
                },
            )
            .with_cluster(cluster),
        );
        let finished = ops.finish_collection().await?;
        if finished > 0 {
            tracing::info!(
                blobs = finished,
                "finished an interrupted garbage collection"
            );
        }
        ops.refresh().await?;
        Ok(Arc::new(Gateway {
            ops,
            routing,
            blobs: adapters.blobs,
            presence,
            clock: adapters.clock,
            tokens,
            metrics: metrics::install(),
            client_modules: client_js::modules()
                .into_iter()
                .map(|m| (m.name, m))
                .collect(),
            proxy: Proxy::new(
                Duration::from_millis(config.connect_timeout_ms),
                Duration::from_secs(config.read_timeout_secs),
            ),
            supervisor,
            default_upstream,
            stream_slots: Default::default(),
            shutdown,
            config,
        }))
    }

    /// The release operations.
    pub fn operations(&self) -> &Arc<Operations> {
        &self.ops
    }
}

/// Builds the router over a gateway.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .nest("/_skewless/api/v1", admin::routes(gw.tokens.clone()))
        .merge(system::routes())
        .fallback(resolve_fallback)
        .layer(middleware::from_fn_with_state(AppState(gw.clone()), stamp))
        .with_state(AppState(gw))
}

/// Runs on every request: afterwards adds `Skewless-Current` (the release this
/// client should run) and, when its release must upgrade now,
/// `Skewless-Required`; records presence and request metrics.
async fn stamp(State(AppState(gw)): State<AppState>, req: Request, next: Next) -> Response {
    let seen = Seen::of(&req);
    let resp = next.run(req).await;
    seen.stamp(&gw, resp)
}

/// What [`Seen::stamp`] needs of a request once its response is built.
/// Header values are reference-counted slices of the request buffer:
/// keeping them costs no copy.
struct Seen {
    pin: Option<HeaderValue>,
    cookie: Option<HeaderValue>,
    client: Option<HeaderValue>,
}

const CURRENT_HEADER: HeaderName = HeaderName::from_static("skewless-current");
const REQUIRED_HEADER: HeaderName = HeaderName::from_static("skewless-required");
const PIN_HEADER: HeaderName = HeaderName::from_static(pin::HEADER);
const CLIENT: HeaderName = HeaderName::from_static(CLIENT_HEADER);
const SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");

impl Seen {
    fn of<B>(req: &axum::http::Request<B>) -> Seen {
        let h = req.headers();
        Seen {
            pin: h.get(&PIN_HEADER).cloned(),
            cookie: h.get(header::COOKIE).cloned(),
            client: h.get(&CLIENT).cloned(),
        }
    }

    fn stamp(&self, gw: &Gateway, mut resp: Response) -> Response {
        fn text(v: &Option<HeaderValue>) -> Option<&str> {
            v.as_ref().and_then(|v| v.to_str().ok())
        }
        let (current, required) =
            release_headers(gw, text(&self.pin), text(&self.cookie), text(&self.client));
        if let Some(required) = required {
            resp.headers_mut().insert(REQUIRED_HEADER, required);
        }
        if let Some(current) = current {
            resp.headers_mut().insert(CURRENT_HEADER, current);
        }
        let kind = resp
            .extensions()
            .get::<Kind>()
            .copied()
            .unwrap_or(Kind::System);
        metrics::request(kind, resp.status().as_u16());
        resp
    }
}

/// The `Skewless-Current` and `Skewless-Required` values for a request with
/// these pin header, cookie and client id headers; records the client as
/// live on its release.
pub(crate) fn release_headers(
    gw: &Gateway,
    pin_header: Option<&str>,
    cookie: Option<&str>,
    client: Option<&str>,
) -> (Option<HeaderValue>, Option<HeaderValue>) {
    let pin_str = pin::pin_str(pin_header, cookie);
    let snap = gw.routing.load();
    let current = snap.current_for(pin_str);
    let headers = if current.is_empty() {
        (None, None)
    } else {
        let required = snap.upgrade_required(pin_str).then(|| current.clone());
        (Some(current.clone()), required)
    };
    if let (Some(pin), Some(client)) = (pin_str, client) {
        if let Some(view) = snap.view(pin) {
            gw.presence.seen(&view.record.id, client, gw.clock.now());
        }
    }
    headers
}

/// Answers one request. Paths under `/_skewless/` go through the router
/// (system and admin routes); every other path (shell, files, API calls)
/// is resolved directly, which spares the hot path the router's matching
/// and boxing.
pub async fn handle(
    gw: Arc<Gateway>,
    app: Router,
    peer: SocketAddr,
    req: axum::http::Request<hyper::body::Incoming>,
) -> Response {
    let mut req = req.map(axum::body::Body::new);
    if req.uri().path().starts_with("/_skewless") {
        req.extensions_mut().insert(ConnectInfo(peer));
        return match tower::ServiceExt::oneshot(app, req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
    }
    let seen = Seen::of(&req);
    let resp = resolve_request(&gw, req, peer).await;
    seen.stamp(&gw, resp)
}

/// The request header carrying a tab's random client id.
pub const CLIENT_HEADER: &str = "skewless-client";

fn tagged(mut resp: Response, kind: Kind) -> Response {
    resp.extensions_mut().insert(kind);
    resp
}

/// `/_skewless/…` paths no system route claimed.
async fn resolve_fallback(
    State(AppState(gw)): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    resolve_request(&gw, req, peer).await
}

/// Resolution rules 2 to 5 for every path no system route claimed.
async fn resolve_request(gw: &Arc<Gateway>, req: Request, peer: SocketAddr) -> Response {
    let path = match normalize_request_path(req.uri().path()) {
        Ok(p) => p,
        Err(e) => {
            return tagged(
                json_error(StatusCode::BAD_REQUEST, &e.to_string()),
                Kind::Asset,
            )
        }
    };
    if gw
        .config
        .api_prefixes
        .iter()
        .any(|p| path.starts_with(p.as_str()) || p.strip_suffix('/') == Some(path.as_str()))
    {
        return tagged(proxy_api(gw, req, peer).await, Kind::Api);
    }
    let method = req.method();
    if method != Method::GET && method != Method::HEAD {
        let mut resp = json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served here",
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return tagged(resp, Kind::Asset);
    }
    let headers = req.headers();
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let pin_str = pin::pin_str(text(&PIN_HEADER), text(&header::COOKIE));
    let navigation = is_navigation(true, text(&SEC_FETCH_MODE), text(&header::ACCEPT));
    let snap = gw.routing.load();
    let resolution = resolve(
        &**snap,
        skewless_core::resolve::Request {
            path: &path,
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
                return tagged(not_found(), Kind::Asset);
            };
            let Some(entry) = view.record.manifest.get(path) else {
                return tagged(not_found(), Kind::Asset);
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
                },
            )
            .await;
            tagged(resp, Kind::Asset)
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
                return tagged(not_found(), Kind::Shell);
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
                },
            )
            .await;
            if resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED {
                resp.headers_mut()
                    .insert(header::SET_COOKIE, view.pin_cookie.clone());
            }
            tagged(resp, Kind::Shell)
        }
        Resolution::NoCurrent => tagged(
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no release is current yet: deploy one with `skewless deploy DIR --promote`",
            ),
            Kind::Shell,
        ),
        Resolution::System(_) => json_error(StatusCode::NOT_FOUND, "no such skewless endpoint"),
        Resolution::NotFound => {
            if is_content_hashed(&path) {
                metrics::skew_missed();
            }
            tagged(not_found(), Kind::Asset)
        }
    }
}

/// Resolution rule 3: API calls go to the back end of the client's release.
async fn proxy_api(gw: &Gateway, req: Request, client: SocketAddr) -> Response {
    let limit = gw.config.max_proxy_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body is larger than the proxy limit of {limit} bytes"),
        );
    }
    let req =
        req.map(|body| axum::body::Body::new(http_body_util::Limited::new(body, limit as usize)));
    let headers = req.headers();
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let pin = pin::pin_from(text(&PIN_HEADER), text(&header::COOKIE));
    let snap = gw.routing.load();
    let candidates: Vec<Candidate<Arc<Upstream>>> = snap
        .ordered
        .iter()
        .map(|v| Candidate {
            seq: v.record.seq,
            served: v.record.state.is_served(),
            backend: match &v.upstream {
                Some(u) => Some(u.clone()),
                None if v.record.backend_cmd.is_some() => gw.supervisor.upstream(&v.record.id),
                None => None,
            },
        })
        .collect();
    let index_of = |id: &ReleaseId| snap.ordered.iter().position(|v| &v.record.id == id);
    let pinned = pin.as_ref().and_then(index_of);
    let current = snap.pointer.current.as_ref().and_then(index_of);
    if let Some((i, upstream)) = upstream::route(&candidates, pinned, current) {
        let served_by = snap.ordered[i].record.id.to_string();
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
        .map(|i| snap.ordered[i].record.id.to_string());
    drop(snap);
    match (&gw.default_upstream, routed) {
        (Some(upstream), routed) => {
            let served_by = routed.unwrap_or_else(|| "default".into());
            gw.proxy.forward(req, upstream, client, &served_by).await
        }
        (None, _) => json_error(
            StatusCode::BAD_GATEWAY,
            "no back end for this API call: no live release has a healthy back end and no default_upstream is configured",
        ),
    }
}

fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "not found")
}
