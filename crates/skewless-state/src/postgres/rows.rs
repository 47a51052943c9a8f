//! Rows as PostgreSQL returns them, turned into records.

use skewless_core::{BlobHash, Entry, Lifecycle, Manifest, ReleaseId};

use crate::{ReleaseRecord, StateError};

pub(super) const RELEASE_COLS: &str =
    "r.seq, r.id, r.created_at, r.state, r.backend, r.shell_hash, r.shell_size, \
     r.shell_br, r.shell_gzip, r.promoted_at, r.retired_at, \
     (SELECT COUNT(*) FROM files f WHERE f.release_seq = r.seq)::bigint, \
     (SELECT COALESCE(SUM(size), 0) FROM files f WHERE f.release_seq = r.seq)::bigint, \
     r.backend_cmd, r.health_path, r.drained_at";

pub(super) type RawRelease = (
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

pub(super) fn parse_id(s: String) -> Result<ReleaseId, StateError> {
    ReleaseId::try_from(s).map_err(|e| StateError::Database(e.to_string()))
}

pub(super) fn parse_hash(s: String) -> Result<BlobHash, StateError> {
    BlobHash::try_from(s).map_err(|e| StateError::Database(e.to_string()))
}

pub(super) fn to_record(raw: RawRelease) -> Result<ReleaseRecord, StateError> {
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
            br: shell_br.map(|x| x as u64),
            gzip: shell_gzip.map(|x| x as u64),
        },
        promoted_at,
        retired_at,
        drained_at,
        files: files as u64,
        size: size as u64,
        manifest: Manifest::default(),
    })
}
