//! The shared state store: PostgreSQL, for several gateway nodes. Every
//! transaction runs at READ COMMITTED; those that change the pointer lock
//! its row first, and every one that changes what gateways route bumps the
//! cluster version and sends it with `NOTIFY skewless` at commit. Times that
//! decide garbage collection come from the database's `now()`, so the
//! nodes' clocks do not matter.

mod cluster;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use skewless_core::gc::{deletable, Touch, Use};
use skewless_core::transition::{decide, Decision, Operation, Standing};
use skewless_core::{Action, BlobHash, Lifecycle, ReleaseId};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres as Pg, Transaction};

use crate::record::{parse_hash, parse_id, to_record, RawRelease};
use crate::{
    ClientSample, HistoryEntry, NewRelease, Pointer, ReleaseRecord, StateError, StateStore,
};
pub use cluster::{Change, ChangeFeed, Lease, NodeRow, PresenceRow};

/// A release row as [`to_record`] reads it; the file count and size are
/// cast to `bigint` so they decode as `i64` (the `SUM` of a `bigint` is a
/// `numeric`).
const RELEASE_COLS: &str =
    "r.seq, r.id, r.created_at, r.state, r.backend, r.shell_hash, r.shell_size, \
     r.shell_br, r.shell_gzip, r.promoted_at, r.retired_at, \
     (SELECT COUNT(*) FROM files f WHERE f.release_seq = r.seq)::bigint, \
     (SELECT COALESCE(SUM(size), 0) FROM files f WHERE f.release_seq = r.seq)::bigint, \
     r.backend_cmd, r.health_path, r.drained_at";

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_cluster.sql"),
    include_str!("../../migrations/postgres/0003_client_samples.sql"),
];

/// The notification channel of state changes.
pub const CHANNEL: &str = "skewless";

/// Whose clock times come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// The database's `now()`: the same for every node (the default).
    Database,
    /// The times callers pass (a controlled clock in tests).
    Caller,
}

/// PostgreSQL-backed state.
#[derive(Clone)]
pub struct Postgres {
    pool: PgPool,
    options: PgConnectOptions,
    time: TimeSource,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres").finish_non_exhaustive()
    }
}

impl From<sqlx::Error> for StateError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StateError::Unavailable(format!("PostgreSQL: {e}")),
            sqlx::Error::Database(ref d)
                if d.code().is_some_and(|c| {
                    // Class 08 (connection), 57P01..03 (shutdown), 53 (resources).
                    c.starts_with("08") || c.starts_with("57P") || c.starts_with("53")
                }) =>
            {
                StateError::Unavailable(format!("PostgreSQL: {e}"))
            }
            other => StateError::Database(other.to_string()),
        }
    }
}

impl Postgres {
    /// Connects to `url` (`postgres://…`), creates or migrates the schema,
    /// and keeps a small pool. Fails with a one-line error if the database
    /// cannot be reached or is newer than this skewless.
    pub async fn connect(url: &str) -> Result<Self, StateError> {
        let options = connect_options(url)?;
        let pool = pool_options()
            .connect_with(options.clone())
            .await
            .map_err(StateError::from)?;
        let store = Postgres {
            pool,
            options,
            time: TimeSource::Database,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Like [`Postgres::connect`] for a database that cannot be reached
    /// now: nothing is connected until first use, and every call fails with
    /// [`StateError::Unavailable`] until the database answers. A task
    /// brings the schema up to date as soon as it does (calls made before
    /// that may fail once more). Must run inside the Tokio runtime.
    pub fn connect_lazy(url: &str) -> Result<Self, StateError> {
        let options = connect_options(url)?;
        let pool = pool_options().connect_lazy_with(options.clone());
        let store = Postgres {
            pool,
            options,
            time: TimeSource::Database,
        };
        let migrating = store.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(100);
            loop {
                match migrating.migrate().await {
                    Ok(()) => {
                        tracing::info!("the state database answers; its schema is up to date");
                        return;
                    }
                    Err(StateError::Unavailable(_)) => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(2));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot bring the state database's schema up to date");
                        return;
                    }
                }
            }
        });
        Ok(store)
    }

    /// Takes times from `time` from now on.
    pub fn with_time_source(mut self, time: TimeSource) -> Self {
        self.time = time;
        self
    }

    /// Closes every pooled connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn migrate(&self) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await?;
        // Nodes starting together migrate one after another.
        sqlx::query("SELECT pg_advisory_xact_lock(7362871)")
            .execute(&mut *tx)
            .await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS skewless_schema (version BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM skewless_schema")
            .fetch_one(&mut *tx)
            .await?;
        let version = version.unwrap_or(0);
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StateError::Database(format!(
                "the state database has schema version {version}, newer than this skewless understands ({known}); upgrade skewless"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            // A plain string runs over the simple query protocol, several
            // statements at once.
            sqlx::Executor::execute(&mut *tx, *sql).await?;
            sqlx::query("INSERT INTO skewless_schema (version) VALUES ($1)")
                .bind((i + 1) as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The time of this transaction: the caller's, or the database's now().
    async fn at(&self, tx: &mut Transaction<'_, Pg>, caller: i64) -> Result<i64, StateError> {
        match self.time {
            TimeSource::Caller => Ok(caller),
            TimeSource::Database => Ok(sqlx::query_scalar(
                "SELECT extract(epoch FROM now())::bigint",
            )
            .fetch_one(&mut **tx)
            .await?),
        }
    }
}

/// The connection settings `url` names, with this program's name.
fn connect_options(url: &str) -> Result<PgConnectOptions, StateError> {
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e| StateError::Database(format!("invalid state URL: {e}")))?;
    Ok(options.application_name("skewless"))
}

/// A small pool whose callers wait a few seconds at most for a connection.
fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(3))
}

/// Bumps the cluster version and notifies every listening node at commit.
async fn bump(tx: &mut Transaction<'_, Pg>) -> Result<i64, StateError> {
    let v: i64 =
        sqlx::query_scalar("UPDATE cluster_version SET version = version + 1 RETURNING version")
            .fetch_one(&mut **tx)
            .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(v.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(v)
}

async fn get_pointer(
    conn: &mut sqlx::PgConnection,
    for_update: bool,
) -> Result<Pointer, StateError> {
    let sql = if for_update {
        "SELECT current, generation, required_min, changed_at, canary, canary_percent FROM pointer WHERE one = 1 FOR UPDATE"
    } else {
        "SELECT current, generation, required_min, changed_at, canary, canary_percent FROM pointer WHERE one = 1"
    };
    type Row = (
        Option<String>,
        i64,
        Option<String>,
        i64,
        Option<String>,
        i32,
    );
    let (current, generation, required_min, changed_at, canary, canary_percent): Row =
        sqlx::query_as(sql).fetch_one(conn).await?;
    Ok(Pointer {
        current: current.map(parse_id).transpose()?,
        generation: generation as u64,
        required_min: required_min.map(parse_id).transpose()?,
        changed_at,
        canary: canary.map(parse_id).transpose()?,
        canary_percent: canary_percent.clamp(0, 100) as u8,
    })
}

async fn load_manifest(
    conn: &mut sqlx::PgConnection,
    seq: i64,
) -> Result<skewless_core::Manifest, StateError> {
    type Row = (String, String, i64, String, Option<i64>, Option<i64>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT path, hash, size, content_type, br, gzip FROM files WHERE release_seq = $1",
    )
    .bind(seq)
    .fetch_all(conn)
    .await?;
    let mut files = BTreeMap::new();
    for (path, hash, size, content_type, br, gzip) in rows {
        files.insert(
            path,
            skewless_core::Entry {
                hash: parse_hash(hash)?,
                size: size as u64,
                content_type,
                br: br.map(|x| x as u64),
                gzip: gzip.map(|x| x as u64),
            },
        );
    }
    Ok(skewless_core::Manifest { files })
}

async fn get_release(conn: &mut sqlx::PgConnection, id: &str) -> Result<ReleaseRecord, StateError> {
    let raw: Option<RawRelease> = sqlx::query_as(&format!(
        "SELECT {RELEASE_COLS} FROM releases r WHERE r.id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let raw = raw.ok_or_else(|| StateError::NotFound(id.to_owned()))?;
    let mut rec = to_record(raw)?;
    rec.manifest = load_manifest(conn, rec.seq).await?;
    Ok(rec)
}

async fn insert_history(conn: &mut sqlx::PgConnection, e: &HistoryEntry) -> Result<(), StateError> {
    sqlx::query(
        "INSERT INTO history (at, action, release, before, after, actor, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(e.at)
    .bind(e.action.as_str())
    .bind(&e.release)
    .bind(&e.before)
    .bind(&e.after)
    .bind(&e.actor)
    .bind(&e.detail)
    .execute(conn)
    .await?;
    Ok(())
}

async fn get_standings(conn: &mut sqlx::PgConnection) -> Result<Vec<Standing>, StateError> {
    type Row = (
        String,
        i64,
        String,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, seq, state, promoted_at, drained_at, retired_at, rollback_to FROM releases ORDER BY seq",
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(
            |(id, seq, state, promoted_at, drained_at, retired_at, rollback_to)| {
                Ok(Standing {
                    id: parse_id(id)?,
                    seq,
                    state: state.parse().map_err(StateError::Database)?,
                    promoted_at,
                    drained_at,
                    retired_at,
                    rollback_to: rollback_to.map(parse_id).transpose()?,
                })
            },
        )
        .collect()
}

fn strings(hashes: &[BlobHash]) -> Vec<String> {
    hashes.iter().map(|h| h.to_string()).collect()
}

#[async_trait]
impl StateStore for Postgres {
    async fn create_release(
        &self,
        new: NewRelease,
        actor: &str,
    ) -> Result<ReleaseRecord, StateError> {
        let mut tx = self.pool.begin().await?;
        let at = self.at(&mut tx, new.created_at).await?;
        let taken: Option<i64> = sqlx::query_scalar("SELECT seq FROM releases WHERE id = $1")
            .bind(new.id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(StateError::Exists(new.id.to_string()));
        }
        let mut hashes: Vec<BlobHash> = new
            .manifest
            .files
            .values()
            .map(|e| e.hash.clone())
            .collect();
        hashes.push(new.shell.hash.clone());
        hashes.sort();
        hashes.dedup();
        // Touch every blob and require it present, in this transaction: a
        // collection that marks one deleting either committed first (then
        // this finds it missing) or sees the touch and leaves it.
        // Rows are locked in hash order, as a collection marks them.
        let touched: Vec<String> = sqlx::query_scalar(
            "WITH l AS (SELECT hash FROM blobs WHERE hash = ANY($1) AND state = 'present' ORDER BY hash FOR UPDATE) \
             UPDATE blobs b SET touched_at = GREATEST(b.touched_at, $2), touches = b.touches + 1, \
             touched_seq = (SELECT version FROM cluster_version WHERE one = 1) \
             FROM l WHERE b.hash = l.hash RETURNING b.hash",
        )
        .bind(strings(&hashes))
        .bind(at)
        .fetch_all(&mut *tx)
        .await?;
        let touched: std::collections::HashSet<String> = touched.into_iter().collect();
        let missing: Vec<BlobHash> = hashes
            .into_iter()
            .filter(|h| !touched.contains(h.as_str()))
            .collect();
        if !missing.is_empty() {
            return Err(StateError::MissingBlobs(missing));
        }
        let seq: Option<i64> = sqlx::query_scalar(
            "INSERT INTO releases (id, created_at, state, backend, shell_hash, shell_size, shell_br, shell_gzip, backend_cmd, health_path) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING RETURNING seq",
        )
        .bind(new.id.as_str())
        .bind(at)
        .bind(Lifecycle::Uploaded.as_str())
        .bind(&new.backend)
        .bind(new.shell.hash.as_str())
        .bind(new.shell.size as i64)
        .bind(new.shell.br.map(|x| x as i64))
        .bind(new.shell.gzip.map(|x| x as i64))
        .bind(&new.backend_cmd)
        .bind(&new.health_path)
        .fetch_optional(&mut *tx)
        .await?;
        let seq = seq.ok_or_else(|| StateError::Exists(new.id.to_string()))?;
        let mut paths = Vec::new();
        let mut file_hashes = Vec::new();
        let mut sizes = Vec::new();
        let mut types = Vec::new();
        let mut brs = Vec::new();
        let mut gzips = Vec::new();
        for (path, e) in &new.manifest.files {
            paths.push(path.clone());
            file_hashes.push(e.hash.to_string());
            sizes.push(e.size as i64);
            types.push(e.content_type.clone());
            brs.push(e.br.map(|x| x as i64));
            gzips.push(e.gzip.map(|x| x as i64));
        }
        sqlx::query(
            "INSERT INTO files (release_seq, path, hash, size, content_type, br, gzip) \
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::bigint[])",
        )
        .bind(seq)
        .bind(paths)
        .bind(file_hashes)
        .bind(sizes)
        .bind(types)
        .bind(brs)
        .bind(gzips)
        .execute(&mut *tx)
        .await?;
        insert_history(
            &mut tx,
            &HistoryEntry {
                seq: 0,
                at,
                action: Action::Deploy,
                release: Some(new.id.to_string()),
                before: None,
                after: Some(Lifecycle::Uploaded.as_str().into()),
                actor: actor.to_owned(),
                detail: Some(format!(
                    "{} files, {} bytes",
                    new.manifest.files.len(),
                    new.manifest.total_size()
                )),
            },
        )
        .await?;
        bump(&mut tx).await?;
        let rec = get_release(&mut tx, new.id.as_str()).await?;
        tx.commit().await?;
        Ok(rec)
    }

    async fn releases(&self) -> Result<Vec<ReleaseRecord>, StateError> {
        let mut tx = self.pool.begin().await?;
        let raws: Vec<RawRelease> = sqlx::query_as(&format!(
            "SELECT {RELEASE_COLS} FROM releases r WHERE r.state != 'collected' ORDER BY r.seq"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(raws.len());
        for raw in raws {
            let mut rec = to_record(raw)?;
            rec.manifest = load_manifest(&mut tx, rec.seq).await?;
            out.push(rec);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn release_summaries(&self) -> Result<Vec<ReleaseRecord>, StateError> {
        let raws: Vec<RawRelease> = sqlx::query_as(&format!(
            "SELECT {RELEASE_COLS} FROM releases r ORDER BY r.seq"
        ))
        .fetch_all(&self.pool)
        .await?;
        raws.into_iter().map(to_record).collect()
    }

    async fn release(&self, id: &ReleaseId) -> Result<ReleaseRecord, StateError> {
        let mut conn = self.pool.acquire().await?;
        get_release(&mut conn, id.as_str()).await
    }

    async fn pointer(&self) -> Result<Pointer, StateError> {
        let mut conn = self.pool.acquire().await?;
        get_pointer(&mut conn, false).await
    }

    async fn apply(&self, op: Operation, actor: &str, at: i64) -> Result<Decision, StateError> {
        let mut tx = self.pool.begin().await?;
        let at = self.at(&mut tx, at).await?;
        // The pointer row's lock serialises every decision across nodes.
        let pointer = get_pointer(&mut tx, true).await?;
        let standings = get_standings(&mut tx).await?;
        let decision = decide(&pointer, &standings, &op, at)?;
        for s in &decision.changed {
            sqlx::query(
                "UPDATE releases SET state = $2, promoted_at = $3, drained_at = $4, retired_at = $5, rollback_to = $6 WHERE id = $1",
            )
            .bind(s.id.as_str())
            .bind(s.state.as_str())
            .bind(s.promoted_at)
            .bind(s.drained_at)
            .bind(s.retired_at)
            .bind(s.rollback_to.as_ref().map(|r| r.as_str()))
            .execute(&mut *tx)
            .await?;
        }
        let p = &decision.pointer;
        sqlx::query(
            "UPDATE pointer SET current = $1, generation = $2, required_min = $3, changed_at = $4, canary = $5, canary_percent = $6 WHERE one = 1",
        )
        .bind(p.current.as_ref().map(|c| c.as_str()))
        .bind(p.generation as i64)
        .bind(p.required_min.as_ref().map(|c| c.as_str()))
        .bind(p.changed_at)
        .bind(p.canary.as_ref().map(|c| c.as_str()))
        .bind(i32::from(p.canary_percent))
        .execute(&mut *tx)
        .await?;
        // The version this decision commits as: gc orders touches of a
        // retired release's blobs against it.
        let version = bump(&mut tx).await?;
        for n in &decision.history {
            if n.action == Action::Retire {
                sqlx::query("UPDATE releases SET retired_seq = $2 WHERE id = $1")
                    .bind(&n.release)
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
            }
            insert_history(
                &mut tx,
                &HistoryEntry {
                    seq: 0,
                    at,
                    action: n.action,
                    release: n.release.clone(),
                    before: n.before.clone(),
                    after: n.after.clone(),
                    actor: actor.to_owned(),
                    detail: n.detail.clone(),
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(decision)
    }

    async fn blob_refs(&self) -> Result<Vec<(BlobHash, Lifecycle)>, StateError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT f.hash, r.state FROM files f JOIN releases r ON r.seq = f.release_seq \
             UNION SELECT shell_hash, state FROM releases",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(h, s)| Ok((parse_hash(h)?, s.parse().map_err(StateError::Database)?)))
            .collect()
    }

    async fn touch_blobs(&self, hashes: &[BlobHash], at: i64) -> Result<Vec<BlobHash>, StateError> {
        let mut tx = self.pool.begin().await?;
        let at = self.at(&mut tx, at).await?;
        let mut sorted = hashes.to_vec();
        sorted.sort();
        sorted.dedup();
        // Sorted, so concurrent touches lock rows in one order.
        let present: Vec<String> = sqlx::query_scalar(
            "INSERT INTO blobs (hash, state, touched_at, touched_seq, touches) \
             SELECT h, 'present', $2, (SELECT version FROM cluster_version WHERE one = 1), 1 FROM UNNEST($1::text[]) AS h \
             ON CONFLICT (hash) DO UPDATE SET touched_at = GREATEST(blobs.touched_at, excluded.touched_at), \
             touched_seq = excluded.touched_seq, touches = blobs.touches + 1 \
             WHERE blobs.state = 'present' RETURNING hash",
        )
        .bind(strings(&sorted))
        .bind(at)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let present: std::collections::HashSet<String> = present.into_iter().collect();
        Ok(hashes
            .iter()
            .filter(|h| !present.contains(h.as_str()))
            .cloned()
            .collect())
    }

    async fn mark_garbage(
        &self,
        stored: &[(BlobHash, i64)],
        dry_run: bool,
        now: i64,
        grace_secs: i64,
    ) -> Result<Vec<BlobHash>, StateError> {
        let mut tx = self.pool.begin().await?;
        let now = self.at(&mut tx, now).await?;
        if !dry_run && !stored.is_empty() {
            let (hs, ts): (Vec<String>, Vec<i64>) =
                stored.iter().map(|(h, t)| (h.to_string(), *t)).unzip();
            // Adopted as touched when written and now in the change order:
            // an upload that raced a collection of the same blob is kept
            // for the grace period.
            sqlx::query(
                "INSERT INTO blobs (hash, state, touched_at, touched_seq) \
                 SELECT h, 'present', t, (SELECT version FROM cluster_version WHERE one = 1) FROM UNNEST($1::text[], $2::bigint[]) AS s(h, t) \
                 ON CONFLICT (hash) DO NOTHING",
            )
            .bind(hs)
            .bind(ts)
            .execute(&mut *tx)
            .await?;
        }
        let order: i64 = sqlx::query_scalar("SELECT version FROM cluster_version WHERE one = 1")
            .fetch_one(&mut *tx)
            .await?;
        // Blob → (state, last touch, touches).
        let mut rows: BTreeMap<String, (String, Touch, i64)> = BTreeMap::new();
        let all: Vec<(String, String, i64, i64, i64)> =
            sqlx::query_as("SELECT hash, state, touched_at, touched_seq, touches FROM blobs")
                .fetch_all(&mut *tx)
                .await?;
        for (h, state, at, seq, touches) in all {
            rows.insert(h, (state, Touch { at, seq }, touches));
        }
        if dry_run {
            for (h, written) in stored {
                rows.entry(h.to_string()).or_insert_with(|| {
                    let touched = Touch {
                        at: *written,
                        seq: order,
                    };
                    ("present".into(), touched, 0)
                });
            }
        }
        let mut uses: HashMap<String, Vec<Use>> = HashMap::new();
        let all: Vec<(String, String, Option<i64>)> = sqlx::query_as(
            "SELECT f.hash, r.state, r.retired_seq FROM files f JOIN releases r ON r.seq = f.release_seq \
             UNION ALL SELECT shell_hash, state, retired_seq FROM releases",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (h, state, retired_seq) in all {
            let state: Lifecycle = state.parse().map_err(StateError::Database)?;
            uses.entry(h).or_default().push(Use { state, retired_seq });
        }
        let mut doomed = Vec::new();
        for (h, (state, touched, touches)) in &rows {
            let used = uses.get(h).map_or(&[][..], Vec::as_slice);
            let goes = state == "deleting" || deletable(*touched, used, dry_run, now, grace_secs);
            if !goes {
                continue;
            }
            if !dry_run && state == "present" {
                // Only if nobody touched it since it was read above: a deploy
                // that touched it in between (or is registering it now, and
                // holds its row lock) keeps it.
                let marked = sqlx::query(
                    "UPDATE blobs SET state = 'deleting' WHERE hash = $1 AND state = 'present' AND touches = $2",
                )
                .bind(h)
                .bind(touches)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if marked == 0 {
                    continue;
                }
            }
            doomed.push(parse_hash(h.clone())?);
        }
        tx.commit().await?;
        Ok(doomed)
    }

    async fn deleting_blobs(&self) -> Result<Vec<BlobHash>, StateError> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT hash FROM blobs WHERE state = 'deleting' ORDER BY hash")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(parse_hash).collect()
    }

    async fn forget_blobs(&self, hashes: &[BlobHash]) -> Result<(), StateError> {
        sqlx::query("DELETE FROM blobs WHERE hash = ANY($1) AND state = 'deleting'")
            .bind(strings(hashes))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn record(&self, entry: HistoryEntry) -> Result<(), StateError> {
        let mut conn = self.pool.acquire().await?;
        insert_history(&mut conn, &entry).await
    }

    async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, StateError> {
        type Row = (
            i64,
            i64,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            String,
            Option<String>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT seq, at, action, release, before, after, actor, detail FROM history ORDER BY seq DESC LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (seq, at, action, release, before, after, actor, detail) in rows.into_iter().rev() {
            out.push(HistoryEntry {
                seq,
                at,
                action: action.parse().map_err(StateError::Database)?,
                release,
                before,
                after,
                actor,
                detail,
            });
        }
        Ok(out)
    }

    async fn record_samples(
        &self,
        at: i64,
        samples: &[(ReleaseId, u64)],
        keep: usize,
        oldest: i64,
    ) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await?;
        let releases: Vec<String> = samples.iter().map(|(r, _)| r.to_string()).collect();
        let clients: Vec<i64> = samples.iter().map(|(_, c)| *c as i64).collect();
        sqlx::query(
            "INSERT INTO client_samples (release, at, clients) \
             SELECT r, $2, c FROM UNNEST($1::text[], $3::bigint[]) AS s(r, c) \
             ON CONFLICT (release, at) DO UPDATE SET clients = excluded.clients",
        )
        .bind(&releases)
        .bind(at)
        .bind(&clients)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM client_samples WHERE at < $1")
            .bind(oldest)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM client_samples WHERE (release, at) IN (\
             SELECT release, at FROM (\
             SELECT release, at, ROW_NUMBER() OVER (PARTITION BY release ORDER BY at DESC) AS n FROM client_samples\
             ) ranked WHERE n > $1)",
        )
        .bind(keep as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn samples(&self, since: i64) -> Result<Vec<ClientSample>, StateError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT release, at, clients FROM client_samples WHERE at >= $1 ORDER BY release, at",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(release, at, clients)| {
                Ok(ClientSample {
                    release: parse_id(release)?,
                    at,
                    clients: clients.max(0) as u64,
                })
            })
            .collect()
    }

    async fn version(&self) -> Result<u64, StateError> {
        let v: i64 = sqlx::query_scalar("SELECT version FROM cluster_version WHERE one = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(v as u64)
    }

    async fn routing_state(&self) -> Result<crate::RoutingState, StateError> {
        // One snapshot of version, pointer and releases.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let v: i64 = sqlx::query_scalar("SELECT version FROM cluster_version WHERE one = 1")
            .fetch_one(&mut *tx)
            .await?;
        let pointer = get_pointer(&mut tx, false).await?;
        let raws: Vec<RawRelease> = sqlx::query_as(&format!(
            "SELECT {RELEASE_COLS} FROM releases r ORDER BY r.seq"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let releases = raws.into_iter().map(to_record).collect::<Result<_, _>>()?;
        tx.commit().await?;
        Ok(crate::RoutingState {
            version: v as u64,
            pointer,
            releases,
        })
    }

    fn cluster(&self) -> Option<&dyn crate::ClusterState> {
        Some(self)
    }
}
