//! Reading rows into records: releases, manifests, the pointer.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension};
use skewless_core::{Entry, Manifest};

use crate::record::{opt_u64, parse_hash, parse_id, to_record, RawRelease};
use crate::{Pointer, ReleaseRecord, StateError};

pub(super) const RELEASE_COLS: &str =
    "r.seq, r.id, r.created_at, r.state, r.backend, r.shell_hash, r.shell_size, \
     r.shell_br, r.shell_gzip, r.promoted_at, r.retired_at, \
     (SELECT COUNT(*) FROM files f WHERE f.release_seq = r.seq), \
     (SELECT COALESCE(SUM(size), 0) FROM files f WHERE f.release_seq = r.seq), \
     r.backend_cmd, r.health_path, r.drained_at";

pub(super) fn raw_release(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRelease> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
        row.get(10)?,
        row.get(11)?,
        row.get(12)?,
        row.get(13)?,
        row.get(14)?,
        row.get(15)?,
    ))
}

pub(super) fn load_manifest(conn: &Connection, seq: i64) -> Result<Manifest, StateError> {
    let mut stmt = conn.prepare_cached(
        "SELECT path, hash, size, content_type, br, gzip FROM files WHERE release_seq = ?1",
    )?;
    let rows = stmt.query_map([seq], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<i64>>(4)?,
            r.get::<_, Option<i64>>(5)?,
        ))
    })?;
    let mut files = BTreeMap::new();
    for row in rows {
        let (path, hash, size, content_type, br, gzip) = row?;
        files.insert(
            path,
            Entry {
                hash: parse_hash(hash)?,
                size: size as u64,
                content_type,
                br: opt_u64(br),
                gzip: opt_u64(gzip),
            },
        );
    }
    Ok(Manifest { files })
}

pub(super) fn get_release(conn: &Connection, id: &str) -> Result<ReleaseRecord, StateError> {
    let raw = conn
        .query_row(
            &format!("SELECT {RELEASE_COLS} FROM releases r WHERE r.id = ?1"),
            [id],
            raw_release,
        )
        .optional()?
        .ok_or_else(|| StateError::NotFound(id.to_owned()))?;
    let mut rec = to_record(raw)?;
    rec.manifest = load_manifest(conn, rec.seq)?;
    Ok(rec)
}

pub(super) fn get_pointer(conn: &Connection) -> Result<Pointer, StateError> {
    type Row = (
        Option<String>,
        i64,
        Option<String>,
        i64,
        Option<String>,
        i64,
    );
    let (current, generation, required_min, changed_at, canary, canary_percent): Row = conn
        .query_row(
            "SELECT current, generation, required_min, changed_at, canary, canary_percent FROM pointer WHERE one = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )?;
    Ok(Pointer {
        current: current.map(parse_id).transpose()?,
        generation: generation as u64,
        required_min: required_min.map(parse_id).transpose()?,
        changed_at,
        canary: canary.map(parse_id).transpose()?,
        canary_percent: canary_percent.clamp(0, 100) as u8,
    })
}
