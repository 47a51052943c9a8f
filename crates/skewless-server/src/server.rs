//! Running the server: bind, build the gateway over the adapters the caller
//! chose, serve until SIGTERM or Ctrl-C, then shut down gracefully.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::cluster::Cluster;
use crate::gateway::{router, Adapters, Gateway};
use crate::{ServerConfig, ServerError};

/// A server that holds its listening socket and certificates but has not
/// opened any adapter yet: binding and certificate errors stop a start
/// before anything is opened or created.
pub struct Bound {
    listener: tokio::net::TcpListener,
    addr: std::net::SocketAddr,
    tls: Option<(TlsAcceptor, Arc<crate::tls::Certificates>)>,
    config: ServerConfig,
}

/// Binds the configured address and loads the certificates, if any.
pub async fn bind(config: ServerConfig) -> Result<Bound, ServerError> {
    raise_open_file_limit();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServerError::Startup(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServerError::Startup(e.to_string()))?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let certs = crate::tls::Certificates::load(cert, key)?;
            Some((certs.acceptor()?, certs))
        }
        _ => None,
    };
    Ok(Bound {
        listener,
        addr,
        tls,
        config,
    })
}

/// Raises the process's soft limit on open descriptors to its hard limit:
/// every connection, event stream, back-end connection and held file takes
/// one, and the usual soft default (1024) is far below what a gateway
/// keeps open. A limit that cannot be raised is left as it is, with a
/// warning when it is low.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft >= hard {
        return;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open file limit"),
        Err(e) if soft < 16_384 => {
            tracing::warn!(limit = soft, error = %e, "open file limit is low and could not be raised")
        }
        Err(_) => {}
    }
}

/// Binds, then serves over `adapters` (see [`Bound::serve`]).
pub async fn run(config: ServerConfig, adapters: Adapters) -> Result<(), ServerError> {
    bind(config).await?.serve(adapters).await
}

impl Bound {
    /// The configuration the server was bound with.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Builds the gateway over the adapters the caller chose and runs it
    /// until SIGTERM or Ctrl-C, then drains in-flight requests for up to the
    /// configured grace.
    pub async fn serve(self, adapters: Adapters) -> Result<(), ServerError> {
        let Bound {
            listener,
            addr,
            tls,
            config,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let grace = Duration::from_secs(config.shutdown_grace_secs);
        let node_id = config
            .node_id
            .clone()
            .unwrap_or_else(|| format!("{}:{}", hostname(), addr.port()));
        let cluster = config.clustered().then(|| {
            Arc::new(Cluster::new(
                node_id.clone(),
                addr.to_string(),
                config.cluster.clone(),
            ))
        });
        let gw =
            Gateway::new_in_cluster(config, adapters, cluster.clone(), stop_rx.clone()).await?;
        gw.operations().identify(node_id, addr.to_string());
        gw.access_log().reopen_on_hangup();
        let header_read_timeout = Duration::from_secs(gw.config().header_read_timeout_secs.max(1));
        let tls = tls.map(|(acceptor, certs)| {
            tokio::spawn(certs.watch());
            acceptor
        });
        if let Some(redirect) = gw.config().http_redirect_listen {
            let plain = tokio::net::TcpListener::bind(redirect)
                .await
                .map_err(|e| ServerError::Startup(format!("cannot listen on {redirect}: {e}")))?;
            tracing::info!(from = %redirect, "redirecting plain HTTP to HTTPS");
            tokio::spawn(crate::redirect::serve(
                plain,
                addr.port(),
                crate::limits::HeadLimits::of(gw.config()),
                header_read_timeout,
                stop_rx,
                gw.access_log().clone(),
            ));
        }
        let reaper = tokio::spawn(gw.reaper());
        let sampler = tokio::spawn(gw.sampler());
        let cluster_tasks = match &cluster {
            Some(c) => {
                tracing::info!(node = %c.node_id, "cluster mode: state shared with other nodes");
                crate::cluster::spawn(&gw, c)
            }
            None => Vec::new(),
        };
        let app = router(gw.clone());
        let scheme = if tls.is_some() { "https" } else { "http" };
        println!("skewless listening on {scheme}://{addr}");
        tracing::info!(%addr, data = %gw.config().data.display(), "gateway started");
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
        reaper.abort();
        sampler.abort();
        for t in cluster_tasks {
            t.abort();
        }
        if let Some(c) = &cluster {
            crate::cluster::release_leases(gw.operations().state().as_ref(), c).await;
        }
        gw.stop_backends().await;
        let log = gw.access_log().clone();
        let _ = tokio::task::spawn_blocking(move || log.close()).await;
        Ok(())
    }
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

/// This machine's host name (for the default node id).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
