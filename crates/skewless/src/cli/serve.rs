//! `skewless serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use std::sync::Arc;

use std::time::Duration;

use skewless_server::{Adapters, BlobLocation, DataLock, ServerConfig, SystemClock};
use skewless_state::{Postgres, Sqlite, StateError};
use skewless_store::{
    BlobStore, CacheSettings, Cached, LocalDir, ObjectBlobs, S3Settings, S3Url, Timeouts,
};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (TOML); its keys are those `--print-config` shows.
    #[arg(long, env = "SKEWLESS_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration (file, env and flags merged) and exit.
    #[arg(long)]
    print_config: bool,
    /// Address to listen on [default: 127.0.0.1:8080] (port 0 picks a free one; the chosen address is printed).
    #[arg(long, env = "SKEWLESS_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory: state database, blobs, generated admin token [default: ./skewless-data].
    #[arg(long, env = "SKEWLESS_DATA")]
    data: Option<PathBuf>,
    /// Where release state lives: postgres://user@host/db for state shared by several nodes (cluster mode) [default: SQLite under --data].
    #[arg(long, env = "SKEWLESS_STATE", hide_env_values = true)]
    state: Option<String>,
    /// Where blobs live: a directory, which the nodes of a cluster share, or s3://bucket[/prefix] for an S3-compatible object store reached with AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ALLOW_HTTP [default: <data>/blobs].
    #[arg(long, env = "SKEWLESS_BLOBS", value_name = "DIR|s3://BUCKET[/PREFIX]")]
    blobs: Option<PathBuf>,
    /// Milliseconds to open a connection to an object store [default: 2000].
    #[arg(long, env = "SKEWLESS_BLOBS_CONNECT_TIMEOUT_MS")]
    blobs_connect_timeout_ms: Option<u64>,
    /// Milliseconds one request to an object store may take, its answer included [default: 30000].
    #[arg(long, env = "SKEWLESS_BLOBS_REQUEST_TIMEOUT_MS")]
    blobs_request_timeout_ms: Option<u64>,
    /// This node's cache of the blob store; with a --blobs directory, that directory is read through the cache (e.g. on a network file system) [default: none for a directory].
    #[arg(long, env = "SKEWLESS_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Bytes the blob cache may hold; least recently used files are evicted first [default: 10737418240].
    #[arg(long, env = "SKEWLESS_CACHE_MAX_BYTES")]
    cache_max_bytes: Option<u64>,
    /// Milliseconds a file not in the cache waits for the blob store behind it before it is answered 503 [default: 5000].
    #[arg(long, env = "SKEWLESS_BLOB_TIMEOUT_MS")]
    blob_timeout_ms: Option<u64>,
    /// This node's id in a cluster [default: <host name>:<port>].
    #[arg(long, env = "SKEWLESS_NODE_ID")]
    node_id: Option<String>,
    /// Milliseconds between polls of the shared state's version, the safety net for lost notifications [default: 1000].
    #[arg(long, env = "SKEWLESS_CLUSTER_POLL_MS")]
    cluster_poll_ms: Option<u64>,
    /// Milliseconds between a node's heartbeats; nodes silent for three are ignored [default: 2000].
    #[arg(long, env = "SKEWLESS_HEARTBEAT_MS")]
    heartbeat_ms: Option<u64>,
    /// Seconds a singleton lease (reaper, gc, cleanup, samples) lasts unless renewed [default: 15].
    #[arg(long, env = "SKEWLESS_LEASE_TTL_SECS")]
    lease_ttl_secs: Option<u64>,
    /// Seconds a promotion waits for every node's managed back end to be healthy [default: 30].
    #[arg(long, env = "SKEWLESS_CLUSTER_BACKEND_WAIT_SECS")]
    cluster_backend_wait_secs: Option<u64>,
    /// Admin token; required in cluster mode, where every node needs the same (default: generated on first start into <data>/admin-token).
    #[arg(long, env = "SKEWLESS_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Largest blob upload accepted, in bytes [default: 536870912].
    #[arg(long, env = "SKEWLESS_MAX_UPLOAD")]
    max_upload: Option<u64>,
    /// Path prefix proxied to back ends; repeat for several [default: /api/].
    #[arg(
        long = "api-prefix",
        env = "SKEWLESS_API_PREFIX",
        value_delimiter = ','
    )]
    api_prefixes: Vec<String>,
    /// Upstream for API calls when no release has a back end.
    #[arg(long, env = "SKEWLESS_DEFAULT_UPSTREAM")]
    default_upstream: Option<String>,
    /// Milliseconds to wait for a connection to a back end [default: 2000].
    #[arg(long, env = "SKEWLESS_CONNECT_TIMEOUT_MS")]
    connect_timeout_ms: Option<u64>,
    /// Longest wait, in seconds, for a back end's response headers, for each next piece of its response body (a silent back end's response is cut off), and for a request body to move [default: 30].
    #[arg(long, env = "SKEWLESS_READ_TIMEOUT_SECS")]
    read_timeout_secs: Option<u64>,
    /// Seconds between keep-alive comments on idle event streams [default: 15].
    #[arg(long, env = "SKEWLESS_EVENT_KEEPALIVE_SECS")]
    event_keepalive_secs: Option<u64>,
    /// Seconds a client has to send request headers; also the idle keep-alive timeout [default: 20].
    #[arg(long, env = "SKEWLESS_HEADER_READ_TIMEOUT_SECS")]
    header_read_timeout_secs: Option<u64>,
    /// Largest request body proxied to a back end, in bytes [default: 104857600].
    #[arg(long, env = "SKEWLESS_MAX_PROXY_BODY_BYTES")]
    max_proxy_body_bytes: Option<u64>,
    /// Longest request header line or request target, in bytes; longer ones get 431 (414 for the target) [default: 8192].
    #[arg(long, env = "SKEWLESS_MAX_HEADER_LINE_BYTES")]
    max_header_line_bytes: Option<usize>,
    /// Largest request head (request line and headers), in bytes; larger ones get 431 [default: 32768].
    #[arg(long, env = "SKEWLESS_MAX_REQUEST_HEAD_BYTES")]
    max_request_head_bytes: Option<usize>,
    /// Most event streams open at once [default: 19000].
    #[arg(long, env = "SKEWLESS_MAX_EVENT_STREAMS")]
    max_event_streams: Option<usize>,
    /// Most event streams open at once from one client address [default: 1000].
    #[arg(long, env = "SKEWLESS_MAX_EVENT_STREAMS_PER_IP")]
    max_event_streams_per_ip: Option<usize>,
    /// PEM certificate chain: serve HTTPS (HTTP/2 by ALPN); reloaded on SIGHUP and when the file changes.
    #[arg(long, env = "SKEWLESS_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SKEWLESS_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Also listen for plain HTTP on this address and redirect every request to HTTPS (needs --tls-cert).
    #[arg(long, env = "SKEWLESS_HTTP_REDIRECT_LISTEN")]
    http_redirect_listen: Option<SocketAddr>,
    /// Let the admin API answer clients not on loopback (only with --tls-cert or behind a TLS proxy) [default: false].
    #[arg(long, env = "SKEWLESS_ADMIN_ALLOW_REMOTE")]
    admin_allow_remote: Option<bool>,
    /// Threads that serve requests; 1 runs the whole server on one thread with a single-threaded scheduler (the cheapest on one core) [default: one per CPU].
    #[arg(long, env = "SKEWLESS_WORKERS")]
    workers: Option<usize>,
    /// Write an access log, one JSON line per request, to FILE (appended to; reopened on SIGHUP) or to standard output (-) [default: off].
    #[arg(long, env = "SKEWLESS_ACCESS_LOG", value_name = "-|FILE")]
    access_log: Option<PathBuf>,
    /// Let /_skewless/sw.js pin requests; false is the kill switch that makes
    /// every installed skewless service worker unregister [default: true].
    #[arg(long, env = "SKEWLESS_SERVICE_WORKER")]
    service_worker: Option<bool>,
    /// Default health-check path of managed back ends [default: /healthz].
    #[arg(long, env = "SKEWLESS_HEALTH_PATH")]
    health_path: Option<String>,
    /// Seconds a managed back end has to pass its health check [default: 30].
    #[arg(long, env = "SKEWLESS_HEALTH_TIMEOUT_SECS")]
    health_timeout_secs: Option<u64>,
    /// Seconds between SIGTERM and SIGKILL when stopping a managed back end [default: 10].
    #[arg(long, env = "SKEWLESS_STOP_GRACE_SECS")]
    stop_grace_secs: Option<u64>,
    /// Longest pause between restarts of a managed back end [default: 30].
    #[arg(long, env = "SKEWLESS_RESTART_BACKOFF_MAX_SECS")]
    restart_backoff_max_secs: Option<u64>,
    /// Seconds in-flight requests get to finish on shutdown [default: 10].
    #[arg(long, env = "SKEWLESS_SHUTDOWN_GRACE_SECS")]
    shutdown_grace_secs: Option<u64>,
    /// Newest drained releases kept for rollback [default: 5].
    #[arg(long, env = "SKEWLESS_KEEP_LAST")]
    keep_last: Option<usize>,
    /// Seconds a release drains before it may be retired [default: 3600].
    #[arg(long, env = "SKEWLESS_MIN_DRAIN_SECS")]
    min_drain_secs: Option<i64>,
    /// Seconds without clients after which a drained release is retired [default: 900].
    #[arg(long, env = "SKEWLESS_IDLE_SECS")]
    idle_secs: Option<i64>,
    /// Seconds after which a draining release is retired anyway [default: 1209600].
    #[arg(long, env = "SKEWLESS_MAX_AGE_SECS")]
    max_age_secs: Option<i64>,
    /// Milliseconds between reaper runs [default: 30000].
    #[arg(long, env = "SKEWLESS_REAPER_INTERVAL_MS")]
    reaper_interval_ms: Option<u64>,
    /// Seconds a blob no release uses is kept after it was last touched or written; must exceed the longest deploy [default: 3600].
    #[arg(long, env = "SKEWLESS_GC_GRACE_SECS")]
    gc_grace_secs: Option<i64>,
    /// Seconds between scheduled garbage collections, 0 for never [default: 3600].
    #[arg(long, env = "SKEWLESS_GC_INTERVAL_SECS")]
    gc_interval_secs: Option<u64>,
    /// Seconds a client id counts as live after its last request [default: 300].
    #[arg(long, env = "SKEWLESS_PRESENCE_WINDOW_SECS")]
    presence_window_secs: Option<i64>,
    /// Seconds between samples of live clients per release (the dashboard's plot) [default: 15].
    #[arg(long, env = "SKEWLESS_SAMPLE_INTERVAL_SECS")]
    sample_interval_secs: Option<u64>,
    /// Deploy and promote the bundled example app once the server is up.
    #[arg(long)]
    demo: bool,
}

impl ServeArgs {
    /// Merges config file → env → flags (clap has already put env under flags).
    pub fn config(&self) -> anyhow::Result<ServerConfig> {
        let mut c = match &self.config {
            Some(path) => ServerConfig::from_file(path)?,
            None => ServerConfig::default(),
        };
        macro_rules! set {
            ($field:expr, $value:expr) => {
                if let Some(v) = $value.clone() {
                    $field = v;
                }
            };
        }
        set!(c.listen, self.listen);
        set!(c.data, self.data);
        set!(c.max_upload_bytes, self.max_upload);
        set!(c.gc_grace_secs, self.gc_grace_secs);
        set!(
            c.object_store.connect_timeout_ms,
            self.blobs_connect_timeout_ms
        );
        set!(
            c.object_store.request_timeout_ms,
            self.blobs_request_timeout_ms
        );
        set!(c.connect_timeout_ms, self.connect_timeout_ms);
        set!(c.read_timeout_secs, self.read_timeout_secs);
        set!(c.event_keepalive_secs, self.event_keepalive_secs);
        set!(c.header_read_timeout_secs, self.header_read_timeout_secs);
        set!(c.max_proxy_body_bytes, self.max_proxy_body_bytes);
        set!(c.max_header_line_bytes, self.max_header_line_bytes);
        set!(c.max_request_head_bytes, self.max_request_head_bytes);
        set!(c.max_event_streams, self.max_event_streams);
        set!(c.max_event_streams_per_ip, self.max_event_streams_per_ip);
        set!(c.admin_allow_remote, self.admin_allow_remote);
        set!(c.service_worker, self.service_worker);
        set!(c.backend.health_path, self.health_path);
        set!(c.backend.health_timeout_secs, self.health_timeout_secs);
        set!(c.backend.stop_grace_secs, self.stop_grace_secs);
        set!(
            c.backend.restart_backoff_max_secs,
            self.restart_backoff_max_secs
        );
        set!(c.shutdown_grace_secs, self.shutdown_grace_secs);
        set!(c.retention.keep_last, self.keep_last);
        set!(c.retention.min_drain_secs, self.min_drain_secs);
        set!(c.retention.idle_secs, self.idle_secs);
        set!(c.retention.max_age_secs, self.max_age_secs);
        set!(c.retention.reaper_interval_ms, self.reaper_interval_ms);
        set!(c.retention.gc_interval_secs, self.gc_interval_secs);
        set!(c.retention.presence_window_secs, self.presence_window_secs);
        set!(c.samples.interval_secs, self.sample_interval_secs);
        set!(c.cache_max_bytes, self.cache_max_bytes);
        set!(c.blob_timeout_ms, self.blob_timeout_ms);
        set!(c.cluster.poll_ms, self.cluster_poll_ms);
        set!(c.cluster.heartbeat_ms, self.heartbeat_ms);
        set!(c.cluster.lease_ttl_secs, self.lease_ttl_secs);
        set!(c.cluster.backend_wait_secs, self.cluster_backend_wait_secs);
        if self.state.is_some() {
            c.state = self.state.clone();
        }
        if self.blobs.is_some() {
            c.blobs = self.blobs.clone();
        }
        if self.cache_dir.is_some() {
            c.cache_dir = self.cache_dir.clone();
        }
        if self.node_id.is_some() {
            c.node_id = self.node_id.clone();
        }
        if self.tls_cert.is_some() {
            c.tls_cert = self.tls_cert.clone();
            c.tls_key = self.tls_key.clone();
        }
        if self.http_redirect_listen.is_some() {
            c.http_redirect_listen = self.http_redirect_listen;
        }
        if self.admin_token.is_some() {
            c.admin_token = self.admin_token.clone();
        }
        if self.workers.is_some() {
            c.workers = self.workers;
        }
        // Shown by --print-config as it will be: one per CPU unless set.
        if c.workers.is_none() {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            c.workers = Some(cpus.min(skewless_server::MAX_WORKERS));
        }
        if self.access_log.is_some() {
            c.access_log = self.access_log.clone();
        }
        if self.default_upstream.is_some() {
            c.default_upstream = self.default_upstream.clone();
        }
        if !self.api_prefixes.is_empty() {
            c.api_prefixes = self.api_prefixes.clone();
        }
        c.validate()?;
        Ok(c)
    }
}

/// `config` is `args.config()`, merged before the runtime was built (it
/// sets the number of worker threads).
pub async fn run(args: ServeArgs, config: ServerConfig) -> anyhow::Result<()> {
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKEWLESS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if args.demo {
        let data = config.data.clone();
        let listen = config.listen;
        tokio::spawn(async move {
            if let Err(e) = demo(listen, data).await {
                eprintln!("error: demo deploy failed: {e:#}");
            }
        });
    }
    // Socket and certificates first: a bad pair stops the start before
    // anything is opened or created.
    let bound = skewless_server::bind(config)
        .await
        .context("gateway stopped")?;
    // Held until the server has stopped: one process owns the data directory.
    let _lock = DataLock::acquire(&bound.config().data).context("gateway stopped")?;
    // And one node owns a blob cache, wherever it is.
    let cached = bound.config().cache_dir.is_some()
        || matches!(bound.config().blob_location()?, BlobLocation::S3(_));
    let _cache_lock = cached
        .then(|| DataLock::acquire_cache(&bound.config().cache_dir()))
        .transpose()
        .context("gateway stopped")?;
    let adapters = adapters(bound.config()).await.context("gateway stopped")?;
    bound.serve(adapters).await.context("gateway stopped")?;
    Ok(())
}

/// The composition root: state in PostgreSQL when `state` names one
/// (cluster mode), else the embedded SQLite database under the data
/// directory; blobs in a directory, or in an object store read through
/// this node's disk cache (also used for a directory when `cache_dir` is
/// set); the system clock.
async fn adapters(config: &ServerConfig) -> anyhow::Result<Adapters> {
    let state: Arc<dyn skewless_state::StateStore> = match &config.state {
        Some(url) => match Postgres::connect(url).await {
            Ok(pg) => Arc::new(pg),
            // A node that served before can start on the routing state it
            // saved, and connects once the database answers.
            Err(StateError::Unavailable(why))
                if skewless_server::last_state_path(&config.data).exists() =>
            {
                tracing::warn!(error = %why, "the state database cannot be reached at start");
                Arc::new(Postgres::connect_lazy(url).context("cannot open the state database")?)
            }
            Err(e) => return Err(e).context("cannot open the state database"),
        },
        None => Arc::new(Sqlite::open(&config.data.join("state.db"))?),
    };
    let blobs: Arc<dyn BlobStore> = match config.blob_location()? {
        BlobLocation::Dir(dir) => {
            let dir = if config.clustered() || config.blobs.is_some() {
                LocalDir::open_shared(dir)?
            } else {
                LocalDir::open(dir)?
            };
            match config.cache_dir {
                Some(_) => cached(Arc::new(dir.without_memory_copies()), config)?,
                None => Arc::new(dir),
            }
        }
        // Never served from the object store per request: always through
        // this node's cache.
        BlobLocation::S3(url) => cached(remote_blobs(config, url)?, config)?,
    };
    Ok(Adapters {
        state,
        blobs,
        clock: Arc::new(SystemClock),
    })
}

/// The object store every node reaches, from `url` and the standard
/// `AWS_*` environment variables; uploads are spooled under the data
/// directory while they are hashed.
pub fn remote_blobs(config: &ServerConfig, url: S3Url) -> anyhow::Result<Arc<dyn BlobStore>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let settings = S3Settings {
        url: Some(url),
        endpoint: env("AWS_ENDPOINT_URL"),
        region: env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")),
        access_key_id: env("AWS_ACCESS_KEY_ID"),
        secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
        session_token: env("AWS_SESSION_TOKEN"),
        allow_http: env("AWS_ALLOW_HTTP").is_some_and(|v| v.eq_ignore_ascii_case("true")),
        timeouts: Timeouts {
            connect: Duration::from_millis(config.object_store.connect_timeout_ms),
            request: Duration::from_millis(config.object_store.request_timeout_ms),
        },
    };
    if settings.access_key_id.is_some() != settings.secret_access_key.is_some() {
        anyhow::bail!("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together");
    }
    let store = ObjectBlobs::s3(&settings, config.data.join("spool"))?;
    Ok(Arc::new(store))
}

/// A remote blob store read through this node's disk cache
/// (`cache_dir`, default `<data>/cache`), bounded by `cache_max_bytes`,
/// with reads of uncached files bounded by `blob_timeout_ms`.
fn cached(remote: Arc<dyn BlobStore>, config: &ServerConfig) -> anyhow::Result<Arc<dyn BlobStore>> {
    let dir = config.cache_dir();
    let cache = Cached::open(
        remote,
        &dir,
        CacheSettings {
            max_bytes: config.cache_max_bytes,
            remote_timeout: std::time::Duration::from_millis(config.blob_timeout_ms),
        },
    )
    .with_context(|| format!("cannot open the blob cache at {}", dir.display()))?;
    let s = cache.stats();
    tracing::info!(dir = %dir.display(), files = s.files, bytes = s.bytes, max_bytes = s.max_bytes, "blob cache");
    Ok(Arc::new(cache))
}

/// Deploys the example app v1 to the server that is starting in this process.
async fn demo(listen: SocketAddr, data: PathBuf) -> anyhow::Result<()> {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let examples = examples.canonicalize().unwrap_or(examples);
    let token_path = data.join("admin-token");
    let server = format!("http://{listen}");
    // Wait until the server has written its token and answers.
    let client = loop {
        if let Ok(t) = std::fs::read_to_string(&token_path) {
            let client = skewless_client_api::Client::new(&server, t.trim())?;
            if client.status().await.is_ok() {
                break client;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let status = client.status().await?;
    if let Some(current) = &status.current {
        println!(
            "demo: {:?} is already current at {server}/",
            current.as_str()
        );
        return Ok(());
    }
    let report = client
        .deploy(
            &examples.join("app-v1"),
            &skewless_client_api::DeployOptions {
                release: None,
                backend: None,
                backend_cmd: None,
                health: None,
                promote: true,
            },
        )
        .await?;
    println!(
        "demo: deployed example v1 as {} — open {server}/",
        report.id
    );
    println!(
        "demo: now deploy v2 while the tab stays open:  cargo run --release -- deploy {} --promote",
        examples.join("app-v2").display()
    );
    Ok(())
}
