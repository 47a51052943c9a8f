//! Connections to back ends. Each HTTP/1.1 connection is driven inside the
//! task of the request that uses it: no task per connection, no channel
//! hop between tasks, no task per response to return the connection.
//! Between requests, idle connections wait in a small pool per back end
//! and are checked out and in under a short lock.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::uri::Authority;
use axum::http::{Request, Response, Uri};
use bytes::Bytes;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tower::Service;

type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector>;
type Io = hyper_rustls::MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;
type Conn = http1::Connection<Io, Body>;

/// Which back end a connection talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    pub https: bool,
    pub authority: Authority,
}

/// An open connection, with the handle requests are sent through.
struct Open {
    send: SendRequest<Body>,
    conn: Conn,
}

struct Idle {
    open: Box<Open>,
    since: Instant,
}

/// Why a request found no answer.
pub(crate) enum Failure {
    /// No connection could be made.
    Connect(String),
    /// The connection failed while the request was sent or the response read.
    Http(hyper::Error),
}

/// The idle connections of every back end.
pub(crate) struct Pool {
    connector: HttpsConnector,
    idle: Mutex<Vec<(Key, Vec<Idle>)>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub(crate) fn new(connect_timeout: Duration, max_idle: usize, idle_timeout: Duration) -> Self {
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
        }
    }

    fn checkout(&self, key: &Key) -> Option<Box<Open>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = &mut idle.iter_mut().find(|(k, _)| k == key)?.1;
        // The most recently used first: the others may have timed out.
        while let Some(c) = list.pop() {
            if c.since.elapsed() < self.idle_timeout && !c.open.send.is_closed() {
                return Some(c.open);
            }
        }
        None
    }

    fn checkin(&self, key: &Key, open: Box<Open>) {
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
            open,
            since: Instant::now(),
        });
    }

    async fn connect(&self, key: &Key) -> Result<Box<Open>, Failure> {
        let uri = Uri::builder()
            .scheme(if key.https { "https" } else { "http" })
            .authority(key.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let io = self.connector.clone().call(uri).await.map_err(|e| {
            let mut msg = e.to_string();
            let mut cur = e.source();
            while let Some(s) = cur {
                msg = s.to_string();
                cur = s.source();
            }
            Failure::Connect(msg)
        })?;
        let (send, conn) = http1::handshake(io).await.map_err(Failure::Http)?;
        Ok(Box::new(Open { send, conn }))
    }

    /// Sends `req` (origin-form URI, `Host` set) over a pooled or new
    /// connection and waits for the response head, driving the connection
    /// meanwhile. The response's body keeps driving it and returns it to
    /// the pool once complete.
    pub(crate) async fn send(
        self: &Arc<Self>,
        key: &Key,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, Failure> {
        // A pooled connection the back end closed meanwhile hands the
        // request back unsent: it is then sent over a new connection.
        while let Some(open) = self.checkout(key) {
            match self.exchange(key, open, req).await {
                Ok(resp) => return Ok(resp),
                Err(Exchange::Unsent(r)) => req = *r,
                Err(Exchange::Failed(e)) => return Err(Failure::Http(e)),
            }
        }
        // Boxed: connecting is rare, and its large future would otherwise
        // be part of (and copied with) every request's.
        let open = Box::pin(self.connect(key)).await?;
        match self.exchange(key, open, req).await {
            Ok(resp) => Ok(resp),
            Err(Exchange::Unsent(_)) => Err(Failure::Connect(
                "the back end closed the connection at once".into(),
            )),
            Err(Exchange::Failed(e)) => Err(Failure::Http(e)),
        }
    }

    async fn exchange(
        self: &Arc<Self>,
        key: &Key,
        mut open: Box<Open>,
        req: Request<Body>,
    ) -> Result<Response<Body>, Exchange> {
        let mut response = std::pin::pin!(open.send.try_send_request(req));
        let mut live = true;
        let head = std::future::poll_fn(|cx| {
            if live && Pin::new(&mut open.conn).poll(cx).is_ready() {
                // Closed or failed: the response future now resolves with
                // the outcome.
                live = false;
            }
            response.as_mut().poll(cx)
        })
        .await;
        let resp = match head {
            Ok(r) => r,
            Err(mut e) => {
                return Err(match e.take_message() {
                    Some(req) => Exchange::Unsent(Box::new(req)),
                    None => Exchange::Failed(e.into_error()),
                })
            }
        };
        let (parts, body) = resp.into_parts();
        let lease = live.then(|| Lease {
            pool: self.clone(),
            key: key.clone(),
            open: Some(open),
        });
        let mut driven = Driven { body, lease };
        if driven.body.is_end_stream() {
            driven.finish(&mut Context::from_waker(Waker::noop()));
            return Ok(Response::from_parts(parts, Body::empty()));
        }
        Ok(Response::from_parts(parts, Body::new(driven)))
    }

    /// Opens a new connection for a request that asks for a protocol
    /// upgrade; the connection runs in a task of its own, which hands its
    /// socket over when the back end switches protocols.
    pub(crate) async fn send_upgrade(
        &self,
        key: &Key,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, Failure> {
        let Open { mut send, conn } = *Box::pin(self.connect(key)).await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        send.send_request(req).await.map_err(Failure::Http)
    }
}

enum Exchange {
    /// The connection closed before the request was written.
    Unsent(Box<Request<Body>>),
    Failed(hyper::Error),
}

/// A connection lent to one request until its response is complete.
struct Lease {
    pool: Arc<Pool>,
    key: Key,
    open: Option<Box<Open>>,
}

impl Lease {
    /// Lets the connection make progress; forgets it once it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(open) = self.open.as_mut() {
            if Pin::new(&mut open.conn).poll(cx).is_ready() {
                self.open = None;
            }
        }
    }

    /// After the response: one more turn so the connection takes in the
    /// end of the message, then back to the pool if it is ready for the
    /// next request.
    fn finish(mut self, cx: &mut Context<'_>) {
        // Usually the turn that read the end of the response already made
        // the connection ready.
        if !self.open.as_ref().is_some_and(|o| o.send.is_ready()) {
            self.drive(cx);
        }
        if let Some(open) = self.open.take() {
            if open.send.is_ready() {
                self.pool.checkin(&self.key, open);
            }
        }
    }
}

/// A response body that drives its connection as it is read.
struct Driven {
    body: Incoming,
    lease: Option<Lease>,
}

impl Driven {
    fn finish(&mut self, cx: &mut Context<'_>) {
        if let Some(lease) = self.lease.take() {
            lease.finish(cx);
        }
    }
}

impl hyper::body::Body for Driven {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        // What the connection has read is taken first; it is driven only
        // when more is needed.
        let mut polled = Pin::new(&mut this.body).poll_frame(cx);
        if polled.is_pending() {
            if let Some(lease) = this.lease.as_mut() {
                lease.drive(cx);
                polled = Pin::new(&mut this.body).poll_frame(cx);
            }
        }
        match &polled {
            Poll::Ready(None) => this.finish(cx),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.finish(cx),
            Poll::Ready(Some(Err(_))) => this.lease = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
