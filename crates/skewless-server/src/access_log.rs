//! The access log: one JSON line per request, written by a thread of its
//! own so the request path never waits on the disk.
//!
//! When a request's response ends, its record (the fields of its line) is
//! copied to its thread's bounded queue, behind a lock per thread. The
//! writer thread takes each queue every [`writer::TICK`] and on shutdown,
//! formats the lines in one go and writes them with one system call per
//! queue; while lines come a request never wakes it, and after a tick
//! that brought none it sleeps until the next line. When a queue is
//! full the line is dropped and counted
//! (`skewless_access_log_dropped_total`); a failing write (a full disk) is
//! counted (`skewless_access_log_write_errors_total`) and never stops the
//! server. A log file is opened for appending and reopened on `SIGHUP`, for
//! rotation.
//!
//! Query strings, cookies and the `Authorization` header are never
//! written: the path is logged without its query, and the only thing taken
//! from the headers is the release id the client says it runs.

mod line;
mod writer;

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use arrayvec::ArrayString;
use axum::body::Body;
use axum::http::{header, HeaderName, Method, Request};
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use metrics::Counter;
use skewless_core::id;

use crate::gateway::pin::RequestPin;
use crate::metrics::Kind;
use crate::ServerError;
pub use line::{Fields, LogKind};
use writer::{target_name, write_loop, Msg, Push, Shards, Sink, Target};

const SERVED_BY: HeaderName = HeaderName::from_static("skewless-served-by");
const EVENTS_PATH: &str = "/_skewless/events";

struct Shared {
    /// Lines waiting for the writer.
    shards: Arc<Shards>,
    /// To the writer, which sees it close once every handle is gone
    /// (taken when the last one goes).
    control: Option<SyncSender<Msg>>,
    /// Whether the target is a file (which `SIGHUP` reopens).
    file: bool,
    /// Set on `SIGHUP`; the writer reopens the file when it sees it.
    reopen: Arc<AtomicBool>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Shared {
    /// Asks the writer to reopen the file.
    fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        self.shards.wake();
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The channel closes before the writer, which may be waiting for a
        // line, is woken to see it.
        drop(self.control.take());
        self.shards.wake();
    }
}

/// The access log, or its absence; cheap to hold per request.
#[derive(Clone, Default)]
pub struct AccessLog {
    shared: Option<Arc<Shared>>,
}

fn dropped() -> &'static Counter {
    static C: OnceLock<Counter> = OnceLock::new();
    C.get_or_init(|| metrics::counter!("skewless_access_log_dropped_total"))
}

impl AccessLog {
    /// No access log.
    pub fn off() -> AccessLog {
        AccessLog::default()
    }

    /// Starts writing to `target`: `-` for standard output, else a file
    /// opened for appending (created if missing).
    pub fn open(target: &Path) -> Result<AccessLog, ServerError> {
        metrics::describe_counter!(
            "skewless_access_log_dropped_total",
            "Access-log lines dropped because the writer fell behind."
        );
        metrics::describe_counter!(
            "skewless_access_log_write_errors_total",
            "Failed writes to the access log (a full disk, a closed output)."
        );
        let target = if target.as_os_str() == "-" {
            Target::Stdout
        } else {
            Target::File(target.to_owned())
        };
        let sink = Sink::open(&target).map_err(|e| {
            ServerError::Startup(format!(
                "cannot open access log {}: {e}",
                target_name(&target)
            ))
        })?;
        let (control, control_rx) = mpsc::sync_channel(1);
        // The writer holds no sender: once every handle is gone it sees
        // the channel close, writes what is queued and ends (records kept
        // for reuse hold a handle until their thread ends; a server closes
        // its log when it stops).
        let reopen = Arc::new(AtomicBool::new(false));
        let shards = Arc::new(Shards::new());
        let shared = Arc::new(Shared {
            shards: shards.clone(),
            control: Some(control),
            file: matches!(target, Target::File(_)),
            reopen: reopen.clone(),
            writer: Mutex::new(None),
        });
        let handle = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(shards, control_rx, target, sink, &reopen))
            .map_err(|e| ServerError::Startup(format!("cannot start the access log: {e}")))?;
        *shared.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(AccessLog {
            shared: Some(shared),
        })
    }

    /// Reopens the log file on every `SIGHUP` (after it was moved away).
    /// Must run inside the Tokio runtime.
    pub fn reopen_on_hangup(&self) {
        let Some(shared) = self.shared.clone().filter(|s| s.file) else {
            return;
        };
        #[cfg(unix)]
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hup = match signal(SignalKind::hangup()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGHUP; the access log will not be reopened");
                    return;
                }
            };
            while hup.recv().await.is_some() {
                shared.reopen();
            }
        });
        #[cfg(not(unix))]
        drop(shared);
    }

    /// Whether lines are written at all.
    pub fn is_on(&self) -> bool {
        self.shared.is_some()
    }

    /// Whether both are the same log (or both off).
    fn same(&self, other: &AccessLog) -> bool {
        match (&self.shared, &other.shared) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    /// Queues a line for the writer without waiting on it.
    pub fn log(&self, f: &Fields<'_>) {
        let Some(shared) = &self.shared else { return };
        match shared.shards.push(f) {
            Push::Queued => {}
            Push::Full => dropped().increment(1),
            // Closed at shutdown: nothing more is written.
            Push::Closed => {}
        }
    }

    /// Flushes what is written and stops the writer (at shutdown). Waits
    /// up to a few seconds; says whether the writer finished.
    pub fn close(&self) -> bool {
        let Some(shared) = &self.shared else {
            return true;
        };
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        let sent = shared
            .control
            .as_ref()
            .is_some_and(|c| c.send(Msg::Close(ack_tx)).is_ok());
        shared.shards.wake();
        let acked = sent && ack_rx.recv_timeout(Duration::from_secs(5)).is_ok();
        let handle = shared
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let (true, Some(h)) = (acked, handle) {
            // It has answered its last message and is returning.
            let _ = h.join();
        }
        acked
    }

    /// Starts the record of a request the general HTTP stack answers;
    /// `pin` is its pin if the caller worked it out already.
    pub(crate) fn start<B>(
        &self,
        req: &Request<B>,
        peer: SocketAddr,
        pin: Option<&RequestPin>,
    ) -> Option<Started> {
        self.shared.as_ref()?;
        let uri = req.uri();
        let path = uri.path();
        let worked_out;
        let requested = match pin {
            Some(p) => p,
            None => {
                worked_out = RequestPin::of(req.method(), req.headers());
                &worked_out
            }
        };
        let pin = if path == EVENTS_PATH {
            events_release(uri.query())
        } else {
            None
        }
        .or_else(|| pinned_path(path))
        .or(requested.as_str());
        let spare = SPARE
            .try_with(|spare| spare.try_borrow_mut().ok().and_then(|mut s| s.pop()))
            .ok()
            .flatten();
        let mut record = spare.unwrap_or_else(|| Box::new(Record::blank()));
        // A spare keeps the handle of the log it was last used for: taking
        // it again costs no count up here and down when the request ends.
        if !record.log.same(self) {
            record.log = self.clone();
        }
        // Field by field, in place: the record is a few hundred bytes.
        // The status, kind and served release are set by `respond`.
        let line = &mut record.line;
        line.time = SystemTime::now();
        line.client = peer.ip();
        line.bytes = 0;
        line.pin.set(pin);
        record.set_method(req.method());
        record.set_path(path);
        Some(Started(record))
    }

    /// Logs a request hyper refused before it reached the gateway (a head
    /// over the buffer, a malformed request line), if `err` is one.
    pub fn protocol_refusal(&self, peer: SocketAddr, err: &(dyn std::error::Error + 'static)) {
        if !self.is_on() {
            return;
        }
        let Some(err) = err.downcast_ref::<hyper::Error>() else {
            return;
        };
        let status = if err.is_parse_too_large() {
            431
        } else if err.is_parse() && !err.is_parse_version_h2() {
            400
        } else {
            return;
        };
        self.log(&Fields {
            time: SystemTime::now(),
            client: peer.ip(),
            method: None,
            path: None,
            status,
            bytes: 0,
            duration: Duration::ZERO,
            release: None,
            pin: None,
            kind: LogKind::System,
        });
    }
}

/// The release a `/_r/<id>/…` path asks for.
fn pinned_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/_r/")?;
    let id = rest.split('/').next()?;
    id::is_valid(id).then_some(id)
}

/// The `release` parameter of an event stream's query, if it is an id.
pub(crate) fn events_release(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .filter_map(|kv| kv.strip_prefix("release="))
        .find(|v| id::is_valid(v))
}

/// A release id, kept inline; empty for none.
#[derive(Clone, Copy)]
struct ReleaseText(ArrayString<64>);

impl ReleaseText {
    /// No id.
    const NONE: ReleaseText = ReleaseText(ArrayString::new_const());

    /// Makes it `id` (or none), in place: built elsewhere and copied in,
    /// its bytes would be read back in wider pieces than they were just
    /// written in, which stalls.
    fn set(&mut self, id: Option<&str>) {
        self.0.clear();
        if let Some(id) = id {
            // An id over the room is not one; it is left out.
            let _ = self.0.try_push_str(id);
        }
    }

    /// The id, if there is one (a valid id is never empty).
    fn get(&self) -> Option<&str> {
        (!self.0.is_empty()).then_some(&self.0)
    }
}

/// A boxed request record on its way through the general stack: it
/// travels with the response, which is moved several times on its way
/// out.
pub struct Started(Box<Record>);

/// Bytes of a path kept inline; a longer one is kept on the heap and its
/// line formatted when the request ends.
const PATH_INLINE: usize = 120;

/// The standard request methods; a line names its method by its place. A
/// `static`, not a `const`: each use of a `const` array of methods would
/// build the array and drop it again.
static METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::CONNECT,
    Method::TRACE,
];

impl Started {
    /// Wraps the response (to a request of this kind) so its line is
    /// written when its body ends.
    pub fn respond(self, resp: Response, kind: Kind) -> Response<LoggedBody> {
        let kind = match kind {
            Kind::Shell => LogKind::Shell,
            Kind::Asset => LogKind::Asset,
            Kind::Api => LogKind::Api,
            Kind::System => {
                let ct = resp.headers().get(header::CONTENT_TYPE);
                if ct.is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream")) {
                    LogKind::EventStream
                } else {
                    LogKind::System
                }
            }
        };
        let mut record = self.0;
        let line = &mut record.line;
        // A scan of the response's few fields costs less than hashing a
        // name outside the standard set for a look-up.
        let served = resp
            .headers()
            .iter()
            .find(|(name, _)| **name == SERVED_BY)
            .and_then(|(_, value)| value.to_str().ok());
        line.release.set(served);
        line.status = resp.status().as_u16();
        line.kind = kind;
        resp.map(|inner| LoggedBody {
            inner,
            record: Some(record),
        })
    }
}

/// Wraps a response (to a request of this kind) for hyper: logged if
/// `started` is.
pub fn respond(started: Option<Started>, resp: Response, kind: Kind) -> Response<LoggedBody> {
    match started {
        Some(s) => s.respond(resp, kind),
        None => resp.map(|inner| LoggedBody {
            inner,
            record: None,
        }),
    }
}

/// What a request's line says, as it is copied to the writer's queue:
/// plain data, copied in one piece.
#[derive(Clone, Copy)]
pub(super) struct Line {
    /// When the request arrived. Its duration is measured on the same
    /// clock, as nginx measures `$request_time`: one clock read fewer per
    /// request, and a step of the system clock during a request shows in
    /// its duration (never below zero).
    time: SystemTime,
    /// Set when the body ends.
    duration: Duration,
    client: IpAddr,
    /// Body bytes handed to the connection so far.
    bytes: u64,
    /// Set when the response is known.
    status: u16,
    kind: LogKind,
    /// The place in [`METHODS`] of a standard method.
    method: u8,
    /// The path, when it fits.
    path: ArrayString<PATH_INLINE>,
    /// The release the client runs; empty for none.
    pin: ReleaseText,
    /// The release that answered (`Skewless-Served-By`), copied (a
    /// shared field value would be counted up here and down on the
    /// writer's thread); empty for none.
    release: ReleaseText,
}

impl Line {
    /// Its fields, when its path and method are its own (see
    /// [`Record::queued_as_is`]).
    pub(super) fn fields(&self) -> Fields<'_> {
        Fields {
            time: self.time,
            client: self.client,
            method: Some(METHODS[usize::from(self.method)].as_str()),
            path: Some(self.path.as_str()),
            status: self.status,
            bytes: self.bytes,
            duration: self.duration,
            release: self.release.get(),
            pin: self.pin.get(),
            kind: self.kind,
        }
    }
}

/// A request's record: its line, and what does not fit in it.
struct Record {
    /// The log it goes to; kept while the record waits for reuse.
    log: AccessLog,
    line: Line,
    /// A path longer than the line's room for it.
    long_path: Option<Box<str>>,
    /// A method outside the standard ones.
    other_method: Option<Method>,
}

impl Record {
    /// A record to fill in.
    fn blank() -> Record {
        Record {
            log: AccessLog::off(),
            line: Line {
                time: SystemTime::UNIX_EPOCH,
                duration: Duration::ZERO,
                client: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                bytes: 0,
                status: 0,
                kind: LogKind::System,
                method: 0,
                path: ArrayString::new(),
                pin: ReleaseText::NONE,
                release: ReleaseText::NONE,
            },
            long_path: None,
            other_method: None,
        }
    }

    /// Keeps `path`, inline when it fits.
    fn set_path(&mut self, path: &str) {
        self.line.path.clear();
        if self.line.path.try_push_str(path).is_err() {
            self.long_path = Some(path.into());
        }
    }

    /// Keeps `method`, as its place among the standard ones when it is
    /// one of them.
    fn set_method(&mut self, method: &Method) {
        match METHODS.iter().position(|m| m == method) {
            Some(i) => self.line.method = i as u8,
            None => self.other_method = Some(method.clone()),
        }
    }

    /// Whether the line holds its path and method itself, and so can be
    /// queued as it is.
    fn queued_as_is(&self) -> bool {
        self.long_path.is_none() && self.other_method.is_none()
    }

    /// Its line's fields.
    fn fields(&self) -> Fields<'_> {
        let mut f = self.line.fields();
        if let Some(p) = &self.long_path {
            f.path = Some(p);
        }
        if let Some(m) = &self.other_method {
            f.method = Some(m.as_str());
        }
        f
    }
}

/// A response body that writes its request's line when it ends, is
/// abandoned, or was never sent (`HEAD`, `304`).
pub struct LoggedBody {
    inner: Body,
    record: Option<Box<Record>>,
}

thread_local! {
    /// Records of finished requests, kept for the next ones on this
    /// thread, the last one first (the likeliest still in the caches):
    /// with many requests in flight, the allocator's own per-thread cache
    /// (a few blocks of each size) runs dry and every record would take
    /// its slow path.
    // Boxes, not records: each is handed to a request as it is.
    #[allow(clippy::vec_box)]
    static SPARE: RefCell<Vec<Box<Record>>> = const { RefCell::new(Vec::new()) };
}

/// Records a thread keeps for reuse at most.
const SPARE_RECORDS: usize = 256;

impl LoggedBody {
    fn finish(&mut self) {
        let Some(mut r) = self.record.take() else {
            return;
        };
        r.line.duration = r.line.time.elapsed().unwrap_or_default();
        if let Some(shared) = &r.log.shared {
            // A path or method that does not fit the line is rare: that
            // line is formatted here and now.
            let queued = if r.queued_as_is() {
                shared.shards.push_line(&r.line)
            } else {
                shared.shards.push(&r.fields())
            };
            if queued == Push::Full {
                dropped().increment(1);
            }
        }
        // Nothing but the log's handle outlives the request.
        r.long_path = None;
        r.other_method = None;
        // During a thread's teardown the list may be gone already; the
        // record is then simply freed.
        let _ = SPARE.try_with(|spare| {
            if let Ok(mut spare) = spare.try_borrow_mut() {
                if spare.len() < SPARE_RECORDS {
                    spare.push(r);
                }
            }
        });
    }
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(r), Some(data)) = (self.record.as_mut(), frame.data_ref()) {
                    r.line.bytes += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish();
                }
            }
            Poll::Ready(_) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The record of a request on the lean event-stream path, written when it
/// is dropped (however the stream ends), if it was answered.
pub struct StreamRecord {
    log: AccessLog,
    /// When the stream was asked for; its duration is measured on the
    /// same clock (see [`Record`]).
    time: SystemTime,
    client: IpAddr,
    /// The status answered; nothing is written while it is 0.
    pub status: u16,
    /// Body bytes written.
    pub bytes: u64,
    /// The release the stream follows.
    pin: ReleaseText,
}

impl AccessLog {
    /// Starts the record of an event stream served by the lean path.
    pub fn stream(&self, peer: SocketAddr) -> StreamRecord {
        let on = self.is_on();
        StreamRecord {
            log: self.clone(),
            time: if on {
                SystemTime::now()
            } else {
                SystemTime::UNIX_EPOCH
            },
            client: peer.ip(),
            status: 0,
            bytes: 0,
            pin: ReleaseText::NONE,
        }
    }
}

impl StreamRecord {
    /// Notes the release the stream follows (an id over 64 bytes is not
    /// one and is left out).
    pub fn set_pin(&mut self, id: Option<&str>) {
        self.pin.set(id);
    }
}

impl Drop for StreamRecord {
    fn drop(&mut self) {
        if self.status == 0 || !self.log.is_on() {
            return;
        }
        self.log.log(&Fields {
            time: self.time,
            client: self.client,
            method: Some("GET"),
            path: Some(EVENTS_PATH),
            status: self.status,
            bytes: self.bytes,
            duration: self.time.elapsed().unwrap_or_default(),
            release: None,
            pin: self.pin.get(),
            kind: LogKind::EventStream,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::line::tests::fields;
    use super::*;
    use axum::http::HeaderValue;
    use std::time::Instant;

    #[test]
    fn pins_come_from_the_path_or_the_event_query() {
        assert_eq!(pinned_path("/_r/v1/app.js"), Some("v1"));
        assert_eq!(pinned_path("/_r/v1"), Some("v1"));
        assert_eq!(pinned_path("/_r/../x"), None);
        assert_eq!(pinned_path("/assets/x"), None);
        assert_eq!(events_release(Some("client=c&release=v3")), Some("v3"));
        assert_eq!(events_release(Some("release=bad%20id")), None);
        assert_eq!(events_release(None), None);
        let mut kept = ReleaseText::NONE;
        assert_eq!(kept.get(), None);
        kept.set(Some("v-1.2"));
        assert_eq!(kept.get(), Some("v-1.2"));
        kept.set(Some(&"x".repeat(64)));
        assert_eq!(kept.get().map(str::len), Some(64));
        kept.set(Some(&"x".repeat(65)));
        assert_eq!(kept.get(), None);
        kept.set(Some("v2"));
        kept.set(None);
        assert_eq!(kept.get(), None);
    }

    #[test]
    fn paths_and_methods_are_kept_whole_inline_or_not() {
        for path in [
            String::new(),
            "/".into(),
            "/caf\u{e9}".into(),
            "/".repeat(PATH_INLINE),
            format!("/{}", "\u{e9}".repeat(PATH_INLINE)),
        ] {
            let mut r = Record::blank();
            r.set_path(&path);
            assert_eq!(r.fields().path, Some(path.as_str()));
            assert_eq!(r.queued_as_is(), path.len() <= PATH_INLINE);
        }
        for method in METHODS
            .iter()
            .cloned()
            .chain([Method::from_bytes(b"PROPFIND").unwrap()])
        {
            let mut r = Record::blank();
            r.set_method(&method);
            assert_eq!(r.fields().method, Some(method.as_str()));
            assert_eq!(r.queued_as_is(), METHODS.contains(&method));
        }
    }

    /// Waits up to 10 s for `done`, failing with `what`.
    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn an_idle_writer_sleeps_until_a_line_comes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        // Here the writer never wakes by itself (`writer::IDLE_WAIT`).
        let log = AccessLog::open(&path).unwrap();
        let shards = &log.shared.as_ref().unwrap().shards;
        let asleep = || wait_until("the writer never went to sleep", || shards.parked());
        let lines = || {
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .count()
        };
        let peer: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        for n in 1..=4 {
            // A tick without lines: the writer waits to be woken.
            asleep();
            if n < 4 {
                log.log(&fields(Some(&format!("/{n}"))));
            } else {
                // A request's record wakes it too.
                let req = Request::get("/record").body(()).unwrap();
                let started = log.start(&req, peer, None).unwrap();
                drop(started.respond(Response::new(Body::empty()), Kind::Asset));
            }
            // The push itself took the flag down, waking the writer (or
            // the writer has already written the line and gone back to
            // sleep).
            assert!(!shards.parked() || lines() == n);
            wait_until("the line never reached the file", || lines() == n);
        }
        // Asleep, it still sees a close.
        asleep();
        assert!(log.close(), "the sleeping writer never saw the close");

        // Asleep, it ends when the last handle goes.
        let log = AccessLog::open(&dir.path().join("other.log")).unwrap();
        let shared = log.shared.as_ref().unwrap();
        wait_until("the writer never went to sleep", || shared.shards.parked());
        let writer = shared.writer.lock().unwrap().take().unwrap();
        drop(log);
        wait_until("the sleeping writer never saw its last handle go", || {
            writer.is_finished()
        });
    }

    #[test]
    fn lines_reach_the_file_and_a_moved_file_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let log = rt.block_on(async { AccessLog::open(&path) }).unwrap();
        log.log(&fields(Some("/one")));
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        let shared = log.shared.as_ref().unwrap();
        shared.reopen();
        wait_until("the writer never reopened", || {
            !shared.reopen.load(Ordering::Acquire)
        });
        log.log(&fields(Some("/two")));
        log.close();
        let old = std::fs::read_to_string(dir.path().join("access.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(
            old.contains("\"/one\"") && !old.contains("\"/two\""),
            "{old}"
        );
        assert!(
            new.contains("\"/two\"") && !new.contains("\"/one\""),
            "{new}"
        );
    }

    /// A log whose writer never runs.
    fn without_writer() -> (AccessLog, mpsc::Receiver<Msg>) {
        let (control, rx) = mpsc::sync_channel(1);
        let log = AccessLog {
            shared: Some(Arc::new(Shared {
                shards: Arc::new(Shards::new()),
                control: Some(control),
                file: false,
                reopen: Arc::default(),
                writer: Mutex::new(None),
            })),
        };
        (log, rx)
    }

    fn queued(log: &AccessLog) -> Vec<u8> {
        take(log, false).0
    }

    /// What the writer would take and write: the lines, and how many it
    /// counted.
    fn take(log: &AccessLog, last: bool) -> (Vec<u8>, usize) {
        let (mut spares, mut batches) = (Vec::new(), Vec::new());
        let n = log
            .shared
            .as_ref()
            .unwrap()
            .shards
            .take(&mut spares, &mut batches, last);
        let (mut text, mut scratch) = (Vec::new(), Vec::new());
        for mut b in batches {
            text.extend_from_slice(b.text(&mut scratch));
            b.finish();
        }
        (text, n)
    }

    #[test]
    fn a_writer_that_falls_behind_never_holds_up_a_request() {
        // A writer that never takes: the queue fills, then lines are
        // dropped at once instead of waiting.
        let (log, _rx) = without_writer();
        for i in 0..writer::QUEUE_LINES + 1000 {
            log.log(&fields(Some(&format!("/{i}"))));
        }
        let batch = queued(&log);
        let lines: Vec<&[u8]> = batch.split_inclusive(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), writer::QUEUE_LINES);
        // The first ones are kept, whole and in order.
        for (i, l) in lines.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_slice(l).unwrap();
            assert_eq!(v["path"], format!("/{i}"));
        }
        // Taken, the queue has room again.
        log.log(&fields(Some("/after")));
        assert!(String::from_utf8(queued(&log))
            .unwrap()
            .contains("\"/after\""));
    }

    #[test]
    fn queued_records_are_bounded_and_a_refused_one_is_kept_for_reuse() {
        let (log, _rx) = without_writer();
        let peer: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        // Records count their size against the bound in bytes.
        let fit = writer::QUEUE_LINES.min(writer::QUEUE_BYTES / writer::LINE_SIZE);
        SPARE.with_borrow_mut(Vec::clear);
        let request = |i: usize| {
            let req = Request::get(format!("/{i}")).body(()).unwrap();
            let started = log.start(&req, peer, None).unwrap();
            drop(started.respond(Response::new(Body::empty()), Kind::Asset));
        };
        for i in 0..=fit {
            request(i);
        }
        // Each request past the bound is refused, and its record kept
        // here for the next request to use: no more are made.
        let kept = SPARE.with_borrow(Vec::len);
        assert!(kept > 0);
        for i in fit + 1..fit + 10 {
            request(i);
            assert_eq!(SPARE.with_borrow(Vec::len), kept);
        }
        let (text, n) = take(&log, false);
        assert_eq!(n, fit);
        let text = String::from_utf8(text).unwrap();
        let last = text.lines().last().unwrap();
        let v: serde_json::Value = serde_json::from_str(last).unwrap();
        assert_eq!(v["path"], format!("/{}", fit - 1));
        // Taken, the queue has room again.
        let req = Request::get("/after").body(()).unwrap();
        drop(
            log.start(&req, peer, None)
                .unwrap()
                .respond(Response::new(Body::empty()), Kind::Asset),
        );
        assert!(String::from_utf8(queued(&log))
            .unwrap()
            .contains("\"/after\""));
        SPARE.with_borrow_mut(Vec::clear);
    }

    #[test]
    fn long_lines_are_bounded_by_bytes_too() {
        let (log, _rx) = without_writer();
        let long = format!("/{}", "y".repeat(10_000));
        for _ in 0..writer::QUEUE_LINES {
            log.log(&fields(Some(&long)));
        }
        let batch = queued(&log);
        assert!(batch.len() <= writer::QUEUE_BYTES, "{}", batch.len());
        let n = batch.iter().filter(|&&b| b == b'\n').count();
        let mut one = Vec::new();
        line::write_line(&mut one, &fields(Some(&long)));
        let line_len = one.len();
        assert_eq!(n, writer::QUEUE_BYTES / line_len);
    }

    #[test]
    fn after_the_last_take_nothing_is_queued() {
        let (log, _rx) = without_writer();
        let shards = &log.shared.as_ref().unwrap().shards;
        assert_eq!(shards.push(&fields(Some("/a"))), Push::Queued);
        assert_eq!(shards.push(&fields(Some("/b"))), Push::Queued);
        let (batch, n) = take(&log, true);
        assert_eq!(n, 2);
        let text = String::from_utf8(batch).unwrap();
        assert!(text.contains("\"/a\"") && text.contains("\"/b\""), "{text}");
        assert_eq!(shards.push(&fields(Some("/c"))), Push::Closed);
        // Nor on a thread that had no queue yet.
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(shards.push(&fields(Some("/d"))), Push::Closed));
        });
        assert_eq!(take(&log, true), (Vec::new(), 0));
    }

    #[test]
    fn the_lines_of_a_thread_that_ended_are_written_and_its_queue_goes() {
        let (log, _rx) = without_writer();
        let shards = &log.shared.as_ref().unwrap().shards;
        shards.push(&fields(Some("/here")));
        // Joined, not scoped: a joined thread's thread-locals are gone.
        let other = log.clone();
        std::thread::spawn(move || {
            for i in 0..3 {
                other.log(&fields(Some(&format!("/gone/{i}"))));
            }
        })
        .join()
        .unwrap();
        assert_eq!(shards.queues(), 2);
        let (batch, n) = take(&log, false);
        assert_eq!(n, 4);
        assert_eq!(batch.iter().filter(|&&b| b == b'\n').count(), 4);
        // This thread's queue stays; the ended thread's is gone.
        assert_eq!(shards.queues(), 1);
    }

    #[test]
    fn a_finished_record_is_reused_and_keeps_only_its_logs_handle() {
        let (log, _rx) = without_writer();
        let shared = log.shared.as_ref().unwrap().clone();
        let handles = Arc::strong_count(&shared);
        let peer: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        let long = format!("/{}", "z".repeat(PATH_INLINE + 1));
        let requests = [
            (Method::GET, "/first"),
            (Method::GET, long.as_str()),
            (Method::from_bytes(b"PROPFIND").unwrap(), "/dav"),
            (Method::HEAD, "/_r/v7/app.js"),
        ];
        SPARE.with_borrow_mut(Vec::clear);
        let mut kept: Option<*const Record> = None;
        for (method, path) in &requests {
            let req = Request::builder()
                .method(method)
                .uri(*path)
                .body(())
                .unwrap();
            let started = log.start(&req, peer, None).unwrap();
            // The box the last request left is the one used.
            if let Some(k) = kept {
                assert_eq!(&*started.0 as *const Record, k, "{path}");
            }
            kept = Some(&*started.0 as *const Record);
            let mut resp = Response::new(Body::from("abc"));
            resp.headers_mut()
                .insert(SERVED_BY, HeaderValue::from_static("v8"));
            drop(started.respond(resp, Kind::Asset));
            // The spare holds one handle of the log, and nothing else of
            // its request.
            assert_eq!(Arc::strong_count(&shared), handles + 1, "{path}");
            SPARE.with_borrow(|spare| {
                assert_eq!(spare.len(), 1, "{path}");
                assert!(spare[0].long_path.is_none() && spare[0].other_method.is_none());
                assert!(spare[0].log.same(&log));
            });
        }
        let text = String::from_utf8(queued(&log)).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), requests.len());
        for (line, (method, path)) in lines.iter().zip(&requests) {
            assert_eq!(line["method"], method.as_str());
            assert_eq!(line["path"], *path);
            assert_eq!(line["release"], "v8");
        }
        assert_eq!(lines[3]["pin"], "v7");
        assert!(lines[0]["pin"].is_null());
        assert!(lines
            .iter()
            .all(|l| l["client"] == "10.1.2.3" && l["kind"] == "asset" && l["status"] == 200));

        // A request to another log takes the spare and swaps the handle.
        let (other, _rx2) = without_writer();
        let req = Request::get("/other").body(()).unwrap();
        drop(
            other
                .start(&req, peer, None)
                .unwrap()
                .respond(Response::new(Body::empty()), Kind::Asset),
        );
        assert_eq!(Arc::strong_count(&shared), handles);
        SPARE.with_borrow(|spare| assert!(spare[0].log.same(&other)));
        assert!(String::from_utf8(queued(&other))
            .unwrap()
            .contains("\"/other\""));
        assert!(queued(&log).is_empty());
        SPARE.with_borrow_mut(Vec::clear);
    }

    #[test]
    fn lines_of_records_and_of_fields_keep_their_order() {
        let (log, _rx) = without_writer();
        let peer: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        let request = |path: &str| {
            let req = Request::get(path).body(()).unwrap();
            let started = log.start(&req, peer, None).unwrap();
            drop(started.respond(Response::new(Body::empty()), Kind::Asset));
        };
        log.log(&fields(Some("/1")));
        request("/2");
        request("/3");
        log.log(&fields(Some("/4")));
        request("/5");
        log.log(&fields(Some("/6")));
        let (text, n) = take(&log, false);
        assert_eq!(n, 6);
        let paths: Vec<String> = String::from_utf8(text)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["path"].to_string())
            .collect();
        assert_eq!(
            paths,
            ["\"/1\"", "\"/2\"", "\"/3\"", "\"/4\"", "\"/5\"", "\"/6\""]
        );
        SPARE.with_borrow_mut(Vec::clear);
    }

    #[test]
    fn every_line_reaches_the_file_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async { AccessLog::open(&path) })
            .unwrap();
        // Several threads at once, fewer lines in all than the queue
        // holds, so none can be dropped; each carries its thread and number.
        std::thread::scope(|s| {
            for t in 0..4 {
                let log = log.clone();
                s.spawn(move || {
                    for i in 0..writer::QUEUE_LINES / 4 {
                        log.log(&fields(Some(&format!("/{t}/{i}"))));
                    }
                });
            }
        });
        assert!(log.close());
        let text = std::fs::read_to_string(&path).unwrap();
        let mut next = [0usize; 4];
        let mut n = 0;
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let p = v["path"].as_str().unwrap();
            let (t, i) = p[1..].split_once('/').unwrap();
            let t: usize = t.parse().unwrap();
            let i: usize = i.parse().unwrap();
            assert_eq!(i, next[t], "{p}");
            next[t] = i + 1;
            n += 1;
        }
        assert_eq!(n, writer::QUEUE_LINES / 4 * 4);
        // Nothing is written after close.
        log.log(&fields(Some("/late")));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn a_full_disk_loses_lines_but_never_stops_the_writer() {
        // /dev/full fails every write with ENOSPC.
        let Ok(log) = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async { AccessLog::open(Path::new("/dev/full")) })
        else {
            return;
        };
        for _ in 0..10_000 {
            log.log(&fields(Some("/x")));
        }
        assert!(
            log.close(),
            "the writer must still answer after failed writes"
        );
    }
}
