use axum::extract::Query;
use axum::Extension;
use wharf_auth::Action;

use crate::http::access::Caller;
use crate::tenant::Tenant;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use wharf_meta::{Command, ManifestSummary};
use wharf_oci::validate_repository;

use crate::http::error::ApiResult;

pub async fn status(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<wharf_consensus::Status>> {
    caller.require_identity(&app, false)?;
    Ok(Json(app.consensus.status()))
}

pub use wharf_api::Repository as RepositoryRow;

/// The wire form of stored locks.
pub fn attributes(a: wharf_meta::Attributes) -> wharf_api::Attributes {
    wharf_api::Attributes {
        write_enabled: a.write_enabled,
        delete_enabled: a.delete_enabled,
        read_enabled: a.read_enabled,
        list_enabled: a.list_enabled,
    }
}

fn repository_row(
    m: &wharf_meta::Registry<'_>,
    name: String,
    r: wharf_meta::RepoRecord,
) -> ApiResult<RepositoryRow> {
    Ok(RepositoryRow {
        tag_count: m.tag_count(&name)?,
        manifest_count: m.manifest_count(&name)?,
        created_ms: r.created_ms,
        updated_ms: r.updated_ms,
        attributes: attributes(r.attributes),
        name,
    })
}

/// Repositories in one page, at most and by default; the rest follows
/// through the `Link` header (`n`, `last`, as the catalog pages).
const LIST_PAGE: usize = 1000;

/// Repositories read per call at most, seen or not: a caller who may see
/// few of many repositories gets short (even empty) pages with a `Link`,
/// never one call that walks every repository.
const LIST_SCAN: usize = 10 * LIST_PAGE;

/// `wharf repository list`: one page of the repositories the caller may
/// see, in name order, each with its tag and manifest counts.
pub async fn list(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    uri: axum::http::Uri,
) -> ApiResult<axum::response::Response> {
    caller.require_identity(&app, true)?;
    let page = crate::http::pagination::parse_up_to(&uri, LIST_PAGE)?;
    app.consensus.read_barrier().await?;
    let m = app.meta();
    let access = crate::http::access::access_settings(&app)?;
    let mut rows = Vec::new();
    let mut after = page.last.clone();
    let mut scanned = 0;
    let mut more = page.n > 0;
    while more && rows.len() < page.n && scanned < LIST_SCAN {
        let want = (page.n - rows.len()).min(LIST_SCAN - scanned);
        // One more than wanted tells whether anything follows.
        let batch = m.repositories(after.as_deref(), want + 1)?;
        more = batch.len() > want;
        for (name, r) in batch.into_iter().take(want) {
            scanned += 1;
            after = Some(name.clone());
            if caller.subject.may_see(&name, &access) {
                rows.push(repository_row(&m, name, r)?);
            }
        }
    }
    let mut response = Json(rows).into_response();
    if let (true, Some(last)) = (more, after) {
        // The router this sits in is nested, so `uri` lacks the prefix.
        let link = crate::http::pagination::next_link("/api/v1/repositories", page.n, &last);
        if let Ok(v) = axum::http::HeaderValue::from_str(&link) {
            response.headers_mut().insert(axum::http::header::LINK, v);
        }
    }
    Ok(response)
}

#[derive(Deserialize)]
pub struct RepoQuery {
    pub repository: String,
    #[serde(default)]
    pub orderby: Option<String>,
    #[serde(default)]
    pub untagged: Option<bool>,
}

pub use wharf_api::Tag as TagRow;

fn order<T>(rows: &mut [T], orderby: Option<&str>, time: impl Fn(&T) -> u64) -> ApiResult<()> {
    match orderby {
        None => {}
        Some("time_desc") => rows.sort_by_key(|r| std::cmp::Reverse(time(r))),
        Some("time_asc") => rows.sort_by_key(time),
        Some(other) => {
            return Err(crate::http::error::ApiError::new(
                wharf_oci::ErrorCode::Unsupported,
                format!("unknown orderby {other:?}: use time_desc or time_asc"),
            )
            .with_status(axum::http::StatusCode::BAD_REQUEST))
        }
    }
    Ok(())
}

pub async fn tags(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<RepoQuery>,
) -> ApiResult<Json<Vec<TagRow>>> {
    validate_repository(&q.repository)?;
    caller.require(&app, &q.repository, Action::MetadataRead)?;
    app.require_repository(&q.repository).await?;
    let m = app.meta();
    let mut rows = Vec::new();
    for (name, t) in m.tags(&q.repository, None, usize::MAX)? {
        let manifest = m.manifest(&q.repository, &t.digest)?;
        rows.push(TagRow {
            name,
            media_type: manifest.as_ref().map(|r| r.media_type.clone()),
            manifest_size: manifest.as_ref().map(|r| r.raw.len() as u64),
            image_size: manifest.as_ref().map(|r| r.blobs_size()),
            digest: t.digest,
            updated_ms: t.updated_ms,
            attributes: attributes(t.attributes),
            pulled_ms: t.pulled_ms,
        });
    }
    order(&mut rows, q.orderby.as_deref(), |r| r.updated_ms)?;
    Ok(Json(rows))
}

pub async fn manifests(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<RepoQuery>,
) -> ApiResult<Json<Vec<wharf_api::Manifest>>> {
    validate_repository(&q.repository)?;
    caller.require(&app, &q.repository, Action::MetadataRead)?;
    app.require_repository(&q.repository).await?;
    let mut rows: Vec<ManifestSummary> = app
        .meta()
        .manifests(&q.repository)?
        .into_iter()
        .filter(|s| !q.untagged.unwrap_or(false) || s.tags.is_empty())
        .collect();
    order(&mut rows, q.orderby.as_deref(), |r| r.created_ms)?;
    Ok(Json(rows.into_iter().map(manifest_row).collect()))
}

pub use wharf_api::Removed;

fn manifest_row(s: ManifestSummary) -> wharf_api::Manifest {
    wharf_api::Manifest {
        digest: s.digest,
        media_type: s.media_type,
        size: s.size,
        created_ms: s.created_ms,
        artifact_type: s.artifact_type,
        tags: s.tags,
        attributes: attributes(s.attributes),
    }
}

pub async fn delete(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<RepoQuery>,
    method: axum::http::Method,
    headers: axum::http::HeaderMap,
) -> ApiResult<Json<Removed>> {
    validate_repository(&q.repository)?;
    caller.require(&app, &q.repository, Action::Delete)?;
    let origin = crate::request_id::origin_of(&method, &headers);
    let removed = app
        .registry()
        .write_once_from(
            Command::DeleteRepository {
                repo: q.repository.clone(),
            },
            None,
            Some(origin),
        )
        .await?;
    Ok(Json(Removed { removed }))
}

#[derive(Deserialize)]
pub struct ShowQuery {
    pub repository: String,
}

/// `wharf repository show --repository R`: one repository with its locks.
pub async fn show(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ShowQuery>,
) -> ApiResult<Json<RepositoryRow>> {
    validate_repository(&q.repository)?;
    caller.require(&app, &q.repository, Action::MetadataRead)?;
    app.require_repository(&q.repository).await?;
    let m = app.meta();
    let Some(r) = m.repository(&q.repository)? else {
        return Err(wharf_meta::ApplyError::NameUnknown.into());
    };
    Ok(Json(repository_row(&m, q.repository, r)?))
}

/// `wharf repository update`: lock or unlock a repository, tag or
/// manifest; answers its locks as they are now.
pub async fn update(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Json(change): Json<wharf_api::AttributesChange>,
) -> ApiResult<Json<wharf_api::Attributes>> {
    validate_repository(&change.repository)?;
    caller.require(&app, &change.repository, Action::MetadataWrite)?;
    let repo = change.repository.as_str();
    app.registry()
        .update_attributes(
            repo,
            change.reference.as_deref(),
            wharf_meta::AttributeChange {
                write_enabled: change.write_enabled,
                delete_enabled: change.delete_enabled,
                read_enabled: change.read_enabled,
                list_enabled: change.list_enabled,
            },
        )
        .await?;
    // Applied on this node by now (a write returns after the local apply).
    let m = app.meta();
    let reference = change
        .reference
        .as_deref()
        .map(wharf_oci::Reference::parse)
        .transpose()?;
    let now = match reference {
        None => Some(m.repository_attributes(repo)?),
        Some(wharf_oci::Reference::Tag(t)) => m.tag(repo, &t)?.map(|t| t.attributes),
        Some(wharf_oci::Reference::Digest(d)) => {
            m.manifest(repo, d.as_str())?.map(|r| r.attributes)
        }
    }
    .unwrap_or_default();
    Ok(Json(attributes(now)))
}
