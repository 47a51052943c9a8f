//! The reverse proxy for API prefixes: streams bodies both ways, strips
//! hop-by-hop headers, sets `X-Forwarded-*` and `Forwarded`, passes
//! WebSocket and other upgrades through, pools connections, and answers a
//! clear JSON 502/504 when the back end is down or slow (408 when a
//! client's request body stops coming).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::uri::{Authority, PathAndQuery};
use axum::http::{
    header, request, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri,
};
use axum::response::Response;
use hyper_util::rt::TokioIo;

use crate::conns::{too_large, Failure, Key, Outgoing, Pool};
use crate::error::json_error;
use crate::h1::RawFields;

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
        for name in connection_listed(headers) {
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
    // Most requests have no `Upgrade`: one look-up settles them.
    let proto = headers.get(header::UPGRADE)?;
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade.then(|| proto.clone())
}

impl Proxy {
    /// A proxy with the given timeouts.
    pub fn new(connect_timeout: Duration, read_timeout: Duration) -> Proxy {
        Proxy {
            pool: Arc::new(Pool::new(
                connect_timeout,
                read_timeout,
                256,
                Duration::from_secs(60),
            )),
            read_timeout,
        }
    }

    /// Forwards `req` to `upstream`; `served_by` names the release whose back
    /// end answers. Fields of the answer passed on as they came are beside
    /// the response.
    pub async fn forward(
        &self,
        mut req: Request<Body>,
        upstream: &Upstream,
        client: SocketAddr,
        served_by: &HeaderValue,
    ) -> (Response, Option<RawFields>) {
        let served_by_text = served_by.to_str().unwrap_or("");
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
        let failed = |e: Failure| {
            let (status, msg) = match e {
                Failure::TooLarge => {
                    return json_error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request body is larger than the proxy limit",
                    )
                }
                Failure::Http(e) if too_large(&e) => {
                    return json_error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request body is larger than the proxy limit",
                    )
                }
                Failure::TimedOut => return timed_out(),
                Failure::ClientStalled => {
                    return json_error(
                        StatusCode::REQUEST_TIMEOUT,
                        &format!(
                            "the request body stopped coming for {}s",
                            self.read_timeout.as_secs()
                        ),
                    )
                }
                Failure::Malformed(m) => ("sent an invalid response", m),
                Failure::Connect(m) | Failure::Broken(m) => ("is unreachable", m),
                Failure::Http(e) => (
                    "is unreachable",
                    std::error::Error::source(&e)
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| e.to_string()),
                ),
            };
            json_error(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "the back end of release {served_by_text} ({}) {status}: {msg}",
                    upstream.url
                ),
            )
        };
        let upgrade = upgrade_of(req.headers());
        if upgrade.is_none() {
            let (parts, body) = req.into_parts();
            let has_body = !hyper::body::Body::is_end_stream(&body);
            let framing = match has_body {
                false => BodyFraming::None,
                true if parts.headers.contains_key(header::CONTENT_LENGTH)
                    && !parts.headers.contains_key(header::TRANSFER_ENCODING) =>
                {
                    BodyFraming::Length
                }
                true => BodyFraming::Chunked,
            };
            let tls = parts.extensions.get::<OverTls>().is_some();
            let out = Outgoing {
                head_request: parts.method == Method::HEAD,
                retryable: !has_body && is_idempotent(&parts.method),
                body: has_body.then_some(body),
                chunked: framing == BodyFraming::Chunked,
            };
            let encode = |buf: &mut Vec<u8>| {
                write_request_head(buf, &parts, upstream, client, tls, framing);
            };
            // The pool bounds the exchange by the read timeout.
            let (mut resp, raw) = match self.pool.send(&upstream.key, encode, out).await {
                Err(e) => return (failed(e), None),
                Ok(r) => r,
            };
            stamp(resp.headers_mut(), served_by);
            return (resp, raw);
        }
        let client_upgrade = hyper::upgrade::on(&mut req);
        let (mut parts, body) = req.into_parts();
        let uri = match upstream.target_for(parts.uri.path_and_query()) {
            Ok(u) => u,
            Err(e) => return (json_error(StatusCode::BAD_GATEWAY, &e), None),
        };
        strip_hop_by_hop(&mut parts.headers);
        let host = parts.headers.insert(header::HOST, upstream.host.clone());
        let tls = parts.extensions.get::<OverTls>().is_some();
        forwarded_headers(&mut parts.headers, client, host.as_ref(), tls);
        if let Some(proto) = &upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, proto.clone());
        }
        parts.uri = uri;
        parts.version = axum::http::Version::HTTP_11;
        let out = Request::from_parts(parts, body);

        let sent = tokio::time::timeout(
            self.read_timeout,
            Box::pin(self.pool.send_upgrade(&upstream.key, out)),
        )
        .await;
        let mut resp = match sent {
            Err(_) => return (timed_out(), None),
            Ok(Err(e)) => return (failed(e), None),
            Ok(Ok(r)) => r,
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let backend_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                let (Ok(a), Ok(b)) = (client_upgrade.await, backend_upgrade.await) else {
                    return;
                };
                let mut a = TokioIo::new(a);
                let mut b = TokioIo::new(b);
                let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
            });
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
            return (Response::from_parts(parts, Body::empty()), None);
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        stamp(&mut parts.headers, served_by);
        (Response::from_parts(parts, Body::new(body)), None)
    }
}

fn stamp(headers: &mut HeaderMap, served_by: &HeaderValue) {
    headers.insert(SERVED_BY, served_by.clone());
}

/// Each octet spelt in decimal, padded to four bytes, and its length.
const OCTETS: [([u8; 4], u8); 256] = {
    let mut table = [([0u8; 4], 0u8); 256];
    let mut i = 0;
    while i < 256 {
        let o = i as u8;
        table[i] = if o >= 100 {
            ([b'0' + o / 100, b'0' + o / 10 % 10, b'0' + o % 10, 0], 3)
        } else if o >= 10 {
            ([b'0' + o / 10, b'0' + o % 10, 0, 0], 2)
        } else {
            ([b'0' + o, 0, 0, 0], 1)
        };
        i += 1;
    }
    table
};

/// Writes an IPv4 address in dotted decimal: each octet's spelling taken
/// from a table, put together on the stack and appended at once.
pub(crate) fn push_ipv4(out: &mut Vec<u8>, v4: std::net::Ipv4Addr) {
    // Room for four whole table entries and the dots between them.
    let mut text = [0u8; 19];
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[n] = b'.';
            n += 1;
        }
        let (digits, len) = OCTETS[usize::from(octet)];
        text[n..n + 4].copy_from_slice(&digits);
        n += usize::from(len);
    }
    out.extend_from_slice(&text[..n]);
}

/// Writes an address as `Forwarded` and `X-Forwarded-For` spell it, without
/// going through `fmt` for the common IPv4 case.
fn push_ip(out: &mut Vec<u8>, ip: std::net::IpAddr, quoted_v6: bool) {
    use std::io::Write;
    match ip {
        std::net::IpAddr::V4(v4) => push_ipv4(out, v4),
        std::net::IpAddr::V6(v6) if quoted_v6 => {
            let _ = write!(out, "\"[{v6}]\"");
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Marks a request that came in over the gateway's own TLS listener, so the
/// back end is told `https`.
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// The value of `X-Forwarded-For`: the one the request came with (the
/// first field), then the client.
fn write_x_forwarded_for(out: &mut Vec<u8>, prev: Option<&HeaderValue>, client: SocketAddr) {
    if let Some(prev) = prev.and_then(|v| v.to_str().ok()) {
        if !prev.trim().is_empty() {
            out.extend_from_slice(prev.as_bytes());
            out.extend_from_slice(b", ");
        }
    }
    push_ip(out, client.ip(), false);
}

/// The value of `Forwarded` (RFC 7239): the one the request came with,
/// then this hop.
fn write_forwarded(
    out: &mut Vec<u8>,
    prev: Option<&HeaderValue>,
    client: SocketAddr,
    host: Option<&HeaderValue>,
    proto: &str,
) {
    if let Some(prev) = prev.and_then(|v| v.to_str().ok()) {
        out.extend_from_slice(prev.as_bytes());
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(b"for=");
    push_ip(out, client.ip(), true);
    if let Some(h) = host.map(HeaderValue::as_bytes) {
        // A name is a token; a port or an IPv6 literal makes it a
        // quoted-string (RFC 7239 §4). Anything else is not a host and is
        // left out.
        let mut quoted = false;
        let is_host = h.iter().all(|b| {
            quoted |= matches!(b, b':' | b'[' | b']');
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
        });
        if is_host {
            out.extend_from_slice(b";host=");
            if quoted {
                out.push(b'"');
            }
            out.extend_from_slice(h);
            if quoted {
                out.push(b'"');
            }
        }
    }
    out.extend_from_slice(b";proto=");
    out.extend_from_slice(proto.as_bytes());
}

/// Sets `X-Forwarded-For` (appended), `-Proto`, `-Host` and `Forwarded`.
fn forwarded_headers(
    headers: &mut HeaderMap,
    client: SocketAddr,
    host: Option<&HeaderValue>,
    tls: bool,
) {
    let proto = if tls { "https" } else { "http" };
    let mut value = Vec::with_capacity(64);
    write_x_forwarded_for(&mut value, headers.get(&X_FORWARDED_FOR), client);
    if let Ok(v) = HeaderValue::from_bytes(&value) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    value.clear();
    write_forwarded(
        &mut value,
        headers.get(header::FORWARDED),
        client,
        host,
        proto,
    );
    if let Some(h) = host {
        headers.insert(X_FORWARDED_HOST, h.clone());
    }
    if let Ok(v) = HeaderValue::from_bytes(&value) {
        headers.insert(header::FORWARDED, v);
    }
}

/// How a request body goes to the back end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFraming {
    None,
    /// As is, after the `Content-Length` the client sent.
    Length,
    Chunked,
}

/// Methods a request may be sent again with (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Writes the head of the request sent to the back end, from the client's
/// request as it came: the target under the back end's prefix, `Host` of
/// the back end, the client's fields but hop-by-hop ones (and those its
/// `Connection` lists), then the forwarding fields; no header map is
/// built for it.
fn write_request_head(
    out: &mut Vec<u8>,
    parts: &request::Parts,
    upstream: &Upstream,
    client: SocketAddr,
    tls: bool,
    framing: BodyFraming,
) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(upstream.prefix.as_bytes());
    match parts.uri.path_and_query() {
        Some(pq) => out.extend_from_slice(pq.as_str().as_bytes()),
        None => out.push(b'/'),
    }
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(upstream.host.as_bytes());
    out.extend_from_slice(b"\r\n");
    let fields = out.len();
    let mut listed = Vec::new();
    let mut host = None;
    let mut prev_for = None;
    let mut prev_forwarded = None;
    let mut iter = parts.headers.iter();
    while let Some((name, value)) = iter.next() {
        if *name == header::CONNECTION && listed.is_empty() {
            // Rare: the names it lists are left out too, so the fields
            // are written again with them known.
            listed = connection_listed(&parts.headers);
            if !listed.is_empty() {
                out.truncate(fields);
                (host, prev_for, prev_forwarded) = (None, None, None);
                iter = parts.headers.iter();
            }
        } else if *name == header::HOST {
            host.get_or_insert(value);
        } else if *name == X_FORWARDED_FOR {
            prev_for.get_or_insert(value);
        } else if *name == header::FORWARDED {
            prev_forwarded.get_or_insert(value);
        } else if *name == X_FORWARDED_PROTO
            || *name == X_FORWARDED_HOST
            || HOP_BY_HOP.contains(name)
            || (framing == BodyFraming::Chunked && *name == header::CONTENT_LENGTH)
            || listed.contains(name)
        {
        } else {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    let proto = if tls { "https" } else { "http" };
    out.extend_from_slice(b"x-forwarded-for: ");
    write_x_forwarded_for(out, prev_for, client);
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(proto.as_bytes());
    if let Some(h) = host {
        out.extend_from_slice(b"\r\nx-forwarded-host: ");
        out.extend_from_slice(h.as_bytes());
    }
    out.extend_from_slice(b"\r\nforwarded: ");
    write_forwarded(out, prev_forwarded, client, host, proto);
    if framing == BodyFraming::Chunked {
        out.extend_from_slice(b"\r\ntransfer-encoding: chunked");
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// The names a request's `Connection` fields list (besides the hop-by-hop
/// ones): they describe the client's connection only.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
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
    fn ipv4_addresses_are_spelt_as_std_spells_them() {
        let mut out = Vec::new();
        for octet in 0..=255u8 {
            for addr in [
                [octet, 0, 0, 1],
                [127, octet, 9, 255],
                [10, 100, octet, 99],
                [octet, octet, octet, octet],
            ] {
                let v4 = std::net::Ipv4Addr::from(addr);
                out.clear();
                push_ipv4(&mut out, v4);
                assert_eq!(std::str::from_utf8(&out).unwrap(), v4.to_string());
            }
        }
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
        forwarded_headers(
            &mut h,
            "127.0.0.2:5000".parse().unwrap(),
            Some(&host),
            false,
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.2");
        assert_eq!(h["x-forwarded-host"], "app.example.com");
        assert_eq!(
            h[header::FORWARDED],
            "for=127.0.0.2;host=app.example.com;proto=http"
        );

        let mut h = HeaderMap::new();
        h.insert(header::FORWARDED, HeaderValue::from_static("for=10.0.0.1"));
        forwarded_headers(&mut h, "[::1]:5000".parse().unwrap(), None, true);
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(
            h[header::FORWARDED],
            "for=10.0.0.1, for=\"[::1]\";proto=https"
        );
        assert_eq!(h["x-forwarded-proto"], "https");
        assert!(!h.contains_key("x-forwarded-host"));

        // A port or an IPv6 literal is quoted; what is not a host is left out.
        for (host, want) in [
            (
                "app.example.com:8443",
                "for=10.0.0.9;host=\"app.example.com:8443\";proto=http",
            ),
            ("[::1]:8080", "for=10.0.0.9;host=\"[::1]:8080\";proto=http"),
            ("a\"b", "for=10.0.0.9;proto=http"),
        ] {
            let mut h = HeaderMap::new();
            let host = HeaderValue::from_static(host);
            forwarded_headers(&mut h, "10.0.0.9:1".parse().unwrap(), Some(&host), false);
            assert_eq!(h[header::FORWARDED], want);
        }

        for (addr, want) in [
            ("0.0.0.0:1", "0.0.0.0"),
            ("10.9.100.255:1", "10.9.100.255"),
            ("192.168.10.99:1", "192.168.10.99"),
        ] {
            let mut h = HeaderMap::new();
            forwarded_headers(&mut h, addr.parse().unwrap(), None, false);
            assert_eq!(h["x-forwarded-for"], want);
        }
    }

    fn head_of(req: Request<()>, upstream: &Upstream, framing: BodyFraming, tls: bool) -> String {
        let (parts, ()) = req.into_parts();
        let mut out = Vec::new();
        write_request_head(
            &mut out,
            &parts,
            upstream,
            "10.0.0.9:5000".parse().unwrap(),
            tls,
            framing,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn writes_request_heads_for_the_back_end() {
        let upstream = Upstream::parse("http://127.0.0.1:9001/base").unwrap();
        let req = Request::get("/api/x?y=1")
            .header("host", "app.example.com")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "secret")
            .header("keep-alive", "timeout=5")
            .header("te", "trailers")
            .header("x-forwarded-for", "10.1.2.3")
            .header("x-forwarded-proto", "spoofed")
            .header("forwarded", "for=10.1.2.3")
            .header("accept", "application/json")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(())
            .unwrap();
        assert_eq!(
            head_of(req, &upstream, BodyFraming::None, false),
            "GET /base/api/x?y=1 HTTP/1.1\r\n\
             host: 127.0.0.1:9001\r\n\
             accept: application/json\r\n\
             cookie: a=1\r\n\
             cookie: b=2\r\n\
             x-forwarded-for: 10.1.2.3, 10.0.0.9\r\n\
             x-forwarded-proto: http\r\n\
             x-forwarded-host: app.example.com\r\n\
             forwarded: for=10.1.2.3, for=10.0.0.9;host=app.example.com;proto=http\r\n\r\n"
        );

        // A chunked body: the client's Content-Length is not sent.
        let local = Upstream::local(8080);
        let req = Request::post("/api/up")
            .header("content-length", "5")
            .header("transfer-encoding", "chunked")
            .body(())
            .unwrap();
        assert_eq!(
            head_of(req, &local, BodyFraming::Chunked, true),
            "POST /api/up HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n\
             x-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: https\r\n\
             forwarded: for=10.0.0.9;proto=https\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let req = Request::put("/api/up")
            .header("content-length", "5")
            .body(())
            .unwrap();
        assert!(
            head_of(req, &local, BodyFraming::Length, false).contains("\r\ncontent-length: 5\r\n")
        );

        // The same forwarding fields as the upgrade path sets in a map.
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.1.2.3"));
        h.insert(header::FORWARDED, HeaderValue::from_static("for=10.1.2.3"));
        let host = HeaderValue::from_static("app.example.com");
        forwarded_headers(&mut h, "10.0.0.9:5000".parse().unwrap(), Some(&host), false);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3, 10.0.0.9");
        assert_eq!(
            h[header::FORWARDED],
            "for=10.1.2.3, for=10.0.0.9;host=app.example.com;proto=http"
        );
    }

    #[test]
    fn only_idempotent_methods_are_retried() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }
}
