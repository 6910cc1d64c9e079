//! The HTTP surface of a node: the OCI Distribution API at /v2/, the
//! management API at /api/v1/, the web console at /console/, and health
//! and metrics endpoints.

pub mod access;
pub mod blobs;
pub mod catalog;
pub mod console;
pub mod error;
pub mod headers;
pub mod manifests;
pub mod pagination;
pub mod referrers;
pub mod route;
pub mod token;
pub mod uploads;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use wharf_auth::Action;
use wharf_oci::ErrorCode;

use crate::metrics::Metrics;
use crate::state::App;
use error::{ApiError, ApiResult};
use route::Route;

pub fn router(app: App) -> Router {
    // Everything under /v2/ and /api/v1/ is authenticated; health, metrics
    // and the token endpoint are not.
    let protected = Router::new()
        .route("/v2", any(base))
        .route("/v2/", any(base))
        .route("/v2/*rest", any(dispatch))
        .nest("/api/v1", crate::api::router())
        // What a console page may offer: asked with the session cookie,
        // which authentication turns into the caller like any credential.
        .route("/console/api/permissions", get(console::permissions))
        // Authentication, then the rate limits (by the caller it found).
        .layer(middleware::from_fn_with_state(
            app.clone(),
            access::authenticate,
        ));
    let token_route = Router::new()
        .route("/auth/token", get(token::token).post(token::token))
        // Signed with the task's secret, not a Wharf credential.
        .route(
            "/api/v1/registries/:name/tasks/:task/hooks/git",
            axum::routing::post(crate::api::tasks::git_hook),
        )
        .layer(middleware::from_fn_with_state(
            app.clone(),
            crate::ratelimit::limit_token,
        ));
    Router::new()
        .merge(protected)
        .merge(token_route)
        .merge(console::router())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // One layer for what every request goes through: each `from_fn`
        // layer boxes the request's future and clones the routes inside
        // it (three layers were 3 % of a manifest GET's instructions).
        .layer(middleware::from_fn_with_state(app.clone(), every_request))
        .with_state(app)
}

/// What every request goes through, outermost first: counted, refused
/// while the node is fenced, given its registry (`tenant::resolve`); every
/// answer carries the API version header and is counted by class.
async fn every_request(State(app): State<App>, req: Request, next: Next) -> Response {
    Metrics::add(&app.metrics.requests, 1);
    let mut resp = match fenced(&app, &req) {
        Some(refused) => refused,
        None => crate::tenant::resolve(State(app.clone()), req, next).await,
    };
    match resp.status().as_u16() {
        400..=499 => Metrics::add(&app.metrics.responses_4xx, 1),
        500..=599 => Metrics::add(&app.metrics.responses_5xx, 1),
        _ => {}
    }
    resp.headers_mut().insert(
        headers::API_VERSION,
        HeaderValue::from_static(headers::API_VERSION_VALUE),
    );
    resp
}

/// What a fenced node still answers: liveness, metrics, its status and its
/// fence (so the fence can be lifted). Everything else gets 503.
fn open_while_fenced(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/metrics" | "/api/v1/status" | "/api/v1/fence"
    )
}

/// A fenced node serves no client: 503 UNAVAILABLE, as a region that is
/// down would look to a load balancer (and /readyz says so too).
fn fenced(app: &App, req: &Request) -> Option<Response> {
    if app.consensus.fence().is_fenced() && !open_while_fenced(req.uri().path()) {
        return Some(
            ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "region {} is fenced (a drill or maintenance): use another region",
                    app.region
                ),
            )
            .with_header("retry-after", "5".into())
            .into_response(),
        );
    }
    None
}

/// GET /v2/: 200 for any authenticated caller (how `docker login` checks
/// credentials), 401 with the challenge otherwise.
async fn base(State(app): State<App>, req: Request) -> Response {
    let app = crate::tenant::of(&req, &app);
    let caller = access::caller_of(&req);
    if let Err(e) = caller.require_identity(&app, true) {
        return e.into_response();
    }
    match *req.method() {
        Method::GET | Method::HEAD => {
            (StatusCode::OK, axum::Json(serde_json::json!({}))).into_response()
        }
        _ => ApiError::new(ErrorCode::Unsupported, "method not allowed").into_response(),
    }
}

/// Ready: a metadata leader is known and the identities have reached this
/// node (without a signing key no client could log in).
async fn readyz(State(app): State<App>) -> Response {
    if !app.consensus.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "no metadata leader yet").into_response();
    }
    if let Some(why) = app.blobs.unavailable() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the blob store ({}) does not answer: {why}",
                app.blobs.describe()
            ),
        )
            .into_response();
    }
    let default = crate::tenant::Tenant::default_registry(app.clone());
    match default.meta().signing_keys() {
        Ok(keys) if !keys.is_empty() => (StatusCode::OK, "ready").into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the bootstrap owner and signing key",
        )
            .into_response(),
    }
}

async fn metrics(State(app): State<App>) -> Response {
    let s = app.consensus.status();
    let meta = app.consensus.meta();
    let gc = meta.region_sweeps(&app.region).unwrap_or_default();
    let gc_pending = meta.sweeps_pending_in(&app.region).unwrap_or(0);
    let scrub = meta.region_scrub(&app.region).unwrap_or_default();
    let gauges = [
        ("wharf_raft_term", "Current Raft term", s.term),
        (
            "wharf_raft_applied_index",
            "Last applied Raft log index",
            s.applied_index,
        ),
        (
            "wharf_raft_last_log_index",
            "Last Raft log index on this node",
            s.last_log_index,
        ),
        (
            "wharf_fenced",
            "1 while this node is fenced out of the group",
            u64::from(s.fenced),
        ),
        (
            "wharf_raft_is_leader",
            "1 when this node leads the metadata group",
            u64::from(s.role == "leader"),
        ),
        (
            "wharf_blob_store_up",
            "1 while the last probe of this region's blob store succeeded",
            u64::from(app.blobs.unavailable().is_none()),
        ),
        (
            "wharf_blob_store_errors_total",
            "Requests to the blob store that failed even after retries",
            app.blobs.errors_total(),
        ),
        (
            "wharf_pending_blob_links",
            "Uploaded blobs whose repository link is not yet in the metadata",
            app.blobs.pending_count() as u64,
        ),
        (
            "wharf_webhook_deliveries_total",
            "Webhook attempts this node made that were answered 2xx (it delivers while it leads)",
            app.webhooks
                .stats
                .delivered
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "wharf_webhook_failed_attempts_total",
            "Webhook attempts this node made that failed (no answer, or not 2xx)",
            app.webhooks
                .stats
                .failed
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "wharf_webhook_dead_total",
            "Webhook events this node dead-lettered after their last attempt",
            app.webhooks
                .stats
                .dead
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "wharf_webhook_busy",
            "Webhooks with pending events this node is sending now",
            app.webhooks
                .stats
                .busy_webhooks
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "wharf_mover_queue_blobs",
            "Blobs this region still has to copy from other regions",
            app.mover_queue.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "wharf_mover_transfers_inflight",
            "Blob transfers into this region in progress",
            app.fetcher.inflight() as u64,
        ),
        (
            "wharf_mover_copies_unrecorded",
            "Blobs copied into this region and not yet recorded in the blob index",
            app.fetcher.recorder().pending() as u64,
        ),
        (
            "wharf_mover_bytes_moved_total",
            "Blob bytes copied into this region from other regions",
            app.fetcher
                .stats
                .bytes_moved
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "wharf_mover_batches_total",
            "Batches of small blobs copied into this region (one stream and one commit each)",
            app.fetcher
                .stats
                .batches
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "wharf_mover_transfer_failures_total",
            "Blob transfers that failed after trying every holder",
            app.fetcher
                .stats
                .failures
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "wharf_upload_sessions",
            "Upload sessions in progress",
            app.blobs.sessions_in_progress() as u64,
        ),
        (
            "wharf_gc_files_deleted_total",
            "Freed blob files this region's sweeper deleted",
            gc.files_deleted,
        ),
        (
            "wharf_gc_bytes_freed_total",
            "Bytes this region's sweeper freed",
            gc.bytes_freed,
        ),
        (
            "wharf_gc_sweeps_pending",
            "Freed blob files this region has yet to delete",
            gc_pending,
        ),
        (
            "wharf_scrub_passes_total",
            "Passes the scrub made over every blob this region holds",
            scrub.passes,
        ),
        (
            "wharf_scrub_last_pass_timestamp_ms",
            "When this region's last scrub pass finished (0: never)",
            scrub.last_pass_ms,
        ),
    ];
    let mut text = app.metrics.render(&gauges);
    if !s.follower_lag.is_empty() {
        text.push_str("# HELP wharf_raft_follower_lag_entries Entries a member is behind the leader's log (leader only)\n# TYPE wharf_raft_follower_lag_entries gauge\n");
        for (id, lag) in &s.follower_lag {
            text.push_str(&format!(
                "wharf_raft_follower_lag_entries{{node=\"{id}\"}} {lag}\n"
            ));
        }
    }
    registry_metrics(&app, &mut text);
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

/// Per registry: its storage and this period's GiB-days (from the
/// replicated state, the same on every node), and the operations this
/// node served (sum over nodes for the cluster's).
fn registry_metrics(app: &App, text: &mut String) {
    use std::fmt::Write;
    let meta = app.consensus.meta();
    let Ok(registries) = meta.registries() else {
        return;
    };
    let mut series: Vec<(&str, &str, &str, Vec<String>)> = vec![
        (
            "wharf_registry_storage_bytes",
            "gauge",
            "Bytes a registry stores, each blob once (what its storage limit counts)",
            vec![],
        ),
        (
            "wharf_registry_logical_bytes",
            "gauge",
            "Bytes a registry's repositories link, a shared blob once per repository",
            vec![],
        ),
        (
            "wharf_registry_blobs",
            "gauge",
            "Blobs a registry stores",
            vec![],
        ),
        (
            "wharf_registry_storage_limit_bytes",
            "gauge",
            "A registry's storage limit (its own, or its tier's)",
            vec![],
        ),
        (
            "wharf_registry_gib_days",
            "gauge",
            "GiB-days a registry accrued in the current billing period (UTC month)",
            vec![],
        ),
        (
            "wharf_registry_operations_total",
            "counter",
            "Requests this node served for a registry, by kind",
            vec![],
        ),
    ];
    for r in &registries {
        let name = &r.name;
        let Ok(s) = meta.storage_usage(name) else {
            continue;
        };
        series[0]
            .3
            .push(format!("{{registry=\"{name}\"}} {}", s.bytes));
        series[1]
            .3
            .push(format!("{{registry=\"{name}\"}} {}", s.logical_bytes));
        series[2]
            .3
            .push(format!("{{registry=\"{name}\"}} {}", s.blobs));
        if let Some(limit) = r
            .storage_limit
            .or(app.service.tiers.of(r.sku).storage_limit)
        {
            series[3].3.push(format!("{{registry=\"{name}\"}} {limit}"));
        }
        if let Ok(m) = crate::api::registries::metering(meta, name, None) {
            series[4].3.push(format!(
                "{{registry=\"{name}\",period=\"{}\"}} {:.6}",
                m.period, m.gib_days
            ));
        }
    }
    for ((registry, kind), n) in app.service.operations.totals() {
        series[5].3.push(format!(
            "{{registry=\"{registry}\",kind=\"{}\"}} {n}",
            kind.as_str()
        ));
    }
    for (name, kind, help, lines) in series {
        if lines.is_empty() {
            continue;
        }
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for l in lines {
            let _ = writeln!(text, "{name}{l}");
        }
    }
}

async fn dispatch(State(app): State<App>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let rest = path.strip_prefix("/v2/").unwrap_or("");
    let result: ApiResult<Response> = match route::parse(rest) {
        None => Err(
            ApiError::new(ErrorCode::NameUnknown, format!("no such endpoint: {path}"))
                .with_status(StatusCode::NOT_FOUND),
        ),
        Some(route) => {
            let tenant = crate::tenant::of(&req, &app);
            handle(tenant, route, req).await
        }
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn unsupported() -> ApiResult<Response> {
    Err(ApiError::new(
        ErrorCode::Unsupported,
        "method not allowed on this endpoint",
    ))
}

/// What a request does, for the access check; None: nothing to check
/// beyond the handler (the catalog filters by caller itself).
fn required_action<'a>(route: &Route<'a>, method: &Method) -> Option<(&'a str, Action)> {
    let (name, action) = match (route, method) {
        (Route::Catalog, _) => return None,
        (Route::Tags { name }, _) => (name, Action::MetadataRead),
        (Route::Referrers { name, .. }, _) => (name, Action::Pull),
        (Route::Manifest { name, .. } | Route::Blob { name, .. }, &Method::DELETE) => {
            (name, Action::Delete)
        }
        (Route::Manifest { name, .. }, &Method::PUT) => (name, Action::Push),
        (Route::Manifest { name, .. } | Route::Blob { name, .. }, _) => (name, Action::Pull),
        (Route::Upload { name, .. }, _) => (name, Action::Push),
    };
    Some((name, action))
}

async fn handle(app: crate::tenant::Tenant, route: Route<'_>, req: Request) -> ApiResult<Response> {
    let method = req.method().clone();
    let caller = access::caller_of(&req);
    if let Some((name, action)) = required_action(&route, &method) {
        let mount_from = match (&route, &method) {
            (Route::Upload { id: "", .. }, &Method::POST) => uploads::mount_source(&req),
            _ => None,
        };
        caller.require_with_mount(&app, name, action, mount_from.as_deref())?;
    }
    // A client may name its write so that a retry applies once.
    let request_id = crate::request_id::from_headers(req.headers(), caller.subject.name())?;
    // Every arm but the manifest read is boxed: this future's size is its
    // largest arm's (an upload's), and each layer of the router moves it
    // into a box of its own, six per request (callgrind: 14 % of a
    // manifest GET's instructions were those copies).
    match route {
        Route::Catalog if method == Method::GET => {
            caller.require_catalog(&app)?;
            Box::pin(catalog::list_repositories(&app, &caller, req.uri())).await
        }
        Route::Tags { name } if method == Method::GET => {
            Box::pin(catalog::list_tags(&app, name, req.uri())).await
        }
        Route::Manifest { name, reference } => match method {
            Method::GET => manifests::get(&app, name, reference, true).await,
            Method::HEAD => manifests::get(&app, name, reference, false).await,
            Method::PUT => {
                let origin = crate::request_id::origin(&req);
                Box::pin(manifests::put(
                    &app, name, reference, req, request_id, origin,
                ))
                .await
            }
            Method::DELETE => {
                let origin = crate::request_id::origin(&req);
                Box::pin(manifests::delete(&app, name, reference, request_id, origin)).await
            }
            _ => unsupported(),
        },
        Route::Blob { name, digest } => match method {
            Method::GET => Box::pin(blobs::get(&app, name, digest, req.headers(), true)).await,
            Method::HEAD => Box::pin(blobs::get(&app, name, digest, req.headers(), false)).await,
            Method::DELETE => Box::pin(blobs::delete(&app, name, digest, request_id)).await,
            _ => unsupported(),
        },
        Route::Upload { name, id } => match (method, id.is_empty()) {
            (Method::POST, true) => Box::pin(uploads::start(&app, &caller, name, req)).await,
            (Method::PATCH, false) => Box::pin(uploads::patch(&app, name, id, req)).await,
            (Method::PUT, false) => Box::pin(uploads::put(&app, name, id, req)).await,
            (Method::GET, false) => Box::pin(uploads::status(&app, name, id)).await,
            (Method::DELETE, false) => Box::pin(uploads::cancel(&app, name, id)).await,
            _ => unsupported(),
        },
        Route::Referrers { name, digest } if method == Method::GET => {
            Box::pin(referrers::list(&app, name, digest, req.uri())).await
        }
        _ => unsupported(),
    }
}
