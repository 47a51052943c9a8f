//! The accept loop: one hyper connection per client with a header-read
//! timeout (which also closes idle keep-alive connections), HTTP/1 and
//! HTTP/2, upgrades, TLS when configured, and graceful shutdown that lets
//! in-flight requests finish.

use std::time::Duration;

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::access_log::LoggedBody;
use crate::gateway::{handle, request_pin, way, Gateway, Way};
use crate::h1::RawFields;
use crate::http1::Outcome;
use crate::limits::HeadLimits;
use crate::sendfile::{FileRegions, SendfileStream};

/// Serves the gateway (with `app` for its `/_skewless/` routes) on
/// `listener`, over TLS when `tls` is given, until `stop` resolves, then
/// waits up to `grace` for open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    gw: Arc<Gateway>,
    app: Router,
    header_read_timeout: Duration,
    stop: impl std::future::Future<Output = ()>,
    grace: Duration,
    tls: Option<TlsAcceptor>,
) {
    let limits = crate::limits::HeadLimits::of(gw.config());
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true)
        // Body frames are queued and handed to the connection as slices,
        // never copied: the `sendfile` path depends on it.
        .writev(true)
        // A head that does not fit the read buffer is answered 431.
        .max_buf_size(limits.max_head.max(crate::limits::MIN_HEAD_BYTES));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_head).unwrap_or(u32::MAX));
    let builder = std::sync::Arc::new(builder);
    let graceful = GracefulShutdown::new();
    // Held by every connection until hyper takes it (the lean paths watch
    // the shutdown themselves) and by every event stream until it ends;
    // shutdown waits for all to be dropped.
    let (streams_open, mut streams_done) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let (gw, app) = (gw.clone(), app.clone());
        let watcher = graceful.watcher();
        let streams = streams_open.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let secure = tls.is_some();
        let shutdown = gw.shutdown_signal();
        tokio::spawn(async move {
            let service_gw = gw.clone();
            let log = gw.access_log().clone();
            let general_app = app.clone();
            let service = hyper::service::service_fn(
                move |req: axum::http::Request<hyper::body::Incoming>| {
                    let mut req = req.map(axum::body::Body::new);
                    if secure {
                        req.extensions_mut().insert(crate::proxy::OverTls);
                    }
                    let (gw, app) = (service_gw.clone(), general_app.clone());
                    async move {
                        let (mut resp, raw) = answer(&gw, &app, peer, Some(limits), req).await;
                        if let Some(raw) = raw {
                            raw.into_map(resp.headers_mut());
                        }
                        Ok::<_, Infallible>(resp)
                    }
                },
            );
            if let Some(acceptor) = tls {
                // Over TLS every request, event streams included, goes
                // through hyper.
                drop(streams);
                let stream = match tokio::time::timeout(
                    header_read_timeout,
                    acceptor.accept(stream),
                )
                .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    log.protocol_refusal(peer, &*e);
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            // Event streams take a lean path of their own; ordinary
            // requests another (`http1`); everything else goes through
            // hyper.
            let mut first = [0u8; 24];
            let n = match tokio::time::timeout(header_read_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return,
            };
            if crate::gateway::events::lean::is_event_stream(&first[..n]) {
                crate::gateway::events::lean::serve(gw, stream, peer, header_read_timeout, limits)
                    .await;
                drop(streams);
                return;
            }
            // Large files go out with `sendfile` on plain-TCP HTTP/1.
            let regions = FileRegions::default();
            let stream = SendfileStream::new(stream, regions.clone());
            let lean = {
                let (gw, app) = (&gw, &app);
                // Its requests are within the head limits (see `http1`).
                crate::http1::serve(stream, limits, header_read_timeout, shutdown, move |req| {
                    answer(gw, app, peer, None, req)
                })
            };
            let rest = match regions.clone().serve(lean).await {
                Outcome::Done => return,
                Outcome::General(rest) => rest,
            };
            drop(streams);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(rest), service);
            if let Err(e) = regions.serve(watcher.watch(conn.into_owned())).await {
                log.protocol_refusal(peer, &*e);
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(streams_open);
    let all_done = async {
        graceful.shutdown().await;
        streams_done.recv().await;
    };
    if tokio::time::timeout(grace, all_done).await.is_err() {
        tracing::warn!("grace period over; closing remaining connections");
    }
}

/// Answers one request, on whichever stack it came: the head limits (for
/// a request not yet held to them: `limits`), the gateway, and the access
/// log's record of it. Fields of a back end's answer passed on as they
/// came are beside the response.
async fn answer(
    gw: &Arc<Gateway>,
    app: &Router,
    peer: std::net::SocketAddr,
    limits: Option<HeadLimits>,
    mut req: axum::http::Request<axum::body::Body>,
) -> (axum::http::Response<LoggedBody>, Option<RawFields>) {
    let pin = request_pin(&req);
    let logged = gw.access_log().start(&req, peer, pin.as_ref());
    let (resp, beside) = match limits.and_then(|l| l.check(&req)) {
        Some(refused) => (refused, crate::metrics::Kind::System.into()),
        None => match way(gw, &mut req, pin) {
            // Awaited here, not in a function of the gateway's: each
            // layer of futures costs every API call its copies.
            Way::Api(call, to) => {
                let (resp, raw) = gw
                    .proxy()
                    .forward(req, &to.upstream, peer, &to.served_by)
                    .await;
                call.finish(gw, resp, raw)
            }
            Way::Answered(resp, beside) => (resp, beside),
            Way::Handle(pending) => handle(gw, app, peer, req, pending).await,
        },
    };
    (
        crate::access_log::respond(logged, resp, beside.kind),
        beside.raw,
    )
}
