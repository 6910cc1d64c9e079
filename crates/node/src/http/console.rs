//! The web console's HTTP side: its pages (from `wharf_console`), the
//! login that turns a password into a session cookie, and what a page
//! asks before it offers an action. Everything else the console shows
//! comes from the management API, called with the session cookie, which
//! `access::authenticate` accepts in place of an Authorization header
//! (and, for a change, only with the session's CSRF token).

use std::sync::Arc;

use axum::extract::{Path, Query, Request};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_TYPE, COOKIE, ETAG, IF_NONE_MATCH, LOCATION, SET_COOKIE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use wharf_auth::{Action, Claims, Subject, TokenUse};
use wharf_oci::{validate_repository, ErrorCode};

use crate::http::access::{self, Caller};
use crate::http::error::{ApiError, ApiResult};
use crate::state::{now_ms, App};
use crate::tenant::Tenant;

/// A login body is a name and a password: a few hundred bytes at most.
const LOGIN_BODY_MAX: usize = 16 * 1024;

pub fn router() -> Router<App> {
    Router::new()
        .route("/", get(|| async { redirect("/console/") }))
        .route("/console", get(|| async { redirect("/console/") }))
        .route("/console/", get(page))
        .route("/console/login", get(login_page))
        .route("/console/assets/:name", get(file))
        .route("/console/api/login", post(login))
        .route("/console/api/logout", post(logout))
        .route("/console/api/session", get(session))
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response()
}

/// Serve one of the console's files, revalidated by its hash.
fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = wharf_console::asset(name) else {
        return (StatusCode::NOT_FOUND, "no such console file").into_response();
    };
    let fresh = headers
        .get(IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == asset.etag.as_bytes());
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(CONTENT_TYPE, HeaderValue::from_static(asset.content_type))],
            asset.body,
        )
            .into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&asset.etag) {
        h.insert(ETAG, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    for (k, v) in wharf_console::PAGE_HEADERS {
        h.insert(k, HeaderValue::from_static(v));
    }
    resp
}

/// The console itself; without a live session, the login page.
async fn page(Extension(app): Extension<Tenant>, headers: HeaderMap) -> Response {
    match session_of(&app, &headers) {
        Some(Ok(_)) => serve("index.html", &headers),
        _ => redirect("/console/login"),
    }
}

async fn login_page(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    serve(&name, &headers)
}

/// A verified console session.
pub struct Session {
    pub token: String,
    pub subject: Subject,
    pub claims: Arc<Claims>,
}

/// The session token in the request's cookie, verified: `None` without
/// one. Exactly a session token: an access token planted in the cookie
/// (by a page of another registry on the same host, say) is refused.
pub fn session_of(
    app: &Tenant,
    headers: &HeaderMap,
) -> Option<Result<Session, wharf_auth::AuthError>> {
    let token = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| wharf_console::cookie_value(h, wharf_console::SESSION_COOKIE))?;
    // Asked for as a session, only a session verifies (`TokenUse::accepts`).
    Some(
        app.auth
            .verify(&app.meta(), token, TokenUse::Session, now_ms())
            .map(|(subject, claims)| Session {
                token: token.to_string(),
                subject,
                claims,
            }),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

/// What a page knows about its session.
#[derive(Serialize)]
struct SessionInfo {
    user: String,
    /// Send back in `x-wharf-csrf` with every change.
    csrf: String,
    /// Registry-wide administration (identities, replication, registries).
    owner: bool,
    registry: String,
    region: String,
    /// Seconds since the epoch when the session ends.
    expires_s: u64,
}

fn info(app: &Tenant, token: &str, subject: &Subject, expires_s: u64) -> SessionInfo {
    SessionInfo {
        user: subject.name().to_string(),
        csrf: wharf_console::csrf_token(token),
        owner: subject.is_registry_owner(),
        registry: app.meta().name().to_string(),
        region: app.region.clone(),
        expires_s,
    }
}

/// Whether the browser reached us over TLS: this node serves it, or a
/// trusted proxy (`trusted_proxies`) that ended TLS says so in
/// `X-Forwarded-Proto`. A cookie marked Secure is never sent over plain
/// HTTP, so it is marked only then.
fn secure(app: &Tenant, peer: std::net::IpAddr, headers: &HeaderMap) -> bool {
    if app.scheme == "https" {
        return true;
    }
    let via_trusted_proxy = app.trusted_proxies.iter().any(|n| n.contains(&peer));
    via_trusted_proxy
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// POST /console/api/login `{username, password}` (a user's password or a
/// token's): sets the session cookie. Failed logins count against the
/// same limiter as every other login.
async fn login(Extension(app): Extension<Tenant>, req: Request) -> ApiResult<Response> {
    // The same source as every other login's limiter counts by.
    let source = access::source_of(&req);
    let tls = secure(&app, source, req.headers());
    let body = axum::body::to_bytes(req.into_body(), LOGIN_BODY_MAX)
        .await
        .map_err(|_| bad_request("a login is a small JSON object"))?;
    let form: LoginForm = serde_json::from_slice(&body)
        .map_err(|e| bad_request(&format!("a login needs username and password: {e}")))?;
    let now = now_ms();
    let subject = app
        .auth
        .login(&app.meta(), &form.username, &form.password, source, now)
        .map_err(|e| access::refused(&app, e, None))?;
    let (token, ttl) = app
        .auth
        .issue(&app.meta(), &subject, vec![], TokenUse::Session, now)
        .map_err(|e| access::auth_error(e, None))?;
    let body = info(&app, &token, &subject, now / 1000 + ttl);
    let mut resp = Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&wharf_console::session_cookie(&token, ttl, tls)) {
        resp.headers_mut().insert(SET_COOKIE, v);
    }
    Ok(resp)
}

fn bad_request(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unsupported, message).with_status(StatusCode::BAD_REQUEST)
}

fn no_session() -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, "sign in to the console first")
}

/// GET /console/api/session: who is signed in, and the CSRF token.
async fn session(
    Extension(app): Extension<Tenant>,
    headers: HeaderMap,
) -> ApiResult<Json<SessionInfo>> {
    match session_of(&app, &headers) {
        Some(Ok(s)) => Ok(Json(info(&app, &s.token, &s.subject, s.claims.exp))),
        Some(Err(e)) => Err(access::auth_error(e, None)),
        None => Err(no_session()),
    }
}

/// POST /console/api/logout: forget the session in this browser. The
/// token itself stays valid until it expires (it is not stored anywhere
/// to revoke); changing the password ends every session at once.
async fn logout(Extension(app): Extension<Tenant>, req: Request) -> ApiResult<Response> {
    let headers = req.headers();
    if let Some(Ok(s)) = session_of(&app, headers) {
        check_csrf(&s.token, headers)?;
    }
    let tls = secure(&app, access::source_of(&req), headers);
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&wharf_console::clear_cookie(tls)) {
        resp.headers_mut().insert(SET_COOKIE, v);
    }
    Ok(resp)
}

/// Refuse a change that does not carry the session's CSRF token.
pub fn check_csrf(token: &str, headers: &HeaderMap) -> ApiResult<()> {
    let presented = headers
        .get(wharf_console::CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if wharf_console::csrf_matches(token, presented) {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::Denied,
        format!(
            "a change from the console needs the session's {} header",
            wharf_console::CSRF_HEADER
        ),
    ))
}

#[derive(Deserialize)]
pub struct PermissionsQuery {
    repository: String,
}

/// What the caller may do to one repository: the page shows a button
/// only for what the server would allow.
#[derive(Serialize)]
pub struct Permissions {
    pull: bool,
    push: bool,
    delete: bool,
    /// Lock and unlock (change a repository's or tag's attributes).
    write_metadata: bool,
}

/// GET /console/api/permissions: routed with the authenticated API (see
/// `http::router`), so the caller is the session's, as for every other
/// call a page makes.
pub async fn permissions(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<PermissionsQuery>,
) -> ApiResult<Json<Permissions>> {
    validate_repository(&q.repository)?;
    if caller.subject.is_anonymous() {
        return Err(no_session());
    }
    let may = |a| caller.may(&app, &q.repository, a);
    Ok(Json(Permissions {
        pull: may(Action::Pull)?,
        push: may(Action::Push)?,
        delete: may(Action::Delete)?,
        write_metadata: may(Action::MetadataWrite)?,
    }))
}
