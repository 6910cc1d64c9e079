//! Blob HEAD/GET (with Range) and DELETE: spec "Pulling blobs" and
//! "Deleting blobs".

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;
use wharf_oci::{validate_repository, Digest, ErrorCode};

use crate::http::error::{ApiError, ApiResult};
use crate::http::headers::{self, ByteRange};
use crate::metrics::Metrics;
use crate::tenant::Tenant;

/// Read size when streaming blobs: large reads keep syscalls and copies
/// per GiB low (hyper has no sendfile).
const READ_CHUNK_BYTES: usize = 1 << 20;

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
    let size = local.as_ref().map_or(linked_size, |(_, len)| *len);
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
    let body = match (with_body, local) {
        (false, _) => Body::empty(),
        (true, Some((mut file, _))) => {
            if start > 0 {
                file.seek(std::io::SeekFrom::Start(start))
                    .await
                    .map_err(ApiError::internal)?;
            }
            Body::from_stream(ReaderStream::with_capacity(
                file.take(len),
                READ_CHUNK_BYTES,
            ))
        }
        (true, None) => fetch_on_demand(app, &digest, size, start, len)?,
    };
    if with_body {
        Metrics::add(&app.metrics.blob_bytes_served, len);
    }
    blob_response(status, &digest, start, len, size)
        .body(body)
        .map_err(ApiError::internal)
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
