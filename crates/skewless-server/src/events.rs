//! Server-sent events: every open `/_skewless/events` stream learns of each
//! promotion and rollback at once.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;

use axum::extract::{ConnectInfo, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream};
use serde::Deserialize;
use skewless_core::ReleaseId;
use tokio::sync::broadcast::error::RecvError;

use crate::gateway::{AppState, Gateway};
use crate::presence::StreamGuard;
use crate::snapshot::Snapshot;
use crate::ServerError;

/// What every stream is told after a change of the current pointer.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The current release.
    pub current: Option<ReleaseId>,
    /// Its generation.
    pub generation: u64,
    /// Minimum release clients must run.
    pub required_min: Option<ReleaseId>,
}

impl Notice {
    /// The notice describing a snapshot.
    pub fn from_snapshot(s: &Snapshot) -> Self {
        Notice {
            current: s.pointer.current.clone(),
            generation: s.pointer.generation,
            required_min: s.pointer.required_min.clone(),
        }
    }
}

/// The JSON body shared by `/_skewless/version` and the event stream, as seen
/// by a client running `release`: `current` is the release it should run
/// (the canary for the canary's clients), `required` whether it must reload
/// now.
pub fn state_json(snap: &Snapshot, release: Option<&str>) -> String {
    serde_json::json!({
        "current": snap.current_id_for(release),
        "generation": snap.pointer.generation,
        "required_min": snap.pointer.required_min,
        "required": snap.upgrade_required(release),
    })
    .to_string()
}

/// Counts open event streams, in total and per client address, so one
/// client cannot take every file descriptor.
#[derive(Debug, Default)]
pub struct StreamSlots {
    total: std::sync::atomic::AtomicUsize,
    per_ip: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// One taken slot; dropping it frees the slot.
pub struct Slot {
    gw: Arc<Gateway>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let slots = &self.gw.stream_slots;
        slots.total.fetch_sub(1, Ordering::Relaxed);
        let mut per_ip = slots.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

fn take_slot(gw: &Arc<Gateway>, ip: IpAddr) -> Result<Slot, ServerError> {
    let slots = &gw.stream_slots;
    let mut per_ip = slots.per_ip.lock().unwrap_or_else(|e| e.into_inner());
    let mine = per_ip.entry(ip).or_default();
    if *mine >= gw.config.max_event_streams_per_ip {
        return Err(ServerError::TooMany(
            "too many event streams from this address".into(),
        ));
    }
    if slots.total.load(Ordering::Relaxed) >= gw.config.max_event_streams {
        return Err(ServerError::Unavailable(
            "the server holds as many event streams as it may; poll /_skewless/version instead"
                .into(),
        ));
    }
    *mine += 1;
    slots.total.fetch_add(1, Ordering::Relaxed);
    Ok(Slot { gw: gw.clone(), ip })
}

/// Query of `/_skewless/events`.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// The release the tab runs.
    pub release: Option<String>,
    /// The tab's client id.
    pub client: Option<String>,
}

/// Reconnect delay suggested to clients, in milliseconds.
pub(crate) const RETRY_MS: u64 = 3000;

/// The name and data of the event a stream of `release` is sent now:
/// `release`, or `required` when that release must upgrade at once.
pub(crate) fn event_parts(gw: &Gateway, release: Option<&str>) -> (&'static str, String) {
    let snap = gw.routing.load();
    let name = if snap.upgrade_required(release) {
        "required"
    } else {
        "release"
    };
    (name, state_json(&snap, release))
}

fn event_for(gw: &Gateway, release: Option<&str>) -> Event {
    let (name, data) = event_parts(gw, release);
    Event::default().event(name).data(data)
}

/// An event stream being opened: the release it follows and what it holds
/// until it ends (its slot, and its count as a live client).
pub(crate) struct Opened {
    pub release: Option<String>,
    pub held: (Option<StreamGuard>, Slot),
}

/// Opens a stream for a client at `ip`: takes a slot (or refuses with 429
/// or 503) and counts the client as live on its release.
pub(crate) fn open(gw: &Arc<Gateway>, ip: IpAddr, q: EventsQuery) -> Result<Opened, ServerError> {
    let slot = take_slot(gw, ip)?;
    let release = q.release.filter(|r| skewless_core::id::is_valid(r));
    let presence = release
        .as_deref()
        .and_then(|r| gw.routing.load().view(r).map(|v| v.record.id.clone()))
        .map(|id| {
            gw.presence
                .open_stream(&id, q.client.as_deref(), gw.clock.clone())
        });
    Ok(Opened {
        release,
        held: (presence, slot),
    })
}

/// `GET /_skewless/events?release=<id>`.
pub async fn events(
    State(AppState(gw)): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<EventsQuery>,
) -> Response {
    let Opened { release, held } = match open(&gw, peer.ip(), q) {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let rx = gw.routing.subscribe();
    let shutdown = gw.shutdown.clone();
    let first = event_for(&gw, release.as_deref()).retry(Duration::from_millis(RETRY_MS));
    let keepalive = gw.config.event_keepalive_secs.max(1);
    let stream = notice_stream(gw, release, rx, shutdown, first, held);
    let mut resp = Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(Duration::from_secs(keepalive))
                .text("ping"),
        )
        .into_response();
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-cache"),
    );
    resp.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    resp
}

struct StreamState {
    gw: Arc<Gateway>,
    release: Option<String>,
    rx: tokio::sync::broadcast::Receiver<Arc<Notice>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    first: Option<Event>,
    done: bool,
    /// Counts this stream as a live client and holds its slot until it ends.
    _held: (Option<StreamGuard>, Slot),
}

fn notice_stream(
    gw: Arc<Gateway>,
    release: Option<String>,
    rx: tokio::sync::broadcast::Receiver<Arc<Notice>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    first: Event,
    held: (Option<StreamGuard>, Slot),
) -> impl Stream<Item = Result<Event, Infallible>> {
    let st = StreamState {
        gw,
        release,
        rx,
        shutdown,
        first: Some(first),
        done: false,
        _held: held,
    };
    stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        if let Some(first) = st.first.take() {
            return Some((Ok(first), st));
        }
        enum Next {
            Latest,
            Closed,
            Shutdown,
        }
        let next = tokio::select! {
            msg = st.rx.recv() => match msg {
                // Every notice, and a lag past some, means the same: send
                // the latest state.
                Ok(_) | Err(RecvError::Lagged(_)) => Next::Latest,
                Err(RecvError::Closed) => Next::Closed,
            },
            _ = st.shutdown.wait_for(|s| *s) => Next::Shutdown,
        };
        let ev = match next {
            Next::Latest => event_for(&st.gw, st.release.as_deref()),
            Next::Closed => return None,
            Next::Shutdown => {
                st.done = true;
                // Tell the client to come back soon, to the restarted server.
                Event::default()
                    .event("shutdown")
                    .data("{}")
                    .retry(Duration::from_millis(1000))
            }
        };
        Some((Ok(ev), st))
    })
}
