//! GET/PUT/DELETE /api/v1/fence: take the node that answers out of the
//! group (a regional outage rehearsal, `wharf drill`), or bring it back.
//! It acts on the node asked, not on the cluster: send it to the region
//! to fence.

use axum::http::StatusCode;
use axum::{Extension, Json};
use wharf_api::{FenceRequest, FenceState};
use wharf_oci::ErrorCode;

use crate::http::access::Caller;
use crate::http::error::{ApiError, ApiResult};
use crate::tenant::Tenant;

/// Longest fence one request may set: a day.
const MAX_FENCE_S: u64 = 86_400;

fn state(app: &Tenant) -> FenceState {
    let until = app.consensus.fence().until();
    FenceState {
        region: app.region.clone(),
        node_id: app.consensus.node_id(),
        fenced: until.is_some(),
        until_unix_ms: until,
    }
}

fn store(app: &Tenant, until: Option<u64>) -> ApiResult<()> {
    crate::fence::store(&app.data_dir, until).map_err(|e| {
        ApiError::new(ErrorCode::Unavailable, format!("recording the fence: {e}"))
            .with_status(StatusCode::INTERNAL_SERVER_ERROR)
    })
}

pub async fn show(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<FenceState>> {
    caller.require_owner()?;
    Ok(Json(state(&app)))
}

pub async fn set(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<FenceRequest>,
) -> ApiResult<Json<FenceState>> {
    caller.require_owner()?;
    if req.seconds == 0 || req.seconds > MAX_FENCE_S {
        return Err(ApiError::new(
            ErrorCode::Unsupported,
            format!("seconds must be between 1 and {MAX_FENCE_S}"),
        )
        .with_status(StatusCode::BAD_REQUEST));
    }
    let until = wharf_consensus::now_unix_ms() + req.seconds * 1000;
    // On disk first: a restart in the middle keeps the region out.
    store(&app, Some(until))?;
    app.consensus.set_fence(Some(until));
    Ok(Json(state(&app)))
}

pub async fn lift(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<FenceState>> {
    caller.require_owner()?;
    store(&app, None)?;
    app.consensus.set_fence(None);
    Ok(Json(state(&app)))
}
