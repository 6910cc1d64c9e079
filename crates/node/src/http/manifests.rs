//! Manifests by tag or digest: PUT/GET/HEAD/DELETE, kept byte-exact
//! (spec "Pulling manifests", "Pushing manifests", "Deleting manifests").

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wharf_meta::{BlobRef, Command, PutManifest};
use wharf_oci::manifest::{self, MANIFEST_MAX_BYTES};
use wharf_oci::{validate_repository, Digest, ErrorCode, Hasher, Reference};

use crate::http::error::{ApiError, ApiResult};
use crate::http::headers;
use crate::metrics::Metrics;
use crate::state::now_ms;
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
    let (digest, record) = app.manifest(name, &reference).await?;
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", &record.media_type)
        .header("content-length", record.raw.len())
        .header("etag", format!("\"{digest}\""))
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
) -> ApiResult<Response> {
    validate_repository(name)?;
    let reference = Reference::parse(reference)?;
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
    let digest = match &reference {
        Reference::Digest(claimed) => {
            let mut h = Hasher::new(claimed.algorithm());
            h.update(&raw);
            let actual = h.finish();
            if actual != *claimed {
                return Err(ApiError::new(
                    ErrorCode::DigestInvalid,
                    format!("manifest hashes to {actual}, not {claimed}"),
                ));
            }
            actual
        }
        Reference::Tag(_) => Digest::sha256_of(&raw),
    };
    let parsed = manifest::parse(&raw, content_type.as_deref())?;
    let subject = parsed.subject.as_ref().map(|s| s.digest.to_string());
    // Blobs uploaded here for this push are linked by the same proposal.
    let new_links: Vec<BlobRef> = parsed
        .blobs
        .iter()
        .filter_map(|d| {
            app.blobs
                .pending(&app.pending_key(name), &d.digest)
                .map(|size| BlobRef {
                    digest: d.digest.to_string(),
                    size,
                })
        })
        .collect();
    let blobs: Vec<BlobRef> = parsed
        .blobs
        .iter()
        .filter(|d| !d.is_foreign())
        .map(|d| BlobRef {
            digest: d.digest.to_string(),
            size: d.size,
        })
        .collect();
    let cmd = Command::PutManifest(Box::new(PutManifest {
        repo: name.to_string(),
        digest: digest.to_string(),
        media_type: parsed.media_type.clone(),
        raw: raw.to_vec(),
        tag: match &reference {
            Reference::Tag(t) => Some(t.clone()),
            Reference::Digest(_) => None,
        },
        blobs: blobs.clone(),
        children: parsed
            .manifests
            .iter()
            .map(|d| d.digest.to_string())
            .collect(),
        subject: subject.clone(),
        artifact_type: parsed.artifact_type.clone(),
        annotations_json: parsed
            .annotations
            .as_ref()
            .map(|a| serde_json::Value::Object(a.clone()).to_string()),
        now_ms: now_ms(),
        new_links: new_links.clone(),
        region: app.region.clone(),
    }));
    let request_id = request_id.unwrap_or_else(crate::request_id::random);
    match app.write_once(cmd.clone(), Some(request_id.clone())).await {
        // The client may have uploaded the blobs through another region,
        // whose links reach the metadata within its registration window:
        // wait that window out once before calling them unknown. The
        // refusal is remembered under the first id, so the second attempt
        // is a write of its own.
        Err(e) if e.code == ErrorCode::ManifestBlobUnknown => {
            tokio::time::sleep(std::time::Duration::from_millis(
                crate::registrar::WINDOW_MS,
            ))
            .await;
            app.write_once(cmd, Some(format!("{request_id}+window")))
                .await?;
        }
        other => {
            other?;
        }
    }
    for b in &new_links {
        // Registered now; a failure here only leaves work for the batcher.
        if let Err(e) = app.blobs.remove_pending(&app.pending_key(name), &b.digest) {
            tracing::warn!(digest = %b.digest, error = %e, "clearing a registered pending link");
        }
    }
    crate::copies::wait_for_copies(app, &blobs).await?;
    Metrics::add(&app.metrics.manifests_pushed, 1);
    let mut resp = (
        StatusCode::CREATED,
        [
            ("location", format!("/v2/{name}/manifests/{digest}")),
            (headers::CONTENT_DIGEST, digest.to_string()),
            ("content-length", "0".to_string()),
        ],
    )
        .into_response();
    if let Some(s) = subject.and_then(|s| s.parse().ok()) {
        resp.headers_mut().insert(headers::OCI_SUBJECT, s);
    }
    Ok(resp)
}

pub async fn delete(
    app: &Tenant,
    name: &str,
    reference: &str,
    request_id: Option<String>,
) -> ApiResult<Response> {
    validate_repository(name)?;
    let cmd = match Reference::parse(reference)? {
        Reference::Digest(d) => Command::DeleteManifest {
            repo: name.to_string(),
            digest: d.to_string(),
        },
        Reference::Tag(t) => Command::DeleteTag {
            repo: name.to_string(),
            tag: t,
        },
    };
    app.write_once(cmd, request_id).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
