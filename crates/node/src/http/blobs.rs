//! Blob HEAD/GET (with Range) and DELETE: spec "Pulling blobs" and
//! "Deleting blobs".

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use wharf_oci::{validate_repository, Digest, ErrorCode};

use crate::http::error::{ApiError, ApiResult};
use crate::http::headers::{self, ByteRange};
use crate::metrics::Metrics;
use crate::tenant::Tenant;

fn blob_unknown(digest: &Digest) -> ApiError {
    ApiError::new(ErrorCode::BlobUnknown, format!("blob {digest} unknown"))
}

pub async fn get(
    app: &Tenant,
    name: &str,
    digest: &str,
    req_headers: &HeaderMap,
    with_body: bool,
) -> ApiResult<Response> {
    validate_repository(name)?;
    let digest: Digest = digest.parse()?;
    let Some(linked_size) = app.blob_in_repo(name, &digest).await? else {
        return Err(blob_unknown(&digest));
    };
    app.registry().check_blob_read(name, &digest)?;
    let local = app.blobs.open_blob(&digest).await?;
    // The bytes from the store itself: the node spends nothing on them.
    // (A read served so is not verified on the way; the scrub still is.)
    if let (true, Some(ttl), Some(_)) = (with_body, app.redirect_ttl, &local) {
        if let Some(url) = app.blobs.presigned_url(&digest, ttl).await? {
            Metrics::add(&app.metrics.blob_redirects, 1);
            return Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header("location", url)
                .header("docker-content-digest", digest.as_str())
                .body(Body::empty())
                .map_err(ApiError::internal);
        }
    }
    let size = local.as_ref().map_or(linked_size, |o| o.size);
    let (status, start, len) = match headers::byte_range(req_headers, size) {
        ByteRange::Whole => (StatusCode::OK, 0, size),
        ByteRange::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        ByteRange::Unsatisfiable => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [("content-range", format!("bytes */{size}"))],
            )
                .into_response())
        }
    };
    let whole = status == StatusCode::OK;
    // A copy with block sums is checked block by block, ranges too, at a
    // fraction of a full hash's cost; one without is hashed (below) and
    // gets its sums from that hash.
    let local = match local {
        // (Small whole reads keep the path below: checked before the first
        // byte, a bad copy is replaced by another region's for this read.)
        Some(opened)
            if with_body
                && app.scrub.verify_reads
                && !(whole && size <= app.scrub.verify_below_bytes) =>
        {
            let (app2, d) = (app.clone(), digest.clone());
            match opened.stream_checked(start, len, move || confirm_later(&app2, &d)) {
                Ok(stream) => {
                    Metrics::add(&app.metrics.blob_bytes_served, len);
                    return blob_response(status, &digest, start, len, size)
                        .body(Body::from_stream(stream))
                        .map_err(ApiError::internal);
                }
                Err(opened) => Some(*opened),
            }
        }
        other => other,
    };
    let body = match (with_body, local) {
        (false, _) => Body::empty(),
        // Small enough to check before the first byte: a bad copy is
        // condemned and the client served from another region.
        (true, Some(opened)) if whole && size <= app.scrub.verify_below_bytes => {
            let id = opened.copy.clone();
            match read_verified(opened, &digest).await? {
                Ok(bytes) => Body::from(bytes),
                Err(actual) => {
                    // Out of the store before the fetch looks for a local copy.
                    wharf_scrub::quarantine(&app.service, &digest, &actual, id, "read").await?;
                    report_later(app, &digest, &actual);
                    fetch_on_demand(app, &digest, size, start, len)?
                }
            }
        }
        (true, Some(opened)) if whole && app.scrub.verify_reads => {
            let id = opened.copy.clone();
            let stream = opened.stream(0, size).await?;
            let (app2, d) = (app.clone(), digest.clone());
            let (app3, d3, id3) = (app.clone(), digest.clone(), id.clone());
            Body::from_stream(wharf_scrub::verifying(
                stream,
                digest.clone(),
                move |actual| condemn_later(&app2, &d, actual, id),
                move |sums| attach_sums_later(&app3, &d3, id3, sums),
            ))
        }
        (true, Some(opened)) => Body::from_stream(opened.stream(start, len).await?),
        (true, None) => fetch_on_demand(app, &digest, size, start, len)?,
    };
    if with_body {
        Metrics::add(&app.metrics.blob_bytes_served, len);
    }
    blob_response(status, &digest, start, len, size)
        .body(body)
        .map_err(ApiError::internal)
}

/// Read a (small) local copy whole and check it: its bytes, or what it
/// hashes to instead of `digest`.
async fn read_verified(
    opened: wharf_blobstore::Opened,
    digest: &Digest,
) -> ApiResult<Result<bytes::Bytes, Digest>> {
    let buf = opened.read_all().await?;
    let algorithm = digest.algorithm();
    let (buf, actual) = tokio::task::spawn_blocking(move || {
        let mut h = wharf_oci::Hasher::new(algorithm);
        h.update(&buf);
        (buf, h.finish())
    })
    .await
    .map_err(ApiError::internal)?;
    Ok(if actual == *digest {
        Ok(buf)
    } else {
        Err(actual)
    })
}

/// This region's copy of `digest` (the file `id`) hashed to `actual`:
/// quarantine it and tell the cluster, off the request's path.
fn condemn_later(app: &Tenant, digest: &Digest, actual: Digest, id: wharf_blobstore::CopyId) {
    Metrics::add(&app.metrics.scrub_corrupt, 1);
    let (service, digest) = (app.service.clone(), digest.clone());
    tokio::spawn(async move {
        if let Err(e) = wharf_scrub::condemn(&service, &digest, Some((&actual, id)), "read").await {
            tracing::warn!(%digest, error = %e, "reporting a corrupt copy failed; the scrub will find it again");
        }
    });
}

/// A read found a block of this region's copy of `digest` failing its
/// sums: a full hash, off the request's path, decides between a corrupt
/// copy (condemned) and wrong sums (replaced).
fn confirm_later(app: &Tenant, digest: &Digest) {
    let (app, digest) = (app.clone(), digest.clone());
    tokio::spawn(async move {
        match wharf_scrub::confirm(&app.service, &digest, "read").await {
            Ok(true) => Metrics::add(&app.metrics.scrub_corrupt, 1),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(%digest, error = %e, "checking a copy that failed its block sums failed; the scrub will find it again");
            }
        }
    });
}

/// A whole read hashed this region's copy of `digest` good: keep its
/// block sums so the next reads check blocks instead of hashing.
fn attach_sums_later(
    app: &Tenant,
    digest: &Digest,
    id: wharf_blobstore::CopyId,
    sums: wharf_blobstore::BlockSums,
) {
    let (service, digest) = (app.service.clone(), digest.clone());
    tokio::spawn(async move {
        if let Err(e) = service.blobs.attach_sums(&digest, &id, sums).await {
            tracing::debug!(%digest, error = %e, "block sums not kept");
        }
    });
}

/// Tell the cluster, off the request's path, that this region's copy of
/// `digest` (already quarantined) hashed to `actual`.
fn report_later(app: &Tenant, digest: &Digest, actual: &Digest) {
    Metrics::add(&app.metrics.scrub_corrupt, 1);
    let (service, digest, actual) = (app.service.clone(), digest.clone(), actual.to_string());
    tokio::spawn(async move {
        if let Err(e) = wharf_scrub::report(&service, &digest, &actual, "read").await {
            tracing::warn!(%digest, error = %e, "reporting a corrupt copy failed");
        }
    });
}

/// Linked in the metadata but not held in this region: stream it from the
/// nearest region that holds it, to the client and into the local store at
/// once. Concurrent requests share one transfer.
fn fetch_on_demand(
    app: &Tenant,
    digest: &Digest,
    size: u64,
    start: u64,
    len: u64,
) -> ApiResult<Body> {
    use wharf_mover::Directory;
    if !app.fetcher.is_inflight(digest) && app.fetcher.directory().holders(digest).is_empty() {
        return Err(ApiError::new(
            ErrorCode::BlobUnknown,
            format!("no reachable region holds {digest}"),
        ));
    }
    let t = app
        .fetcher
        .fetch(digest, size, wharf_mover::Priority::OnDemand);
    Ok(Body::from_stream(t.stream(start, len)))
}

fn blob_response(
    status: StatusCode,
    digest: &Digest,
    start: u64,
    len: u64,
    size: u64,
) -> axum::http::response::Builder {
    let mut builder = Response::builder()
        .status(status)
        .header("content-length", len)
        .header("content-type", "application/octet-stream")
        .header("accept-ranges", "bytes")
        .header("etag", format!("\"{digest}\""))
        .header(headers::CONTENT_DIGEST, digest.as_str());
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            "content-range",
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    builder
}

pub async fn delete(
    app: &Tenant,
    name: &str,
    digest: &str,
    request_id: Option<String>,
) -> ApiResult<Response> {
    let digest: Digest = digest.parse()?;
    app.registry()
        .unlink_blob(name, &digest, request_id)
        .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
