//! The embedded state store: one SQLite file in WAL mode with
//! `synchronous=FULL`, so a transaction that returned is on disk.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use skewless_core::{BlobHash, Entry, Lifecycle, Manifest, ReleaseId};

use crate::{HistoryEntry, NewRelease, Pointer, ReleaseRecord, StateError, StateStore};

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_managed_backends.sql"),
    include_str!("../migrations/sqlite/0003_lifecycle.sql"),
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
        params![e.at, e.action, e.release, e.before, e.after, e.actor, e.detail],
    )?;
    Ok(())
}

fn set_state(tx: &Transaction<'_>, id: &str, state: Lifecycle) -> Result<(), StateError> {
    tx.execute(
        "UPDATE releases SET state = ?2 WHERE id = ?1",
        params![id, state.as_str()],
    )?;
    Ok(())
}

/// Switches the pointer to `target` inside `tx`: the old current drains, the
/// target becomes current, the generation grows by one.
fn switch_current(
    tx: &Transaction<'_>,
    target: &ReleaseRecord,
    required_min: Option<String>,
    at: i64,
) -> Result<Pointer, StateError> {
    let before = get_pointer(tx)?;
    let next = target.state.promote(target.id.as_str())?;
    if let Some(old) = &before.current {
        if old != &target.id {
            let old_state: String = tx.query_row(
                "SELECT state FROM releases WHERE id = ?1",
                [old.as_str()],
                |r| r.get(0),
            )?;
            let old_state: Lifecycle = old_state.parse().map_err(StateError::Database)?;
            set_state(tx, old.as_str(), old_state.demote())?;
            tx.execute(
                "UPDATE releases SET drained_at = ?2 WHERE id = ?1",
                params![old.as_str(), at],
            )?;
        }
    }
    set_state(tx, target.id.as_str(), next)?;
    tx.execute(
        "UPDATE releases SET promoted_at = ?2, drained_at = NULL WHERE id = ?1",
        params![target.id.as_str(), at],
    )?;
    // Promoting the canary to everyone ends the canary.
    tx.execute(
        "UPDATE pointer SET canary = NULL, canary_percent = 0 WHERE one = 1 AND canary = ?1",
        params![target.id.as_str()],
    )?;
    tx.execute(
        "UPDATE pointer SET current = ?1, generation = generation + 1, required_min = ?2, changed_at = ?3 WHERE one = 1",
        params![target.id.as_str(), required_min, at],
    )?;
    get_pointer(tx)
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
                    action: "deploy".into(),
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

    async fn promote(
        &self,
        id: &ReleaseId,
        required: bool,
        actor: &str,
        at: i64,
    ) -> Result<Pointer, StateError> {
        let id = id.clone();
        let actor = actor.to_owned();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let target = get_release(&tx, id.as_str())?;
            let before = get_pointer(&tx)?;
            let required_min = if required {
                Some(id.to_string())
            } else {
                before.required_min.as_ref().map(|r| r.to_string())
            };
            let after = switch_current(&tx, &target, required_min, at)?;
            insert_history(
                &tx,
                &HistoryEntry {
                    seq: 0,
                    at,
                    action: "promote".into(),
                    release: Some(id.to_string()),
                    before: before.current.map(|c| c.to_string()),
                    after: Some(id.to_string()),
                    actor,
                    detail: required.then(|| "required".to_owned()),
                },
            )?;
            tx.commit()?;
            Ok(after)
        })
        .await
    }

    async fn rollback(&self, actor: &str, at: i64) -> Result<Pointer, StateError> {
        let actor = actor.to_owned();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let before = get_pointer(&tx)?;
            let Some(current) = before.current.clone() else {
                return Err(StateError::NoRollback("no release is current".into()));
            };
            let previous: Option<Option<String>> = tx
                .query_row(
                    "SELECT before FROM history WHERE action = 'promote' AND after = ?1 ORDER BY seq DESC LIMIT 1",
                    [current.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(Some(previous)) = previous else {
                return Err(StateError::NoRollback(format!(
                    "{current} was the first release made current"
                )));
            };
            let target = get_release(&tx, &previous)?;
            if !target.state.is_served() {
                return Err(StateError::NoRollback(format!(
                    "the previous release {previous} is {}",
                    target.state
                )));
            }
            // A requirement newer than the release rolled back to would
            // order its own clients to upgrade to nothing.
            let required_min = match &before.required_min {
                Some(min) if seq_of(&tx, min.as_str())?.unwrap_or(i64::MAX) > target.seq => None,
                other => other.as_ref().map(|r| r.to_string()),
            };
            let after = switch_current(&tx, &target, required_min, at)?;
            insert_history(
                &tx,
                &HistoryEntry {
                    seq: 0,
                    at,
                    action: "rollback".into(),
                    release: Some(previous.clone()),
                    before: Some(current.to_string()),
                    after: Some(previous),
                    actor,
                    detail: None,
                },
            )?;
            tx.commit()?;
            Ok(after)
        })
        .await
    }

    async fn retire(&self, id: &ReleaseId, actor: &str, at: i64) -> Result<(), StateError> {
        let id = id.clone();
        let actor = actor.to_owned();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let rec = get_release(&tx, id.as_str())?;
            if get_pointer(&tx)?.canary.as_ref() == Some(&id) {
                return Err(StateError::Conflict(format!(
                    "release {id} is the canary; abort the canary first"
                )));
            }
            let next = rec.state.retire(id.as_str())?;
            if rec.state == next {
                return Ok(());
            }
            set_state(&tx, id.as_str(), next)?;
            tx.execute(
                "UPDATE releases SET retired_at = ?2 WHERE id = ?1",
                params![id.as_str(), at],
            )?;
            insert_history(
                &tx,
                &HistoryEntry {
                    seq: 0,
                    at,
                    action: "retire".into(),
                    release: Some(id.to_string()),
                    before: Some(rec.state.as_str().into()),
                    after: Some(next.as_str().into()),
                    actor,
                    detail: None,
                },
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn collect_retired(&self, actor: &str, at: i64) -> Result<Vec<ReleaseId>, StateError> {
        let actor = actor.to_owned();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let ids: Vec<String> = {
                let mut stmt =
                    tx.prepare("SELECT id FROM releases WHERE state = 'retired' ORDER BY seq")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            for id in &ids {
                set_state(&tx, id, Lifecycle::Collected)?;
                insert_history(
                    &tx,
                    &HistoryEntry {
                        seq: 0,
                        at,
                        action: "collect".into(),
                        release: Some(id.clone()),
                        before: Some("retired".into()),
                        after: Some("collected".into()),
                        actor: actor.clone(),
                        detail: None,
                    },
                )?;
            }
            tx.commit()?;
            ids.into_iter().map(parse_id).collect()
        })
        .await
    }

    async fn set_canary(
        &self,
        id: Option<&ReleaseId>,
        percent: u8,
        actor: &str,
        at: i64,
    ) -> Result<Pointer, StateError> {
        let id = id.cloned();
        let actor = actor.to_owned();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let before = get_pointer(&tx)?;
            if let Some(id) = &id {
                let rec = get_release(&tx, id.as_str())?;
                if !rec.state.is_served() {
                    return Err(StateError::Conflict(format!("release {id} is {}", rec.state)));
                }
                if before.current.as_ref() == Some(id) {
                    return Err(StateError::Conflict(format!("release {id} is already current")));
                }
                if !(1..=99).contains(&percent) {
                    return Err(StateError::Conflict("a canary share must be 1 to 99 percent".into()));
                }
            } else if before.canary.is_none() {
                return Err(StateError::Conflict("there is no canary to abort".into()));
            }
            tx.execute(
                "UPDATE pointer SET canary = ?1, canary_percent = ?2, changed_at = ?3 WHERE one = 1",
                params![id.as_ref().map(|i| i.as_str()), if id.is_some() { percent as i64 } else { 0 }, at],
            )?;
            let fmt = |c: &Option<ReleaseId>, p: u8| c.as_ref().map(|c| format!("{c} at {p}%"));
            insert_history(
                &tx,
                &HistoryEntry {
                    seq: 0,
                    at,
                    action: if id.is_some() { "canary" } else { "canary-abort" }.into(),
                    release: id.as_ref().or(before.canary.as_ref()).map(|i| i.to_string()),
                    before: fmt(&before.canary, before.canary_percent),
                    after: fmt(&id, percent),
                    actor,
                    detail: None,
                },
            )?;
            let after = get_pointer(&tx)?;
            tx.commit()?;
            Ok(after)
        })
        .await
    }

    async fn set_required_min(
        &self,
        id: Option<&ReleaseId>,
        actor: &str,
        at: i64,
    ) -> Result<Pointer, StateError> {
        let id = id.cloned();
        let actor = actor.to_owned();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let before = get_pointer(&tx)?;
            if let Some(id) = &id {
                let rec = get_release(&tx, id.as_str())?;
                if !rec.state.is_served() {
                    return Err(StateError::Conflict(format!("release {id} is {}", rec.state)));
                }
            }
            tx.execute(
                "UPDATE pointer SET required_min = ?1, generation = generation + 1, changed_at = ?2 WHERE one = 1",
                params![id.as_ref().map(|i| i.as_str()), at],
            )?;
            insert_history(
                &tx,
                &HistoryEntry {
                    seq: 0,
                    at,
                    action: "require".into(),
                    release: id.as_ref().map(|i| i.to_string()),
                    before: before.required_min.map(|r| r.to_string()),
                    after: id.as_ref().map(|i| i.to_string()),
                    actor,
                    detail: None,
                },
            )?;
            let after = get_pointer(&tx)?;
            tx.commit()?;
            Ok(after)
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
                Ok(HistoryEntry {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    action: r.get(2)?,
                    release: r.get(3)?,
                    before: r.get(4)?,
                    after: r.get(5)?,
                    actor: r.get(6)?,
                    detail: r.get(7)?,
                })
            })?;
            let mut out: Vec<HistoryEntry> = rows.collect::<Result<_, _>>()?;
            out.reverse();
            Ok(out)
        })
        .await
    }
}
