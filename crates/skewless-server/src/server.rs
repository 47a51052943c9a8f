//! Running the server: bind, build the gateway over the adapters the caller
//! chose, serve until SIGTERM or Ctrl-C, then shut down gracefully.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::gateway::{router, Adapters, Gateway};
use crate::{ServerConfig, ServerError};

/// Runs the gateway until SIGTERM or Ctrl-C, then drains in-flight requests
/// for up to the configured grace.
pub async fn run(config: ServerConfig, adapters: Adapters) -> Result<(), ServerError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServerError::Startup(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServerError::Startup(e.to_string()))?;
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let cluster = config.clustered().then(|| {
        let node_id = config
            .node_id
            .clone()
            .unwrap_or_else(|| format!("{}:{}", hostname(), addr.port()));
        Arc::new(Cluster::new(
            node_id,
            addr.to_string(),
            config.cluster.clone(),
        ))
    });
    let gw = Gateway::new(config, adapters, cluster.clone(), stop_rx).await?;
    let reaper = tokio::spawn(crate::reaper::run(
        gw.ops.clone(),
        gw.routing.clone(),
        gw.config.retention.clone(),
    ));
    let cluster_tasks = match &cluster {
        Some(c) => {
            tracing::info!(node = %c.node_id, "cluster mode: state shared with other nodes");
            crate::cluster::spawn(&gw, c)
        }
        None => Vec::new(),
    };
    let app = router(gw.clone());
    println!("skewless listening on http://{addr}");
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
        Duration::from_secs(gw.config.header_read_timeout_secs.max(1)),
        stop,
        grace,
    )
    .await;
    let result = Ok(());
    reaper.abort();
    for t in cluster_tasks {
        t.abort();
    }
    if let Some(c) = &cluster {
        crate::cluster::release_leases(gw.ops.state().as_ref(), c).await;
    }
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

/// This machine's host name (for the default node id).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
