//! The push acknowledgement policy: a manifest push may wait until every
//! blob it names is held by several regions (`[uploads] ack_regions`), so
//! that losing the receiving region's disk cannot lose an acknowledged
//! image. The wait follows the replicated blob index: other regions'
//! movers start copying as soon as they apply the manifest.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use wharf_meta::BlobRef;
use wharf_oci::ErrorCode;

use crate::http::error::{ApiError, ApiResult};
use crate::tenant::Tenant;

#[derive(Debug, Clone, Copy)]
pub struct AckPolicy {
    pub regions: usize,
    pub timeout: Duration,
}

/// Regions holding a verified copy of `blob`, as the index says.
fn copies(app: &Tenant, blob: &BlobRef) -> ApiResult<usize> {
    Ok(app
        .consensus
        .meta()
        .blob(&blob.digest)?
        .map_or(0, |r| r.regions.len()))
}

/// Wait until each of `blobs` is held by the policy's number of regions.
pub async fn wait_for_copies(app: &Tenant, blobs: &[BlobRef]) -> ApiResult<()> {
    // The default (one copy) costs nothing on the push path.
    if app.ack.regions <= 1 || blobs.is_empty() {
        return Ok(());
    }
    let want = app.ack.regions.min(app.consensus.members().len());
    if want <= 1 {
        return Ok(());
    }
    let deadline = Instant::now() + app.ack.timeout;
    let mut applied = app.consensus.applied_watch();
    loop {
        let mut short = 0;
        for b in blobs {
            if copies(app, b)? < want {
                short += 1;
            }
        }
        if short == 0 {
            return Ok(());
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let changed = tokio::time::timeout(remaining, applied.changed()).await;
        if !matches!(changed, Ok(Ok(()))) {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "the manifest is stored, but {short} of its blobs reached fewer than \
                     {want} regions within {} s (uploads.ack_regions); push again to wait \
                     for them",
                    app.ack.timeout.as_secs()
                ),
            )
            .with_status(StatusCode::SERVICE_UNAVAILABLE));
        }
    }
}
