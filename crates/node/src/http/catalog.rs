//! Catalog and tag listings, sorted lexically, paginated with `n`/`last`.

use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use wharf_oci::validate_repository;

use crate::http::access::Caller;
use crate::http::error::ApiResult;
use crate::http::pagination;
use crate::tenant::Tenant;

fn listing(body: serde_json::Value, link: Option<String>) -> Response {
    let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
    if let Some(l) = link.and_then(|l| l.parse().ok()) {
        resp.headers_mut().insert("link", l);
    }
    resp
}

/// The catalog lists only repositories the caller may see.
pub async fn list_repositories(app: &Tenant, caller: &Caller, uri: &Uri) -> ApiResult<Response> {
    let page = pagination::parse(uri)?;
    let want = page.n.saturating_add(1);
    let access = crate::http::access::access_settings(app)?;
    let visible = |n: &String| caller.subject.may_see(n, &access);
    let mut names: Vec<String> = Vec::new();
    let mut cursor = page.last.clone();
    // Fill the page from batches, skipping what the caller may not see.
    while names.len() < want {
        let batch = app.meta().repositories(cursor.as_deref(), want)?;
        let Some((last, _)) = batch.last() else { break };
        cursor = Some(last.clone());
        let exhausted = batch.len() < want;
        names.extend(
            batch
                .into_iter()
                .filter(|(_, r)| r.attributes.list_enabled)
                .map(|(n, _)| n)
                .filter(visible),
        );
        if exhausted {
            break;
        }
    }
    // Repositories whose first blobs were just uploaded here are listed
    // before their links reach the metadata.
    let after = |n: &String| page.last.as_ref().is_none_or(|l| n > l);
    names.extend(
        app.registry()
            .pending_repositories()
            .into_iter()
            .filter(after)
            .filter(visible)
            .filter(|n| {
                app.meta()
                    .repository_attributes(n)
                    .map_or(true, |a| a.list_enabled)
            }),
    );
    names.sort();
    names.dedup();
    names.truncate(want);
    let (names, link) = pagination::finish(names, &page, "/v2/_catalog");
    Ok(listing(json!({ "repositories": names }), link))
}

pub async fn list_tags(app: &Tenant, name: &str, uri: &Uri) -> ApiResult<Response> {
    validate_repository(name)?;
    let page = pagination::parse(uri)?;
    app.require_repository(name).await?;
    // Tags (and manifests) with list-enabled false are left out.
    let tags = app
        .meta()
        .listed_tags(name, page.last.as_deref(), page.n.saturating_add(1))?;
    let (tags, link) = pagination::finish(tags, &page, &format!("/v2/{name}/tags/list"));
    Ok(listing(json!({ "name": name, "tags": tags }), link))
}
