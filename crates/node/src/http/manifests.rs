//! Manifests by tag or digest: PUT/GET/HEAD/DELETE, kept byte-exact
//! (spec "Pulling manifests", "Pushing manifests", "Deleting manifests").

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wharf_oci::manifest::MANIFEST_MAX_BYTES;
use wharf_oci::{validate_repository, ErrorCode, Reference};
use wharf_registry::ManifestPush;

use crate::http::error::{ApiError, ApiResult};
use crate::http::headers;
use crate::metrics::Metrics;
use crate::tenant::Tenant;

pub async fn get(
    app: &Tenant,
    name: &str,
    reference: &str,
    with_body: bool,
) -> ApiResult<Response> {
    validate_repository(name)?;
    // A reference that is neither a tag nor a digest names a manifest that
    // cannot exist: 404, as the conformance suite requires of GET and HEAD
    // (a PUT of one is still 400).
    let reference = Reference::parse(reference).map_err(|_| {
        ApiError::new(
            ErrorCode::ManifestUnknown,
            format!("manifest {reference} unknown in {name}: not a valid tag or digest"),
        )
    })?;
    let (digest, record) = app.registry().pull_manifest(name, &reference).await?;
    // Built by hand: `format!` was a tenth of this handler's own cost.
    let mut etag = String::with_capacity(digest.len() + 2);
    etag.push('"');
    etag.push_str(&digest);
    etag.push('"');
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, &record.media_type)
        .header(CONTENT_LENGTH, record.raw.len())
        .header(ETAG, etag)
        .header(headers::CONTENT_DIGEST, &digest);
    let body = if with_body {
        Body::from(record.raw)
    } else {
        Body::empty()
    };
    builder.body(body).map_err(ApiError::internal)
}

pub async fn put(
    app: &Tenant,
    name: &str,
    reference: &str,
    req: Request,
    request_id: Option<String>,
    origin: wharf_meta::Origin,
) -> ApiResult<Response> {
    validate_repository(name)?;
    let content_type = headers::get(req.headers(), "content-type").map(str::to_string);
    let raw = axum::body::to_bytes(req.into_body(), MANIFEST_MAX_BYTES + 1)
        .await
        .map_err(|e| match std::error::Error::source(&e) {
            Some(s) if s.is::<http_body_util::LengthLimitError>() => ApiError::new(
                ErrorCode::SizeInvalid,
                format!("manifest exceeds the {MANIFEST_MAX_BYTES}-byte limit"),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE),
            _ => ApiError::new(
                ErrorCode::ManifestInvalid,
                format!("reading the manifest failed: {e}"),
            ),
        })?;
    let pushed = app
        .registry()
        .put_manifest(ManifestPush {
            repo: name,
            reference,
            raw: &raw,
            content_type: content_type.as_deref(),
            request_id,
            origin: Some(origin),
        })
        .await?;
    Metrics::add(&app.metrics.manifests_pushed, 1);
    let digest = pushed.digest;
    let mut resp = (
        StatusCode::CREATED,
        [
            ("location", format!("/v2/{name}/manifests/{digest}")),
            (headers::CONTENT_DIGEST.as_str(), digest.to_string()),
            ("content-length", "0".to_string()),
        ],
    )
        .into_response();
    if let Some(s) = pushed.subject.and_then(|s| s.parse().ok()) {
        resp.headers_mut().insert(headers::OCI_SUBJECT, s);
    }
    Ok(resp)
}

pub async fn delete(
    app: &Tenant,
    name: &str,
    reference: &str,
    request_id: Option<String>,
    origin: wharf_meta::Origin,
) -> ApiResult<Response> {
    app.registry()
        .delete_reference(name, reference, request_id, Some(origin))
        .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
