//! `fsck`: checks the blob store and the state against each other, and with
//! `repair` mends what can be mended without losing anything.

use std::collections::{HashMap, HashSet};

use skewless_core::{Action, BlobHash, Entry};
use skewless_state::StateStore;
use skewless_store::{BlobStore, ByteStream, Variant};
use skewless_wire::{FsckReport, Problem};

use super::Operations;
use crate::ServerError;

impl Operations {
    /// Checks every live release's blobs (presence, BLAKE3, variants), the
    /// pointer, and the store for orphans. With `repair`: remakes missing or
    /// wrong variants, and deletes corrupt blobs so the next deploy of those
    /// files uploads them again. A repair is recorded in the history.
    pub async fn fsck(&self, repair: bool, actor: &str) -> Result<FsckReport, ServerError> {
        let report = self.check(repair).await?;
        if repair {
            let repaired = report
                .problems
                .iter()
                .filter(|p| p.repaired.is_some())
                .count();
            let detail = format!("{} problems, {repaired} repaired", report.problems.len());
            self.record(Action::FsckRepair, actor, detail).await?;
        }
        Ok(report)
    }

    async fn check(&self, repair: bool) -> Result<FsckReport, ServerError> {
        check(self.state.as_ref(), self.blobs.as_ref(), repair, None).await
    }
}

/// Checks every live release's blobs (presence, BLAKE3, variants), the
/// pointer, and the store for orphans. With `repair`: stores missing or
/// corrupt blobs again from a local copy (the store's own, such as a
/// node's cache, or `copies`) where one exists, else deletes corrupt blobs
/// so the next deploy of those files uploads them again; remakes missing
/// or wrong variants. Used by a running server's [`Operations`] and, on a
/// stopped server's data directory, by `skewless fsck --data`.
pub async fn check(
    state: &dyn StateStore,
    blobs: &dyn BlobStore,
    repair: bool,
    copies: Option<&dyn BlobStore>,
) -> Result<FsckReport, ServerError> {
    let releases = state.releases().await?;
    let mut problems = Vec::new();
    // Missing blobs: where the finding is, and the releases using the blob.
    let mut missing: Vec<(usize, Vec<String>)> = Vec::new();
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
        let finding = |kind: &str, detail: String| Problem {
            kind: kind.to_owned(),
            release: Some(release.clone()),
            path: Some(path.clone()),
            hash: Some(hash.to_string()),
            detail,
            repaired: None,
        };
        let Some(size) = blobs.stat(hash, Variant::Identity).await? else {
            let mut p = finding(
                "missing-blob",
                format!(
                    "not in the store ({} releases use it); deploy the files again",
                    users.len()
                ),
            );
            if repair {
                let own = blobs.local_copy(hash).await?;
                p.repaired = restore(blobs, own, copies, hash).await?;
            }
            if p.repaired.is_none() {
                missing.push((problems.len(), users.iter().map(|u| u.0.clone()).collect()));
            }
            problems.push(p);
            continue;
        };
        if size != entry.size || !blobs.verify(hash).await? {
            let mut p = finding(
                "corrupt-blob",
                format!("stored bytes ({size} bytes) do not hash to the blob's hash"),
            );
            if repair {
                // Taken before the delete, which drops the node's cached
                // copy with the stored one.
                let own = blobs.local_copy(hash).await?;
                blobs.delete(hash).await?;
                p.repaired = Some(match restore(blobs, own, copies, hash).await? {
                    Some(how) => {
                        // The delete took the variants too.
                        if entry.br.is_some() || entry.gzip.is_some() {
                            blobs.ensure_variants(hash).await?;
                        }
                        how
                    }
                    None => "deleted; the next deploy of this file uploads it again".into(),
                });
            }
            problems.push(p);
            continue;
        }
        for (variant, want, name) in [
            (Variant::Br, entry.br, "br"),
            (Variant::Gzip, entry.gzip, "gzip"),
        ] {
            let Some(want) = want else { continue };
            let have = blobs.stat(hash, variant).await?;
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
                blobs.delete_variants(hash).await?;
                let v = blobs.ensure_variants(hash).await?;
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
    // A collection running meanwhile may have collected a retired release
    // and deleted its blobs: that is no problem.
    if !missing.is_empty() {
        let still: HashSet<String> = state
            .releases()
            .await?
            .into_iter()
            .map(|r| r.id.to_string())
            .collect();
        let gone: HashSet<usize> = missing
            .into_iter()
            .filter(|(_, users)| users.iter().all(|u| !still.contains(u)))
            .map(|(i, _)| i)
            .collect();
        let mut i = 0;
        problems.retain(|_| {
            i += 1;
            !gone.contains(&(i - 1))
        });
    }
    let live: HashSet<&BlobHash> = uses.keys().collect();
    let stored = blobs.list().await?;
    for b in &stored {
        if !live.contains(&b.hash) {
            problems.push(Problem {
                kind: "orphan-blob".into(),
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
    let leftovers = blobs.leftovers().await?;
    if leftovers > 0 {
        problems.push(Problem {
            kind: "leftover-upload".into(),
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
                    kind: "dangling-pointer".into(),
                    release: Some(id.to_string()),
                    path: None,
                    hash: None,
                    detail: format!("{what} names a release that is not served"),
                    repaired: None,
                });
            }
        }
    }
    let ok = problems.iter().all(|p| {
        matches!(p.kind.as_str(), "orphan-blob" | "leftover-upload") || p.repaired.is_some()
    });
    Ok(FsckReport {
        ok,
        releases: releases.len(),
        blobs: uses.len(),
        problems,
    })
}

/// Stores `hash` again from a local copy: `own`, the store's own (a node's
/// cache), or `copies`. The upload is verified against the hash like any other, so
/// a bad copy is refused. Says how it was repaired, or `None` when no copy
/// was found.
async fn restore(
    blobs: &dyn BlobStore,
    own: Option<ByteStream>,
    copies: Option<&dyn BlobStore>,
    hash: &BlobHash,
) -> Result<Option<String>, ServerError> {
    let mut tried = Vec::new();
    if let Some(body) = own {
        match blobs.put(hash, body, u64::MAX).await {
            Ok(_) => return Ok(Some("stored again from this node's local copy".into())),
            Err(e) => tried.push(format!("this node's local copy: {e}")),
        }
    }
    if let Some(copies) = copies {
        if copies.contains(hash).await? {
            let body = copies
                .open(hash, Variant::Identity, None)
                .await?
                .into_stream();
            match blobs.put(hash, body, u64::MAX).await {
                Ok(_) => return Ok(Some("stored again from the given copy".into())),
                Err(e) => tried.push(format!("the given copy: {e}")),
            }
        }
    }
    for t in tried {
        tracing::warn!(blob = %hash, "a local copy could not be stored again: {t}");
    }
    Ok(None)
}
