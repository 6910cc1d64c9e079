//! Blob uploads: monolithic (POST ?digest=), POST then PUT, chunked PATCH
//! with Content-Range, streamed PATCH, status, cancel, and cross-repository
//! mount (spec "Pushing blobs", "Mounting a blob from another repository").

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use wharf_auth::Action;
use wharf_blobstore::SessionInfo;
use wharf_oci::{validate_repository, Digest, ErrorCode};

use crate::http::access::Caller;
use crate::http::error::{ApiError, ApiResult};
use crate::http::headers;
use crate::metrics::Metrics;
use crate::tenant::Tenant;

#[derive(Debug, Deserialize, Default)]
struct UploadQuery {
    digest: Option<String>,
    mount: Option<String>,
    from: Option<String>,
}

fn query(req: &Request) -> ApiResult<UploadQuery> {
    serde_urlencoded::from_str(req.uri().query().unwrap_or(""))
        .map_err(|e| ApiError::new(ErrorCode::BlobUploadInvalid, format!("bad query: {e}")))
}

/// The repository a POST mounts from (`?mount=D&from=A`), if it names a
/// valid one.
pub fn mount_source(req: &Request) -> Option<String> {
    let q = query(req).ok()?;
    q.mount.as_ref()?;
    q.from.filter(|f| validate_repository(f).is_ok())
}

fn session_response(status: StatusCode, name: &str, s: &SessionInfo) -> Response {
    (
        status,
        [
            ("location", format!("/v2/{name}/blobs/uploads/{}", s.id)),
            ("range", headers::range_value(s.offset)),
            (headers::UPLOAD_UUID, s.id.clone()),
            ("content-length", "0".to_string()),
        ],
    )
        .into_response()
}

fn created(name: &str, digest: &Digest) -> Response {
    (
        StatusCode::CREATED,
        [
            ("location", format!("/v2/{name}/blobs/{digest}")),
            (headers::CONTENT_DIGEST.as_str(), digest.to_string()),
            ("content-length", "0".to_string()),
        ],
    )
        .into_response()
}

/// Acknowledge an upload once the blob is verified, fsynced and in place,
/// and its link to the repository is recorded durably on this node. The
/// link reaches the metadata with the push's manifest (one Raft proposal
/// per push) or, for a blob pushed alone, in the next background batch.
async fn link(app: &Tenant, name: &str, digest: &Digest, size: u64) -> ApiResult<()> {
    app.registry().link_uploaded(name, digest, size).await?;
    Metrics::add(&app.metrics.blob_bytes_received, size);
    Ok(())
}

fn declared_length(h: &HeaderMap) -> Option<u64> {
    headers::get(h, "content-length").and_then(|v| v.parse().ok())
}

pub async fn start(app: &Tenant, caller: &Caller, name: &str, req: Request) -> ApiResult<Response> {
    validate_repository(name)?;
    app.registry().check_upload(name)?;
    let q = query(&req)?;
    // A mount needs pull rights on the source: without them it is just a
    // new upload (the spec's fallback), revealing nothing about `from`.
    let from = match q.from.as_deref() {
        Some(f) if caller.may(app, f, Action::Pull)? => Some(f),
        _ => None,
    };
    if let Some(mount) = &q.mount {
        if let Some(resp) = try_mount(app, name, mount, from).await? {
            return Ok(resp);
        }
        // Not mountable: the spec says to fall back to a new upload session.
    }
    if let Some(d) = &q.digest {
        let digest: Digest = d.parse()?;
        let size = app
            .blobs
            .put(
                &app.pending_key(name),
                &digest,
                req.into_body().into_data_stream(),
            )
            .await?;
        link(app, name, &digest, size).await?;
        return Ok(created(name, &digest));
    }
    let session = app.blobs.create_session(&app.pending_key(name)).await?;
    Ok(session_response(StatusCode::ACCEPTED, name, &session))
}

async fn try_mount(
    app: &Tenant,
    name: &str,
    mount: &str,
    from: Option<&str>,
) -> ApiResult<Option<Response>> {
    let digest: Digest = mount.parse()?;
    Ok(app
        .registry()
        .mount(name, &digest, from)
        .await?
        .map(|_| created(name, &digest)))
}

pub async fn patch(app: &Tenant, name: &str, id: &str, req: Request) -> ApiResult<Response> {
    validate_repository(name)?;
    let start = headers::content_range_start(req.headers())
        .map_err(|_| ApiError::new(ErrorCode::RangeInvalid, "malformed Content-Range"))?;
    let session = app
        .blobs
        .append(
            id,
            &app.pending_key(name),
            start,
            req.into_body().into_data_stream(),
        )
        .await?;
    Ok(session_response(StatusCode::ACCEPTED, name, &session))
}

pub async fn put(app: &Tenant, name: &str, id: &str, req: Request) -> ApiResult<Response> {
    validate_repository(name)?;
    let q = query(&req)?;
    let digest: Digest = q
        .digest
        .as_deref()
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::DigestInvalid,
                "the digest query parameter is required",
            )
        })?
        .parse()?;
    let start = headers::content_range_start(req.headers())
        .map_err(|_| ApiError::new(ErrorCode::RangeInvalid, "malformed Content-Range"))?;
    if let Some(start) = start {
        let at = app
            .blobs
            .session_info(id, &app.pending_key(name))
            .await?
            .offset;
        if start != at {
            return Err(ApiError::new(
                ErrorCode::RangeInvalid,
                format!("chunk starts at {start}, upload is at {at}"),
            )
            .with_header("range", headers::range_value(at)));
        }
    }
    let has_body = declared_length(req.headers()).is_some_and(|n| n > 0)
        || req.headers().contains_key("transfer-encoding");
    let body = has_body.then(|| req.into_body().into_data_stream());
    let size = app
        .blobs
        .finish(id, &app.pending_key(name), &digest, body)
        .await?;
    link(app, name, &digest, size).await?;
    Ok(created(name, &digest))
}

pub async fn status(app: &Tenant, name: &str, id: &str) -> ApiResult<Response> {
    validate_repository(name)?;
    let session = app.blobs.session_info(id, &app.pending_key(name)).await?;
    Ok(session_response(StatusCode::NO_CONTENT, name, &session))
}

pub async fn cancel(app: &Tenant, name: &str, id: &str) -> ApiResult<Response> {
    validate_repository(name)?;
    app.blobs.cancel(id, &app.pending_key(name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
