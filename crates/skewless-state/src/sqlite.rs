//! The embedded state store: one SQLite file in WAL mode with
//! `synchronous=FULL`, so a transaction that returned is on disk. It stores
//! what the domain decides; it decides nothing itself.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use skewless_core::gc::{deletable, Touch, Use};
use skewless_core::transition::{decide, Decision, Operation, Standing};
use skewless_core::{Action, BlobHash, Entry, Lifecycle, Manifest, ReleaseId};

use crate::{HistoryEntry, NewRelease, Pointer, ReleaseRecord, StateError, StateStore};

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_managed_backends.sql"),
    include_str!("../migrations/sqlite/0003_lifecycle.sql"),
    include_str!("../migrations/sqlite/0004_rollback_target.sql"),
    include_str!("../migrations/sqlite/0005_blobs.sql"),
];

/// SQLite-backed state.
#[derive(Clone)]
pub struct Sqlite {
    conn: Arc<Mutex<Connection>>,
}

impl Sqlite {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(Sqlite {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T, F>(&self, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StateError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StateError::Database("state connection poisoned by a panic".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StateError::Database(e.to_string()))?
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StateError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StateError::Database(format!(
            "the state database has schema version {version}, newer than this skewless understands ({known}); upgrade skewless"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

fn opt_u64(v: Option<i64>) -> Option<u64> {
    v.map(|x| x as u64)
}

fn parse_id(s: String) -> Result<ReleaseId, StateError> {
    ReleaseId::try_from(s).map_err(|e| StateError::Database(e.to_string()))
}

fn parse_hash(s: String) -> Result<BlobHash, StateError> {
    BlobHash::try_from(s).map_err(|e| StateError::Database(e.to_string()))
}

const RELEASE_COLS: &str =
    "r.seq, r.id, r.created_at, r.state, r.backend, r.shell_hash, r.shell_size, \
     r.shell_br, r.shell_gzip, r.promoted_at, r.retired_at, \
     (SELECT COUNT(*) FROM files f WHERE f.release_seq = r.seq), \
     (SELECT COALESCE(SUM(size), 0) FROM files f WHERE f.release_seq = r.seq), \
     r.backend_cmd, r.health_path, r.drained_at";

type RawRelease = (
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

fn raw_release(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRelease> {
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

fn to_record(raw: RawRelease) -> Result<ReleaseRecord, StateError> {
    let (
        seq,
        id,
        created_at,
        state,
        backend,
        sh,
        ss,
        sbr,
        sgz,
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
            hash: parse_hash(sh)?,
            size: ss as u64,
            content_type: "text/html; charset=utf-8".into(),
            br: opt_u64(sbr),
            gzip: opt_u64(sgz),
        },
        promoted_at,
        retired_at,
        drained_at,
        files: files as u64,
        size: size as u64,
        manifest: Manifest::default(),
    })
}

fn load_manifest(conn: &Connection, seq: i64) -> Result<Manifest, StateError> {
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

fn get_release(conn: &Connection, id: &str) -> Result<ReleaseRecord, StateError> {
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

fn get_pointer(conn: &Connection) -> Result<Pointer, StateError> {
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

fn insert_history(tx: &Transaction<'_>, e: &HistoryEntry) -> Result<(), StateError> {
    tx.execute(
        "INSERT INTO history (at, action, release, before, after, actor, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![e.at, e.action.as_str(), e.release, e.before, e.after, e.actor, e.detail],
    )?;
    Ok(())
}

/// The newest history entry: where a touch stands in the change order.
fn history_order(conn: &Connection) -> Result<i64, StateError> {
    Ok(
        conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM history", [], |r| {
            r.get(0)
        })?,
    )
}

fn get_standings(conn: &Connection) -> Result<Vec<Standing>, StateError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, seq, state, promoted_at, drained_at, retired_at, rollback_to FROM releases ORDER BY seq",
    )?;
    type Row = (
        String,
        i64,
        String,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<String>,
    );
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, seq, state, promoted_at, drained_at, retired_at, rollback_to): Row = row?;
        out.push(Standing {
            id: parse_id(id)?,
            seq,
            state: state.parse().map_err(StateError::Database)?,
            promoted_at,
            drained_at,
            retired_at,
            rollback_to: rollback_to.map(parse_id).transpose()?,
        });
    }
    Ok(out)
}

fn seq_of(conn: &Connection, id: &str) -> Result<Option<i64>, StateError> {
    Ok(conn
        .query_row("SELECT seq FROM releases WHERE id = ?1", [id], |r| r.get(0))
        .optional()?)
}

#[async_trait]
impl StateStore for Sqlite {
    async fn create_release(
        &self,
        new: NewRelease,
        actor: &str,
    ) -> Result<ReleaseRecord, StateError> {
        let actor = actor.to_owned();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            if seq_of(&tx, new.id.as_str())?.is_some() {
                return Err(StateError::Exists(new.id.to_string()));
            }
            let mut hashes: Vec<&BlobHash> =
                new.manifest.files.values().map(|e| &e.hash).collect();
            hashes.push(&new.shell.hash);
            hashes.sort();
            hashes.dedup();
            let mut missing = Vec::new();
            {
                let mut touch = tx.prepare_cached(
                    "UPDATE blobs SET touched_at = MAX(touched_at, ?2), touched_seq = ?3 WHERE hash = ?1 AND state = 'present'",
                )?;
                let order = history_order(&tx)?;
                for h in hashes {
                    if touch.execute(params![h.as_str(), new.created_at, order])? == 0 {
                        missing.push(h.clone());
                    }
                }
            }
            if !missing.is_empty() {
                return Err(StateError::MissingBlobs(missing));
            }
            tx.execute(
                "INSERT INTO releases (id, created_at, state, backend, shell_hash, shell_size, shell_br, shell_gzip, backend_cmd, health_path) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    new.id.as_str(),
                    new.created_at,
                    Lifecycle::Uploaded.as_str(),
                    new.backend,
                    new.shell.hash.as_str(),
                    new.shell.size as i64,
                    new.shell.br.map(|x| x as i64),
                    new.shell.gzip.map(|x| x as i64),
                    new.backend_cmd,
                    new.health_path,
                ],
            )?;
            let seq = tx.last_insert_rowid();
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO files (release_seq, path, hash, size, content_type, br, gzip) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for (path, e) in &new.manifest.files {
                    stmt.execute(params![
                        seq,
                        path,
                        e.hash.as_str(),
                        e.size as i64,
                        e.content_type,
                        e.br.map(|x| x as i64),
                        e.gzip.map(|x| x as i64),
                    ])?;
                }
            }
            insert_history(
                &tx,
                &HistoryEntry {
                    seq: 0,
                    at: new.created_at,
                    action: Action::Deploy,
                    release: Some(new.id.to_string()),
                    before: None,
                    after: Some(Lifecycle::Uploaded.as_str().into()),
                    actor,
                    detail: Some(format!(
                        "{} files, {} bytes",
                        new.manifest.files.len(),
                        new.manifest.total_size()
                    )),
                },
            )?;
            let rec = get_release(&tx, new.id.as_str())?;
            tx.commit()?;
            Ok(rec)
        })
        .await
    }

    async fn releases(&self) -> Result<Vec<ReleaseRecord>, StateError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            let raws: Vec<RawRelease> = {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {RELEASE_COLS} FROM releases r WHERE r.state != 'collected' ORDER BY r.seq"
                ))?;
                let rows = stmt.query_map([], raw_release)?;
                rows.collect::<Result<_, _>>()?
            };
            let mut out = Vec::with_capacity(raws.len());
            for raw in raws {
                let mut rec = to_record(raw)?;
                rec.manifest = load_manifest(&tx, rec.seq)?;
                out.push(rec);
            }
            Ok(out)
        })
        .await
    }

    async fn release_summaries(&self) -> Result<Vec<ReleaseRecord>, StateError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {RELEASE_COLS} FROM releases r ORDER BY r.seq"
            ))?;
            let rows = stmt.query_map([], raw_release)?;
            rows.map(|r| to_record(r?)).collect()
        })
        .await
    }

    async fn release(&self, id: &ReleaseId) -> Result<ReleaseRecord, StateError> {
        let id = id.clone();
        self.with(move |conn| get_release(conn, id.as_str())).await
    }

    async fn pointer(&self) -> Result<Pointer, StateError> {
        self.with(|conn| get_pointer(conn)).await
    }

    async fn apply(&self, op: Operation, actor: &str, at: i64) -> Result<Decision, StateError> {
        let actor = actor.to_owned();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let pointer = get_pointer(&tx)?;
            let standings = get_standings(&tx)?;
            let decision = decide(&pointer, &standings, &op, at)?;
            for s in &decision.changed {
                tx.execute(
                    "UPDATE releases SET state = ?2, promoted_at = ?3, drained_at = ?4, retired_at = ?5, rollback_to = ?6 WHERE id = ?1",
                    params![
                        s.id.as_str(),
                        s.state.as_str(),
                        s.promoted_at,
                        s.drained_at,
                        s.retired_at,
                        s.rollback_to.as_ref().map(|r| r.as_str()),
                    ],
                )?;
            }
            let p = &decision.pointer;
            tx.execute(
                "UPDATE pointer SET current = ?1, generation = ?2, required_min = ?3, changed_at = ?4, canary = ?5, canary_percent = ?6 WHERE one = 1",
                params![
                    p.current.as_ref().map(|c| c.as_str()),
                    p.generation as i64,
                    p.required_min.as_ref().map(|c| c.as_str()),
                    p.changed_at,
                    p.canary.as_ref().map(|c| c.as_str()),
                    i64::from(p.canary_percent),
                ],
            )?;
            for n in &decision.history {
                insert_history(
                    &tx,
                    &HistoryEntry {
                        seq: 0,
                        at,
                        action: n.action,
                        release: n.release.clone(),
                        before: n.before.clone(),
                        after: n.after.clone(),
                        actor: actor.clone(),
                        detail: n.detail.clone(),
                    },
                )?;
                if n.action == Action::Retire {
                    // Where the retirement stands in the history: gc orders
                    // touches of its blobs against it.
                    tx.execute(
                        "UPDATE releases SET retired_seq = ?2 WHERE id = ?1",
                        params![n.release, tx.last_insert_rowid()],
                    )?;
                }
            }
            tx.commit()?;
            Ok(decision)
        })
        .await
    }

    async fn blob_refs(&self) -> Result<Vec<(BlobHash, Lifecycle)>, StateError> {
        self.with(|conn| {
            let mut stmt = conn.prepare(
                "SELECT f.hash, r.state FROM files f JOIN releases r ON r.seq = f.release_seq \
                 UNION SELECT shell_hash, state FROM releases",
            )?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (h, state) = row?;
                out.push((parse_hash(h)?, state.parse().map_err(StateError::Database)?));
            }
            Ok(out)
        })
        .await
    }

    async fn touch_blobs(&self, hashes: &[BlobHash], at: i64) -> Result<Vec<BlobHash>, StateError> {
        let hashes = hashes.to_vec();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let mut deleting = Vec::new();
            {
                let order = history_order(&tx)?;
                let mut touch = tx.prepare_cached(
                    "INSERT INTO blobs (hash, state, touched_at, touched_seq) VALUES (?1, 'present', ?2, ?3) \
                     ON CONFLICT (hash) DO UPDATE SET touched_at = MAX(touched_at, excluded.touched_at), \
                     touched_seq = excluded.touched_seq WHERE state = 'present'",
                )?;
                let mut state =
                    tx.prepare_cached("SELECT state FROM blobs WHERE hash = ?1")?;
                for h in hashes {
                    touch.execute(params![h.as_str(), at, order])?;
                    let s: String = state.query_row([h.as_str()], |r| r.get(0))?;
                    if s != "present" {
                        deleting.push(h);
                    }
                }
            }
            tx.commit()?;
            Ok(deleting)
        })
        .await
    }

    async fn mark_garbage(
        &self,
        stored: &[(BlobHash, i64)],
        dry_run: bool,
        now: i64,
        grace_secs: i64,
    ) -> Result<Vec<BlobHash>, StateError> {
        let stored = stored.to_vec();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            // Blob → (state, touched_at), with stored blobs state did not
            // know adopted as present since they were written.
            let mut rows: BTreeMap<String, (String, Touch)> = BTreeMap::new();
            {
                let mut stmt =
                    tx.prepare("SELECT hash, state, touched_at, touched_seq FROM blobs")?;
                let all = stmt.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        Touch {
                            at: r.get(2)?,
                            seq: r.get(3)?,
                        },
                    ))
                })?;
                for row in all {
                    let (h, state, touched) = row?;
                    rows.insert(h, (state, touched));
                }
                // Adopted as touched when written, and now in the history's
                // order: an upload that raced a collection's deletion of the
                // same blob is kept for the grace period.
                let order = history_order(&tx)?;
                let mut adopt = tx.prepare_cached(
                    "INSERT OR IGNORE INTO blobs (hash, state, touched_at, touched_seq) VALUES (?1, 'present', ?2, ?3)",
                )?;
                for (h, written) in &stored {
                    if rows.contains_key(h.as_str()) {
                        continue;
                    }
                    if !dry_run {
                        adopt.execute(params![h.as_str(), written, order])?;
                    }
                    let touched = Touch {
                        at: *written,
                        seq: order,
                    };
                    rows.insert(h.to_string(), ("present".into(), touched));
                }
            }
            let mut uses: HashMap<String, Vec<Use>> = HashMap::new();
            {
                let mut stmt = tx.prepare(
                    "SELECT f.hash, r.state, r.retired_seq FROM files f JOIN releases r ON r.seq = f.release_seq \
                     UNION ALL SELECT shell_hash, state, retired_seq FROM releases",
                )?;
                let all = stmt.query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<i64>>(2)?))
                })?;
                for row in all {
                    let (h, state, retired_seq) = row?;
                    let state: Lifecycle = state.parse().map_err(StateError::Database)?;
                    uses.entry(h).or_default().push(Use { state, retired_seq });
                }
            }
            let mut doomed = Vec::new();
            {
                let mut mark = tx.prepare_cached(
                    "UPDATE blobs SET state = 'deleting' WHERE hash = ?1 AND state = 'present'",
                )?;
                for (h, (state, touched)) in &rows {
                    let uses = uses.get(h).map_or(&[][..], Vec::as_slice);
                    let goes = state == "deleting"
                        || deletable(*touched, uses, dry_run, now, grace_secs);
                    if !goes {
                        continue;
                    }
                    if !dry_run {
                        mark.execute([h.as_str()])?;
                    }
                    doomed.push(parse_hash(h.clone())?);
                }
            }
            tx.commit()?;
            Ok(doomed)
        })
        .await
    }

    async fn deleting_blobs(&self) -> Result<Vec<BlobHash>, StateError> {
        self.with(|conn| {
            let mut stmt = conn.prepare("SELECT hash FROM blobs WHERE state = 'deleting'")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.map(|h| parse_hash(h?)).collect()
        })
        .await
    }

    async fn forget_blobs(&self, hashes: &[BlobHash]) -> Result<(), StateError> {
        let hashes = hashes.to_vec();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut forget =
                    tx.prepare_cached("DELETE FROM blobs WHERE hash = ?1 AND state = 'deleting'")?;
                for h in hashes {
                    forget.execute([h.as_str()])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn record(&self, entry: HistoryEntry) -> Result<(), StateError> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            insert_history(&tx, &entry)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, StateError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT seq, at, action, release, before, after, actor, detail FROM history ORDER BY seq DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], |r| {
                Ok((
                    HistoryEntry {
                        seq: r.get(0)?,
                        at: r.get(1)?,
                        action: Action::Deploy,
                        release: r.get(3)?,
                        before: r.get(4)?,
                        after: r.get(5)?,
                        actor: r.get(6)?,
                        detail: r.get(7)?,
                    },
                    r.get::<_, String>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (mut entry, action) = row?;
                entry.action = action.parse().map_err(StateError::Database)?;
                out.push(entry);
            }
            out.reverse();
            Ok(out)
        })
        .await
    }
}
