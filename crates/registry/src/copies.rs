//! The push acknowledgement policy: a manifest push may wait until every
//! blob it names is held by several regions (`[uploads] ack_regions`), so
//! that losing the receiving region's disk cannot lose an acknowledged
//! image. The wait follows the replicated blob index: other regions'
//! movers start copying as soon as they apply the manifest.

use std::time::{Duration, Instant};

use wharf_meta::BlobRef;
use wharf_oci::ErrorCode;

use crate::{Handle, ServiceError, ServiceResult};

#[derive(Debug, Clone, Copy)]
pub struct AckPolicy {
    pub regions: usize,
    pub timeout: Duration,
}

impl Handle {
    /// Regions holding a verified copy of `blob`, as the index says.
    fn copies(&self, blob: &BlobRef) -> ServiceResult<usize> {
        Ok(self
            .service
            .consensus
            .meta()
            .blob(&blob.digest)?
            .map_or(0, |r| r.regions.len()))
    }

    /// Wait until each of `blobs` is held by the policy's number of
    /// regions (at most the registry's replica regions: a blob is not
    /// copied anywhere else).
    pub(crate) async fn wait_for_copies(&self, blobs: &[BlobRef]) -> ServiceResult<()> {
        let ack = self.service.ack;
        // The default (one copy) costs nothing on the push path.
        if ack.regions <= 1 || blobs.is_empty() {
            return Ok(());
        }
        let want = ack.regions.min(self.replica_count()?);
        if want <= 1 {
            return Ok(());
        }
        let deadline = Instant::now() + ack.timeout;
        let mut applied = self.service.consensus.applied_watch();
        loop {
            let mut short = 0;
            for b in blobs {
                if self.copies(b)? < want {
                    short += 1;
                }
            }
            if short == 0 {
                return Ok(());
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let changed = tokio::time::timeout(remaining, applied.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return Err(ServiceError::Spec {
                    code: ErrorCode::Unavailable,
                    message: format!(
                        "the manifest is stored, but {short} of its blobs reached fewer than \
                         {want} regions within {} s (uploads.ack_regions); push again to wait \
                         for them",
                        ack.timeout.as_secs()
                    ),
                    status: Some(503),
                });
            }
        }
    }
}
