//! The gateway: shared state, the router, the resolution handler and the
//! server loop with graceful shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use skewless_core::gc::{plan, StoredBlob};
use skewless_core::path::normalize_request_path;
use skewless_core::resolve::{is_navigation, resolve, Resolution, Source};
use skewless_core::retention::{choose_shell, ShellChoice};
use skewless_core::upstream::{self, Candidate};
use skewless_core::Lifecycle;
use skewless_core::{content::is_content_hashed, pin, ReleaseId};
use skewless_state::{HistoryEntry, Sqlite, StateStore};
use skewless_store::{BlobStore, LocalDir};
use std::net::SocketAddr;
use tokio::sync::{broadcast, watch, RwLock};

use crate::auth::Token;
use crate::client_js::{self, Module};
use crate::events::Notice;
use crate::metrics::{self, Kind};
use crate::presence::Presence;
use crate::proxy::{Proxy, Upstream};
use crate::serve::{file_response, Caching, FileRequest};
use crate::snapshot::{ReleaseView, Snapshot};
use crate::supervisor::{Supervisor, Wanted};
use crate::{
    admin, auth, error::json_error, system, Clock, Role, ServerConfig, ServerError, SystemClock,
};

/// Everything a request handler needs, shared by all of them.
pub struct Gateway {
    /// Blob storage.
    pub store: Arc<dyn BlobStore>,
    /// Release state.
    pub state: Arc<dyn StateStore>,
    /// The routing snapshot, swapped on every change.
    pub snapshot: ArcSwap<Snapshot>,
    /// Release notices to open event streams.
    pub notices: broadcast::Sender<Arc<Notice>>,
    /// Flips to true when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Accepted admin tokens.
    pub tokens: Vec<Token>,
    /// Live clients per release.
    pub presence: Arc<Presence>,
    /// The metrics recorder's handle.
    pub metrics: PrometheusHandle,
    /// Held shared by deploy registration, exclusively by gc, so gc never
    /// deletes a blob a registration has just checked.
    pub gc_lock: RwLock<()>,
    /// Serialises snapshot rebuilds.
    refresh_lock: tokio::sync::Mutex<()>,
    /// Embedded browser-library modules by file name.
    pub client_modules: HashMap<&'static str, Module>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The reverse proxy to back ends.
    pub proxy: Proxy,
    /// Managed back ends.
    pub supervisor: Supervisor,
    /// Where API calls go when no release has a back end.
    pub default_upstream: Option<Arc<Upstream>>,
    /// Open event streams, in total and per client address.
    pub stream_slots: crate::events::StreamSlots,
    /// Where each request's line goes, if anywhere.
    pub access_log: crate::access_log::AccessLog,
    /// Configuration.
    pub config: ServerConfig,
    /// Rename-aware release diffs, once per pair.
    pub diffs: Arc<crate::restyle::Diffs>,
    /// This process's hold on the data directory.
    _data_lock: crate::datadir::DataLock,
}

impl Gateway {
    /// Opens the embedded stores under the data directory.
    pub async fn open(
        config: ServerConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Self>, ServerError> {
        let data = &config.data;
        let data_lock = crate::datadir::DataLock::acquire(data)?;
        let store: Arc<dyn BlobStore> = Arc::new(LocalDir::open(data.join("blobs"))?);
        let state: Arc<dyn StateStore> = Arc::new(Sqlite::open(&data.join("state.db"))?);
        config.validate()?;
        let access_log = match &config.access_log {
            Some(target) => crate::access_log::AccessLog::open(target)?,
            None => crate::access_log::AccessLog::off(),
        };
        let mut tokens = vec![Token {
            name: "admin".into(),
            secret: auth::load_or_create_token(&config)?,
            role: Role::Admin,
        }];
        for t in &config.tokens {
            tokens.push(Token {
                name: t.name.as_str().into(),
                secret: t.token.trim().to_owned(),
                role: t.role,
            });
        }
        let (notices, _) = broadcast::channel(64);
        let default_upstream = config
            .default_upstream
            .as_deref()
            .map(Upstream::parse)
            .transpose()
            .map_err(ServerError::Startup)?
            .map(Arc::new);
        let gw = Gateway {
            store,
            state,
            snapshot: ArcSwap::from_pointee(Snapshot::build(
                skewless_state::Pointer {
                    current: None,
                    generation: 0,
                    required_min: None,
                    changed_at: 0,
                    canary: None,
                    canary_percent: 0,
                },
                Vec::new(),
                Default::default(),
            )),
            notices,
            shutdown,
            tokens,
            presence: Arc::new(Presence::new(config.retention.presence_window_secs)),
            metrics: metrics::install(),
            gc_lock: RwLock::new(()),
            refresh_lock: tokio::sync::Mutex::new(()),
            client_modules: client_js::modules()
                .into_iter()
                .map(|m| (m.name, m))
                .collect(),
            clock: Arc::new(SystemClock),
            proxy: Proxy::new(
                Duration::from_millis(config.connect_timeout_ms),
                Duration::from_secs(config.read_timeout_secs),
            ),
            supervisor: Supervisor::new(config.backend.clone()),
            default_upstream,
            stream_slots: Default::default(),
            access_log,
            config,
            diffs: Default::default(),
            _data_lock: data_lock,
        };
        gw.refresh().await?;
        Ok(Arc::new(gw))
    }

    /// Rebuilds the routing snapshot from state and, if the current release
    /// or its generation changed, notifies every open event stream. Manifests
    /// are immutable, so those already loaded are reused.
    pub async fn refresh(&self) -> Result<(), ServerError> {
        let _guard = self.refresh_lock.lock().await;
        let old = self.snapshot.load_full();
        let pointer = self.state.pointer().await?;
        let summaries = self.state.release_summaries().await?;
        let mut views = Vec::with_capacity(summaries.len());
        let mut gone = std::collections::HashSet::new();
        for mut rec in summaries {
            if !rec.state.holds_blobs() {
                gone.insert(rec.id);
                continue;
            }
            rec.manifest = match old.releases.get(&rec.id) {
                Some(v) => v.record.manifest.clone(),
                None => self.state.release(&rec.id).await?.manifest,
            };
            views.push(Arc::new(ReleaseView::new(rec)));
        }
        let snap = Snapshot::build(pointer, views, gone);
        // Streams hear of every change of what a client should run: the
        // pointer, the canary, and releases that stopped being served.
        let changed = snap.pointer.generation != old.pointer.generation
            || snap.pointer.current != old.pointer.current
            || snap.pointer.required_min != old.pointer.required_min
            || snap.pointer.canary != old.pointer.canary
            || snap.gone.len() != old.gone.len();
        for id in snap.gone.difference(&old.gone) {
            self.presence.forget(id);
        }
        let notice = Notice::from_snapshot(&snap);
        let wanted = snap
            .ordered
            .iter()
            .filter(|v| v.record.state.is_served())
            .filter_map(|v| {
                Some(Wanted {
                    id: v.record.id.clone(),
                    command: v.record.backend_cmd.clone()?,
                    health_path: v
                        .record
                        .health_path
                        .clone()
                        .unwrap_or_else(|| self.config.backend.health_path.clone()),
                })
            })
            .collect();
        let snap = Arc::new(snap);
        self.diffs.refresh(&self.store, &snap);
        self.snapshot.store(snap);
        self.supervisor.sync(wanted);
        if changed {
            // No receivers is fine: no stream is open.
            let _ = self.notices.send(Arc::new(notice));
        }
        Ok(())
    }
}

/// What a garbage collection did (or, dry, would do).
#[derive(Debug)]
pub struct GcReport {
    /// Releases marked collected.
    pub collected: Vec<ReleaseId>,
    /// Blobs deleted.
    pub blobs: Vec<StoredBlob>,
    /// Bytes freed.
    pub bytes: u64,
}

impl Gateway {
    /// Marks retired releases collected and deletes the blobs no uncollected
    /// release refers to (see [`skewless_core::gc::plan`]). A dry run changes
    /// nothing and reports what would go.
    pub async fn collect_garbage(
        &self,
        dry_run: bool,
        actor: &str,
    ) -> Result<GcReport, ServerError> {
        let _gc = self.gc_lock.write().await;
        let now = self.clock.now();
        let collected: Vec<ReleaseId> = if dry_run {
            self.state
                .release_summaries()
                .await?
                .into_iter()
                .filter(|r| r.state == Lifecycle::Retired)
                .map(|r| r.id)
                .collect()
        } else {
            self.state.collect_retired(actor, now).await?
        };
        let refs = self.state.blob_refs().await?;
        let stored: Vec<StoredBlob> = self
            .store
            .list()
            .await?
            .into_iter()
            .map(|b| StoredBlob {
                hash: b.hash,
                bytes: b.bytes,
                written_at: b.written_at as i64,
            })
            .collect();
        let blobs = plan(&refs, &stored, dry_run, now, self.config.gc_grace_secs);
        let mut bytes = 0u64;
        if dry_run {
            bytes = blobs.iter().map(|b| b.bytes).sum();
        } else {
            for b in &blobs {
                bytes += self.store.delete(&b.hash).await?;
            }
            self.state
                .record(HistoryEntry {
                    seq: 0,
                    at: now,
                    action: "gc".into(),
                    release: None,
                    before: None,
                    after: None,
                    actor: actor.into(),
                    detail: Some(format!("{} blobs, {bytes} bytes freed", blobs.len())),
                })
                .await?;
            self.refresh().await?;
        }
        tracing::info!(blobs = blobs.len(), bytes, dry_run, "gc");
        Ok(GcReport {
            collected,
            blobs,
            bytes,
        })
    }
}

/// Builds the router over a gateway.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .nest("/_skewless/api/v1", admin::routes(gw.clone()))
        .merge(system::routes())
        .fallback(resolve_fallback)
        .layer(middleware::from_fn_with_state(gw.clone(), stamp))
        .with_state(gw)
}

/// Runs on every request: afterwards adds `Skewless-Current` (the release this
/// client should run) and, when its release must upgrade now,
/// `Skewless-Required`; records presence and request metrics.
async fn stamp(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
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
    let snap = gw.snapshot.load();
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
    State(gw): State<Arc<Gateway>>,
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
    let navigation = is_navigation(true, text(&SEC_FETCH_MODE), text(&header::ACCEPT));
    // A page load is pinned by the cookie alone (it keeps a canary sticky);
    // what a page loads by itself may name its release by `Referer` too.
    let pin_str = if navigation {
        pin::pin_str(text(&PIN_HEADER), text(&header::COOKIE))
    } else {
        pin::pin_of(
            text(&PIN_HEADER),
            text(&header::REFERER),
            text(&header::HOST),
            text(&header::COOKIE),
        )
    };
    let snap = gw.snapshot.load();
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
                &*gw.store,
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
                &*gw.store,
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
    let req = req.map(|body| {
        if hyper::body::Body::is_end_stream(&body) {
            axum::body::Body::empty()
        } else {
            axum::body::Body::new(http_body_util::Limited::new(body, limit as usize))
        }
    });
    let headers = req.headers();
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let pin = pin::pin_of(
        text(&PIN_HEADER),
        text(&header::REFERER),
        text(&header::HOST),
        text(&header::COOKIE),
    );
    let snap = gw.snapshot.load();
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
    let index_of = |id: &str| snap.ordered.iter().position(|v| v.record.id.as_str() == id);
    let pinned = pin.and_then(index_of);
    let current = snap
        .pointer
        .current
        .as_ref()
        .and_then(|c| index_of(c.as_str()));
    if let Some((i, upstream)) = upstream::route(&candidates, pinned, current) {
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
        (None, _) => json_error(
            StatusCode::BAD_GATEWAY,
            "no back end for this API call: no live release has a healthy back end and no default_upstream is configured",
        ),
    }
}

fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "not found")
}

/// Runs the gateway until SIGTERM or Ctrl-C, then drains in-flight requests
/// for up to the configured grace.
pub async fn run(config: ServerConfig) -> Result<(), ServerError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServerError::Startup(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServerError::Startup(e.to_string()))?;
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    // Certificates first: a bad pair stops the start before anything is
    // opened or created.
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let certs = crate::tls::Certificates::load(cert, key)?;
            Some((certs.acceptor()?, certs))
        }
        _ => None,
    };
    let gw = Gateway::open(config, stop_rx.clone()).await?;
    gw.access_log.reopen_on_hangup();
    let header_read_timeout = Duration::from_secs(gw.config.header_read_timeout_secs.max(1));
    let tls = tls.map(|(acceptor, certs)| {
        tokio::spawn(certs.watch());
        acceptor
    });
    if let Some(redirect) = gw.config.http_redirect_listen {
        let plain = tokio::net::TcpListener::bind(redirect)
            .await
            .map_err(|e| ServerError::Startup(format!("cannot listen on {redirect}: {e}")))?;
        tracing::info!(from = %redirect, "redirecting plain HTTP to HTTPS");
        tokio::spawn(crate::redirect::serve(
            plain,
            addr.port(),
            crate::limits::HeadLimits::of(&gw.config),
            header_read_timeout,
            stop_rx,
            gw.access_log.clone(),
        ));
    }
    let reaper = tokio::spawn(crate::reaper::run(gw.clone()));
    let app = router(gw.clone());
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("skewless listening on {scheme}://{addr}");
    tracing::info!(%addr, data = %gw.config.data.display(), "gateway started");
    let stop = async move {
        shutdown_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        // Ends event streams (with a reconnect hint) so they do not hold
        // the shutdown for the whole grace period.
        let _ = stop_tx.send(true);
    };
    crate::listener::serve(
        listener,
        gw.clone(),
        app,
        header_read_timeout,
        stop,
        grace,
        tls,
    )
    .await;
    let result = Ok(());
    reaper.abort();
    gw.supervisor.stop_all().await;
    let log = gw.access_log.clone();
    let _ = tokio::task::spawn_blocking(move || log.close()).await;
    result
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
