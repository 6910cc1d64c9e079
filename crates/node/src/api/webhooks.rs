//! `/api/v1/webhooks`: `wharf webhook create|list|show|update|delete|ping|
//! list-events|get-config|redeliver`. Owners only: webhooks hold secrets
//! and their log holds request bodies.

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use wharf_meta::{Delivery, WebhookRecord};

use crate::http::access::Caller;
use crate::http::error::ApiResult;
use crate::tenant::Tenant;

/// Pending events counted per webhook in a listing (more shows as this).
const PENDING_COUNTED: usize = 10_000;
/// Events answered per page of `list-events` at most.
const EVENTS_PAGE_MAX: usize = 1000;

async fn owner(app: &Tenant, caller: &Caller) -> ApiResult<()> {
    caller.require_owner()?;
    app.consensus.read_barrier().await?;
    Ok(())
}

fn row(app: &Tenant, w: &WebhookRecord) -> ApiResult<wharf_api::Webhook> {
    Ok(wharf_api::Webhook {
        name: w.name.clone(),
        uri: w.uri.clone(),
        actions: w.actions.iter().map(|a| a.as_str().to_string()).collect(),
        scope: w.scope.clone().unwrap_or_default(),
        status: if w.enabled { "enabled" } else { "disabled" }.into(),
        format: match w.format {
            wharf_meta::EventFormat::Default => "default",
            wharf_meta::EventFormat::Cloudevents => "cloudevents",
        }
        .into(),
        signed: w.secret.is_some(),
        header_names: w.headers.iter().map(|(k, _)| k.clone()).collect(),
        created_ms: w.created_ms,
        pending: app.registry().webhook_pending(&w.name, PENDING_COUNTED)?,
    })
}

fn event(d: Delivery) -> wharf_api::WebhookEvent {
    let e = d.event;
    wharf_api::WebhookEvent {
        id: e.id,
        action: e.action.as_str().to_string(),
        timestamp_ms: e.at_ms,
        repository: e.target.repository,
        tag: e.target.tag,
        digest: e.target.digest,
        region: e.region,
        state: d.state.as_str().to_string(),
        attempts: d
            .attempts
            .into_iter()
            .map(|a| wharf_api::EventAttempt {
                at_ms: a.at_ms,
                latency_ms: a.latency_ms,
                status: a.status,
                error: a.error,
                request_headers: a.request_headers,
                request_body: a.request_body,
                response_headers: a.response_headers,
                response_body: a.response_body,
            })
            .collect(),
    }
}

pub async fn list(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<wharf_api::Webhook>>> {
    owner(&app, &caller).await?;
    let hooks = app.registry().webhooks()?;
    Ok(Json(
        hooks
            .iter()
            .map(|w| row(&app, w))
            .collect::<ApiResult<_>>()?,
    ))
}

pub async fn create(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Json(w): Json<wharf_api::NewWebhook>,
) -> ApiResult<(StatusCode, Json<wharf_api::Webhook>)> {
    caller.require_owner()?;
    let record = app
        .registry()
        .create_webhook(wharf_registry::NewWebhook {
            name: w.name,
            uri: w.uri,
            actions: w.actions,
            scope: w.scope,
            headers: w.headers,
            status: w.status,
            format: w.format,
            secret: w.secret,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(row(&app, &record)?)))
}

pub async fn show(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<wharf_api::Webhook>> {
    owner(&app, &caller).await?;
    let w = app.registry().webhook(&name)?;
    Ok(Json(row(&app, &w)?))
}

pub async fn update(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(c): Json<wharf_api::WebhookChange>,
) -> ApiResult<Json<wharf_api::Webhook>> {
    caller.require_owner()?;
    app.registry()
        .update_webhook(
            &name,
            wharf_registry::WebhookUpdate {
                uri: c.uri,
                actions: c.actions,
                scope: c.scope,
                headers: c.headers,
                status: c.status,
                format: c.format,
                secret: c.secret,
            },
        )
        .await?;
    show(Extension(app), Extension(caller), Path(name)).await
}

pub async fn delete(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<wharf_api::Removed>> {
    caller.require_owner()?;
    let removed = app.registry().delete_webhook(&name).await?;
    Ok(Json(wharf_api::Removed { removed }))
}

pub async fn config(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<wharf_api::WebhookConfig>> {
    owner(&app, &caller).await?;
    let w = app.registry().webhook(&name)?;
    Ok(Json(wharf_api::WebhookConfig {
        service_uri: w.uri,
        custom_headers: w.headers,
    }))
}

pub async fn ping(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    caller.require_owner()?;
    let id = app.registry().ping_webhook(&name).await?;
    Ok(Json(serde_json::json!({ "id": id })))
}

#[derive(Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    limit: Option<usize>,
    /// The seq to page back from (exclusive).
    #[serde(default)]
    before: Option<u64>,
}

pub async fn events(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<Vec<wharf_api::WebhookEvent>>> {
    owner(&app, &caller).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, EVENTS_PAGE_MAX);
    let list = app.registry().webhook_events(&name, q.before, limit)?;
    Ok(Json(list.into_iter().map(event).collect()))
}

pub async fn redeliver(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(r): Json<wharf_api::Redeliver>,
) -> ApiResult<Json<serde_json::Value>> {
    owner(&app, &caller).await?;
    app.registry().redeliver(&name, &r.event_id).await?;
    Ok(Json(serde_json::json!({ "queued": r.event_id })))
}
