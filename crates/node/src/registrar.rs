//! Registers, in batches, the links of blobs uploaded to this node that no
//! manifest has registered yet (a blob pushed on its own, or a push whose
//! manifest never came). Until then the uploading node serves them from
//! its pending records; after a crash they are registered at once.

use std::collections::BTreeMap;
use std::time::Duration;

use wharf_meta::{BlobRef, Command};

use crate::state::{now_ms, App};

/// How long an uploaded blob waits for its manifest to register it, by
/// default (`uploads.link_grace_ms`).
pub const GRACE_MS: u64 = wharf_config::LINK_GRACE_MS;
/// How often pending links are looked at.
const TICK_MS: u64 = 200;
/// By then, a blob acknowledged by any live node is linked in the metadata
/// (grace, one tick, and a commit across regions).
pub const WINDOW_MS: u64 = GRACE_MS + TICK_MS + 500;

/// Until `stop`: a batch in progress finishes; what is not registered yet
/// stays in its durable pending record and is registered after the restart.
pub async fn run(app: App, grace: Duration, mut stop: crate::shutdown::Stop) {
    let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait() => return,
        }
        let mut by_repo: BTreeMap<String, Vec<BlobRef>> = BTreeMap::new();
        for (repo, digest, size) in app.blobs.pending_due(grace) {
            by_repo
                .entry(repo)
                .or_default()
                .push(BlobRef { digest, size });
        }
        // Keys are repositories qualified by their registry.
        for (key, blobs) in by_repo {
            let (registry, repo) = crate::tenant::split_pending_key(&key);
            let cmd = Command::LinkBlobs {
                repo: repo.to_string(),
                region: app.region.clone(),
                blobs: blobs.clone(),
                now_ms: now_ms(),
            };
            // Gated: an upload whose manifest never came still counts
            // against the registry's storage limit.
            let cmd = app.service.gated(cmd);
            match app
                .consensus
                .write(crate::tenant::envelope(registry, cmd, None))
                .await
            {
                Ok(wharf_meta::Response::Refused(why)) => {
                    tracing::warn!(%repo, %why, blobs = blobs.len(), "uploaded blobs refused; discarding them");
                    app.service.discard_uploads(&key, &blobs).await;
                }
                Ok(_) => {
                    for b in &blobs {
                        if let Err(e) = app.blobs.remove_pending(&key, &b.digest) {
                            tracing::warn!(%repo, digest = %b.digest, error = %e, "clearing a registered pending link");
                        }
                    }
                }
                // No quorum now: the records stay and are retried.
                Err(e) => tracing::debug!(%repo, error = %e, "registering uploaded blobs"),
            }
        }
    }
}
