//! Server-sent events: every open `/_skewless/events` stream learns of each
//! promotion and rollback at once. One feature, two transports: [`lean`]
//! serves plain HTTP/1.1 streams straight off the socket, [`general`]
//! serves the rest (HTTP/2, `HEAD`, odd request lines) through the router.
//! Both open a stream the same way ([`open`]: slot, presence) and send the
//! same bytes ([`Follow`]).

use std::sync::Arc;
use std::time::Duration;

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use serde::Deserialize;
use skewless_core::ReleaseId;
use tokio::sync::broadcast::error::RecvError;

use super::Gateway;
use crate::presence::StreamGuard;
use crate::snapshot::Snapshot;
use crate::ServerError;

pub(crate) mod general;
pub(crate) mod lean;

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

/// One event as a stream sends it: `release`, or `required` when the
/// stream's release must upgrade at once, with the state a client of that
/// release sees; `retry_ms` on the first event of a stream.
pub(crate) fn event_text(gw: &Gateway, release: Option<&str>, retry_ms: Option<u64>) -> String {
    let snap = gw.routing.load();
    let name = if snap.upgrade_required(release) {
        "required"
    } else {
        "release"
    };
    let data = state_json(&snap, release);
    match retry_ms {
        Some(ms) => format!("event: {name}\ndata: {data}\nretry: {ms}\n\n"),
        None => format!("event: {name}\ndata: {data}\n\n"),
    }
}

/// The last event of a stream when the server shuts down: come back soon,
/// to the restarted server.
const SHUTDOWN: &[u8] = b"event: shutdown\ndata: {}\nretry: 1000\n\n";
/// A keep-alive comment; a closed tab is noticed when one fails to go out.
const PING: &[u8] = b":ping\n\n";

/// What one open stream follows, whatever carries it: the first event,
/// then an event after every change, a keep-alive comment when idle, and
/// a last event at shutdown. Holds the stream's slot and its count as a
/// live client until dropped.
pub(crate) struct Follow {
    gw: Arc<Gateway>,
    release: Option<String>,
    rx: tokio::sync::broadcast::Receiver<Arc<Notice>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    keepalive: tokio::time::Interval,
    first: bool,
    done: bool,
    _held: (Option<StreamGuard>, Slot),
}

impl Follow {
    /// Follows the changes for an opened stream.
    pub(crate) fn new(gw: Arc<Gateway>, opened: Opened) -> Follow {
        let period = Duration::from_secs(gw.config.event_keepalive_secs.max(1));
        let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Follow {
            rx: gw.routing.subscribe(),
            shutdown: gw.shutdown.clone(),
            release: opened.release,
            keepalive,
            first: true,
            done: false,
            _held: opened.held,
            gw,
        }
    }

    /// The next bytes of the event stream; `None` when it has ended.
    pub(crate) async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if self.first {
            self.first = false;
            let text = event_text(&self.gw, self.release.as_deref(), Some(RETRY_MS));
            return Some(Bytes::from(text));
        }
        tokio::select! {
            msg = self.rx.recv() => match msg {
                // Every notice, and a lag past some, means the same: send
                // the latest state.
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    self.keepalive.reset();
                    Some(Bytes::from(event_text(&self.gw, self.release.as_deref(), None)))
                }
                Err(RecvError::Closed) => None,
            },
            _ = self.shutdown.wait_for(|s| *s) => {
                self.done = true;
                Some(Bytes::from_static(SHUTDOWN))
            }
            _ = self.keepalive.tick() => Some(Bytes::from_static(PING)),
        }
    }
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
