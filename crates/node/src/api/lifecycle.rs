//! `wharf config retention|soft-delete`, `wharf repository list-deleted`
//! and `wharf manifest list-deleted|restore`: a registry's policies and
//! its recycle bin.

use axum::extract::Query;
use axum::{Extension, Json};
use serde::Deserialize;
use wharf_auth::Action;
use wharf_meta::PolicyKind;
use wharf_oci::validate_repository;

use crate::http::access::Caller;
use crate::http::error::{ApiError, ApiResult};
use crate::tenant::Tenant;

fn day_policy(p: wharf_meta::DayPolicy) -> wharf_api::DayPolicy {
    wharf_api::DayPolicy {
        enabled: p.enabled,
        days: p.days,
    }
}

fn policies_of(app: &Tenant) -> ApiResult<wharf_api::Policies> {
    let p = app.meta().policies()?;
    Ok(wharf_api::Policies {
        retention: day_policy(p.retention),
        soft_delete: day_policy(p.soft_delete),
        keep: p
            .keep
            .into_iter()
            .map(|r| wharf_api::KeepRule {
                pattern: r.pattern,
                keep_last: r.keep_last,
                untouched_days: r.untouched_days,
            })
            .collect(),
    })
}

pub async fn show_policies(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<wharf_api::Policies>> {
    caller.require_identity(&app, false)?;
    app.consensus.read_barrier().await?;
    Ok(Json(policies_of(&app)?))
}

pub async fn update_policy(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Json(change): Json<wharf_api::PolicyChange>,
) -> ApiResult<Json<wharf_api::Policies>> {
    caller.require_owner()?;
    let kind = match change.policy.as_str() {
        "retention" => PolicyKind::Retention,
        "soft-delete" => PolicyKind::SoftDelete,
        other => {
            return Err(ApiError::new(
                wharf_oci::ErrorCode::Unsupported,
                format!("unknown policy {other:?}: retention or soft-delete"),
            )
            .with_status(axum::http::StatusCode::BAD_REQUEST))
        }
    };
    app.registry()
        .set_policy(kind, change.enabled, change.days)
        .await?;
    Ok(Json(policies_of(&app)?))
}

pub async fn put_keep_rule(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Json(rule): Json<wharf_api::KeepRule>,
) -> ApiResult<Json<wharf_api::Policies>> {
    caller.require_owner()?;
    app.registry()
        .put_keep_rule(wharf_meta::KeepRule {
            pattern: rule.pattern,
            keep_last: rule.keep_last,
            untouched_days: rule.untouched_days,
        })
        .await?;
    Ok(Json(policies_of(&app)?))
}

#[derive(Deserialize)]
pub struct PatternQuery {
    pub pattern: String,
}

pub async fn remove_keep_rule(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<PatternQuery>,
) -> ApiResult<Json<wharf_api::Policies>> {
    caller.require_owner()?;
    app.registry().remove_keep_rule(&q.pattern).await?;
    Ok(Json(policies_of(&app)?))
}

#[derive(Deserialize)]
pub struct DeletedQuery {
    pub repository: String,
}

/// The bin of one repository.
pub async fn list_deleted(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<DeletedQuery>,
) -> ApiResult<Json<Vec<wharf_api::DeletedManifest>>> {
    validate_repository(&q.repository)?;
    caller.require(&app, &q.repository, Action::MetadataRead)?;
    app.consensus.read_barrier().await?;
    let rows = app
        .meta()
        .bin(&q.repository)?
        .into_iter()
        .map(|(digest, e)| wharf_api::DeletedManifest {
            repository: q.repository.clone(),
            digest,
            manifest_deleted: e.manifest.is_some(),
            media_type: e.manifest.map(|m| m.media_type),
            tags: e.tags.into_iter().map(|t| t.tag).collect(),
            deleted_ms: e.deleted_ms,
            purge_ms: e.purge_ms,
        })
        .collect();
    Ok(Json(rows))
}

/// Repositories with something in the bin (the caller may see).
pub async fn list_deleted_repositories(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<String>>> {
    caller.require_identity(&app, false)?;
    app.consensus.read_barrier().await?;
    let access = crate::http::access::access_settings(&app)?;
    let names = app
        .meta()
        .repositories_with_deleted(None, usize::MAX)?
        .into_iter()
        .filter(|n| caller.subject.may_see(n, &access))
        .collect();
    Ok(Json(names))
}

pub async fn restore(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<wharf_api::RestoreRequest>,
) -> ApiResult<Json<wharf_api::Restored>> {
    let (repo, reference) = super::images::parse_image(&req.image)?;
    caller.require(&app, &repo, Action::Push)?;
    let restored = app
        .registry()
        .restore(&repo, &reference.to_string())
        .await?;
    Ok(Json(wharf_api::Restored { restored }))
}
