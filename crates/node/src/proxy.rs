//! Serving a registry's clients in a region outside its replica set: the
//! request is passed, as it is, to a node of a replica region, and its
//! answer streamed back.
//!
//! Proxying, not a 307 redirect: a registry has one login server for
//! every region, and clients key their credentials by host (docker sends
//! its login only to the host it logged in to, and the registry of a
//! request is read from its `Host`), so a redirect to another region's
//! address would arrive without credentials and at the default registry.
//! The cost is the bytes crossing this region's node; the blobs still live
//! only in the replica regions (an on-demand fetch here would have cached
//! them outside the set).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use wharf_oci::ErrorCode;

use crate::http::error::ApiError;
use crate::state::App;

/// Headers of one hop, not of the request (RFC 9110 section 7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
    )
}

/// The node to serve from: the first member (by id) in a replica region.
fn target(app: &App, replicas: &[String]) -> Option<String> {
    let mut members = app.consensus.members();
    members.sort_by_key(|(id, _)| *id);
    members
        .into_iter()
        .find(|(_, n)| replicas.contains(&n.region))
        .map(|(_, n)| n.http)
}

pub async fn to_replica(app: &App, replicas: &[String], req: Request) -> Response {
    let Some(base) = target(app, replicas) else {
        return ApiError::new(
            ErrorCode::Unavailable,
            format!("no node serves this registry's replica regions ({replicas:?})"),
        )
        .into_response();
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let url = format!("{}{path}", base.trim_end_matches('/'));
    // The replica sees this node's address: name the client's, for its
    // network rules (believed where this node is a trusted proxy).
    let client = crate::http::access::source_of(&req);
    let (parts, body) = req.into_parts();
    let mut out = app
        .http
        .request(parts.method.clone(), &url)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()));
    let forwarded = match parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(chain) => format!("{chain}, {client}"),
        None => client.to_string(),
    };
    out = out.header("x-forwarded-for", forwarded);
    for (name, value) in &parts.headers {
        if name == "x-forwarded-for" {
            continue;
        }
        if !hop_by_hop(name) {
            // Host included: it names the registry at the other end too.
            out = out.header(name, value);
        }
    }
    let answer = match out.send().await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(%url, error = %e, "proxying to a replica region");
            return ApiError::new(
                ErrorCode::Unavailable,
                format!("the replica region did not answer: {e}"),
            )
            .into_response();
        }
    };
    let mut resp = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if !hop_by_hop(name) {
            resp = resp.header(name, value);
        }
    }
    resp.body(Body::from_stream(answer.bytes_stream()))
        .unwrap_or_else(|e| (StatusCode::BAD_GATEWAY, format!("proxying: {e}")).into_response())
}
