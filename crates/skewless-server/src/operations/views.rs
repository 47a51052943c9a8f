//! What the admin API reads: releases with their live clients and back
//! ends, the status, the history.

use std::collections::BTreeMap;

use skewless_core::{HistoryEntry, ReleaseId};
use skewless_state::ReleaseRecord;
use skewless_wire::{
    canary_of, ClientHistory, ClientPoint, Release, ReleaseClients, ReleaseDetail, Status,
};

use super::Operations;
use crate::ServerError;

impl Operations {
    /// A release as the admin API shows it.
    pub fn release_view(&self, r: &ReleaseRecord) -> Release {
        let snap = self.routing.load();
        Release {
            id: r.id.clone(),
            state: r.state,
            created_at: r.created_at,
            promoted_at: r.promoted_at,
            retired_at: r.retired_at,
            files: r.files,
            size: r.size,
            backend: r.backend.clone(),
            backend_cmd: r.backend_cmd.clone(),
            health_path: r.health_path.clone(),
            backend_status: self.supervisor.status(&r.id),
            current: snap.pointer.current.as_ref() == Some(&r.id),
            canary: snap.pointer.canary.as_ref() == Some(&r.id),
            drained_at: r.drained_at,
            clients: self.counts().get(&r.id).copied().unwrap_or_default(),
        }
    }

    /// Every release, oldest first.
    pub async fn releases(&self) -> Result<Vec<Release>, ServerError> {
        let all = self.state.release_summaries().await?;
        Ok(all.iter().map(|r| self.release_view(r)).collect())
    }

    /// One release with its files.
    pub async fn release(&self, id: &ReleaseId) -> Result<ReleaseDetail, ServerError> {
        let rec = self.state.release(id).await?;
        Ok(ReleaseDetail {
            release: self.release_view(&rec),
            manifest: rec.manifest.files.clone(),
        })
    }

    /// Current, canary, generation, releases per state, clients per
    /// served release, open event streams.
    pub async fn status(&self) -> Result<Status, ServerError> {
        let snap = self.routing.load_full();
        let all = self.state.release_summaries().await?;
        let mut releases = BTreeMap::new();
        for r in &all {
            *releases.entry(r.state.as_str().to_owned()).or_insert(0) += 1;
        }
        let counts = self.counts();
        let clients = snap
            .ordered
            .iter()
            .filter(|v| v.record.state.is_served())
            .map(|v| {
                let c = counts.get(&v.record.id).copied().unwrap_or_default();
                (v.record.id.to_string(), c)
            })
            .collect();
        Ok(Status {
            current: snap.pointer.current.clone(),
            generation: snap.pointer.generation,
            required_min: snap.pointer.required_min.clone(),
            changed_at: snap.pointer.changed_at,
            canary: canary_of(&snap.pointer),
            releases,
            clients,
            event_streams: self.event_streams(),
        })
    }

    /// Every node of the cluster as it last reported itself; a single node
    /// (embedded state) answers with itself alone, holding every job.
    pub async fn nodes(&self) -> Result<Vec<skewless_wire::Node>, ServerError> {
        match &self.cluster {
            Some(cluster) => {
                let view = crate::cluster::read_view(self.state.as_ref(), cluster).await?;
                Ok(view.nodes)
            }
            None => {
                let now = self.clock.now();
                let (id, address) = self
                    .identity
                    .get()
                    .cloned()
                    .unwrap_or_else(|| ("local".into(), String::new()));
                let identity = crate::cluster::Identity {
                    id: &id,
                    address: &address,
                    leases: crate::cluster::JOBS
                        .iter()
                        .map(|j| (*j).to_owned())
                        .collect(),
                };
                let (report, _) = crate::cluster::report(
                    &self.routing,
                    &self.presence,
                    &self.supervisor,
                    now,
                    identity,
                );
                Ok(vec![skewless_wire::Node {
                    report,
                    last_heartbeat: now,
                    silent_secs: 0,
                    live: true,
                }])
            }
        }
    }

    /// Live clients per release over the last `seconds` (clamped to what
    /// is kept), as the sampler recorded them.
    pub async fn client_history(&self, seconds: i64) -> Result<ClientHistory, ServerError> {
        let sampling = &self.settings.samples;
        let kept = sampling.kept_secs as i64;
        if seconds < 1 {
            return Err(ServerError::BadRequest(format!(
                "seconds must be 1 to {kept}, not {seconds}"
            )));
        }
        let now = self.clock.now();
        let from = now - seconds.min(kept);
        let mut releases: Vec<ReleaseClients> = Vec::new();
        for s in self.state.samples(from).await? {
            let point = ClientPoint {
                at: s.at,
                clients: s.clients,
            };
            match releases.last_mut() {
                Some(r) if r.release == s.release => r.points.push(point),
                _ => releases.push(ReleaseClients {
                    release: s.release,
                    points: vec![point],
                }),
            }
        }
        Ok(ClientHistory {
            now,
            from,
            interval_secs: sampling.interval() as u64,
            kept_secs: sampling.kept_secs,
            releases,
        })
    }

    /// The newest `limit` history entries, oldest first.
    pub async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, ServerError> {
        Ok(self.state.history(limit).await?)
    }
}
