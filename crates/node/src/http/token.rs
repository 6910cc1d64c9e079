//! The token endpoint of the Docker token flow (`/auth/token`): GET with
//! Basic credentials (or none, for anonymous pull), and the OAuth2-style
//! POST with a password or refresh token that `docker login` uses.

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use wharf_auth::{AuthError, Grant, ScopeRequest, Subject, TokenUse};
use wharf_oci::ErrorCode;

use crate::http::access::{auth_error, credentials, refused, source_of, Credentials};
use crate::http::error::{ApiError, ApiResult};
use crate::state::{now_ms, App};
use crate::tenant::Tenant;

/// Body of a token request beyond 64 KiB is refused.
const FORM_MAX: usize = 64 * 1024;

struct TokenRequest {
    subject: Subject,
    scopes: Vec<String>,
    offline: bool,
}

fn params(raw: &str) -> ApiResult<Vec<(String, String)>> {
    serde_urlencoded::from_str(raw)
        .map_err(|e| ApiError::new(ErrorCode::Unsupported, format!("bad parameters: {e}")))
}

fn first<'a>(p: &'a [(String, String)], key: &str) -> Option<&'a str> {
    p.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn check_service(app: &Tenant, p: &[(String, String)]) -> ApiResult<()> {
    match first(p, "service") {
        Some(s) if s != app.auth.config().service => Err(ApiError::new(
            ErrorCode::Denied,
            format!(
                "this token service is {:?}, not {s:?}",
                app.auth.config().service
            ),
        )),
        _ => Ok(()),
    }
}

async fn parse(app: &Tenant, req: Request) -> ApiResult<TokenRequest> {
    let source = source_of(&req);
    let fail = |e: AuthError| refused(app, e, None);
    if req.method() == Method::GET {
        let p = params(req.uri().query().unwrap_or(""))?;
        check_service(app, &p)?;
        let subject = match credentials(req.headers()).map_err(fail)? {
            Some(Credentials::Basic { user, password }) => app
                .auth
                .login(&app.meta(), &user, &password, source, now_ms())
                .map_err(fail)?,
            Some(Credentials::Bearer(_)) => {
                return Err(fail(AuthError::BadRequest(
                    "the token endpoint takes Basic credentials".into(),
                )))
            }
            None if crate::http::access::access_settings(app)?.anonymous_pull => Subject::Anonymous,
            None => {
                return Err(ApiError::new(
                    ErrorCode::Unauthorized,
                    "authentication required: this registry is private (log in first)",
                ))
            }
        };
        return Ok(TokenRequest {
            subject,
            scopes: p
                .iter()
                .filter(|(k, _)| k == "scope")
                .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
                .collect(),
            offline: first(&p, "offline_token") == Some("true"),
        });
    }
    let body: Bytes = axum::body::to_bytes(req.into_body(), FORM_MAX)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Unsupported, format!("bad form: {e}")))?;
    let p = params(&String::from_utf8_lossy(&body))?;
    check_service(app, &p)?;
    let subject = match first(&p, "grant_type") {
        Some("password") => app
            .auth
            .login(
                &app.meta(),
                first(&p, "username").unwrap_or(""),
                first(&p, "password").unwrap_or(""),
                source,
                now_ms(),
            )
            .map_err(fail)?,
        Some("refresh_token") => {
            let t = first(&p, "refresh_token").unwrap_or("");
            app.auth
                .verify(&app.meta(), t, TokenUse::Refresh, now_ms())
                .map_err(fail)?
                .0
        }
        other => {
            return Err(ApiError::new(
                ErrorCode::Unsupported,
                format!("grant_type {other:?} is not supported (password, refresh_token)"),
            ))
        }
    };
    Ok(TokenRequest {
        subject,
        // One scope parameter per scope (containers/image) or several in
        // one, space-separated (docker): both.
        scopes: p
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split(' '))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        offline: first(&p, "access_type") == Some("offline")
            || first(&p, "grant_type") == Some("refresh_token"),
    })
}

pub async fn token(State(app): State<App>, req: Request) -> Response {
    let app = crate::tenant::of(&req, &app);
    issue(&app, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn issue(app: &Tenant, req: Request) -> ApiResult<Response> {
    let r = parse(app, req).await?;
    let access = crate::http::access::access_settings(app)?;
    let mut grants = Vec::new();
    for s in &r.scopes {
        let Some(scope) = ScopeRequest::parse(s) else {
            return Err(ApiError::new(
                ErrorCode::Unsupported,
                format!("scope {s:?} is not type:name:actions"),
            ));
        };
        let actions = scope.granted(&r.subject, &access);
        if !actions.is_empty() {
            grants.push(Grant {
                kind: scope.kind,
                name: scope.name,
                actions,
            });
        }
    }
    let now = now_ms();
    let (token, expires_in) = app
        .auth
        .issue(&app.meta(), &r.subject, grants, TokenUse::Access, now)
        .map_err(|e| auth_error(e, None))?;
    let mut body = json!({
        "token": token,
        "access_token": token,
        "expires_in": expires_in,
        "issued_at": wharf_cli::output::time(now),
    });
    if r.offline && !r.subject.is_anonymous() {
        let (refresh, _) = app
            .auth
            .issue(&app.meta(), &r.subject, vec![], TokenUse::Refresh, now)
            .map_err(|e| auth_error(e, None))?;
        body["refresh_token"] = json!(refresh);
    }
    Ok(Json(body).into_response())
}
