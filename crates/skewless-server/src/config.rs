//! The gateway's typed configuration. It is merged once at start-up, file →
//! env (`SKEWLESS_*`) → flags, then passed down by value; `skewless.toml`
//! holds the same keys as this struct.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ServerError;

/// Everything `serve` needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Directory of the embedded state database, blobs and admin token.
    pub data: PathBuf,
    /// Admin token; generated and stored in `<data>/admin-token` when absent.
    #[serde(skip_serializing)]
    pub admin_token: Option<String>,
    /// Largest blob upload accepted, in bytes.
    pub max_upload_bytes: u64,
    /// Unreferenced blobs younger than this survive gc (deploys in flight).
    pub gc_grace_secs: i64,
    /// Seconds to let in-flight requests finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// Path prefixes reverse-proxied to back ends.
    pub api_prefixes: Vec<String>,
    /// Upstream for API calls when no release has a back end.
    pub default_upstream: Option<String>,
    /// Milliseconds to wait for a TCP connection to a back end.
    pub connect_timeout_ms: u64,
    /// The longest wait, in seconds, for a back end's response headers,
    /// for each next piece of its response body (a back end silent for
    /// longer has its response cut off), and for a request body to move
    /// while it goes out: each gap, never the whole transfer.
    pub read_timeout_secs: u64,
    /// Seconds between keep-alive comments on idle event streams; a closed
    /// tab is noticed at the next one.
    pub event_keepalive_secs: u64,
    /// Seconds a client has to send a request's headers; also how long an
    /// idle keep-alive connection is kept.
    pub header_read_timeout_secs: u64,
    /// Largest request body proxied to a back end, in bytes.
    pub max_proxy_body_bytes: u64,
    /// Longest request header line (or request target), in bytes; longer
    /// ones are answered 431 (414 for the target).
    pub max_header_line_bytes: usize,
    /// Largest request head (request line and all headers), in bytes;
    /// larger ones are answered 431.
    pub max_request_head_bytes: usize,
    /// Most event streams open at once.
    pub max_event_streams: usize,
    /// Most event streams open at once from one client address.
    pub max_event_streams_per_ip: usize,
    /// Whether the admin API answers clients that are not on loopback. Only
    /// turn on with `tls_cert` or behind a TLS-terminating proxy.
    pub admin_allow_remote: bool,
    /// Threads that serve requests (default: one per CPU). With 1, the
    /// whole server runs on one thread with a single-threaded scheduler,
    /// the cheapest way to use one core.
    pub workers: Option<usize>,
    /// Where to write the access log, one JSON line per request: `-` for
    /// standard output, else a file (appended to, reopened on `SIGHUP`).
    /// Off when absent.
    pub access_log: Option<PathBuf>,
    /// PEM certificate chain; with `tls_key`, the listener speaks HTTPS
    /// (HTTP/2 and HTTP/1.1 by ALPN).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// A plain-HTTP listener that redirects every request to HTTPS (needs
    /// `tls_cert`).
    pub http_redirect_listen: Option<SocketAddr>,
    /// Defaults of managed back ends.
    pub backend: BackendDefaults,
    /// When old releases are retired and blobs collected.
    pub retention: Retention,
    /// How live clients per release are sampled for the dashboard's plot.
    pub samples: Sampling,
    /// Named admin tokens, so history says who acted.
    #[serde(skip_serializing)]
    pub tokens: Vec<TokenConfig>,
    /// Where release state lives: absent for the embedded SQLite database
    /// under `data`, or `postgres://…` for a database several nodes share
    /// (cluster mode). Not printed: it may hold a password.
    #[serde(skip_serializing)]
    pub state: Option<String>,
    /// Where blobs live: a directory (default `<data>/blobs`), shared by
    /// every node of a cluster, or `s3://bucket[/prefix]` for an
    /// S3-compatible object store.
    pub blobs: Option<PathBuf>,
    /// Timeouts of an object store.
    pub object_store: ObjectStoreTiming,
    /// This node's disk cache of the blob store. Given with a blob
    /// directory, that directory becomes a remote store read through the
    /// cache (for a shared or network file system); a remote object store
    /// always has one (default `<data>/cache`). One node per directory.
    pub cache_dir: Option<PathBuf>,
    /// Bytes the cache may hold; least recently used files go first.
    pub cache_max_bytes: u64,
    /// Milliseconds a read of a file not in the cache waits for the blob
    /// store behind it (to answer, and for each chunk) before it is
    /// answered 503.
    pub blob_timeout_ms: u64,
    /// This node's id in a cluster (default `<host>:<port>`).
    pub node_id: Option<String>,
    /// Timings of cluster mode.
    pub cluster: ClusterTiming,
    /// Whether `/_skewless/sw.js` pins requests. `false` is the kill switch:
    /// every installed skewless service worker unregisters itself.
    pub service_worker: bool,
}

/// Timeouts of an object store (`blobs = "s3://…"`): every request to it
/// is bounded, so a store that is down or hangs gives an error in bounded
/// time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectStoreTiming {
    /// Milliseconds to open a connection.
    pub connect_timeout_ms: u64,
    /// Milliseconds one request may take, its answer included.
    pub request_timeout_ms: u64,
}

impl Default for ObjectStoreTiming {
    fn default() -> Self {
        ObjectStoreTiming {
            connect_timeout_ms: 2000,
            request_timeout_ms: 30_000,
        }
    }
}

/// The most threads `workers` may ask for.
pub const MAX_WORKERS: usize = 1024;

/// Where blobs live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobLocation {
    /// A directory.
    Dir(PathBuf),
    /// An S3-compatible bucket.
    S3(skewless_store::S3Url),
}

/// Timings of cluster mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterTiming {
    /// Milliseconds between polls of the state version (the safety net
    /// for lost notifications).
    pub poll_ms: u64,
    /// Milliseconds between heartbeats (with presence); nodes silent for
    /// three are ignored.
    pub heartbeat_ms: u64,
    /// Seconds a singleton lease lasts unless renewed (renewed every third).
    pub lease_ttl_secs: u64,
    /// Seconds a promotion waits for every live node's managed back end to
    /// be healthy.
    pub backend_wait_secs: u64,
    /// Seconds after which a silent node's rows are deleted.
    pub forget_node_secs: u64,
}

impl Default for ClusterTiming {
    fn default() -> Self {
        ClusterTiming {
            poll_ms: 1000,
            heartbeat_ms: 2000,
            lease_ttl_secs: 15,
            backend_wait_secs: 30,
            forget_node_secs: 3600,
        }
    }
}

/// The series of live clients per release: one sample every `interval_secs`,
/// kept for `kept_secs`, written to state by one node at a time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sampling {
    /// Seconds between samples.
    pub interval_secs: u64,
    /// Seconds of samples kept (the longest window the dashboard shows).
    pub kept_secs: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            interval_secs: 15,
            kept_secs: 86_400,
        }
    }
}

impl Sampling {
    /// Seconds between samples, at least one.
    pub fn interval(&self) -> i64 {
        self.interval_secs.max(1) as i64
    }

    /// Samples kept per release: the ring's size.
    pub fn ring(&self) -> usize {
        (self.kept_secs as i64 / self.interval()).max(1) as usize + 1
    }

    /// The sampling slot `now` falls in: every node names the same one.
    pub fn slot(&self, now: i64) -> i64 {
        now - now.rem_euclid(self.interval())
    }
}

/// Thresholds of the reaper.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Newest drained releases kept for rollback whatever their clients.
    pub keep_last: usize,
    /// Seconds a release drains before it may be retired.
    pub min_drain_secs: i64,
    /// Seconds without clients after which a drained release is retired.
    pub idle_secs: i64,
    /// Seconds after which a draining release is retired anyway.
    pub max_age_secs: i64,
    /// Milliseconds between reaper runs.
    pub reaper_interval_ms: u64,
    /// Seconds between scheduled garbage collections (0: never).
    pub gc_interval_secs: u64,
    /// Seconds a client id counts as live after its last request.
    pub presence_window_secs: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_last: 5,
            min_drain_secs: 3600,
            idle_secs: 900,
            max_age_secs: 14 * 86_400,
            reaper_interval_ms: 30_000,
            gc_interval_secs: 3600,
            presence_window_secs: 300,
        }
    }
}

pub use skewless_wire::Role;

/// One named admin token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Shown in history as who acted.
    pub name: String,
    /// The bearer token.
    pub token: String,
    /// What it may do (default admin).
    #[serde(default = "admin_role")]
    pub role: Role,
}

fn admin_role() -> Role {
    Role::Admin
}

/// How managed back ends are run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendDefaults {
    /// Health-check path when a deploy names none.
    pub health_path: String,
    /// Seconds a new back end has to pass its health check.
    pub health_timeout_secs: u64,
    /// Seconds between SIGTERM and SIGKILL when stopping one.
    pub stop_grace_secs: u64,
    /// Longest pause between restarts of a back end that keeps dying.
    pub restart_backoff_max_secs: u64,
}

impl Default for BackendDefaults {
    fn default() -> Self {
        BackendDefaults {
            health_path: "/healthz".into(),
            health_timeout_secs: 30,
            stop_grace_secs: 10,
            restart_backoff_max_secs: 30,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data: PathBuf::from("./skewless-data"),
            admin_token: None,
            max_upload_bytes: 512 * 1024 * 1024,
            gc_grace_secs: 3600,
            shutdown_grace_secs: 10,
            api_prefixes: vec!["/api/".into()],
            default_upstream: None,
            connect_timeout_ms: 2000,
            read_timeout_secs: 30,
            event_keepalive_secs: 15,
            header_read_timeout_secs: 20,
            max_proxy_body_bytes: 100 * 1024 * 1024,
            max_header_line_bytes: 8 * 1024,
            max_request_head_bytes: 32 * 1024,
            max_event_streams: 19_000,
            max_event_streams_per_ip: 1000,
            admin_allow_remote: false,
            workers: None,
            access_log: None,
            tls_cert: None,
            tls_key: None,
            http_redirect_listen: None,
            backend: BackendDefaults::default(),
            retention: Retention::default(),
            samples: Sampling::default(),
            tokens: Vec::new(),
            state: None,
            blobs: None,
            object_store: ObjectStoreTiming::default(),
            cache_dir: None,
            cache_max_bytes: 10 * 1024 * 1024 * 1024,
            blob_timeout_ms: 5000,
            node_id: None,
            cluster: ClusterTiming::default(),
            service_worker: true,
        }
    }
}

impl ServerConfig {
    /// Defaults for a listen address and data directory.
    pub fn new(listen: SocketAddr, data: PathBuf) -> Self {
        ServerConfig {
            listen,
            data,
            ..ServerConfig::default()
        }
    }

    /// Reads a `skewless.toml`; unknown keys are an error, missing keys
    /// take their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ServerError::Startup(format!("cannot read config {}: {e}", path.display()))
        })?;
        toml::from_str(&text).map_err(|e| {
            let msg = e.message().to_owned();
            ServerError::Startup(format!("config {}: {msg}", path.display()))
        })
    }

    /// Whether state is shared with other nodes.
    pub fn clustered(&self) -> bool {
        self.state.is_some()
    }

    /// The blob directory.
    pub fn blob_dir(&self) -> PathBuf {
        self.blobs
            .clone()
            .unwrap_or_else(|| self.data.join("blobs"))
    }

    /// Where blobs live: a directory or an S3 bucket.
    pub fn blob_location(&self) -> Result<BlobLocation, ServerError> {
        let dir = self.blob_dir();
        match dir.to_str().and_then(skewless_store::S3Url::parse) {
            None => Ok(BlobLocation::Dir(dir)),
            Some(Ok(url)) => Ok(BlobLocation::S3(url)),
            Some(Err(e)) => Err(ServerError::Startup(e)),
        }
    }

    /// The cache directory: as configured, else `<data>/cache`.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| self.data.join("cache"))
    }

    /// Checks values no type can: URLs and prefixes.
    pub fn validate(&self) -> Result<(), ServerError> {
        self.blob_location()?;
        if self.object_store.connect_timeout_ms == 0 || self.object_store.request_timeout_ms == 0 {
            return Err(ServerError::Startup(
                "object_store.connect_timeout_ms and object_store.request_timeout_ms must be above 0".into(),
            ));
        }
        if let Some(state) = &self.state {
            if !(state.starts_with("postgres://") || state.starts_with("postgresql://")) {
                return Err(ServerError::Startup(
                    "state must be a postgres://… URL (omit it for the embedded database under --data)".into(),
                ));
            }
            if self.admin_token.is_none() {
                return Err(ServerError::Startup(
                    "cluster mode (state postgres://…) needs an admin token shared by every node: set --admin-token, SKEWLESS_ADMIN_TOKEN or admin_token".into(),
                ));
            }
            if self.cluster.poll_ms == 0
                || self.cluster.heartbeat_ms == 0
                || self.cluster.lease_ttl_secs < 3
            {
                return Err(ServerError::Startup(
                    "cluster.poll_ms and cluster.heartbeat_ms must be above 0 and cluster.lease_ttl_secs at least 3".into(),
                ));
            }
        }
        if self.samples.interval_secs == 0 || self.samples.kept_secs < self.samples.interval_secs {
            return Err(ServerError::Startup(
                "samples.interval_secs must be above 0 and samples.kept_secs at least one interval"
                    .into(),
            ));
        }
        if self.read_timeout_secs == 0 {
            return Err(ServerError::Startup(
                "read_timeout_secs must be above 0".into(),
            ));
        }
        if self.cache_max_bytes == 0 || self.blob_timeout_ms == 0 {
            return Err(ServerError::Startup(
                "cache_max_bytes and blob_timeout_ms must be above 0".into(),
            ));
        }
        if self.cache_dir.is_some() && self.cache_dir() == self.blob_dir() {
            return Err(ServerError::Startup(
                "cache_dir must not be the blob directory: the cache is a copy of it".into(),
            ));
        }
        for p in &self.api_prefixes {
            if !p.starts_with('/') || p.starts_with("/_skewless") || p.starts_with("/_r/") {
                return Err(ServerError::Startup(format!(
                    "API prefix {p:?} must start with / and must not be under /_skewless or /_r/"
                )));
            }
        }
        for t in &self.tokens {
            if t.token.trim().len() < 16 {
                return Err(ServerError::Startup(format!(
                    "admin token {:?} is shorter than 16 characters",
                    t.name
                )));
            }
            if t.name.is_empty()
                || !t
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(ServerError::Startup(format!(
                    "admin token name {:?} must be letters, digits, . _ -",
                    t.name
                )));
            }
        }
        if matches!(self.workers, Some(n) if n == 0 || n > MAX_WORKERS) {
            return Err(ServerError::Startup(format!(
                "workers must be 1 to {MAX_WORKERS}"
            )));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ServerError::Startup(
                "tls_cert and tls_key go together: give both or neither".into(),
            ));
        }
        if self.http_redirect_listen.is_some() && self.tls_cert.is_none() {
            return Err(ServerError::Startup(
                "http_redirect_listen redirects to HTTPS and needs tls_cert and tls_key".into(),
            ));
        }
        if self.max_request_head_bytes < crate::limits::MIN_HEAD_BYTES {
            return Err(ServerError::Startup(format!(
                "max_request_head_bytes must be at least {}",
                crate::limits::MIN_HEAD_BYTES
            )));
        }
        if self.max_header_line_bytes < 256
            || self.max_header_line_bytes > self.max_request_head_bytes
        {
            return Err(ServerError::Startup(format!(
                "max_header_line_bytes must be between 256 and max_request_head_bytes ({})",
                self.max_request_head_bytes
            )));
        }
        if self
            .access_log
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(ServerError::Startup(
                "access_log must be - (standard output) or a file path".into(),
            ));
        }
        if let Some(u) = &self.default_upstream {
            crate::proxy::Upstream::parse(u).map_err(ServerError::Startup)?;
        }
        Ok(())
    }

    /// The effective configuration as TOML, without secrets.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}
