//! The reverse proxy for API prefixes: streams bodies both ways, strips
//! hop-by-hop headers, sets `X-Forwarded-*` and `Forwarded`, passes
//! WebSocket and other upgrades through, pools connections, and answers a
//! clear JSON 502/504 when the back end is down or slow.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::uri::{Authority, PathAndQuery};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri};
use axum::response::Response;
use hyper_util::rt::TokioIo;

use crate::conns::{Failure, Key, Pool};
use crate::error::json_error;

/// A back end address: scheme, authority and an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    key: Key,
    /// `Host` of requests sent to it.
    host: HeaderValue,
    prefix: String,
    /// The URL as configured, for messages.
    pub url: String,
}

impl Upstream {
    /// Parses an `http://` or `https://` URL.
    pub fn parse(url: &str) -> Result<Upstream, String> {
        let uri: Uri = url
            .parse()
            .map_err(|_| format!("back end {url:?} is not a URL"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "back end {url:?} must be an http:// or https:// URL"
                ))
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("back end {url:?} has no host"))?
            .clone();
        if uri.query().is_some() {
            return Err(format!("back end {url:?} must not have a query"));
        }
        Ok(Upstream::new(
            https,
            authority,
            uri.path().trim_end_matches('/').to_owned(),
            url.to_owned(),
        ))
    }

    fn new(https: bool, authority: Authority, prefix: String, url: String) -> Upstream {
        Upstream {
            host: HeaderValue::from_str(authority.as_str())
                .expect("an authority is a valid header value"),
            key: Key { https, authority },
            prefix,
            url,
        }
    }

    /// A local back end on a port.
    pub fn local(port: u16) -> Upstream {
        Upstream::new(
            false,
            Authority::try_from(format!("127.0.0.1:{port}"))
                .expect("an IPv4 address and port is an authority"),
            String::new(),
            format!("http://127.0.0.1:{port}"),
        )
    }

    /// The request target (origin form) on the back end.
    fn target_for(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, String> {
        Ok(Uri::from(match (path_and_query, self.prefix.is_empty()) {
            (Some(pq), true) => pq.clone(),
            (None, true) => PathAndQuery::from_static("/"),
            (pq, false) => {
                let rest = pq.map_or("/", |p| p.as_str());
                PathAndQuery::try_from(format!("{}{rest}", self.prefix))
                    .map_err(|e| format!("cannot build the back-end URL: {e}"))?
            }
        }))
    }
}

/// Forwards requests to back ends over pooled connections.
#[derive(Clone)]
pub struct Proxy {
    pool: Arc<Pool>,
    read_timeout: Duration,
}

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const SERVED_BY: HeaderName = HeaderName::from_static("skewless-served-by");

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    // One pass over the (few) present names is cheaper than a lookup per
    // hop-by-hop name.
    if headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
    }
}

/// The protocol an upgrade asks for, if the request is one.
fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

impl Proxy {
    /// A proxy with the given timeouts.
    pub fn new(connect_timeout: Duration, read_timeout: Duration) -> Proxy {
        Proxy {
            pool: Arc::new(Pool::new(connect_timeout, 256, Duration::from_secs(60))),
            read_timeout,
        }
    }

    /// Forwards `req` to `upstream`; `served_by` names the release whose back
    /// end answers.
    pub async fn forward(
        &self,
        mut req: Request<Body>,
        upstream: &Upstream,
        client: SocketAddr,
        served_by: &HeaderValue,
    ) -> Response {
        let served_by_text = served_by.to_str().unwrap_or("");
        let upgrade = upgrade_of(req.headers());
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let uri = match upstream.target_for(parts.uri.path_and_query()) {
            Ok(u) => u,
            Err(e) => return json_error(StatusCode::BAD_GATEWAY, &e),
        };
        strip_hop_by_hop(&mut parts.headers);
        let host = parts.headers.insert(header::HOST, upstream.host.clone());
        forwarded_headers(&mut parts.headers, client, host.as_ref());
        if let Some(proto) = &upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, proto.clone());
        }
        parts.uri = uri;
        parts.version = axum::http::Version::HTTP_11;
        let out = Request::from_parts(parts, body);

        let failed = |e: Failure| match e {
            Failure::Http(e) if too_large(&e) => json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body is larger than the proxy limit",
            ),
            e => {
                let cause = match e {
                    Failure::Connect(msg) => msg,
                    Failure::Http(e) => std::error::Error::source(&e)
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| e.to_string()),
                };
                json_error(
                    StatusCode::BAD_GATEWAY,
                    &format!(
                        "the back end of release {served_by_text} ({}) is unreachable: {cause}",
                        upstream.url
                    ),
                )
            }
        };
        let timed_out = || {
            json_error(
                StatusCode::GATEWAY_TIMEOUT,
                &format!(
                    "the back end of release {served_by_text} ({}) did not answer within {}s",
                    upstream.url,
                    self.read_timeout.as_secs()
                ),
            )
        };
        if upgrade.is_none() {
            let sent =
                tokio::time::timeout(self.read_timeout, self.pool.send(&upstream.key, out)).await;
            let resp = match sent {
                Err(_) => return timed_out(),
                Ok(Err(e)) => return failed(e),
                Ok(Ok(r)) => r,
            };
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            stamp(&mut parts.headers, served_by);
            return Response::from_parts(parts, body);
        }
        let sent = tokio::time::timeout(
            self.read_timeout,
            Box::pin(self.pool.send_upgrade(&upstream.key, out)),
        )
        .await;
        let mut resp = match sent {
            Err(_) => return timed_out(),
            Ok(Err(e)) => return failed(e),
            Ok(Ok(r)) => r,
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let backend_upgrade = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    let (Ok(a), Ok(b)) = (client_upgrade.await, backend_upgrade.await) else {
                        return;
                    };
                    let mut a = TokioIo::new(a);
                    let mut b = TokioIo::new(b);
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                });
            }
            let (mut parts, _) = resp.into_parts();
            let upgrade_header = parts.headers.get(header::UPGRADE).cloned();
            strip_hop_by_hop(&mut parts.headers);
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            if let Some(u) = upgrade_header {
                parts.headers.insert(header::UPGRADE, u);
            }
            stamp(&mut parts.headers, served_by);
            return Response::from_parts(parts, Body::empty());
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        stamp(&mut parts.headers, served_by);
        Response::from_parts(parts, Body::new(body))
    }
}

/// Whether a failed forward was the body outgrowing the proxy limit.
fn too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

fn stamp(headers: &mut HeaderMap, served_by: &HeaderValue) {
    headers.insert(SERVED_BY, served_by.clone());
}

/// Writes an address as `Forwarded` and `X-Forwarded-For` spell it, without
/// going through `fmt` for the common IPv4 case.
fn push_ip(out: &mut String, ip: std::net::IpAddr, quoted_v6: bool) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        std::net::IpAddr::V6(v6) if quoted_v6 => {
            use std::fmt::Write;
            let _ = write!(out, "\"[{v6}]\"");
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// Sets `X-Forwarded-For` (appended), `-Proto`, `-Host` and `Forwarded`.
fn forwarded_headers(headers: &mut HeaderMap, client: SocketAddr, host: Option<&HeaderValue>) {
    let mut xff = String::with_capacity(48);
    if let Some(prev) = headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        if !prev.trim().is_empty() {
            xff.push_str(prev);
            xff.push_str(", ");
        }
    }
    push_ip(&mut xff, client.ip(), false);
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    let mut forwarded = String::with_capacity(64);
    if let Some(prev) = headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
        forwarded.push_str(prev);
        forwarded.push_str(", ");
    }
    forwarded.push_str("for=");
    push_ip(&mut forwarded, client.ip(), true);
    if let Some((value, h)) = host.and_then(|v| Some((v, v.to_str().ok()?))) {
        headers.insert(X_FORWARDED_HOST, value.clone());
        if h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        {
            forwarded.push_str(";host=");
            forwarded.push_str(h);
        }
    }
    forwarded.push_str(";proto=http");
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.insert(header::FORWARDED, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstreams() {
        let pq = |s: &'static str| PathAndQuery::from_static(s);
        let u = Upstream::parse("http://127.0.0.1:9001/base/").unwrap();
        assert_eq!(
            u.target_for(Some(&pq("/api/x?y=1"))).unwrap().to_string(),
            "/base/api/x?y=1"
        );
        assert_eq!(u.host, "127.0.0.1:9001");
        assert!(!u.key.https);
        let u = Upstream::parse("https://api.example.com").unwrap();
        assert_eq!(
            u.target_for(Some(&pq("/api/x?y=1"))).unwrap().to_string(),
            "/api/x?y=1"
        );
        assert_eq!(u.target_for(None).unwrap().to_string(), "/");
        assert_eq!(u.host, "api.example.com");
        assert!(u.key.https);
        let local = Upstream::local(8080);
        assert_eq!(local.target_for(Some(&pq("/a"))).unwrap().to_string(), "/a");
        assert_eq!(local.host, "127.0.0.1:8080");
        assert!(Upstream::parse("ftp://x").is_err());
        assert!(Upstream::parse("127.0.0.1:9001").is_err());
        assert!(Upstream::parse("http://x/?a=b").is_err());
    }

    #[test]
    fn strips_hop_by_hop_and_listed_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-hop"),
        );
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn sets_forwarding_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let host = HeaderValue::from_static("app.example.com");
        forwarded_headers(&mut h, "127.0.0.2:5000".parse().unwrap(), Some(&host));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.2");
        assert_eq!(h["x-forwarded-host"], "app.example.com");
        assert_eq!(
            h[header::FORWARDED],
            "for=127.0.0.2;host=app.example.com;proto=http"
        );

        let mut h = HeaderMap::new();
        h.insert(header::FORWARDED, HeaderValue::from_static("for=10.0.0.1"));
        forwarded_headers(&mut h, "[::1]:5000".parse().unwrap(), None);
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(
            h[header::FORWARDED],
            "for=10.0.0.1, for=\"[::1]\";proto=http"
        );
        assert!(!h.contains_key("x-forwarded-host"));

        for (addr, want) in [
            ("0.0.0.0:1", "0.0.0.0"),
            ("10.9.100.255:1", "10.9.100.255"),
            ("192.168.10.99:1", "192.168.10.99"),
        ] {
            let mut h = HeaderMap::new();
            forwarded_headers(&mut h, addr.parse().unwrap(), None);
            assert_eq!(h["x-forwarded-for"], want);
        }
    }
}
