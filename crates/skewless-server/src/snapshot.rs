//! The routing snapshot: an immutable picture of releases and the current
//! pointer, rebuilt after each change and swapped in atomically, so the
//! request path reads it without locks; and [`Routing`], which holds it and
//! tells open event streams when it changed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::http::HeaderValue;
use skewless_core::resolve::Catalog;
use skewless_core::ReleaseId;
use skewless_state::{Pointer, ReleaseRecord};

use crate::gateway::events::Notice;
use crate::proxy::Upstream;

/// The snapshot every request reads, and the channel that tells open event
/// streams of a change. Written only by [`crate::operations::Operations`].
pub struct Routing {
    snapshot: arc_swap::ArcSwap<Snapshot>,
    notices: tokio::sync::broadcast::Sender<Arc<Notice>>,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            snapshot: arc_swap::ArcSwap::from_pointee(Snapshot::build(
                skewless_state::Pointer::empty(),
                Vec::new(),
                HashSet::new(),
            )),
            notices: tokio::sync::broadcast::channel(64).0,
        }
    }
}

impl Routing {
    /// The snapshot now, for one request.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// The snapshot now, to keep.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Notices of every change from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Notice>> {
        self.notices.subscribe()
    }

    /// Event streams listening now.
    pub fn streams(&self) -> usize {
        self.notices.receiver_count()
    }

    /// Swaps in a new snapshot and, if what a client should run changed (the
    /// pointer, the canary, releases that stopped being served), tells every
    /// open event stream.
    pub(crate) fn publish(&self, snap: Snapshot) {
        let old = self.snapshot.load();
        let changed = snap.pointer.generation != old.pointer.generation
            || snap.pointer.current != old.pointer.current
            || snap.pointer.required_min != old.pointer.required_min
            || snap.pointer.canary != old.pointer.canary
            || snap.gone.len() != old.gone.len();
        drop(old);
        let notice = Notice::from_snapshot(&snap);
        self.snapshot.store(Arc::new(snap));
        if changed {
            // No receivers is fine: no stream is open.
            let _ = self.notices.send(Arc::new(notice));
        }
    }
}

/// One release as the gateway serves it.
#[derive(Debug)]
pub struct ReleaseView {
    /// The stored record, manifest included.
    pub record: ReleaseRecord,
    /// The id as a header value (`Skewless-Served-By`).
    pub id_header: HeaderValue,
    /// `Set-Cookie` pinning a client to this release.
    pub pin_cookie: HeaderValue,
    /// ETag of each encoding of the shell.
    pub shell_etags: [HeaderValue; 3],
    /// The back end bound by URL, parsed.
    pub upstream: Option<Arc<Upstream>>,
}

/// The gateway's view of all live releases.
#[derive(Debug)]
pub struct Snapshot {
    /// The state version it reflects (the cluster version on a shared
    /// store; 0 on the embedded one). A node never swaps in an older one.
    pub version: u64,
    /// The current pointer.
    pub pointer: Pointer,
    /// Releases that are not collected.
    pub releases: HashMap<ReleaseId, Arc<ReleaseView>>,
    /// The same, oldest first.
    pub ordered: Vec<Arc<ReleaseView>>,
    /// Fallback candidates (current and draining), newest first.
    pub fallback: Vec<ReleaseId>,
    /// `Skewless-Current` value (empty when nothing is current).
    pub current_header: HeaderValue,
    /// Registration order of `required_min`.
    pub required_min_seq: Option<i64>,
    /// Releases no longer served (retired or collected): their clients must
    /// upgrade.
    pub gone: HashSet<ReleaseId>,
    /// The canary and its header value, while one runs.
    pub canary: Option<(ReleaseId, u8, HeaderValue)>,
}

/// ETag of one encoding of a blob: strong, distinct per encoding. Built in
/// a stack buffer: it runs for every file served.
pub fn etag_for(hash: &str, suffix: &str) -> HeaderValue {
    let prefix = hash.as_bytes().get(..24).unwrap_or(hash.as_bytes());
    let mut buf = [0u8; 64];
    let len = prefix.len() + suffix.len() + 2;
    if len > buf.len() {
        return HeaderValue::from_static("\"\"");
    }
    buf[0] = b'"';
    buf[1..=prefix.len()].copy_from_slice(prefix);
    buf[prefix.len() + 1..len - 1].copy_from_slice(suffix.as_bytes());
    buf[len - 1] = b'"';
    // Hex digits and a fixed suffix always form a valid header value.
    HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("\"\""))
}

impl ReleaseView {
    /// Prepares a record for serving.
    pub fn new(record: ReleaseRecord) -> Self {
        let id = record.id.as_str();
        // Release ids are restricted to a header-safe alphabet.
        let id_header = HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static(""));
        let pin_cookie = HeaderValue::from_str(&format!(
            "{}={id}; Path=/; SameSite=Lax",
            skewless_core::pin::COOKIE
        ))
        .unwrap_or(HeaderValue::from_static(""));
        let h = record.shell.hash.as_str();
        let shell_etags = [etag_for(h, ""), etag_for(h, "-br"), etag_for(h, "-gz")];
        let upstream = record
            .backend
            .as_deref()
            .and_then(|b| Upstream::parse(b).ok())
            .map(Arc::new);
        ReleaseView {
            record,
            id_header,
            pin_cookie,
            shell_etags,
            upstream,
        }
    }
}

impl Snapshot {
    /// Builds a snapshot from the pointer and release records.
    pub fn build(
        pointer: Pointer,
        mut views: Vec<Arc<ReleaseView>>,
        mut gone: HashSet<ReleaseId>,
    ) -> Self {
        views.sort_by_key(|v| v.record.seq);
        let ordered = views.clone();
        let mut fallback: Vec<&Arc<ReleaseView>> = views
            .iter()
            .filter(|v| v.record.state.is_fallback())
            .collect();
        fallback.sort_by_key(|v| std::cmp::Reverse(v.record.seq));
        let fallback = fallback.into_iter().map(|v| v.record.id.clone()).collect();
        let current_header = pointer
            .current
            .as_ref()
            .and_then(|c| HeaderValue::from_str(c.as_str()).ok())
            .unwrap_or(HeaderValue::from_static(""));
        let releases: HashMap<ReleaseId, Arc<ReleaseView>> = views
            .into_iter()
            .map(|v| (v.record.id.clone(), v))
            .collect();
        gone.extend(
            releases
                .values()
                .filter(|v| !v.record.state.is_served())
                .map(|v| v.record.id.clone()),
        );
        let canary = pointer.canary.as_ref().and_then(|c| {
            let h = HeaderValue::from_str(c.as_str()).ok()?;
            Some((c.clone(), pointer.canary_percent, h))
        });
        let required_min_seq = pointer
            .required_min
            .as_ref()
            .and_then(|r| releases.get(r))
            .map(|v| v.record.seq);
        Snapshot {
            version: 0,
            pointer,
            releases,
            ordered,
            fallback,
            current_header,
            required_min_seq,
            gone,
            canary,
        }
    }

    /// The release a client pinned to `pin` should run, as a header value:
    /// the canary for the canary's own clients, else the current release.
    pub fn current_for(&self, pin: Option<&str>) -> &HeaderValue {
        match (&self.canary, pin) {
            (Some((c, _, h)), Some(p)) if c.as_str() == p => h,
            _ => &self.current_header,
        }
    }

    /// The id [`Self::current_for`] names.
    pub fn current_id_for(&self, pin: Option<&str>) -> Option<&ReleaseId> {
        match (&self.canary, pin) {
            (Some((c, _, _)), Some(p)) if c.as_str() == p => Some(c),
            _ => self.pointer.current.as_ref(),
        }
    }

    /// A served release by id text.
    pub fn view(&self, id: &str) -> Option<&Arc<ReleaseView>> {
        self.releases.get(id).filter(|v| v.record.state.is_served())
    }

    /// Whether a client running `release` must upgrade now: its release is
    /// retired or collected, or older than `required_min`.
    pub fn upgrade_required(&self, release: Option<&str>) -> bool {
        let Some(release) = release else {
            return false;
        };
        if self.pointer.current.is_some() && self.gone.contains(release) {
            return true;
        }
        let Some(min) = self.required_min_seq else {
            return false;
        };
        self.view(release).is_some_and(|v| v.record.seq < min)
    }
}

impl Catalog for Snapshot {
    fn current(&self) -> Option<&ReleaseId> {
        self.pointer.current.as_ref()
    }

    fn served(&self, id: &str) -> Option<&ReleaseId> {
        self.view(id).map(|v| &v.record.id)
    }

    fn has_file(&self, id: &ReleaseId, path: &str) -> bool {
        self.releases
            .get(id)
            .is_some_and(|v| v.record.manifest.files.contains_key(path))
    }

    fn fallback(&self) -> impl Iterator<Item = &ReleaseId> {
        self.fallback.iter()
    }
}

/// Release records for the server's unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use skewless_core::{Entry, Lifecycle, Manifest, ReleaseId};
    use skewless_state::ReleaseRecord;

    /// Release `id`, registered `seq`-th, in `state`, with `manifest` and
    /// `shell`; no back end, never promoted or retired.
    pub(crate) fn record(
        id: &str,
        seq: i64,
        state: Lifecycle,
        shell: Entry,
        manifest: Manifest,
    ) -> ReleaseRecord {
        ReleaseRecord {
            id: ReleaseId::parse(id).expect("a valid release id"),
            seq,
            created_at: 0,
            state,
            backend: None,
            backend_cmd: None,
            health_path: None,
            shell,
            promoted_at: None,
            retired_at: None,
            drained_at: None,
            files: manifest.files.len() as u64,
            size: manifest.files.values().map(|e| e.size).sum(),
            manifest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_name_the_hash_prefix_and_encoding() {
        let hash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(etag_for(hash, ""), "\"0123456789abcdef01234567\"");
        assert_eq!(etag_for(hash, "-br"), "\"0123456789abcdef01234567-br\"");
        assert_eq!(etag_for(hash, "-gz"), "\"0123456789abcdef01234567-gz\"");
    }
}
