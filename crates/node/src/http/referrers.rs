//! The referrers API (spec "Listing Referrers"): an image index of the
//! manifests whose `subject` is the given digest, filterable by
//! `artifactType`.

use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use wharf_oci::{media, validate_repository, Digest};

use crate::http::error::ApiResult;
use crate::http::headers;
use crate::tenant::Tenant;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Query {
    artifact_type: Option<String>,
}

pub async fn list(app: &Tenant, name: &str, digest: &str, uri: &Uri) -> ApiResult<Response> {
    validate_repository(name)?;
    let subject: Digest = digest.parse()?;
    let q: Query = serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    let mut found = app.meta().referrers(name, subject.as_str())?;
    if found.is_empty() {
        // An empty answer may be a follower lagging behind a fresh push.
        app.consensus.read_barrier().await?;
        found = app.meta().referrers(name, subject.as_str())?;
    }
    let manifests: Vec<Value> = found
        .into_iter()
        .filter(|(_, r)| q.artifact_type.is_none() || r.artifact_type == q.artifact_type)
        .map(|(digest, r)| {
            let mut d = json!({"mediaType": r.media_type, "digest": digest, "size": r.size});
            if let Some(t) = r.artifact_type {
                d["artifactType"] = Value::String(t);
            }
            if let Some(a) = r
                .annotations_json
                .and_then(|a| serde_json::from_str::<Value>(&a).ok())
            {
                d["annotations"] = a;
            }
            d
        })
        .collect();
    let body = json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests});
    let mut resp = (
        StatusCode::OK,
        [("content-type", media::OCI_INDEX)],
        body.to_string(),
    )
        .into_response();
    if q.artifact_type.is_some() {
        resp.headers_mut().insert(
            headers::OCI_FILTERS_APPLIED,
            axum::http::HeaderValue::from_static("artifactType"),
        );
    }
    Ok(resp)
}
