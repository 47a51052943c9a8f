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
use skewless_core::{Action, BlobHash, Lifecycle, ReleaseId};

use crate::{
    ClientSample, HistoryEntry, NewRelease, Pointer, ReleaseRecord, StateError, StateStore,
};

mod rows;

use crate::record::{parse_hash, parse_id, to_record, RawRelease};
use rows::{get_pointer, get_release, load_manifest, raw_release, RELEASE_COLS};

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_managed_backends.sql"),
    include_str!("../../migrations/sqlite/0003_lifecycle.sql"),
    include_str!("../../migrations/sqlite/0004_rollback_target.sql"),
    include_str!("../../migrations/sqlite/0005_blobs.sql"),
    include_str!("../../migrations/sqlite/0006_client_samples.sql"),
];

/// Drops every sample beyond the newest `?1` of its release.
const PRUNE_SAMPLES: &str = "DELETE FROM client_samples WHERE (release, at) IN (\
     SELECT release, at FROM (\
     SELECT release, at, ROW_NUMBER() OVER (PARTITION BY release ORDER BY at DESC) AS n FROM client_samples\
     ) WHERE n > ?1)";

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

    async fn record_samples(
        &self,
        at: i64,
        samples: &[(ReleaseId, u64)],
        keep: usize,
        oldest: i64,
    ) -> Result<(), StateError> {
        let samples = samples.to_vec();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut put = tx.prepare_cached(
                    "INSERT INTO client_samples (release, at, clients) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (release, at) DO UPDATE SET clients = excluded.clients",
                )?;
                for (release, clients) in &samples {
                    put.execute(params![release.as_str(), at, *clients as i64])?;
                }
            }
            tx.execute("DELETE FROM client_samples WHERE at < ?1", [oldest])?;
            tx.execute(PRUNE_SAMPLES, [keep as i64])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn samples(&self, since: i64) -> Result<Vec<ClientSample>, StateError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT release, at, clients FROM client_samples WHERE at >= ?1 ORDER BY release, at",
            )?;
            let rows = stmt.query_map([since], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (release, at, clients) = row?;
                out.push(ClientSample {
                    release: parse_id(release)?,
                    at,
                    clients: clients.max(0) as u64,
                });
            }
            Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written by a version before the rollback target and the
    /// blobs table: v1 then v2 promoted, v2 retired once.
    fn old_database(path: &Path) {
        let mut conn = Connection::open(path).unwrap();
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        let tx = conn.transaction().unwrap();
        let shell = "ab".repeat(32);
        for (id, state) in [("v1", "current"), ("v2", "draining"), ("v3", "retired")] {
            tx.execute(
                "INSERT INTO releases (id, created_at, state, shell_hash, shell_size) VALUES (?1, 1, ?2, ?3, 5)",
                params![id, state, shell],
            )
            .unwrap();
        }
        for (action, release, before, after) in [
            ("promote", "v1", None, Some("v1")),
            ("promote", "v2", Some("v1"), Some("v2")),
            ("rollback", "v1", Some("v2"), Some("v1")),
            ("retire", "v3", Some("uploaded"), Some("retired")),
        ] {
            tx.execute(
                "INSERT INTO history (at, action, release, before, after, actor) VALUES (1, ?1, ?2, ?3, ?4, 't')",
                params![action, release, before, after],
            )
            .unwrap();
        }
        tx.execute(
            "UPDATE pointer SET current = 'v1', generation = 3 WHERE one = 1",
            [],
        )
        .unwrap();
        tx.commit().unwrap();
    }

    #[tokio::test]
    async fn migration_keeps_where_rollbacks_go_and_when_releases_retired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        old_database(&path);
        let store = Sqlite::open(&path).unwrap();
        {
            let conn = store.conn.lock().unwrap();
            let standings = get_standings(&conn).unwrap();
            let of = |id: &str| {
                standings
                    .iter()
                    .find(|s| s.id.as_str() == id)
                    .unwrap()
                    .clone()
            };
            // v2 was promoted from v1; v1's first promotion had nothing before.
            assert_eq!(
                of("v2").rollback_to.map(|r| r.to_string()),
                Some("v1".into())
            );
            assert_eq!(of("v1").rollback_to, None);
            let retired_seq: Option<i64> = conn
                .query_row(
                    "SELECT retired_seq FROM releases WHERE id = 'v3'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(retired_seq, Some(4));
        }
        // The rollback history-scan would have refused (v1's last promote had
        // no predecessor); the stored target says the same.
        assert!(matches!(
            store.rollback("t", 2).await,
            Err(StateError::NoRollback(_))
        ));
    }
}
