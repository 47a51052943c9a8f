//! The gateway: shared state, the router, the resolution handler and the
//! server loop with graceful shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use skewless_core::path::normalize_request_path;
use skewless_core::resolve::{is_navigation, resolve, Resolution, Source};
use skewless_core::upstream::{self, Candidate};
use skewless_core::{content::is_content_hashed, pin, ReleaseId};
use skewless_state::{Sqlite, StateStore};
use skewless_store::{BlobStore, LocalDir};
use std::net::SocketAddr;
use tokio::sync::{broadcast, watch, RwLock};

use crate::client_js::{self, Module};
use crate::events::Notice;
use crate::proxy::{Proxy, Upstream};
use crate::serve::{file_response, Caching, FileRequest};
use crate::snapshot::{ReleaseView, Snapshot};
use crate::supervisor::{Supervisor, Wanted};
use crate::{
    admin, auth, error::json_error, system, Clock, ServerConfig, ServerError, SystemClock,
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
    /// The admin token.
    pub admin_token: String,
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
    /// Configuration.
    pub config: ServerConfig,
}

impl Gateway {
    /// Opens the embedded stores under the data directory.
    pub async fn open(
        config: ServerConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Self>, ServerError> {
        let data = &config.data;
        std::fs::create_dir_all(data).map_err(|e| {
            ServerError::Startup(format!(
                "cannot create data directory {}: {e}",
                data.display()
            ))
        })?;
        let store: Arc<dyn BlobStore> = Arc::new(LocalDir::open(data.join("blobs"))?);
        let state: Arc<dyn StateStore> = Arc::new(Sqlite::open(&data.join("state.db"))?);
        let admin_token = auth::load_or_create_token(&config)?;
        config.validate()?;
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
                },
                Vec::new(),
            )),
            notices,
            shutdown,
            admin_token,
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
            config,
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
        for mut rec in summaries {
            if !rec.state.holds_blobs() {
                continue;
            }
            rec.manifest = match old.releases.get(&rec.id) {
                Some(v) => v.record.manifest.clone(),
                None => self.state.release(&rec.id).await?.manifest,
            };
            views.push(Arc::new(ReleaseView::new(rec)));
        }
        let snap = Snapshot::build(pointer, views);
        let changed = snap.pointer.generation != old.pointer.generation
            || snap.pointer.current != old.pointer.current
            || snap.pointer.required_min != old.pointer.required_min;
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
        self.snapshot.store(Arc::new(snap));
        self.supervisor.sync(wanted);
        if changed {
            // No receivers is fine: no stream is open.
            let _ = self.notices.send(Arc::new(notice));
        }
        Ok(())
    }
}

/// Builds the router over a gateway.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .nest("/_skewless/api/v1", admin::routes(gw.clone()))
        .merge(system::routes())
        .fallback(resolve_request)
        .layer(middleware::from_fn_with_state(gw.clone(), stamp_current))
        .with_state(gw)
}

/// Adds `Skewless-Current` to every response.
async fn stamp_current(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let current = gw.snapshot.load().current_header.clone();
    if !current.is_empty() {
        resp.headers_mut().insert("skewless-current", current);
    }
    resp
}

/// Resolution rules 2 to 5 for every path no system route claimed.
async fn resolve_request(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    if let Some(prefix_path) = req.uri().path().get(..) {
        if gw
            .config
            .api_prefixes
            .iter()
            .any(|p| prefix_path.starts_with(p.as_str()))
        {
            return proxy_api(gw, req).await;
        }
    }
    let method = req.method();
    if method != Method::GET && method != Method::HEAD {
        let mut resp = json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served here",
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let path = match normalize_request_path(req.uri().path()) {
        Ok(p) => p,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let headers = req.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let pin = pin::pin_from(text(pin::HEADER), text("cookie"));
    let navigation = is_navigation(true, text("sec-fetch-mode"), text("accept"));
    let snap = gw.snapshot.load();
    let resolution = resolve(
        &**snap,
        skewless_core::resolve::Request {
            path: &path,
            pin: pin.as_ref().map(|p| p.as_str()),
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
                return not_found();
            };
            let Some(entry) = view.record.manifest.get(path) else {
                return not_found();
            };
            let immutable = source == Source::Versioned || is_content_hashed(path);
            file_response(
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
            .await
        }
        Resolution::Shell { release } => {
            let Some(view) = snap.releases.get(release) else {
                return not_found();
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
            resp
        }
        Resolution::NoCurrent => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no release is current yet: deploy one with `skewless deploy DIR --promote`",
        ),
        Resolution::System(_) => json_error(StatusCode::NOT_FOUND, "no such skewless endpoint"),
        Resolution::NotFound => not_found(),
    }
}

/// Resolution rule 3: API calls go to the back end of the client's release.
async fn proxy_api(gw: Arc<Gateway>, req: Request) -> Response {
    let headers = req.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let pin = pin::pin_from(text(pin::HEADER), text("cookie"));
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([127, 0, 0, 1], 0)), |c| c.0);
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
    let index_of = |id: &ReleaseId| snap.ordered.iter().position(|v| &v.record.id == id);
    let pinned = pin.as_ref().and_then(index_of);
    let current = snap.pointer.current.as_ref().and_then(index_of);
    if let Some((i, upstream)) = upstream::route(&candidates, pinned, current) {
        let served_by = snap.ordered[i].record.id.to_string();
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
    let gw = Gateway::open(config, stop_rx).await?;
    let app = router(gw.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    println!("skewless listening on http://{addr}");
    tracing::info!(%addr, data = %gw.config.data.display(), "gateway started");
    let mut stopped = stop_tx.subscribe();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = stop_tx.send(true);
    });
    let server = tokio::spawn(async move { server.await });
    // After the signal, give in-flight requests the grace period, no more.
    let _ = stopped.wait_for(|s| *s).await;
    let result = match tokio::time::timeout(grace, server).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(ServerError::Startup(format!("server failed: {e}"))),
        Ok(Err(e)) => Err(ServerError::Startup(format!("server task failed: {e}"))),
        Err(_) => {
            tracing::warn!("grace period over; closing remaining connections");
            Ok(())
        }
    };
    gw.supervisor.stop_all().await;
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
