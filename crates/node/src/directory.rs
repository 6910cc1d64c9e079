//! The mover's view of the cluster, from the replicated blob index and the
//! Raft membership.

use std::sync::Arc;

use wharf_consensus::Consensus;
use wharf_meta::{BlobRef, Command};
use wharf_mover::{Directory, Holder};
use wharf_oci::Digest;

pub struct NodeDirectory {
    pub consensus: Arc<Consensus>,
    pub region: String,
}

impl Directory for NodeDirectory {
    fn holders(&self, digest: &Digest) -> Vec<Holder> {
        // A fenced region is cut off: it fetches nothing from the others.
        if self.consensus.fence().is_fenced() {
            return Vec::new();
        }
        let regions = match self.consensus.meta().blob(digest.as_str()) {
            Ok(Some(r)) => r.regions,
            _ => return Vec::new(),
        };
        self.consensus
            .members()
            .into_iter()
            .filter(|(_, n)| n.region != self.region && regions.contains(&n.region))
            .map(|(id, n)| Holder {
                addr: self.consensus.peer_address(id, &n).to_string(),
                region: n.region,
            })
            .collect()
    }

    fn missing(&self, limit: usize) -> Vec<(Digest, u64)> {
        if self.consensus.fence().is_fenced() {
            return Vec::new();
        }
        let regions = self.consensus.regions().len();
        match self
            .consensus
            .meta()
            .blobs_missing_in(&self.region, regions, limit)
        {
            // A blob no region holds cannot be copied (`wharf replication
            // list` counts it as lost); it only would take a slot.
            Ok(list) => list
                .into_iter()
                .filter(|(_, r)| !r.regions.is_empty())
                .filter_map(|(d, r)| d.parse().ok().map(|d| (d, r.size)))
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "reading the blob index");
                Vec::new()
            }
        }
    }

    async fn report(&self, blobs: Vec<(Digest, u64)>) -> Result<(), String> {
        self.consensus
            .write(crate::tenant::envelope(
                wharf_meta::DEFAULT_REGISTRY,
                Command::BlobsReplicated {
                    region: self.region.clone(),
                    blobs: blobs
                        .into_iter()
                        .map(|(digest, size)| BlobRef {
                            digest: digest.to_string(),
                            size,
                        })
                        .collect(),
                },
                None,
            ))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
