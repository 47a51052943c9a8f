//! What several nodes share besides releases: change notices, heartbeats
//! with per-release presence, and leases for singleton jobs.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::mpsc;

use super::{Postgres, CHANNEL};
use crate::{ClusterState, StateError};

/// A change a node must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// State reached this cluster version.
    Version(u64),
    /// The listening connection was (re)established: notices may have been
    /// missed, so state must be read again.
    Resync,
}

/// Change notices as they arrive; the feed ends when its owner drops it.
pub type ChangeFeed = mpsc::Receiver<Change>;

/// One node as it last reported itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    /// Its id.
    pub id: String,
    /// Unix seconds (database time) of its last heartbeat.
    pub heard_at: i64,
    /// Seconds since then, by the database's clock.
    pub age_secs: i64,
    /// Its report (JSON, written by the node).
    pub report: String,
}

/// Live clients of one release, on one node or summed over the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceRow {
    /// The release id.
    pub release: String,
    /// Open event streams.
    pub streams: u64,
    /// Distinct client ids seen recently.
    pub recent: u64,
    /// Live clients.
    pub total: u64,
    /// Unix seconds a client was last seen.
    pub last_seen: Option<i64>,
}

/// A singleton job's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The job.
    pub name: String,
    /// The node holding it.
    pub holder: String,
    /// Bumped whenever the holder changes.
    pub epoch: i64,
    /// Seconds until it expires (negative: expired).
    pub expires_in_secs: i64,
}

/// Listens on [`CHANNEL`] until `tx` is closed: sends `Resync` after every
/// (re)connection and the version of every notice.
async fn listen(store: Postgres, tx: mpsc::Sender<Change>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if tx.is_closed() {
            return;
        }
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(3))
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(store.options.clone());
        let connected = async {
            let mut l = PgListener::connect_with(&pool).await?;
            l.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        }
        .await;
        let mut listener = match connected {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for state changes; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        tracing::info!("listening for state changes");
        if tx.send(Change::Resync).await.is_err() {
            return;
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    if let Ok(v) = n.payload().parse::<u64>() {
                        if tx.send(Change::Version(v)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(None) => {
                    // Lost and re-established: notices in between are gone.
                    tracing::warn!("state-change listener reconnected");
                    if tx.send(Change::Resync).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "state-change listener lost its connection");
                    break;
                }
            }
        }
        drop(listener);
        pool.close().await;
    }
}

#[async_trait]
impl ClusterState for Postgres {
    fn changes(&self) -> ChangeFeed {
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(listen(self.clone(), tx));
        rx
    }

    async fn heartbeat(
        &self,
        node: &str,
        report: &str,
        presence: &[PresenceRow],
    ) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO nodes (id, heard_at, report) VALUES ($1, extract(epoch FROM now())::bigint, $2) \
             ON CONFLICT (id) DO UPDATE SET heard_at = excluded.heard_at, report = excluded.report",
        )
        .bind(node)
        .bind(report)
        .execute(&mut *tx)
        .await?;
        let releases: Vec<String> = presence.iter().map(|p| p.release.clone()).collect();
        sqlx::query("DELETE FROM presence WHERE node = $1 AND NOT (release = ANY($2))")
            .bind(node)
            .bind(&releases)
            .execute(&mut *tx)
            .await?;
        let col = |f: fn(&PresenceRow) -> u64| -> Vec<i64> {
            presence.iter().map(|p| f(p) as i64).collect()
        };
        let last_seen: Vec<Option<i64>> = presence.iter().map(|p| p.last_seen).collect();
        sqlx::query(
            "INSERT INTO presence (node, release, streams, recent, total, last_seen) \
             SELECT $1, * FROM UNNEST($2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[]) \
             ON CONFLICT (node, release) DO UPDATE SET streams = excluded.streams, recent = excluded.recent, \
             total = excluded.total, last_seen = excluded.last_seen",
        )
        .bind(node)
        .bind(&releases)
        .bind(col(|p| p.streams))
        .bind(col(|p| p.recent))
        .bind(col(|p| p.total))
        .bind(last_seen)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeRow>, StateError> {
        let rows: Vec<(String, i64, i64, String)> = sqlx::query_as(
            "SELECT id, heard_at, extract(epoch FROM now())::bigint - heard_at, report FROM nodes ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, heard_at, age_secs, report)| NodeRow {
                id,
                heard_at,
                age_secs,
                report,
            })
            .collect())
    }

    async fn cluster_presence(
        &self,
        live_within_secs: i64,
    ) -> Result<Vec<PresenceRow>, StateError> {
        let rows: Vec<(String, i64, i64, i64, Option<i64>)> = sqlx::query_as(
            "SELECT p.release, \
               COALESCE(SUM(p.streams) FILTER (WHERE n.heard_at >= extract(epoch FROM now())::bigint - $1), 0)::bigint, \
               COALESCE(SUM(p.recent) FILTER (WHERE n.heard_at >= extract(epoch FROM now())::bigint - $1), 0)::bigint, \
               COALESCE(SUM(p.total) FILTER (WHERE n.heard_at >= extract(epoch FROM now())::bigint - $1), 0)::bigint, \
               MAX(p.last_seen) \
             FROM presence p JOIN nodes n ON n.id = p.node GROUP BY p.release ORDER BY p.release",
        )
        .bind(live_within_secs)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(release, streams, recent, total, last_seen)| PresenceRow {
                release,
                streams: streams as u64,
                recent: recent as u64,
                total: total as u64,
                last_seen,
            })
            .collect())
    }

    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_secs: i64,
    ) -> Result<Option<i64>, StateError> {
        let epoch: Option<i64> = sqlx::query_scalar(
            "INSERT INTO leases (name, holder, epoch, expires_at) VALUES ($1, $2, 1, clock_timestamp() + make_interval(secs => $3)) \
             ON CONFLICT (name) DO UPDATE SET \
               epoch = CASE WHEN leases.holder = excluded.holder THEN leases.epoch ELSE leases.epoch + 1 END, \
               holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < clock_timestamp() \
             RETURNING epoch",
        )
        .bind(name)
        .bind(holder)
        .bind(ttl_secs as f64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(epoch)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE leases SET expires_at = clock_timestamp() - interval '1 second' WHERE name = $1 AND holder = $2",
        )
        .bind(name)
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn leases(&self) -> Result<Vec<Lease>, StateError> {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT name, holder, epoch, floor(extract(epoch FROM expires_at - clock_timestamp()))::bigint FROM leases ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, holder, epoch, expires_in_secs)| Lease {
                name,
                holder,
                epoch,
                expires_in_secs,
            })
            .collect())
    }

    async fn forget_nodes(&self, silent_for_secs: i64) -> Result<u64, StateError> {
        let mut tx = self.pool.begin().await?;
        let gone: Vec<String> = sqlx::query_scalar(
            "DELETE FROM nodes WHERE heard_at < extract(epoch FROM now())::bigint - $1 RETURNING id",
        )
        .bind(silent_for_secs)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM presence WHERE node = ANY($1)")
            .bind(&gone)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(gone.len() as u64)
    }
}
