//! A release row as both SQL adapters select it (the same columns in the
//! same order, see each adapter's `RELEASE_COLS`), turned into a record.

use skewless_core::{BlobHash, Entry, Lifecycle, Manifest, ReleaseId};

use crate::{ReleaseRecord, StateError};

/// The columns of `RELEASE_COLS`, in order.
pub(crate) type RawRelease = (
    i64,
    String,
    i64,
    String,
    Option<String>,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    i64,
    i64,
    Option<String>,
    Option<String>,
    Option<i64>,
);

/// A stored release id.
pub(crate) fn parse_id(s: String) -> Result<ReleaseId, StateError> {
    ReleaseId::try_from(s).map_err(|e| StateError::Database(e.to_string()))
}

/// A stored blob hash.
pub(crate) fn parse_hash(s: String) -> Result<BlobHash, StateError> {
    BlobHash::try_from(s).map_err(|e| StateError::Database(e.to_string()))
}

/// A stored size, which is never negative.
pub(crate) fn opt_u64(v: Option<i64>) -> Option<u64> {
    v.map(|x| x as u64)
}

/// The record of a release row, without its manifest (loaded apart).
pub(crate) fn to_record(raw: RawRelease) -> Result<ReleaseRecord, StateError> {
    let (
        seq,
        id,
        created_at,
        state,
        backend,
        shell_hash,
        shell_size,
        shell_br,
        shell_gzip,
        promoted_at,
        retired_at,
        files,
        size,
        backend_cmd,
        health_path,
        drained_at,
    ) = raw;
    let state: Lifecycle = state.parse().map_err(StateError::Database)?;
    Ok(ReleaseRecord {
        id: parse_id(id)?,
        seq,
        created_at,
        state,
        backend,
        backend_cmd,
        health_path,
        shell: Entry {
            hash: parse_hash(shell_hash)?,
            size: shell_size as u64,
            content_type: "text/html; charset=utf-8".into(),
            br: opt_u64(shell_br),
            gzip: opt_u64(shell_gzip),
        },
        promoted_at,
        retired_at,
        drained_at,
        files: files as u64,
        size: size as u64,
        manifest: Manifest::default(),
    })
}
