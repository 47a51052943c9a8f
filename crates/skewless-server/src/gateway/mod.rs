//! The gateway: the state every way into the server shares, built over the
//! adapters it is given, and the dispatch of each request to its way in:
//!
//! - [`events::lean`]: event streams over plain HTTP/1.1, taken by the
//!   accept loop before hyper sees the connection;
//! - the router, for `/_skewless/…`: [`system`] endpoints (and the general
//!   event-stream transport, [`events::general`]) and the admin API;
//! - [`site`]: every other path, resolved directly to a release's file or
//!   shell, or, under an API prefix, [`api_proxy`] to a back end.
//!
//! [`stamp`] puts the `Skewless-*` headers on the answers of all of them.
//! The state's fields are private to this module and its ways in; admin
//! handlers and the reaper get only the [`Operations`].

pub(crate) mod api_proxy;
pub(crate) mod events;
pub(crate) mod pin;
pub(crate) mod site;
pub(crate) mod stamp;
pub(crate) mod system;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRef};
use axum::middleware;
use axum::response::Response;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use skewless_state::{StateError, StateStore};
use skewless_store::BlobStore;
use std::net::SocketAddr;
use tokio::sync::watch;

use crate::auth::Tokens;
use crate::client_js::{self, Module};
use crate::h1::RawFields;
use crate::last_state::{self, Keeper as LastStateKeeper};
use crate::metrics::{self, Kind};
use crate::operations::{Operations, Settings};
use crate::presence::Presence;
use crate::proxy::{Proxy, Upstream};
use crate::snapshot::Routing;
use crate::supervisor::Supervisor;
use crate::{admin, Clock, ServerConfig, ServerError};
use stamp::{stamp, Seen};

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
    ops: Arc<Operations>,
    /// The routing snapshot and the event-stream notices.
    routing: Arc<Routing>,
    /// Blob storage, read by the request path.
    blobs: Arc<dyn BlobStore>,
    /// Live clients per release.
    presence: Arc<Presence>,
    /// Time.
    clock: Arc<dyn Clock>,
    /// Accepted admin tokens.
    tokens: Arc<Tokens>,
    /// The metrics recorder's handle.
    metrics: PrometheusHandle,
    /// Embedded browser-library modules by file name.
    client_modules: HashMap<&'static str, Module>,
    /// The reverse proxy to back ends.
    proxy: Proxy,
    /// Managed back ends.
    supervisor: Arc<Supervisor>,
    /// Where API calls go when no release has a back end.
    default_upstream: Option<Arc<Upstream>>,
    /// Open event streams, in total and per client address.
    stream_slots: events::StreamSlots,
    /// Where each request's line goes, if anywhere.
    access_log: crate::access_log::AccessLog,
    /// Flips to true when the server shuts down.
    shutdown: watch::Receiver<bool>,
    /// Configuration.
    config: ServerConfig,
    /// Rename-aware release diffs, once per pair.
    diffs: Arc<crate::restyle::Diffs>,
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
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Self>, ServerError> {
        Self::new_in_cluster(config, adapters, None, shutdown).await
    }

    /// The same, as a node of `cluster` when state is shared.
    pub async fn new_in_cluster(
        config: ServerConfig,
        adapters: Adapters,
        cluster: Option<Arc<crate::cluster::Cluster>>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Self>, ServerError> {
        config.validate()?;
        // Opened before the admin token is made: a log that cannot be
        // opened stops the start with nothing created.
        let access_log = match &config.access_log {
            Some(target) => crate::access_log::AccessLog::open(target)?,
            None => crate::access_log::AccessLog::off(),
        };
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
                    samples: config.samples.clone(),
                },
            )
            .with_cluster(cluster)
            .with_last_state(config.state.is_some().then(|| {
                LastStateKeeper::start(last_state::path(&config.data), adapters.clock.clone())
            })),
        );
        let diffs = ops.diffs().clone();
        // A blob store that cannot delete now (an object store that is
        // down) does not stop the start: the rows stay `deleting` and the
        // next collection finishes them.
        match ops.finish_collection().await {
            Ok(0) => {}
            Ok(finished) => tracing::info!(
                blobs = finished,
                "finished an interrupted garbage collection"
            ),
            Err(e @ (ServerError::Store(_) | ServerError::State(StateError::Unavailable(_)))) => {
                tracing::warn!(
                    error = %e,
                    "an interrupted garbage collection is left to the next one"
                )
            }
            Err(e) => return Err(e),
        }
        match ops.refresh().await {
            Ok(()) => {}
            // Shared state that cannot be reached: the routing state this
            // node saved last, if it has one.
            Err(ServerError::State(StateError::Unavailable(why))) if config.state.is_some() => {
                let file = last_state::path(&config.data);
                let saved = last_state::load(&file).map_err(ServerError::Startup)?;
                let Some(saved) = saved else {
                    return Err(ServerError::Startup(format!(
                        "the state database cannot be reached ({why}) and this node has no saved routing state ({}) to serve meanwhile",
                        file.display()
                    )));
                };
                tracing::warn!(
                    error = %why,
                    version = saved.version,
                    saved_at = saved.saved_at,
                    file = %file.display(),
                    "the state database cannot be reached: serving the routing state this node saved last until it can"
                );
                ops.adopt_saved(saved).await;
            }
            Err(e) => return Err(e),
        }
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
            access_log,
            shutdown,
            config,
            diffs,
        }))
    }

    /// The release operations.
    pub fn operations(&self) -> &Arc<Operations> {
        &self.ops
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Flips to true when the server shuts down.
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// The proxy to back ends.
    pub(crate) fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// Where each request's line goes, if anywhere.
    pub(crate) fn access_log(&self) -> &crate::access_log::AccessLog {
        &self.access_log
    }

    /// The reaper's loop over this gateway's operations, presence and
    /// snapshot; runs until dropped.
    pub(crate) fn reaper(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        crate::reaper::run(
            self.ops.clone(),
            self.routing.clone(),
            self.config.retention.clone(),
        )
    }

    /// This node's report and live clients per release, for its heartbeat.
    pub(crate) fn node_report(
        &self,
        cluster: &crate::cluster::Cluster,
    ) -> (skewless_wire::NodeReport, Vec<skewless_state::PresenceRow>) {
        crate::cluster::report(
            &self.routing,
            &self.presence,
            &self.supervisor,
            self.clock.now(),
            cluster.into(),
        )
    }

    /// The sampler's loop: live clients per release into state; runs until
    /// dropped.
    pub(crate) fn sampler(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        crate::sampler::run(
            self.ops.clone(),
            self.routing.clone(),
            self.config.samples.clone(),
        )
    }

    /// One sample now, as the sampler takes every interval: returns how
    /// many releases it sampled.
    pub async fn sample(&self) -> Result<usize, ServerError> {
        crate::sampler::sample(&self.ops, &self.routing, &self.config.samples).await
    }

    /// Stops every managed back end (at shutdown).
    pub(crate) async fn stop_backends(&self) {
        self.supervisor.stop_all().await;
    }

    /// One pass of the reaper now: retires what the retention policy says;
    /// returns how many releases it retired.
    pub async fn reap(&self) -> usize {
        crate::reaper::reap(&self.ops, &self.routing, &self.config.retention).await
    }

    /// Counts a client as live on a release, as a request carrying its pin
    /// and client id does.
    pub fn seen(&self, release: &skewless_core::ReleaseId, client: &str) {
        self.presence.seen(release, client, self.clock.now());
    }
}

/// What the server side is told about a response besides the response
/// itself: handed along beside it rather than in its extensions, which
/// would cost allocations on every request.
pub(crate) struct Beside {
    /// What kind of request it answered, for the metrics and the access
    /// log.
    pub kind: Kind,
    /// Fields of a back end's answer passed on as the lines they came as.
    pub raw: Option<RawFields>,
}

impl From<Kind> for Beside {
    fn from(kind: Kind) -> Beside {
        Beside { kind, raw: None }
    }
}

/// Builds the router over a gateway.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .nest("/_skewless/api/v1", admin::routes(gw.tokens.clone()))
        .merge(system::routes())
        .fallback(site::resolve_fallback)
        .layer(middleware::from_fn_with_state(AppState(gw.clone()), stamp))
        .with_state(AppState(gw))
}

/// How a request goes on, settled before anything is awaited (see
/// [`way`]).
pub(crate) enum Way {
    /// An API call whose back end is known: the caller forwards it there
    /// itself, and finishes the answer with [`ApiCall::finish`]. Awaiting
    /// the proxy directly spares every API call the futures of the layers
    /// between.
    Api(ApiCall, api_proxy::Route),
    /// Answered already, and stamped: a path that cannot be normalized,
    /// or an API call with no back end or a body over the limit.
    Answered(Response, Beside),
    /// Anything else: [`handle`] answers it.
    Handle(Pending),
}

/// A request for [`handle`]: its pin (`None` for the router's paths) and
/// its normalized path when that differs from the request's own.
pub(crate) struct Pending {
    pin: Option<pin::RequestPin>,
    normalized: Option<String>,
}

/// An API call on its way to its back end.
pub(crate) struct ApiCall {
    seen: Seen,
}

impl ApiCall {
    /// The answer to the call, from what its back end answered.
    pub(crate) fn finish(
        self,
        gw: &Gateway,
        resp: Response,
        raw: Option<RawFields>,
    ) -> (Response, Beside) {
        (
            self.seen.stamp(gw, resp, Kind::Api),
            Beside {
                kind: Kind::Api,
                raw,
            },
        )
    }
}

/// Where a request goes. Paths under `/_skewless/` (`pin` is `None`, see
/// [`request_pin`]) go through the router (system and admin routes);
/// every other path is resolved directly, which spares the hot path the
/// router's matching and boxing: API calls to their back end (resolution
/// rule 3), the rest to a release's files and shells. An API call's body
/// gets the proxy's limit here.
pub(crate) fn way(
    gw: &Gateway,
    req: &mut axum::http::Request<axum::body::Body>,
    pin: Option<pin::RequestPin>,
) -> Way {
    let Some(pin) = pin else {
        return Way::Handle(Pending {
            pin: None,
            normalized: None,
        });
    };
    let seen = Seen::with_pin(pin);
    match site::place(gw, req, &seen.pin) {
        site::Place::Api(route) => Way::Api(ApiCall { seen }, route),
        site::Place::Refused(resp, kind) => Way::Answered(seen.stamp(gw, resp, kind), kind.into()),
        site::Place::Site(normalized) => Way::Handle(Pending {
            pin: Some(seen.pin),
            normalized,
        }),
    }
}

/// Answers a request [`way`] left to it: through the router, or from a
/// release's files and shells.
pub(crate) async fn handle(
    gw: &Arc<Gateway>,
    app: &Router,
    peer: SocketAddr,
    mut req: axum::http::Request<axum::body::Body>,
    pending: Pending,
) -> (Response, Beside) {
    let Some(pin) = pending.pin else {
        req.extensions_mut().insert(ConnectInfo(peer));
        let resp = match tower::ServiceExt::oneshot(app.clone(), req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
        let kind = Kind::of(&resp);
        return (resp, kind.into());
    };
    let seen = Seen::with_pin(pin);
    let path = pending
        .normalized
        .as_deref()
        .unwrap_or_else(|| req.uri().path());
    let (resp, beside) = site::resolve_site(gw, &site::Asked::of(&req), path, &seen.pin).await;
    (seen.stamp(gw, resp, beside.kind), beside)
}

/// The pin of a request [`handle`] resolves directly (not one under
/// `/_skewless/`, whose routes work it out themselves), worked out once for
/// the access log and the gateway both.
pub(crate) fn request_pin<B>(req: &axum::http::Request<B>) -> Option<pin::RequestPin> {
    (!req.uri().path().starts_with("/_skewless"))
        .then(|| pin::RequestPin::of(req.method(), req.headers()))
}
