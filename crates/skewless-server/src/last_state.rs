//! The last routing state a node applied from a shared state store, kept
//! on the node's own disk (`<data>/last-state.json`). A node that restarts
//! while the database is unreachable serves that state (pages, assets, API
//! routing, event streams) until the database is back, instead of not
//! starting at all; every write to state still waits for the database.
//!
//! The file is rewritten after every snapshot the node applies, by a task
//! of its own that always writes the newest one (temporary file, `fsync`,
//! rename), so a crash leaves the previous file or the new one, never a
//! torn one.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use skewless_core::{Manifest, ReleaseId};
use skewless_state::{Pointer, ReleaseRecord};
use tokio::sync::watch;

use crate::snapshot::Snapshot;

/// The file's name under the data directory.
const FILE: &str = "last-state.json";

/// Layout version of the file; another one is not read.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Saved {
    format: u32,
    /// Unix seconds it was written at.
    saved_at: i64,
    version: u64,
    pointer: Pointer,
    releases: Vec<SavedRelease>,
    gone: Vec<ReleaseId>,
}

#[derive(Serialize, Deserialize)]
struct SavedRelease {
    record: ReleaseRecord,
    manifest: Manifest,
}

/// A routing state read back from the file.
#[derive(Debug)]
pub struct LastState {
    /// Unix seconds it was written at.
    pub saved_at: i64,
    /// The state version it reflects.
    pub version: u64,
    /// The pointer then.
    pub pointer: Pointer,
    /// Every release then held, with its manifest.
    pub releases: Vec<ReleaseRecord>,
    /// Releases no longer served then.
    pub gone: HashSet<ReleaseId>,
}

/// The path of the file under `data`.
pub fn path(data: &Path) -> PathBuf {
    data.join(FILE)
}

/// Reads the file at `path`: `None` if there is none, an error naming the
/// problem if it cannot be read or parsed.
pub fn load(path: &Path) -> Result<Option<LastState>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let saved: Saved = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a saved routing state: {e}", path.display()))?;
    if saved.format != FORMAT {
        return Err(format!(
            "{} has layout {}, not {FORMAT}",
            path.display(),
            saved.format
        ));
    }
    Ok(Some(LastState {
        saved_at: saved.saved_at,
        version: saved.version,
        pointer: saved.pointer,
        releases: saved
            .releases
            .into_iter()
            .map(|r| ReleaseRecord {
                manifest: r.manifest,
                ..r.record
            })
            .collect(),
        gone: saved.gone.into_iter().collect(),
    }))
}

/// Keeps the file up to date with the snapshots offered to it.
pub struct Keeper {
    newest: watch::Sender<Option<Arc<Snapshot>>>,
}

impl Keeper {
    /// Starts the task that writes every offered snapshot to `path`, the
    /// newest first when several came meanwhile. Must run inside the Tokio
    /// runtime.
    pub fn start(path: PathBuf, clock: Arc<dyn crate::Clock>) -> Keeper {
        let (newest, mut rx) = watch::channel::<Option<Arc<Snapshot>>>(None);
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(snap) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let (path, now) = (path.clone(), clock.now());
                let written = tokio::task::spawn_blocking(move || save(&path, &snap, now)).await;
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot save the routing state"),
                    Err(e) => tracing::warn!(error = %e, "saving the routing state failed"),
                }
            }
        });
        Keeper { newest }
    }

    /// Has `snap` written (soon, on the keeper's task).
    pub fn offer(&self, snap: Arc<Snapshot>) {
        self.newest.send_replace(Some(snap));
    }
}

/// Writes `snap` to `path`: a temporary file beside it, `fsync`, rename,
/// and `fsync` of the directory.
fn save(path: &Path, snap: &Snapshot, now: i64) -> Result<(), String> {
    let saved = Saved {
        format: FORMAT,
        saved_at: now,
        version: snap.version,
        pointer: snap.pointer.clone(),
        releases: snap
            .ordered
            .iter()
            .map(|v| SavedRelease {
                record: v.record.clone(),
                manifest: v.record.manifest.clone(),
            })
            .collect(),
        gone: snap.gone.iter().cloned().collect(),
    };
    let bytes = serde_json::to_vec(&saved).map_err(|e| e.to_string())?;
    skewless_store::write_atomic(&path.with_extension("json.tmp"), path, &bytes)
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{fixtures, ReleaseView};
    use skewless_core::manifest::FileSpec;
    use skewless_core::{BlobHash, Entry, Lifecycle};

    fn record(id: &str, seq: i64, files: &[&str]) -> ReleaseRecord {
        let specs: Vec<FileSpec> = files
            .iter()
            .map(|p| FileSpec {
                path: (*p).into(),
                hash: BlobHash::from_bytes(blake3::hash(p.as_bytes()).as_bytes()),
                size: 10,
            })
            .collect();
        let manifest = Manifest::from_specs(&specs).unwrap();
        let shell = Entry {
            hash: BlobHash::from_bytes(blake3::hash(id.as_bytes()).as_bytes()),
            size: 100,
            content_type: "text/html; charset=utf-8".into(),
            br: Some(40),
            gzip: None,
        };
        ReleaseRecord {
            backend: Some("http://127.0.0.1:9000".into()),
            promoted_at: Some(1_700_000_100),
            ..fixtures::record(id, seq, Lifecycle::Current, shell, manifest)
        }
    }

    #[test]
    fn a_saved_snapshot_reads_back_with_its_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path());
        assert!(load(&file).unwrap().is_none(), "no file yet");
        let v2 = record("v2", 2, &["/index.html", "/assets/app-2.js", "/logo.svg"]);
        let mut pointer = Pointer::empty();
        pointer.current = Some(v2.id.clone());
        pointer.generation = 3;
        let gone: HashSet<ReleaseId> = [ReleaseId::parse("v0").unwrap()].into();
        let mut snap = Snapshot::build(
            pointer.clone(),
            vec![Arc::new(ReleaseView::new(v2.clone()))],
            gone.clone(),
        );
        snap.version = 17;
        save(&file, &snap, 1_700_000_500).unwrap();
        let back = load(&file).unwrap().unwrap();
        assert_eq!(back.version, 17);
        assert_eq!(back.saved_at, 1_700_000_500);
        assert_eq!(back.pointer, pointer);
        assert_eq!(back.releases, vec![v2]);
        assert_eq!(back.gone, gone);
        assert!(!file.with_extension("json.tmp").exists());
    }

    #[test]
    fn a_damaged_or_foreign_file_is_refused_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path());
        std::fs::write(&file, b"{\"format\": 1, \"vers").unwrap();
        let err = load(&file).unwrap_err();
        assert!(err.contains("is not a saved routing state"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        let other = serde_json::json!({
            "format": 9, "saved_at": 0, "version": 0,
            "pointer": Pointer::empty(), "releases": [], "gone": []
        });
        std::fs::write(&file, other.to_string()).unwrap();
        let err = load(&file).unwrap_err();
        assert!(err.contains("layout 9"), "{err}");
    }
}
