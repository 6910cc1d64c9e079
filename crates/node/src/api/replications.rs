//! Replications as a user sees them: which regions serve the registry, how
//! far each is behind, and how many blobs it still has to copy.

use std::time::Duration;

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::Extension;
use axum::Json;
use serde::{Deserialize, Serialize};
use wharf_api::{MemberChanged, NewMember};
use wharf_consensus::{NodeInfo, Status};
use wharf_meta::Command;
use wharf_oci::ErrorCode;

use crate::http::access::Caller;
use crate::http::error::{ApiError, ApiResult};
use crate::tenant::Tenant;

/// How long a joining node may take to catch up before it votes.
const JOIN_CATCH_UP_S: u64 = 120;
/// How long a region may take to answer a status probe.
const PROBE_TIMEOUT_MS: u64 = 1500;

pub use wharf_api::Region as RegionRow;

/// The caller's own credentials, passed on to the nodes asked on its behalf.
fn authorization(headers: &HeaderMap) -> Option<reqwest::header::HeaderValue> {
    headers
        .get("authorization")
        .and_then(|v| reqwest::header::HeaderValue::from_bytes(v.as_bytes()).ok())
}

fn with_auth(
    req: reqwest::RequestBuilder,
    auth: &Option<reqwest::header::HeaderValue>,
) -> reqwest::RequestBuilder {
    match auth {
        Some(v) => req.header(reqwest::header::AUTHORIZATION, v.clone()),
        None => req,
    }
}

async fn probe(
    client: &reqwest::Client,
    node: &NodeInfo,
    auth: &Option<reqwest::header::HeaderValue>,
) -> Result<Status, String> {
    let resp = with_auth(client.get(format!("{}/api/v1/status", node.http)), auth)
        .timeout(Duration::from_millis(PROBE_TIMEOUT_MS))
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "timeout".to_string()
            } else {
                "unreachable".to_string()
            }
        })?;
    resp.json::<Status>()
        .await
        .map_err(|e| format!("bad answer: {e}"))
}

pub async fn list(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<RegionRow>>> {
    caller.require_identity(&app, false)?;
    app.consensus.read_barrier().await?;
    let client = app.http.clone();
    let members = app.consensus.members();
    let auth = authorization(&headers);
    let probes =
        futures::future::join_all(members.iter().map(|(_, n)| probe(&client, n, &auth))).await;
    let leader_log = probes
        .iter()
        .flatten()
        .find(|s| s.role == "leader")
        .map(|s| s.last_log_index);
    let worker = |id: u64, region: &str| -> ApiResult<bool> {
        let alone = members.iter().filter(|(_, n)| n.region == region).count() <= 1;
        if alone {
            return Ok(true);
        }
        let lease = app
            .consensus
            .meta()
            .role_lease(region, crate::roles::BACKGROUND)?;
        Ok(lease.is_some_and(|l| l.node == id && l.until_ms > crate::state::now_ms()))
    };
    let backlog = backlog_by_region(&app, &members).await?;
    let mut rows = Vec::new();
    for ((id, node), probe) in members.iter().cloned().zip(probes) {
        let Backlog {
            blobs_to_copy,
            bytes_to_copy,
            blobs_lost,
        } = backlog.get(&node.region).copied().unwrap_or_default();
        let (health, role, applied) = match probe {
            // Fenced: it answers, but serves no client and casts no vote.
            Ok(s) if s.fenced => ("fenced".to_string(), Some(s.role), Some(s.applied_index)),
            Ok(s) => ("ok".to_string(), Some(s.role), Some(s.applied_index)),
            Err(e) => (e, None, None),
        };
        let worker = worker(id, &node.region)?;
        rows.push(RegionRow {
            worker,
            lag: applied.zip(leader_log).map(|(a, l)| l.saturating_sub(a)),
            region: node.region,
            node_id: id,
            endpoint: node.http,
            health,
            role,
            applied_index: applied,
            blobs_to_copy,
            bytes_to_copy,
            blobs_lost,
        });
    }
    Ok(Json(rows))
}

/// What one region still lacks.
#[derive(Clone, Copy, Default)]
struct Backlog {
    blobs_to_copy: u64,
    bytes_to_copy: u64,
    /// Lacking here and held by no region.
    blobs_lost: u64,
}

/// The backlog of every region the members are in, each region read once,
/// off the async workers: the index walk is a blocking RocksDB scan, and
/// its first call after heavy churn compacts the churned range.
async fn backlog_by_region(
    app: &Tenant,
    members: &[(u64, NodeInfo)],
) -> ApiResult<std::collections::HashMap<String, Backlog>> {
    let mut regions: Vec<String> = members.iter().map(|(_, n)| n.region.clone()).collect();
    regions.sort();
    regions.dedup();
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        let holders = app.consensus.regions().len();
        let meta = app.consensus.meta();
        let mut out = std::collections::HashMap::new();
        for region in regions {
            let mut b = Backlog::default();
            for (_, r) in meta.blobs_missing_in(&region, holders, usize::MAX)? {
                if r.regions.is_empty() {
                    b.blobs_lost += 1;
                } else {
                    b.blobs_to_copy += 1;
                    b.bytes_to_copy += r.size;
                }
            }
            out.insert(region, b);
        }
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::Internal, format!("counting the backlog: {e}")))?
}

#[derive(Deserialize, Serialize)]
pub struct RegionQuery {
    pub region: String,
}

/// Membership changes run on the leader; other nodes pass them on.
async fn on_leader(
    app: &Tenant,
    headers: &HeaderMap,
    method: reqwest::Method,
    path_and_query: &str,
    body: Option<&NewMember>,
) -> ApiResult<Option<Json<MemberChanged>>> {
    if app.consensus.is_leader() {
        return Ok(None);
    }
    let (_, leader) = app
        .consensus
        .leader()
        .ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "no leader to change membership"))?;
    let mut req = with_auth(
        app.http
            .request(method, format!("{}/api/v1{path_and_query}", leader.http)),
        &authorization(headers),
    );
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| ApiError::new(ErrorCode::Unavailable, format!("leader unreachable: {e}")))?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let msg = v["errors"][0]["message"]
            .as_str()
            .unwrap_or("membership change failed")
            .to_string();
        return Err(ApiError::new(ErrorCode::Unavailable, msg).with_status(
            StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
        ));
    }
    let answer = serde_json::from_value(v).map_err(|e| {
        ApiError::new(
            ErrorCode::Unavailable,
            format!("the leader's answer to a membership change: {e}"),
        )
        .with_status(StatusCode::BAD_GATEWAY)
    })?;
    Ok(Some(Json(answer)))
}

pub async fn create(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Json(req): Json<NewMember>,
) -> ApiResult<Json<MemberChanged>> {
    caller.require_owner()?;
    if let Some(answer) = on_leader(
        &app,
        &headers,
        reqwest::Method::POST,
        "/replications",
        Some(&req),
    )
    .await?
    {
        return Ok(answer);
    }
    // The same node again (a learner that had not caught up) may retry.
    let voters = app.consensus.status().voters;
    if app.consensus.members().iter().any(|(id, n)| {
        (*id == req.node_id || n.region == req.region)
            && !(*id == req.node_id && n.region == req.region && !voters.contains(id))
    }) {
        return Err(ApiError::new(
            ErrorCode::Denied,
            format!(
                "node {} or region {} is already a member",
                req.node_id, req.region
            ),
        )
        .with_status(StatusCode::CONFLICT));
    }
    let info = NodeInfo {
        grpc: req.grpc.clone(),
        http: req.http.clone(),
        region: req.region.clone(),
    };
    // A region (re)joining starts with what its own store proves it holds:
    // its mover re-reports blobs still on disk and copies the rest.
    app.write(Command::ForgetRegion {
        region: req.region.clone(),
    })
    .await?;
    app.consensus
        .add_voter(
            req.node_id,
            info,
            Duration::from_secs(req.catch_up_timeout_s.unwrap_or(JOIN_CATCH_UP_S)),
        )
        .await?;
    Ok(Json(MemberChanged {
        region: req.region,
        node_id: req.node_id,
        role: Some("voter".into()),
        removed: false,
    }))
}

pub async fn delete(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(q): Query<RegionQuery>,
) -> ApiResult<Json<MemberChanged>> {
    caller.require_owner()?;
    let path = format!(
        "/replications?{}",
        serde_urlencoded::to_string(&q).unwrap_or_default()
    );
    if let Some(answer) = on_leader(&app, &headers, reqwest::Method::DELETE, &path, None).await? {
        return Ok(answer);
    }
    let (id, _) = app
        .consensus
        .members()
        .into_iter()
        .find(|(_, n)| n.region == q.region)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NameUnknown,
                format!("region {} is not a replica", q.region),
            )
            .with_status(StatusCode::NOT_FOUND)
        })?;
    if id == app.consensus.node_id() {
        return Err(ApiError::new(ErrorCode::Denied, "the leader's own region cannot be removed; remove it from another region after leadership moves")
            .with_status(StatusCode::CONFLICT));
    }
    app.consensus.remove_voter(id).await?;
    // Its copies no longer count: were it to come back (a new node, an
    // empty disk), the mover must fill it again.
    app.write(Command::ForgetRegion {
        region: q.region.clone(),
    })
    .await?;
    Ok(Json(MemberChanged {
        region: q.region,
        node_id: id,
        role: None,
        removed: true,
    }))
}
