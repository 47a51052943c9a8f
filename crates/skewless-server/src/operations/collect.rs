//! Garbage collection: retired releases become collected, and blobs no
//! live release needs are deleted in two phases (marked `deleting` in state,
//! then their bytes deleted, then forgotten), so a crash in between leaves
//! work the next collection finishes and never a registered release without
//! its blobs.

use std::collections::HashMap;

use skewless_core::transition::Operation;
use skewless_core::{Action, BlobHash, Lifecycle, ReleaseId};
use skewless_wire::{GcBlob, GcReport};

use super::Operations;
use crate::ServerError;

impl Operations {
    /// Marks retired releases collected and deletes the blobs that
    /// [`skewless_core::gc::deletable`] allows. A dry run changes nothing
    /// and reports what would go.
    pub async fn collect_garbage(
        &self,
        dry_run: bool,
        actor: &str,
    ) -> Result<GcReport, ServerError> {
        let now = self.clock.now();
        let collected: Vec<ReleaseId> = if dry_run {
            self.state
                .release_summaries()
                .await?
                .into_iter()
                .filter(|r| r.state == Lifecycle::Retired)
                .map(|r| r.id)
                .collect()
        } else {
            self.state
                .apply(Operation::Collect, actor, now)
                .await?
                .collected()
        };
        let stored = self.blobs.list().await?;
        let sizes: HashMap<&BlobHash, u64> = stored.iter().map(|b| (&b.hash, b.bytes)).collect();
        let written: Vec<(BlobHash, i64)> = stored
            .iter()
            .map(|b| (b.hash.clone(), b.written_at as i64))
            .collect();
        let doomed = self
            .state
            .mark_garbage(&written, dry_run, now, self.settings.gc_grace_secs)
            .await?;
        let blobs: Vec<GcBlob> = doomed
            .iter()
            .filter_map(|h| {
                sizes.get(h).map(|&bytes| GcBlob {
                    hash: h.clone(),
                    bytes,
                })
            })
            .collect();
        let bytes = if dry_run {
            blobs.iter().map(|b| b.bytes).sum()
        } else {
            // One batch: an object store deletes many keys per request.
            let bytes = self.blobs.delete_many(&doomed).await?;
            self.state.forget_blobs(&doomed).await?;
            self.record(
                Action::Gc,
                actor,
                format!("{} blobs, {bytes} bytes freed", blobs.len()),
            )
            .await?;
            self.refresh().await?;
            bytes
        };
        tracing::info!(blobs = blobs.len(), bytes, dry_run, "gc");
        Ok(GcReport {
            dry_run,
            collected_releases: collected,
            blobs,
            bytes,
        })
    }

    /// Finishes deletions a collection that stopped half-way (a crash)
    /// left, so their blobs can be uploaded and registered again.
    pub async fn finish_collection(&self) -> Result<usize, ServerError> {
        let doomed = self.state.deleting_blobs().await?;
        self.blobs.delete_many(&doomed).await?;
        self.state.forget_blobs(&doomed).await?;
        Ok(doomed.len())
    }
}
