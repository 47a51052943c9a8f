//! The optional plain-HTTP listener of an HTTPS gateway: every request is
//! answered `308 Permanent Redirect` to the same host, path and query on
//! HTTPS, and nothing else is served on it (no admin API, no files).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::access_log::AccessLog;
use crate::limits::HeadLimits;

/// Answers every connection on `listener` with redirects to HTTPS on
/// `https_port` until `stop` flips.
pub async fn serve(
    listener: TcpListener,
    https_port: u16,
    limits: HeadLimits,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    log: AccessLog,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed on the redirect listener");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = async { let _ = stop.wait_for(|s| *s).await; } => return,
        };
        let log = log.clone();
        tokio::spawn(async move {
            let service_log = log.clone();
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let logged = service_log.start(&req, peer, None);
                let resp = limits
                    .check(&req)
                    .unwrap_or_else(|| redirect(&req, https_port));
                async move {
                    let kind = crate::metrics::Kind::System;
                    Ok::<_, Infallible>(crate::access_log::respond(logged, resp, kind))
                }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .max_buf_size(limits.max_head.max(crate::limits::MIN_HEAD_BYTES))
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                log.protocol_refusal(peer, &e);
            }
        });
    }
}

/// The redirect for one request.
fn redirect<B>(req: &Request<B>, https_port: u16) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .map(host_without_port)
        .filter(|h| is_plain_host(h));
    let Some(host) = host else {
        return crate::error::json_error(
            StatusCode::BAD_REQUEST,
            "a request to the HTTP listener needs a valid Host header",
        );
    };
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = if https_port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{https_port}{path}")
    };
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => {
            return crate::error::json_error(
                StatusCode::BAD_REQUEST,
                "request target is not valid",
            );
        }
    }
    resp
}

/// `example.com:80` → `example.com`; `[::1]:80` → `[::1]`.
fn host_without_port(host: &str) -> &str {
    if let Some(end) = host.find(']') {
        return &host[..=end];
    }
    host.split(':').next().unwrap_or(host)
}

/// A host name or address literal, nothing that could bend the URL.
fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(host: Option<&str>, target: &str, port: u16) -> (StatusCode, Option<String>) {
        let mut b = Request::builder().uri(target);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        let resp = redirect(&b.body(()).unwrap(), port);
        (
            resp.status(),
            resp.headers()
                .get(header::LOCATION)
                .map(|v| v.to_str().unwrap().to_owned()),
        )
    }

    #[test]
    fn redirects_keep_host_path_and_query() {
        assert_eq!(
            location(Some("app.example:8080"), "/inbox/42?x=1", 8443),
            (
                StatusCode::PERMANENT_REDIRECT,
                Some("https://app.example:8443/inbox/42?x=1".into())
            )
        );
        assert_eq!(
            location(Some("app.example"), "/", 443).1.as_deref(),
            Some("https://app.example/")
        );
        assert_eq!(
            location(Some("[::1]:80"), "/a", 443).1.as_deref(),
            Some("https://[::1]/a")
        );
    }

    #[test]
    fn hosts_that_would_bend_the_url_are_refused() {
        assert_eq!(location(None, "/", 443).0, StatusCode::BAD_REQUEST);
        assert_eq!(
            location(Some("evil.example/@x"), "/", 443).0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(location(Some(""), "/", 443).0, StatusCode::BAD_REQUEST);
    }
}
