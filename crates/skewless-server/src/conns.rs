//! Connections to back ends. A proxied request is written and its
//! response read by a lean HTTP/1.1 client ([`crate::h1`]) inside the task
//! of the client connection that asked: the request head goes out in one
//! write from a buffer the connection keeps, the response head is parsed
//! straight into the response's header map, and the response body reads
//! the back end's socket itself as the client side takes it, waiting no
//! longer than the read timeout for each next piece. While a request body
//! goes out, the response is watched for: a back end that answers early
//! (a 413 to an upload it will not read) is not kept waiting for the rest,
//! and its connection is not reused. A connection goes back to a small
//! per-back-end pool once a response ended cleanly and neither side asked
//! to close; it is checked out and in under a short lock. Upgrades
//! (WebSocket) use hyper's client on a connection of their own.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::uri::Authority;
use axum::http::{Request, Response, Uri};
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tower::Service;

use crate::h1::{self, Decoded, Decoder, Malformed, RawFields};

type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector>;
type Io = hyper_rustls::MaybeHttpsStream<TokioIo<TcpStream>>;
type TlsStream = tokio_rustls::client::TlsStream<TokioIo<TokioIo<TcpStream>>>;

/// Bytes read at a time for a response head.
const HEAD_READ: usize = 8 * 1024;
/// Bytes read at a time for a response body.
const BODY_READ: usize = 64 * 1024;
/// Request body pieces up to this size are written with their chunk
/// framing in one write.
const SMALL_CHUNK: usize = 16 * 1024;

/// Which back end a connection talks to.
#[derive(Debug, Clone, Eq)]
pub(crate) struct Key {
    pub https: bool,
    pub authority: Authority,
}

impl PartialEq for Key {
    /// Byte for byte: `Authority`'s own comparison ignores case, a cost
    /// paid twice per request for nothing, as one back end's key always
    /// comes from the same URL.
    fn eq(&self, other: &Key) -> bool {
        self.https == other.https && self.authority.as_str() == other.authority.as_str()
    }
}

/// A socket to a back end, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(_) => Poll::Ready(Ok(())),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An open connection to a back end, with the buffers it keeps between
/// requests.
struct Conn {
    io: Stream,
    /// What has been read and not yet taken.
    rbuf: BytesMut,
    /// The request head being sent.
    wbuf: Vec<u8>,
    /// The connection's one timer for the wait for an answer, made on the
    /// first wait and moved on only when it fires before the deadline of
    /// the exchange in progress: a timer per exchange would be registered
    /// and cancelled on every request.
    alarm: Option<Pin<Box<Sleep>>>,
}

impl Conn {
    fn new(io: Stream) -> Box<Conn> {
        Box::new(Conn {
            io,
            rbuf: BytesMut::new(),
            wbuf: Vec::with_capacity(1024),
            alarm: None,
        })
    }

    /// Whether an idle connection is still open: nothing may arrive on it
    /// between responses, so anything readable (its end, or bytes nobody
    /// asked for) rules it out. No system call unless the socket was
    /// reported readable.
    fn idle_and_open(&mut self) -> bool {
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut buf)
            .is_pending()
    }

    /// Sends the request head in `wbuf` and the body, and reads the final
    /// response head. While the body goes out, the response is watched
    /// for: a back end may answer (a 413, a 401) without reading the rest.
    /// A request with a body waits no longer than `read_timeout` for
    /// either side to move while it goes out, then as long for the
    /// response head; one without has its answer by `deadline`.
    async fn exchange(
        &mut self,
        out: &mut Outgoing,
        read_timeout: Duration,
        deadline: tokio::time::Instant,
    ) -> Result<h1::Head, Exchange> {
        if let Some(body) = out.body.take() {
            // Boxed: requests with bodies are the rarer kind, and their
            // larger future is then no part of every request's.
            let sending =
                self.exchange_with_body(body, out.chunked, out.head_request, read_timeout);
            return Box::pin(sending).await;
        }
        // Written out as one poll function rather than awaited as nested
        // futures (sending, flushing, reading, and the deadline around
        // them): every request without a body comes this way.
        let state = Plain {
            written: 0,
            flushed: false,
            write_failed: None,
            read_ended: None,
            received: !self.rbuf.is_empty(),
        };
        self.head_by(state, out.head_request, deadline).await
    }

    /// The final response head, from where `state` is, or a time-out once
    /// `deadline` has passed, told by the connection's one timer (see
    /// [`poll_alarm`]), which is looked at only while the exchange waits.
    fn head_by(
        &mut self,
        mut state: Plain,
        head_request: bool,
        deadline: tokio::time::Instant,
    ) -> impl Future<Output = Result<h1::Head, Exchange>> + '_ {
        std::future::poll_fn(move |cx| {
            let Conn {
                io,
                rbuf,
                wbuf,
                alarm,
            } = &mut *self;
            if let Poll::Ready(r) = state.poll(io, rbuf, wbuf, cx, head_request) {
                return Poll::Ready(r);
            }
            ready!(poll_alarm(alarm, cx, deadline));
            Poll::Ready(Err(Exchange::TimedOut { client: false }))
        })
    }

    /// [`Conn::exchange`] for a request with a body.
    async fn exchange_with_body(
        &mut self,
        body: Body,
        chunked: bool,
        head_request: bool,
        read_timeout: Duration,
    ) -> Result<h1::Head, Exchange> {
        let mut write_failed = None;
        // Set when the back end's side ended while the body went out.
        let mut read_ended = None;
        match self
            .send_body(body, chunked, head_request, read_timeout)
            .await
        {
            Ok(Sent::All) => {}
            Ok(Sent::Answered(mut head)) => {
                // An answer before the whole request was sent: the
                // connection is in no state for another one.
                head.keep_alive = false;
                return Ok(head);
            }
            Ok(Sent::Closed(cause)) => read_ended = Some(cause),
            Err(BodyError::Body(e)) if too_large(&e) => return Err(Exchange::TooLarge),
            Err(BodyError::Body(e)) => {
                return Err(Exchange::Broken(format!(
                    "reading the request body failed: {e}"
                )))
            }
            // The back end may have answered and closed its side: its
            // answer is still taken.
            Err(BodyError::Write(e)) => write_failed = Some(e),
            Err(BodyError::Answer(e)) => return Err(e),
            Err(BodyError::Stalled { client }) => return Err(Exchange::TimedOut { client }),
        }
        // The head and body are out: only the answer is read.
        let state = Plain {
            written: self.wbuf.len(),
            flushed: true,
            write_failed,
            read_ended,
            received: !self.rbuf.is_empty(),
        };
        let deadline = tokio::time::Instant::now() + read_timeout;
        self.head_by(state, head_request, deadline).await
    }

    /// Sends the request head in `wbuf`, then streams the body, with
    /// chunked framing or as is (its `Content-Length` sent with the head),
    /// and reads what the back end sends meanwhile whenever the body would
    /// wait (for the client or for the back end to take more): a final
    /// response head ends the sending. Interim 1xx responses are skipped.
    /// Neither side may keep the body from moving for longer than
    /// `read_timeout`. Trailer fields of a request are not passed on.
    async fn send_body(
        &mut self,
        mut body: Body,
        chunked: bool,
        head_request: bool,
        read_timeout: Duration,
    ) -> Result<Sent, BodyError> {
        let Conn { io, rbuf, wbuf, .. } = self;
        // What is queued goes out in this order: the rest of `wbuf` (the
        // head, then a chunk-size line, with a small chunk's data and
        // CRLF), then `data`, then `tail`.
        let mut at = 0;
        let mut data = Bytes::new();
        let mut tail: &'static [u8] = b"";
        let mut ended = false;
        let mut stall = Stall::default();
        // When the body waits, on the client (`true`) or on the back end:
        // the back end's answer, or the end of the wait allowed.
        let wait = |io: &mut Stream,
                    rbuf: &mut BytesMut,
                    stall: &mut Stall,
                    cx: &mut Context<'_>,
                    client: bool| {
            if let Poll::Ready(r) = poll_answer(io, rbuf, cx, head_request) {
                return Poll::Ready(r);
            }
            ready!(stall.poll_expired(cx, read_timeout));
            Poll::Ready(Err(BodyError::Stalled { client }))
        };
        std::future::poll_fn(|cx| loop {
            let queued: &[u8] = if at < wbuf.len() {
                &wbuf[at..]
            } else if !data.is_empty() {
                &data
            } else {
                tail
            };
            if !queued.is_empty() {
                match Pin::new(&mut *io).poll_write(cx, queued) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(BodyError::Write(io::ErrorKind::WriteZero.into())))
                    }
                    Poll::Ready(Ok(n)) => {
                        stall.moved = true;
                        if at < wbuf.len() {
                            at += n;
                        } else if !data.is_empty() {
                            data.advance(n);
                        } else {
                            tail = &tail[n..];
                        }
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(BodyError::Write(e))),
                    Poll::Pending => return wait(io, rbuf, &mut stall, cx, false),
                }
            }
            if ended {
                return match Pin::new(&mut *io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(Sent::All)),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(BodyError::Write(e))),
                    Poll::Pending => wait(io, rbuf, &mut stall, cx, false),
                };
            }
            let piece = match hyper::body::Body::poll_frame(Pin::new(&mut body), cx) {
                Poll::Pending => return wait(io, rbuf, &mut stall, cx, true),
                Poll::Ready(None) => {
                    ended = true;
                    if chunked {
                        tail = b"0\r\n\r\n";
                    }
                    continue;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(BodyError::Body(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(piece) if !piece.is_empty() => {
                        stall.moved = true;
                        piece
                    }
                    _ => continue,
                },
            };
            if !chunked {
                data = piece;
                continue;
            }
            wbuf.clear();
            at = 0;
            h1::chunk_size_line(wbuf, piece.len());
            if piece.len() <= SMALL_CHUNK {
                wbuf.extend_from_slice(&piece);
                wbuf.extend_from_slice(b"\r\n");
            } else {
                data = piece;
                tail = b"\r\n";
            }
        })
        .await
    }
}

/// Reads what the back end sent while the request body goes out: a final
/// response head is its early answer. Pending while nothing decisive came.
fn poll_answer(
    io: &mut Stream,
    rbuf: &mut BytesMut,
    cx: &mut Context<'_>,
    head_request: bool,
) -> Poll<Result<Sent, BodyError>> {
    loop {
        rbuf.reserve(HEAD_READ);
        let cause = match ready!(tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, rbuf)) {
            Ok(0) => "the connection closed".to_owned(),
            Ok(_) => match parse_head(rbuf, head_request) {
                Ok(Some(head)) => return Poll::Ready(Ok(Sent::Answered(head))),
                // An interim response, or part of a head.
                Ok(None) => continue,
                Err(e) => return Poll::Ready(Err(BodyError::Answer(e))),
            },
            Err(e) => e.to_string(),
        };
        return Poll::Ready(Ok(Sent::Closed(cause)));
    }
}

/// Where an exchange is on its way to the final response head: the rest
/// of the request head in `wbuf` goes out and is flushed, then the
/// response head is read, part of which may have come while a body went
/// out.
struct Plain {
    /// Bytes of `wbuf` sent so far.
    written: usize,
    flushed: bool,
    /// Sending the request failed so: the answer is still taken, and the
    /// connection is not kept.
    write_failed: Option<io::Error>,
    /// The back end's side already ended so.
    read_ended: Option<String>,
    /// Bytes of the response have come (or were there before).
    received: bool,
}

impl Plain {
    fn poll(
        &mut self,
        io: &mut Stream,
        rbuf: &mut BytesMut,
        wbuf: &[u8],
        cx: &mut Context<'_>,
        head_request: bool,
    ) -> Poll<Result<h1::Head, Exchange>> {
        while self.written < wbuf.len() {
            match ready!(Pin::new(&mut *io).poll_write(cx, &wbuf[self.written..])) {
                Ok(0) => {
                    let e = io::Error::from(io::ErrorKind::WriteZero);
                    return Poll::Ready(Err(Exchange::Stale(format!(
                        "sending the request failed: {e}"
                    ))));
                }
                Ok(n) => self.written += n,
                Err(e) => {
                    return Poll::Ready(Err(Exchange::Stale(format!(
                        "sending the request failed: {e}"
                    ))))
                }
            }
        }
        if !self.flushed {
            // The answer is still read if flushing failed (the back end
            // may have answered and closed); the connection is not kept.
            self.write_failed = ready!(Pin::new(&mut *io).poll_flush(cx)).err();
            self.flushed = true;
        }
        loop {
            if self.received {
                match parse_head(rbuf, head_request) {
                    Ok(Some(mut head)) => {
                        head.keep_alive &= self.write_failed.is_none();
                        return Poll::Ready(Ok(head));
                    }
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            let cause = match self.read_ended.take() {
                Some(cause) => cause,
                None => {
                    rbuf.reserve(HEAD_READ);
                    match ready!(tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, rbuf)) {
                        Ok(0) => "the connection closed".to_owned(),
                        Ok(_) => {
                            self.received = true;
                            continue;
                        }
                        Err(e) => e.to_string(),
                    }
                }
            };
            let cause = match self.write_failed.take() {
                Some(e) => format!("sending the request failed: {e}"),
                None => cause,
            };
            return Poll::Ready(Err(if self.received {
                Exchange::Broken(format!("{cause} in the middle of the response head"))
            } else {
                Exchange::Stale(format!("{cause} before a response"))
            }));
        }
    }
}

/// The final response head at the start of `buf`, if it is all there.
fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<h1::Head>, Exchange> {
    match h1::parse_head(buf, head_request) {
        Ok(Some(head)) => Ok(Some(head)),
        Ok(None) if buf.len() >= h1::MAX_HEAD => Err(Exchange::Malformed(format!(
            "response head larger than {} bytes",
            h1::MAX_HEAD
        ))),
        Ok(None) => Ok(None),
        Err(Malformed(m)) => Err(Exchange::Malformed(m)),
    }
}

/// Ready once `deadline` has passed, with the connection's one timer
/// (`alarm`): made on the first wait, set again only when it fired for an
/// earlier deadline (or is set later than this one).
fn poll_alarm(
    alarm: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
    deadline: tokio::time::Instant,
) -> Poll<()> {
    let sleep = alarm.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    loop {
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        ready!(sleep.as_mut().poll(cx));
        if sleep.deadline() >= deadline {
            return Poll::Ready(());
        }
        sleep.as_mut().reset(deadline);
    }
}

/// A bound on how long a body may wait for its next bytes, in either
/// direction. Its timer is made on the first wait only, and set again only
/// when a wait follows bytes that moved.
#[derive(Default)]
struct Stall {
    sleep: Option<Pin<Box<Sleep>>>,
    /// Bytes moved since the timer was last set.
    moved: bool,
}

impl Stall {
    /// Called when the body waits: ready once it has waited `timeout`
    /// without bytes moving.
    fn poll_expired(&mut self, cx: &mut Context<'_>, timeout: Duration) -> Poll<()> {
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if self.moved {
                    sleep.as_mut().reset(tokio::time::Instant::now() + timeout);
                }
                sleep
            }
            None => self.sleep.insert(Box::pin(tokio::time::sleep(timeout))),
        };
        self.moved = false;
        sleep.as_mut().poll(cx)
    }
}

/// How sending a request body ended.
enum Sent {
    /// All of it went out.
    All,
    /// The back end answered before it had all of it.
    Answered(h1::Head),
    /// The back end's side of the connection ended, or failed, before an
    /// answer: why.
    Closed(String),
}

enum BodyError {
    Body(axum::Error),
    Write(io::Error),
    /// What the back end sent meanwhile is not a response.
    Answer(Exchange),
    /// The body did not move for the read timeout: waiting on the client
    /// for more of it, or on the back end to take it.
    Stalled {
        client: bool,
    },
}

/// How an exchange failed.
enum Exchange {
    /// Nothing came back: on a pooled connection, the back end may have
    /// closed it meanwhile.
    Stale(String),
    /// The connection failed part way.
    Broken(String),
    /// The back end's answer is not HTTP/1.1 as it should be.
    Malformed(String),
    /// The request body outgrew the proxy limit.
    TooLarge,
    /// Nothing moved for the read timeout: the request body, on the
    /// client's side or the back end's, or the response head.
    TimedOut { client: bool },
}

impl From<Exchange> for Failure {
    fn from(e: Exchange) -> Failure {
        match e {
            Exchange::Stale(m) | Exchange::Broken(m) => Failure::Broken(m),
            Exchange::Malformed(m) => Failure::Malformed(m),
            Exchange::TooLarge => Failure::TooLarge,
            Exchange::TimedOut { client: false } => Failure::TimedOut,
            Exchange::TimedOut { client: true } => Failure::ClientStalled,
        }
    }
}

/// Whether a failed request body was cut off at the proxy limit.
pub(crate) fn too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A request for a back end: its head is written by the caller into the
/// connection's buffer.
pub(crate) struct Outgoing {
    /// A HEAD request, whose response has no body.
    pub head_request: bool,
    /// Idempotent and without a body: may be sent again on a new
    /// connection when a pooled one turns out to be closed.
    pub retryable: bool,
    pub body: Option<Body>,
    /// The body goes with chunked framing (else its `Content-Length`).
    pub chunked: bool,
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// Why a request found no answer.
pub(crate) enum Failure {
    /// No connection could be made.
    Connect(String),
    /// The connection failed while the request was sent or the response
    /// head read.
    Broken(String),
    /// The response head could not be taken.
    Malformed(String),
    /// The request body outgrew the proxy limit.
    TooLarge,
    /// The back end took none of the request body, or sent no response
    /// head, for the read timeout.
    TimedOut,
    /// The client sent none of its request body for the read timeout.
    ClientStalled,
    /// An upgrade request failed.
    Http(hyper::Error),
}

/// The idle connections of every back end.
pub(crate) struct Pool {
    connector: HttpsConnector,
    idle: Mutex<Vec<(Key, Vec<Idle>)>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// The longest a response body may wait for the back end's next bytes.
    read_timeout: Duration,
}

impl Pool {
    pub(crate) fn new(
        connect_timeout: Duration,
        read_timeout: Duration,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Pool {
            connector,
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            read_timeout,
        }
    }

    fn checkout(&self, key: &Key) -> Option<Box<Conn>> {
        loop {
            let c = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                // The most recently used first: the others may have timed out.
                idle.iter_mut().find(|(k, _)| k == key)?.1.pop()?
            };
            let mut conn = c.conn;
            if c.since.elapsed() < self.idle_timeout && conn.idle_and_open() {
                return Some(conn);
            }
        }
    }

    fn checkin(&self, key: &Key, conn: Box<Conn>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let i = match idle.iter().position(|(k, _)| k == key) {
            Some(i) => i,
            None => {
                idle.push((key.clone(), Vec::new()));
                idle.len() - 1
            }
        };
        let list = &mut idle[i].1;
        if list.len() >= self.max_idle {
            // The oldest goes.
            list.remove(0);
        }
        list.push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    async fn connect_io(&self, key: &Key) -> Result<Io, Failure> {
        let uri = Uri::builder()
            .scheme(if key.https { "https" } else { "http" })
            .authority(key.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| Failure::Connect(e.to_string()))?;
        self.connector.clone().call(uri).await.map_err(|e| {
            let mut msg = e.to_string();
            let mut cur = e.source();
            while let Some(s) = cur {
                msg = s.to_string();
                cur = s.source();
            }
            Failure::Connect(msg)
        })
    }

    /// A new connection, made (TLS handshake included) by `deadline`.
    /// Boxed by its callers: connecting is rare, and its large future
    /// would otherwise be part of (and copied with) every request's.
    async fn connect_by(
        &self,
        key: &Key,
        deadline: tokio::time::Instant,
    ) -> Result<Box<Conn>, Failure> {
        match tokio::time::timeout_at(deadline, self.connect(key)).await {
            Ok(conn) => conn,
            Err(_) => Err(Failure::TimedOut),
        }
    }

    async fn connect(&self, key: &Key) -> Result<Box<Conn>, Failure> {
        Ok(Conn::new(match self.connect_io(key).await? {
            hyper_rustls::MaybeHttpsStream::Http(tcp) => Stream::Plain(tcp.into_inner()),
            hyper_rustls::MaybeHttpsStream::Https(tls) => Stream::Tls(Box::new(tls.into_inner())),
        }))
    }

    /// Sends a request over a pooled or new connection and waits for the
    /// response head. `encode` writes the request head. The response's
    /// body reads the rest of the response and returns the connection to
    /// the pool once it has ended cleanly; fields passed on as they came
    /// are beside it. Connecting, and sending a request without a body
    /// until its response head has come, take no longer than the read
    /// timeout in all; a request body bounds each of its waits instead (it
    /// may take longer in all).
    pub(crate) async fn send(
        self: &Arc<Self>,
        key: &Key,
        encode: impl FnOnce(&mut Vec<u8>),
        mut out: Outgoing,
    ) -> Result<(Response<Body>, Option<RawFields>), Failure> {
        let deadline = tokio::time::Instant::now() + self.read_timeout;
        let (mut conn, pooled) = match self.checkout(key) {
            Some(conn) => (conn, true),
            None => (Box::pin(self.connect_by(key, deadline)).await?, false),
        };
        conn.wbuf.clear();
        encode(&mut conn.wbuf);
        let head = match conn.exchange(&mut out, self.read_timeout, deadline).await {
            Ok(head) => head,
            // The back end closed the pooled connection before it saw the
            // request, or while it worked on it: sent once more on a new
            // connection if that is safe.
            Err(Exchange::Stale(_)) if pooled && out.retryable => {
                let mut fresh = Box::pin(self.connect_by(key, deadline)).await?;
                std::mem::swap(&mut fresh.wbuf, &mut conn.wbuf);
                conn = fresh;
                conn.exchange(&mut out, self.read_timeout, deadline).await?
            }
            Err(e) => return Err(e.into()),
        };
        let keep = head.keep_alive;
        let decoder = Decoder::new(head.framing);
        let body = match decoder.remaining() {
            Some(0) => {
                self.release(key, conn, keep);
                Body::empty()
            }
            // The whole body came with the head (the common case for API
            // answers): the connection is free at once.
            Some(n) if conn.rbuf.len() as u64 >= n => {
                let data = conn.rbuf.split_to(n as usize).freeze();
                self.release(key, conn, keep);
                Body::from(data)
            }
            _ => Body::new(FromBackEnd {
                conn: Some(conn),
                decoder,
                keep,
                pool: self.clone(),
                key: key.clone(),
                silence: Stall::default(),
            }),
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.headers_mut() = head.headers;
        Ok((resp, head.raw))
    }

    /// After a complete response: back to the pool, unless either side
    /// asked to close or the back end sent more than the response.
    fn release(&self, key: &Key, conn: Box<Conn>, keep: bool) {
        if keep && conn.rbuf.is_empty() {
            self.checkin(key, conn);
        }
    }

    /// Opens a new connection for a request that asks for a protocol
    /// upgrade; the connection runs in a task of its own, which hands its
    /// socket over when the back end switches protocols.
    pub(crate) async fn send_upgrade(
        &self,
        key: &Key,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, Failure> {
        let io = Box::pin(self.connect_io(key)).await?;
        let (mut send, conn) = http1::handshake(io).await.map_err(Failure::Http)?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        send.send_request(req).await.map_err(Failure::Http)
    }
}

/// A response body read from the back end's connection as the client
/// side takes it.
struct FromBackEnd {
    /// `None` once the body has ended or failed.
    conn: Option<Box<Conn>>,
    decoder: Decoder,
    /// Whether the response head allows another request on the connection.
    keep: bool,
    pool: Arc<Pool>,
    key: Key,
    /// How long the back end may stay silent: the pool's read timeout
    /// from a read that found nothing.
    silence: Stall,
}

impl FromBackEnd {
    fn end(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.release(&self.key, conn, self.keep);
        }
    }

    fn fail(&mut self, e: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        // The connection is closed with it.
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }

    /// The back end has nothing more for now: waits for it no longer than
    /// the read timeout since the read that found nothing.
    fn poll_silence(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let timeout = self.pool.read_timeout;
        ready!(self.silence.poll_expired(cx, timeout));
        let scheme = if self.key.https { "https" } else { "http" };
        tracing::warn!(
            backend = %format_args!("{scheme}://{}", self.key.authority),
            timeout_secs = timeout.as_secs_f64(),
            "the back end sent nothing for the read timeout in the middle of a response body: the response is cut off"
        );
        crate::metrics::backend_body_timeout();
        self.fail(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the back end sent nothing for {}s in the middle of the response body",
                timeout.as_secs_f64()
            ),
        ))
    }
}

impl hyper::body::Body for FromBackEnd {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoder.decode(&mut conn.rbuf) {
                Ok(Decoded::Data(data)) => {
                    if this.decoder.is_done() {
                        this.end();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::Trailers(trailers)) => {
                    this.end();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Ok(Decoded::End) => {
                    this.end();
                    return Poll::Ready(None);
                }
                Ok(Decoded::More) => {}
                Err(Malformed(m)) => return this.fail(io::Error::other(m)),
            }
            conn.rbuf.reserve(BODY_READ);
            let read = tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.rbuf);
            let Poll::Ready(read) = read else {
                return this.poll_silence(cx);
            };
            // Bytes (or the end) came: the next wait starts afresh.
            this.silence.moved = true;
            match read {
                Ok(0) => match this.decoder.at_eof() {
                    Ok(()) => {
                        // Delimited by the close: never reused.
                        this.conn = None;
                        return Poll::Ready(None);
                    }
                    Err(Malformed(m)) => return this.fail(io::Error::other(m)),
                },
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, Read, Write};
    use std::sync::mpsc;

    use futures::StreamExt;
    use http_body_util::BodyExt;

    use super::*;

    /// A back end on a raw socket: for each connection, `answer` gets the
    /// request head (read up to its blank line, the body left unread) and
    /// the socket.
    fn raw_back_end(answer: impl Fn(String, std::net::TcpStream) + Send + Sync + 'static) -> Key {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let authority = Authority::try_from(listener.local_addr().unwrap().to_string()).unwrap();
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let answer = answer.clone();
                std::thread::spawn(move || {
                    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                    let mut head = String::new();
                    while !head.ends_with("\r\n\r\n") {
                        if reader.read_line(&mut head).unwrap_or(0) == 0 {
                            return;
                        }
                    }
                    answer(head, stream);
                });
            }
        });
        Key {
            https: false,
            authority,
        }
    }

    fn pool(read_timeout: Duration) -> Arc<Pool> {
        Arc::new(Pool::new(
            Duration::from_secs(5),
            read_timeout,
            4,
            Duration::from_secs(60),
        ))
    }

    fn idle(pool: &Pool) -> usize {
        let idle = pool.idle.lock().unwrap();
        idle.iter().map(|(_, list)| list.len()).sum()
    }

    async fn send(
        pool: &Arc<Pool>,
        key: &Key,
        head: &'static str,
        body: Option<Body>,
    ) -> Response<Body> {
        let out = Outgoing {
            head_request: false,
            retryable: false,
            chunked: body.is_some(),
            body,
        };
        match pool
            .send(key, |buf| buf.extend_from_slice(head.as_bytes()), out)
            .await
        {
            Ok((resp, _)) => resp,
            Err(Failure::Broken(m) | Failure::Malformed(m) | Failure::Connect(m)) => panic!("{m}"),
            Err(_) => panic!("the exchange failed"),
        }
    }

    const GET: &str = "GET / HTTP/1.1\r\nhost: x\r\n\r\n";
    const POST: &str = "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n";

    #[tokio::test]
    async fn each_exchange_on_a_reused_connection_gets_the_whole_read_timeout() {
        // The first request is answered after a while; the second, on the
        // same connection, never. The connection's timer, made for the
        // first exchange's deadline, must not end the second one early.
        let (held_tx, held_rx) = mpsc::channel();
        let key = raw_back_end(move |_, mut s| {
            // A slow back end: the first exchange's deadline is then well
            // before the second's.
            std::thread::sleep(Duration::from_millis(100));
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            while !head.ends_with("\r\n\r\n") {
                reader.read_line(&mut head).unwrap();
            }
            held_tx.send(s).unwrap();
        });
        let read_timeout = Duration::from_millis(300);
        let pool = pool(read_timeout);
        let first = send(&pool, &key, GET, None).await;
        assert_eq!(
            &first.into_body().collect().await.unwrap().to_bytes()[..],
            b"ok"
        );
        assert_eq!(idle(&pool), 1);
        let out = Outgoing {
            head_request: false,
            retryable: false,
            chunked: false,
            body: None,
        };
        let started = Instant::now();
        let second = tokio::time::timeout(
            Duration::from_secs(30),
            pool.send(&key, |buf| buf.extend_from_slice(GET.as_bytes()), out),
        )
        .await
        .expect("the read timeout ends the exchange");
        assert!(matches!(second, Err(Failure::TimedOut)));
        assert!(
            started.elapsed() >= read_timeout,
            "ended after {:?}",
            started.elapsed()
        );
        drop(held_rx);
    }

    #[tokio::test]
    async fn a_body_the_back_end_stops_sending_fails_after_the_read_timeout() {
        let (held_tx, held_rx) = mpsc::channel();
        let key = raw_back_end(move |_, mut s| {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                .unwrap();
            // Open, and silent.
            held_tx.send(s).unwrap();
        });
        let pool = pool(Duration::from_millis(200));
        let resp = send(&pool, &key, GET, None).await;
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"abc");
        let e = body.frame().await.unwrap().unwrap_err();
        assert!(e.to_string().contains("sent nothing"), "{e}");
        assert!(body.frame().await.is_none());
        assert_eq!(idle(&pool), 0, "the connection is not pooled");
        drop(held_rx);
    }

    #[tokio::test]
    async fn a_body_that_keeps_coming_is_never_cut_and_its_connection_reused() {
        // The rest of the body is sent once the first piece has been
        // taken; then the next request on the same connection answered.
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let go_rx = Mutex::new(go_rx);
        let key = raw_back_end(move |_, mut s| {
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
                .unwrap();
            go_rx.lock().unwrap().recv().unwrap();
            s.write_all(b"4\r\ndefg\r\n0\r\n\r\n").unwrap();
            let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            while !head.ends_with("\r\n\r\n") {
                reader.read_line(&mut head).unwrap();
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nagain")
                .unwrap();
            let _ = reader.read(&mut [0u8; 1]);
        });
        let pool = pool(Duration::from_secs(30));
        let mut body = send(&pool, &key, GET, None).await.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"abc");
        go_tx.send(()).unwrap();
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(&rest[..], b"defg");
        assert_eq!(idle(&pool), 1);
        let again = send(&pool, &key, GET, None).await.into_body();
        assert_eq!(&again.collect().await.unwrap().to_bytes()[..], b"again");
    }

    /// A request body without end: only an early answer ends its sending.
    fn endless() -> Body {
        let piece = Bytes::from(vec![b'x'; 64 * 1024]);
        Body::from_stream(tokio_stream::iter(
            std::iter::repeat(piece).map(Ok::<_, io::Error>),
        ))
    }

    #[tokio::test]
    async fn an_early_answer_ends_the_upload() {
        let (held_tx, held_rx) = mpsc::channel();
        let key = raw_back_end(move |_, mut s| {
            s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap();
            s.write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo much")
                .unwrap();
            held_tx.send(s).unwrap();
        });
        let pool = pool(Duration::from_secs(30));
        let resp = tokio::time::timeout(
            Duration::from_secs(60),
            send(&pool, &key, POST, Some(endless())),
        )
        .await
        .expect("the early answer is taken while the body goes out");
        assert_eq!(resp.status(), 413);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"too much");
        assert_eq!(idle(&pool), 0, "the connection is not pooled");
        drop(held_rx);
    }

    #[tokio::test]
    async fn an_upload_that_stops_moving_fails_after_the_read_timeout() {
        let (held_tx, held_rx) = mpsc::channel();
        // Reads the head, then nothing more, and never answers.
        let key = raw_back_end(move |_, s| held_tx.send(s).unwrap());
        let pool = pool(Duration::from_millis(200));
        let post = |body| {
            let out = Outgoing {
                head_request: false,
                retryable: false,
                chunked: true,
                body: Some(body),
            };
            pool.send(&key, |buf| buf.extend_from_slice(POST.as_bytes()), out)
        };
        // The back end takes none of an endless body.
        let sent = tokio::time::timeout(Duration::from_secs(60), post(endless())).await;
        assert!(matches!(sent, Ok(Err(Failure::TimedOut))));
        // The client sends a piece, then nothing.
        let stopping = futures::stream::iter([Ok::<_, io::Error>(Bytes::from_static(b"piece"))])
            .chain(futures::stream::pending());
        let sent =
            tokio::time::timeout(Duration::from_secs(60), post(Body::from_stream(stopping))).await;
        assert!(matches!(sent, Ok(Err(Failure::ClientStalled))));
        assert_eq!(idle(&pool), 0);
        drop(held_rx);
    }

    #[tokio::test]
    async fn a_back_end_closing_while_the_body_goes_out_is_a_failure() {
        let key = raw_back_end(|_, s| drop(s));
        let pool = pool(Duration::from_secs(30));
        let out = Outgoing {
            head_request: false,
            retryable: false,
            chunked: true,
            body: Some(endless()),
        };
        let sent = tokio::time::timeout(
            Duration::from_secs(60),
            pool.send(&key, |buf| buf.extend_from_slice(POST.as_bytes()), out),
        )
        .await
        .expect("the close is noticed");
        match sent {
            Err(Failure::Broken(m)) => assert!(m.contains("before a response"), "{m}"),
            Ok(_) => panic!("an answer from a closed connection"),
            Err(_) => panic!("not a broken connection"),
        }
    }
}
