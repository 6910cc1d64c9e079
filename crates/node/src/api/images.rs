//! `wharf repository show --image` and `delete --image`: one image by
//! `repo:tag` or `repo@digest`.

use axum::extract::Query;
use axum::Extension;
use wharf_auth::Action;

use crate::http::access::Caller;
use crate::tenant::Tenant;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use wharf_oci::{media, validate_repository, ErrorCode, Reference};

use super::repositories::Removed;
use crate::http::error::{ApiError, ApiResult};

#[derive(Deserialize)]
pub struct ImageQuery {
    pub image: String,
    /// Also report which regions hold each blob.
    #[serde(default)]
    pub replication: bool,
}

/// Split `repo:tag` / `repo@digest` (a bare `repo` means `repo:latest`).
pub fn parse_image(image: &str) -> ApiResult<(String, Reference)> {
    let (repo, reference) = wharf_oci::split_image(image);
    validate_repository(repo)?;
    Ok((repo.to_string(), Reference::parse(reference)?))
}

pub use wharf_api::{ImageChild as Child, ImageDetail, Layer};

fn str_field(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

pub async fn show(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ImageQuery>,
) -> ApiResult<Json<ImageDetail>> {
    let (repo, reference) = parse_image(&q.image)?;
    caller.require(&app, &repo, Action::Pull)?;
    let (digest, record) = app.manifest(&repo, &reference).await?;
    let tag_attributes = match &reference {
        Reference::Tag(t) => app
            .meta()
            .tag(&repo, t)?
            .map(|t| super::repositories::attributes(t.attributes)),
        Reference::Digest(_) => None,
    };
    let doc: Value = serde_json::from_slice(&record.raw).unwrap_or(Value::Null);
    let layers = doc
        .get("layers")
        .and_then(Value::as_array)
        .map(|ls| {
            ls.iter()
                .map(|l| Layer {
                    digest: str_field(l, "digest").unwrap_or_default(),
                    size: l.get("size").and_then(Value::as_u64).unwrap_or(0),
                    media_type: str_field(l, "mediaType"),
                    regions: None,
                })
                .collect()
        })
        .unwrap_or_default();
    let manifests = if media::is_index(&record.media_type) {
        doc.get("manifests")
            .and_then(Value::as_array)
            .map(|ms| {
                ms.iter()
                    .map(|m| Child {
                        digest: str_field(m, "digest").unwrap_or_default(),
                        media_type: str_field(m, "mediaType"),
                        platform: m.get("platform").map(|p| {
                            [
                                str_field(p, "os"),
                                str_field(p, "architecture"),
                                str_field(p, "variant"),
                            ]
                            .into_iter()
                            .flatten()
                            .collect::<Vec<_>>()
                            .join("/")
                        }),
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut layers: Vec<Layer> = layers;
    if q.replication {
        // The config blob is part of what a region must hold to serve the image.
        if let Some(config) = doc.get("config") {
            layers.insert(
                0,
                Layer {
                    digest: str_field(config, "digest").unwrap_or_default(),
                    size: config.get("size").and_then(Value::as_u64).unwrap_or(0),
                    media_type: str_field(config, "mediaType"),
                    regions: None,
                },
            );
        }
        for l in layers.iter_mut() {
            l.regions = Some(
                app.consensus
                    .meta()
                    .blob(&l.digest)?
                    .map(|b| b.regions)
                    .unwrap_or_default(),
            );
        }
    }
    Ok(Json(ImageDetail {
        tags: app.meta().tags_of(&repo, &digest)?,
        image_size: record.blobs_size(),
        manifest_size: record.raw.len() as u64,
        media_type: record.media_type,
        created_ms: record.created_ms,
        artifact_type: record.artifact_type,
        repository: repo,
        digest,
        layers,
        manifests,
        attributes: super::repositories::attributes(record.attributes),
        tag_attributes,
    }))
}

/// Deleting `repo:tag` untags; deleting `repo@digest` removes the manifest
/// and every tag pointing at it (as the cloud CLI's `repository delete`).
pub async fn delete(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ImageQuery>,
    method: axum::http::Method,
    headers: axum::http::HeaderMap,
) -> ApiResult<Json<Removed>> {
    let (repo, reference) = parse_image(&q.image)?;
    caller.require(&app, &repo, Action::Delete)?;
    let origin = crate::request_id::origin_of(&method, &headers);
    let removed = app
        .registry()
        .delete_reference(&repo, &reference.to_string(), None, Some(origin))
        .await
        .map_err(ApiError::from)
        .map_err(|e| match e.code {
            ErrorCode::ManifestUnknown => ApiError::new(
                ErrorCode::ManifestUnknown,
                format!("image {} not found", q.image),
            ),
            _ => e,
        })?;
    Ok(Json(Removed { removed }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_like_docker() {
        let (r, t) = parse_image("team/app:v1").unwrap();
        assert_eq!((r.as_str(), t), ("team/app", Reference::Tag("v1".into())));
        let (r, t) = parse_image("app").unwrap();
        assert_eq!((r.as_str(), t), ("app", Reference::Tag("latest".into())));
        let d = format!("sha256:{}", "a".repeat(64));
        let (r, t) = parse_image(&format!("a/b@{d}")).unwrap();
        assert_eq!(r, "a/b");
        assert!(matches!(t, Reference::Digest(_)));
        assert!(parse_image("Bad:tag").is_err());
        assert!(parse_image("a:b:c").is_err());
    }
}
