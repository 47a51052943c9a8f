//! The lean server side of HTTP/1.1 on plain TCP, for ordinary requests.
//!
//! Nearly every request a gateway answers is an HTTP/1.1 `GET` (or a small
//! `POST`) whose whole head, and body if any, arrive in one read: the
//! shell, a file, an API call. Those are parsed here with `httparse`
//! straight into the request the gateway answers, and the response is
//! written from a buffer the connection keeps: its head, and with it the
//! body when small, in one write; a large or file-backed body from its own
//! memory (file frames reach `sendfile`, see [`crate::sendfile`]).
//!
//! Anything else goes to hyper, the general stack, for the rest of the
//! connection, starting with the bytes read so far ([`Rewind`]): HTTP/1.0,
//! HTTP/2 with prior knowledge, upgrades (WebSocket), `Expect`,
//! `Transfer-Encoding` (chunked request bodies), request bodies over
//! [`MAX_BODY`] or not yet whole when the head is, more than [`MAX_FIELDS`] fields, heads over the limit and
//! anything `httparse` refuses, so that hyper answers those exactly as it
//! always has (431, 400, …). Handing over happens between requests, when
//! nothing of a response is pending.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use arrayvec::ArrayVec;
use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http::{Uri, Version};
use hyper::body::{Body as _, Frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::access_log::LoggedBody;
use crate::h1::{chunk_size_line, RawFields};
use crate::limits::HeadLimits;
use crate::sendfile::{is_sentinel, SendfileStream};

/// Most fields in a request head taken here; more go to hyper (which takes
/// up to 100).
const MAX_FIELDS: usize = 64;
/// The most read from the socket at once.
const READ: usize = 8 * 1024;
/// Largest request body taken with its head; larger ones, and ones not yet
/// whole when the head is, go to hyper, which streams them.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// Response body frames up to this size are copied into the write buffer
/// (after the head); larger ones are written from their own memory.
const COPY: usize = 16 * 1024;

/// How a connection served here ended.
pub(crate) enum Outcome {
    /// Closed, or failed.
    Done,
    /// The rest of it goes to the general stack, starting with the bytes
    /// already read.
    General(Rewind),
}

/// The fields of a request head: name, and where its value lies.
type Fields = ArrayVec<(HeaderName, usize, usize), MAX_FIELDS>;

/// One request found at the start of the buffer, before its head is split
/// off (its fields are in a [`Fields`] beside it).
struct Inspected {
    head_len: usize,
    body_len: usize,
    method: Method,
    target: (usize, usize),
    /// It asked to close the connection after its response.
    close: bool,
    /// It takes trailer fields (`TE: trailers`).
    trailers: bool,
}

enum Parsed {
    /// More bytes are needed.
    Partial,
    /// Not an ordinary request: the general stack takes the connection.
    General,
    /// A whole request (head and body) is in the buffer.
    Ready(Inspected),
}

/// How the response body is delimited on the wire.
#[derive(Clone, Copy, PartialEq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

/// Serves ordinary requests on `io` with `answer` until the connection
/// closes, fails, or has to go to the general stack. `timeout` bounds the
/// wait for a whole request head (and an idle keep-alive connection);
/// once `shutdown` is true, the connection closes after the response in
/// flight.
pub(crate) async fn serve<A, F>(
    mut io: SendfileStream,
    limits: HeadLimits,
    timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
    answer: A,
) -> Outcome
where
    A: Fn(Request<Body>) -> F,
    F: Future<Output = (Response<LoggedBody>, Option<RawFields>)>,
{
    let mut buf = BytesMut::with_capacity(READ);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let mut fields = Fields::new();
    // One timer for the connection's life, moved on only when it fires
    // before the deadline of the wait in progress: a timer per request
    // would be registered and cancelled on every request.
    let idle = tokio::time::sleep(timeout);
    tokio::pin!(idle);
    let stopping = shutdown.clone();
    let stop = shutdown.wait_for(|s| *s);
    tokio::pin!(stop);
    loop {
        // A whole request in the buffer, or read more.
        let mut deadline: Option<Instant> = None;
        let inspected = loop {
            match inspect(&buf, limits, &mut fields) {
                Parsed::Ready(r) => break r,
                Parsed::General => return Outcome::General(Rewind::new(buf.freeze(), io)),
                Parsed::Partial => {}
            }
            let wait_until = *deadline.get_or_insert_with(|| Instant::now() + timeout);
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(READ);
            }
            let read = loop {
                tokio::select! {
                    biased;
                    r = io.read_buf(&mut buf) => break r,
                    () = &mut idle => {
                        if idle.deadline() >= wait_until {
                            return Outcome::Done;
                        }
                        idle.as_mut().reset(wait_until);
                    }
                    // Only an idle connection closes at once.
                    _ = &mut stop, if buf.is_empty() => return Outcome::Done,
                }
            };
            match read {
                Ok(n) if n > 0 => {}
                _ => return Outcome::Done,
            }
        };
        let (close, trailers) = (inspected.close, inspected.trailers);
        let req = match build(&mut buf, inspected, &mut fields) {
            Ok(req) => req,
            Err(what) => {
                let _ = refuse(&mut io, what).await;
                return Outcome::Done;
            }
        };
        let head_request = req.method() == Method::HEAD;
        let answered = answer(req).await;
        let keep = write_response(
            &mut io,
            &mut buf,
            &mut out,
            answered,
            head_request,
            close || *stopping.borrow(),
            trailers,
        )
        .await;
        if !keep {
            let _ = io.shutdown().await;
            return Outcome::Done;
        }
    }
}

/// Looks at the start of `buf`: a whole ordinary request, the need for
/// more bytes, or a request for the general stack. A request over the head
/// limits goes to the general stack, which refuses it: one taken here is
/// within them.
fn inspect(buf: &[u8], limits: HeadLimits, fields: &mut Fields) -> Parsed {
    let max_head = limits.max_head;
    if buf.is_empty() {
        return Parsed::Partial;
    }
    // Not initialised: zeroing the slots would cost more than parsing a
    // typical head.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) if n <= max_head => n,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Parsed::Partial,
        // Too large, too many fields, malformed: hyper answers it.
        _ => return Parsed::General,
    };
    if req.version != Some(1) {
        return Parsed::General;
    }
    let method = match req.method.map(|m| Method::from_bytes(m.as_bytes())) {
        Some(Ok(m)) if m != Method::CONNECT => m,
        _ => return Parsed::General,
    };
    let target = match req.path {
        Some(p) if p.starts_with('/') && p.len() <= limits.max_line => p,
        _ => return Parsed::General,
    };
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| s.as_ptr() as usize - base;
    fields.clear();
    let mut close = false;
    let mut trailers = false;
    let mut length: Option<u64> = None;
    for h in req.headers.iter() {
        // As sent: `name: value`.
        if h.name.len() + 2 + h.value.len() > limits.max_line {
            return Parsed::General;
        }
        let Ok(name) = field_name(h.name.as_bytes()) else {
            return Parsed::General;
        };
        if name == header::CONTENT_LENGTH {
            match (crate::h1::parse_length(h.value.trim_ascii()), length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return Parsed::General,
            }
        } else if name == header::TRANSFER_ENCODING
            || name == header::EXPECT
            || name == header::UPGRADE
        {
            return Parsed::General;
        } else if name == header::CONNECTION {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::General;
                }
            }
        } else if name == header::TE {
            trailers |= h
                .value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
        }
        let start = offset(h.value);
        fields.push((name, start, start + h.value.len()));
    }
    let body_len = match length {
        Some(n) if n as usize > MAX_BODY => return Parsed::General,
        Some(n) => n as usize,
        None => 0,
    };
    if buf.len() < head_len + body_len {
        // A body still on its way is streamed by the general stack, where
        // the proxy bounds each wait for it with its own timeout.
        return Parsed::General;
    }
    let start = offset(target.as_bytes());
    Parsed::Ready(Inspected {
        head_len,
        body_len,
        method,
        target: (start, start + target.len()),
        close,
        trailers,
    })
}

/// Request field names outside `http`'s standard set that requests
/// commonly carry, by length: taken from here they cost no allocation.
static COMMON_9: [HeaderName; 1] = [HeaderName::from_static("sec-ch-ua")];
static COMMON_14: [HeaderName; 4] = [
    HeaderName::from_static("sec-fetch-mode"),
    HeaderName::from_static("sec-fetch-site"),
    HeaderName::from_static("sec-fetch-dest"),
    HeaderName::from_static("sec-fetch-user"),
];
static COMMON_15: [HeaderName; 2] = [
    HeaderName::from_static(crate::gateway::stamp::CLIENT_HEADER),
    HeaderName::from_static("x-forwarded-for"),
];
static COMMON_16: [HeaderName; 2] = [
    HeaderName::from_static(skewless_core::pin::HEADER),
    HeaderName::from_static("sec-ch-ua-mobile"),
];
static COMMON_18: [HeaderName; 1] = [HeaderName::from_static("sec-ch-ua-platform")];

/// A request field's name.
fn field_name(raw: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    let common: &[HeaderName] = match raw.len() {
        9 => &COMMON_9,
        14 => &COMMON_14,
        15 => &COMMON_15,
        16 => &COMMON_16,
        18 => &COMMON_18,
        _ => &[],
    };
    match common
        .iter()
        .find(|n| raw.eq_ignore_ascii_case(n.as_str().as_bytes()))
    {
        Some(n) => Ok(n.clone()),
        None => HeaderName::from_bytes(raw),
    }
}

/// Takes the inspected request out of `buf` as the request the gateway
/// answers; its target and field values share the head's bytes.
fn build(
    buf: &mut BytesMut,
    r: Inspected,
    fields: &mut Fields,
) -> Result<Request<Body>, &'static str> {
    let head = buf.split_to(r.head_len).freeze();
    let body = if r.body_len > 0 {
        Body::from(buf.split_to(r.body_len).freeze())
    } else {
        Body::empty()
    };
    let uri = Uri::from_maybe_shared(head.slice(r.target.0..r.target.1))
        .map_err(|_| "invalid request target")?;
    let mut headers = HeaderMap::with_capacity(fields.len());
    // Drained, not moved: the array is large.
    for (name, start, end) in fields.drain(..) {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end))
            .map_err(|_| "invalid header field value")?;
        headers.append(name, value);
    }
    let mut req = Request::new(body);
    *req.method_mut() = r.method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Answers a request that cannot be taken (400) and closes.
async fn refuse(io: &mut SendfileStream, what: &str) -> io::Result<()> {
    let body = crate::error::error_body(what);
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: ",
    );
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    put_date(&mut out);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
    crate::metrics::request(crate::metrics::Kind::System, 400);
    io.write_all(&out).await?;
    io.shutdown().await
}

/// Writes `resp` (to a `HEAD` request when `head_request`), with `raw`
/// fields after those of its map; returns whether the connection stays
/// open for another request. `close`: the request or
/// the server asked to close after it. While the body waits for its next
/// frame, the connection is watched for the client going away (bytes it
/// sends meanwhile, a pipelined request, are kept in `buf`).
async fn write_response(
    io: &mut SendfileStream,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    (resp, raw): (Response<LoggedBody>, Option<RawFields>),
    head_request: bool,
    mut close: bool,
    trailers: bool,
) -> bool {
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    out.clear();
    put_status_line(out, status);
    let mut length: Option<u64> = None;
    let mut wrote_date = false;
    let mut wrote_connection = false;
    let mut allowed: Vec<HeaderName> = Vec::new();
    // An empty body is sent as one, whatever length a field claims (a
    // `HEAD` answer keeps its field: it describes the `GET`).
    let empty = body.is_end_stream();
    for (name, value) in parts.headers.iter() {
        if *name == header::CONTENT_LENGTH {
            if length.is_some() || (empty && !head_request) {
                continue;
            }
            match crate::h1::parse_length(value.as_bytes()) {
                Some(n) => length = Some(n),
                // Not a length a client could use: the body's own decides.
                None => continue,
            }
        } else if *name == header::TRANSFER_ENCODING {
            // The framing is decided below.
            continue;
        } else if *name == header::CONNECTION {
            wrote_connection = true;
            close |= value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if *name == header::DATE {
            wrote_date = true;
        } else if *name == header::TRAILER && trailers {
            if let Ok(v) = value.to_str() {
                allowed.extend(
                    v.split(',')
                        .filter_map(|s| HeaderName::from_bytes(s.trim().as_bytes()).ok()),
                );
            }
        }
        put_field(out, name, value);
    }
    if let Some(raw) = raw {
        raw.write(out);
        wrote_date |= raw.date;
    }
    let bodiless_status = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut framing = match length {
        Some(n) => Framing::Length(n),
        None if empty => {
            if !bodiless_status && !head_request {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
            Framing::Length(0)
        }
        None => match body.size_hint().exact() {
            Some(n) => {
                if !bodiless_status {
                    out.extend_from_slice(b"content-length: ");
                    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                Framing::Length(n)
            }
            None if bodiless_status || head_request => Framing::Empty,
            None => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
        },
    };
    if bodiless_status || head_request {
        framing = Framing::Empty;
    }
    if close && !wrote_connection {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        put_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if framing == Framing::Empty || framing == Framing::Length(0) {
        // Dropped unsent: its line is written now.
        drop(body);
        return io.write_all(out).await.is_ok() && !close;
    }
    let chunked = framing == Framing::Chunked;
    let mut sent: u64 = 0;
    let mut trailer_fields: Option<HeaderMap> = None;
    loop {
        let polled =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        let frame = match polled {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                // Nothing more yet: what is buffered goes out now.
                if !out.is_empty() {
                    if io.write_all(out).await.is_err() {
                        return false;
                    }
                    out.clear();
                }
                match next_frame(io, buf, &mut body).await {
                    Some(frame) => frame,
                    // The client went away.
                    None => return false,
                }
            }
        };
        let frame: Frame<Bytes> = match frame {
            None => break,
            Some(Ok(f)) => f,
            // A body that fails midway: the client sees the connection
            // close before the promised end.
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body failed");
                let _ = io.write_all(out).await;
                return false;
            }
        };
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) => {
                if let Framing::Length(n) = framing {
                    sent += data.len() as u64;
                    if sent > n {
                        tracing::debug!("response body longer than its content-length");
                        let _ = io.write_all(out).await;
                        return false;
                    }
                }
                if chunked {
                    chunk_size_line(out, data.len());
                }
                if data.len() <= COPY && !is_sentinel(&data) {
                    out.extend_from_slice(&data);
                } else if is_sentinel(&data) {
                    // The head (or what else is buffered) leaves with the
                    // file's first bytes.
                    if !out.is_empty() && io.write_all_more(out).await.is_err() {
                        return false;
                    }
                    out.clear();
                    if io.write_all(&data).await.is_err() {
                        return false;
                    }
                } else {
                    if write_two(io, out, &data).await.is_err() {
                        return false;
                    }
                    out.clear();
                }
                if chunked {
                    out.extend_from_slice(b"\r\n");
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailer_fields = Some(t);
                }
            }
        }
        if body.is_end_stream() {
            break;
        }
    }
    if let Framing::Length(n) = framing {
        if sent < n {
            // Ended short of its content-length: only closing tells.
            tracing::debug!(sent, promised = n, "response body ended early");
            let _ = io.write_all(out).await;
            return false;
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n");
        if let Some(fields) = &trailer_fields {
            for (name, value) in fields {
                if allowed.contains(name) {
                    put_field(out, name, value);
                }
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    drop(body);
    (out.is_empty() || io.write_all(out).await.is_ok()) && !close
}

/// Appends the status line.
fn put_status_line(out: &mut Vec<u8>, status: StatusCode) {
    let line: &[u8] = match status.as_u16() {
        200 => b"HTTP/1.1 200 OK\r\n",
        304 => b"HTTP/1.1 304 Not Modified\r\n",
        404 => b"HTTP/1.1 404 Not Found\r\n",
        _ => {
            out.extend_from_slice(b"HTTP/1.1 ");
            out.extend_from_slice(status.as_str().as_bytes());
            out.push(b' ');
            out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
            out.extend_from_slice(b"\r\n");
            return;
        }
    };
    out.extend_from_slice(line);
}

/// Appends one field line. The separators are pushed byte by byte: each
/// call to copy a two-byte slice would cost more than the bytes.
fn put_field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    let (name, value) = (name.as_str().as_bytes(), value.as_bytes());
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.push(b':');
    out.push(b' ');
    out.extend_from_slice(value);
    out.push(b'\r');
    out.push(b'\n');
}

type Polled = Option<Result<Frame<Bytes>, axum::Error>>;

/// Waits for the body's next frame while watching the connection: `None`
/// when the client closed it (or it failed) meanwhile.
async fn next_frame(
    io: &mut SendfileStream,
    buf: &mut BytesMut,
    body: &mut LoggedBody,
) -> Option<Polled> {
    let mut scratch = [0u8; 512];
    loop {
        tokio::select! {
            biased;
            frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)) => return Some(frame),
            n = io.read(&mut scratch) => match n {
                Ok(0) | Err(_) => return None,
                // A pipelined request, kept for after this response; a
                // client that floods meanwhile is only read, up to a bound.
                Ok(n) => {
                    if buf.len() < READ * 8 {
                        buf.extend_from_slice(&scratch[..n]);
                    }
                }
            },
        }
    }
}

/// Writes `a` then `b`, gathered.
async fn write_two(io: &mut SendfileStream, a: &[u8], b: &[u8]) -> io::Result<()> {
    let (mut a, mut b) = (a, b);
    while !a.is_empty() {
        let n = io
            .write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n < a.len() {
            a = &a[n..];
        } else {
            b = &b[n - a.len()..];
            a = &[];
        }
    }
    io.write_all(b).await
}

thread_local! {
    /// The `Date` value of the current second, formatted once per second
    /// per thread.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Appends the current time as an HTTP date.
fn put_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                d.1.copy_from_slice(text.as_bytes());
                d.0 = secs;
            } else {
                out.extend_from_slice(text.as_bytes());
                return;
            }
        }
        out.extend_from_slice(&d.1);
    });
}

/// A connection handed to the general stack: the bytes already read come
/// first, then the socket.
pub(crate) struct Rewind {
    read: Bytes,
    io: SendfileStream,
}

impl Rewind {
    fn new(read: Bytes, io: SendfileStream) -> Rewind {
        Rewind { read, io }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.read.is_empty() {
            let n = this.read.len().min(out.remaining());
            out.put_slice(&this.read[..n]);
            this.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, out)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, b)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_line: 8 * 1024,
        max_head: 32 * 1024,
    };

    fn look(bytes: &[u8]) -> Parsed {
        inspect(bytes, LIMITS, &mut Fields::new())
    }

    fn ready(bytes: &[u8]) -> Inspected {
        match look(bytes) {
            Parsed::Ready(r) => r,
            Parsed::Partial => panic!("partial: {:?}", String::from_utf8_lossy(bytes)),
            Parsed::General => panic!("general: {:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn general(bytes: &[u8]) -> bool {
        matches!(look(bytes), Parsed::General)
    }

    #[test]
    fn ordinary_requests_are_taken_whole() {
        let r = ready(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n");
        assert_eq!((r.body_len, r.close, r.trailers), (0, false, true));
        let r =
            ready(b"POST /api HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabcGET");
        assert_eq!((r.head_len, r.body_len, r.close), (60, 3, true));
        assert_eq!(r.method, Method::POST);
    }

    #[test]
    fn a_request_waits_for_its_whole_head_and_a_body_does_not() {
        assert!(matches!(look(b""), Parsed::Partial));
        assert!(matches!(look(b"GET / HTTP/1.1\r\nHost"), Parsed::Partial));
        assert!(general(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"));
    }

    #[test]
    fn everything_else_goes_to_the_general_stack() {
        // HTTP/1.0, HTTP/2 with prior knowledge, CONNECT, absolute targets.
        assert!(general(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(general(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(general(b"CONNECT x:443 HTTP/1.1\r\n\r\n"));
        assert!(general(b"GET http://x/ HTTP/1.1\r\n\r\n"));
        // Upgrades, Expect, chunked bodies, bodies past the limit, lengths
        // that disagree or do not parse.
        assert!(general(
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        ));
        assert!(general(
            b"GET / HTTP/1.1\r\nConnection: keep-alive, upgrade\r\n\r\n"
        ));
        assert!(general(
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
        ));
        assert!(general(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        let big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(general(big.as_bytes()));
        assert!(general(
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        ));
        // Over the head limits: the general stack refuses them.
        let line = |len: usize| format!("GET / HTTP/1.1\r\nx-a: {}\r\n\r\n", "a".repeat(len - 5));
        assert!(!general(line(LIMITS.max_line).as_bytes()));
        assert!(general(line(LIMITS.max_line + 1).as_bytes()));
        let target = |len: usize| format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(len - 1));
        assert!(!general(target(LIMITS.max_line).as_bytes()));
        assert!(general(target(LIMITS.max_line + 1).as_bytes()));
        let lines = (0..5)
            .map(|i| format!("x-{i}: {}\r\n", "a".repeat(7000)))
            .collect::<String>();
        assert!(general(format!("GET / HTTP/1.1\r\n{lines}\r\n").as_bytes()));
        assert!(general(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"));
        // What httparse refuses, and heads over the limit, complete or not.
        assert!(general(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"));
        let long = format!(
            "GET / HTTP/1.1\r\nX-A: {}\r\n\r\n",
            "a".repeat(LIMITS.max_head)
        );
        assert!(general(long.as_bytes()));
        assert!(general(&long.as_bytes()[..LIMITS.max_head + 10]));
        // More fields than the lean path takes.
        let many: String = (0..=MAX_FIELDS).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert!(general(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()));
    }

    #[test]
    fn a_built_request_shares_the_head_and_leaves_the_next_one() {
        let mut buf = BytesMut::from(
            &b"POST /p?q=1 HTTP/1.1\r\nHost: h\r\nX-Two: 1\r\nX-Two: 2\r\nContent-Length: 2\r\n\r\nhiGET / HTTP/1.1\r\n"[..],
        );
        let mut fields = Fields::new();
        let Parsed::Ready(r) = inspect(&buf, LIMITS, &mut fields) else {
            panic!("not ready");
        };
        let req = build(&mut buf, r, &mut fields).unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), "/p");
        assert_eq!(req.uri().query(), Some("q=1"));
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "h");
        assert_eq!(req.headers().get_all("x-two").iter().count(), 2);
        assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n");
        let body = futures::executor::block_on(http_body_util::BodyExt::collect(req.into_body()))
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], b"hi");
    }

    #[test]
    fn status_lines_and_fields_are_written_as_http_1_1() {
        let mut out = Vec::new();
        for s in [200, 304, 404, 418, 502] {
            put_status_line(&mut out, StatusCode::from_u16(s).unwrap());
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nHTTP/1.1 304 Not Modified\r\nHTTP/1.1 404 Not Found\r\n\
             HTTP/1.1 418 I'm a teapot\r\nHTTP/1.1 502 Bad Gateway\r\n"
        );
        let mut out = Vec::new();
        put_field(&mut out, &header::ETAG, &HeaderValue::from_static("\"x\""));
        put_date(&mut out);
        assert!(out.starts_with(b"etag: \"x\"\r\n"));
        assert_eq!(out.len(), 11 + 29);
        assert!(out.ends_with(b" GMT"));
    }

    #[test]
    fn field_names_are_the_same_whether_common_or_not() {
        for raw in [
            "Skewless-Release",
            "skewless-client",
            "SEC-FETCH-MODE",
            "Sec-Ch-Ua-Platform",
            "sec-ch-ua",
            "x-forwarded-for",
            "Host",
            "X-Other-Field",
            "sec-fetch-nope",
        ] {
            let name = field_name(raw.as_bytes()).unwrap();
            assert_eq!(name, HeaderName::from_bytes(raw.as_bytes()).unwrap());
            assert_eq!(name.as_str(), raw.to_ascii_lowercase());
        }
        for common in COMMON_9
            .iter()
            .chain(&COMMON_14)
            .chain(&COMMON_15)
            .chain(&COMMON_16)
            .chain(&COMMON_18)
        {
            assert_eq!(field_name(common.as_str().as_bytes()).unwrap(), common);
        }
        assert!(field_name(b"bad name").is_err());
    }
}
