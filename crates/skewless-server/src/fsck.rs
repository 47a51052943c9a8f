//! `fsck`: checks the blob store and the state against each other, and with
//! `repair` mends what can be mended without losing anything.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use skewless_core::{BlobHash, Entry};
use skewless_state::StateStore;
use skewless_store::{BlobStore, Variant};

use crate::gateway::Gateway;
use crate::ServerError;

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// `missing-blob`, `corrupt-blob`, `missing-variant`, `bad-variant`,
    /// `orphan-blob`, `leftover-upload`, `dangling-pointer`.
    pub kind: &'static str,
    /// The release concerned, if any.
    pub release: Option<String>,
    /// The file concerned, if any.
    pub path: Option<String>,
    /// The blob concerned, if any.
    pub hash: Option<String>,
    /// What was found.
    pub detail: String,
    /// What `repair` did about it, if anything.
    pub repaired: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// No problem found (orphans and leftovers do not count: gc and restarts
    /// clear them).
    pub ok: bool,
    /// Releases checked.
    pub releases: usize,
    /// Distinct blobs checked.
    pub blobs: usize,
    /// Findings.
    pub problems: Vec<Problem>,
}

impl Gateway {
    /// [`check`] on this server's stores, excluding garbage collection and
    /// registration while it runs.
    pub async fn fsck(&self, repair: bool) -> Result<Report, ServerError> {
        let _gc = self.gc_lock.write().await;
        check(self.state.as_ref(), self.store.as_ref(), repair).await
    }
}

/// Checks every live release's blobs (presence, BLAKE3, variants), the
/// pointer, and the store for orphans. With `repair`: remakes missing or
/// wrong variants, and deletes corrupt blobs so the next deploy of those
/// files uploads them again. The caller makes sure nothing registers or
/// collects meanwhile (the server's gc exclusion, or a stopped server's
/// data-directory lock).
pub async fn check(
    state: &dyn StateStore,
    store: &dyn BlobStore,
    repair: bool,
) -> Result<Report, ServerError> {
    let releases = state.releases().await?;
    let mut problems = Vec::new();
    // Blob → (release, path, entry) of its first use, for messages.
    let mut uses: HashMap<BlobHash, Vec<(String, String, Entry)>> = HashMap::new();
    for r in &releases {
        for (path, e) in &r.manifest.files {
            uses.entry(e.hash.clone()).or_default().push((
                r.id.to_string(),
                path.clone(),
                e.clone(),
            ));
        }
        uses.entry(r.shell.hash.clone()).or_default().push((
            r.id.to_string(),
            "(rewritten shell)".into(),
            r.shell.clone(),
        ));
    }
    for (hash, users) in &uses {
        let (release, path, entry) = &users[0];
        let finding = |kind, detail: String| Problem {
            kind,
            release: Some(release.clone()),
            path: Some(path.clone()),
            hash: Some(hash.to_string()),
            detail,
            repaired: None,
        };
        let Some(size) = store.stat(hash, Variant::Identity).await? else {
            problems.push(finding(
                "missing-blob",
                format!(
                    "not in the store ({} releases use it); deploy the files again",
                    users.len()
                ),
            ));
            continue;
        };
        if size != entry.size || !store.verify(hash).await? {
            let mut p = finding(
                "corrupt-blob",
                format!("stored bytes ({size} bytes) do not hash to the blob's hash"),
            );
            if repair {
                store.delete(hash).await?;
                p.repaired = Some("deleted; the next deploy of this file uploads it again".into());
            }
            problems.push(p);
            continue;
        }
        for (variant, want, name) in [
            (Variant::Br, entry.br, "br"),
            (Variant::Gzip, entry.gzip, "gzip"),
        ] {
            let Some(want) = want else { continue };
            let have = store.stat(hash, variant).await?;
            if have == Some(want) {
                continue;
            }
            let mut p = finding(
                if have.is_none() {
                    "missing-variant"
                } else {
                    "bad-variant"
                },
                format!("{name} variant is {have:?} bytes, the manifest says {want}"),
            );
            if repair {
                store.delete_variants(hash).await?;
                let v = store.ensure_variants(hash).await?;
                let made = if name == "br" { v.br } else { v.gzip };
                p.repaired = Some(if made == Some(want) {
                    format!("{name} variant made again")
                } else {
                    format!("{name} variant made again but is {made:?} bytes; redeploy the release to record it")
                });
            }
            problems.push(p);
        }
    }
    let live: HashSet<&BlobHash> = uses.keys().collect();
    let stored = store.list().await?;
    for b in &stored {
        if !live.contains(&b.hash) {
            problems.push(Problem {
                kind: "orphan-blob",
                release: None,
                path: None,
                hash: Some(b.hash.to_string()),
                detail: format!(
                    "{} bytes no live release uses; `skewless gc` deletes it",
                    b.bytes
                ),
                repaired: None,
            });
        }
    }
    let leftovers = store.leftovers().await?;
    if leftovers > 0 {
        problems.push(Problem {
            kind: "leftover-upload",
            release: None,
            path: None,
            hash: None,
            detail: format!("{leftovers} half-written uploads; a restart clears them"),
            repaired: None,
        });
    }
    let pointer = state.pointer().await?;
    let served: HashSet<String> = releases
        .iter()
        .filter(|r| r.state.is_served())
        .map(|r| r.id.to_string())
        .collect();
    for (what, id) in [
        ("current", pointer.current.as_ref()),
        ("canary", pointer.canary.as_ref()),
        ("required_min", pointer.required_min.as_ref()),
    ] {
        if let Some(id) = id {
            if !served.contains(id.as_str()) {
                problems.push(Problem {
                    kind: "dangling-pointer",
                    release: Some(id.to_string()),
                    path: None,
                    hash: None,
                    detail: format!("{what} names a release that is not served"),
                    repaired: None,
                });
            }
        }
    }
    let ok = problems
        .iter()
        .all(|p| matches!(p.kind, "orphan-blob" | "leftover-upload") || p.repaired.is_some());
    Ok(Report {
        ok,
        releases: releases.len(),
        blobs: uses.len(),
        problems,
    })
}
