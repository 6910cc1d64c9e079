//! Who is calling, and may they? Every /v2/ and /api/v1/ request is
//! authenticated here (Basic credentials or a Bearer access token, checked
//! locally against the replicated identities); handlers then ask the
//! `Caller` for the action they are about to perform.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, HOST};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use wharf_auth::{Action, AuthError, Claims, Subject, TokenUse};
use wharf_oci::ErrorCode;

use crate::http::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::state::{now_ms, App};
use crate::tenant::Tenant;

/// How the caller proved who they are.
#[derive(Debug, Clone)]
pub enum Proof {
    None,
    Basic,
    /// A Bearer token; its grants bound what it may be used for.
    Bearer(std::sync::Arc<Claims>),
}

#[derive(Debug, Clone)]
pub struct Caller {
    /// Shared: the caller is cloned out of the request's extensions by
    /// every layer that reads it, and a subject holds its whole record.
    pub subject: Arc<Subject>,
    pub proof: Proof,
    /// What a challenge names, kept as the request gave it.
    challenge: ChallengeParts,
}

/// The anonymous subject, one for every request that starts as it (all
/// do: a caller is anonymous until its credentials are checked).
fn anonymous() -> Arc<Subject> {
    static ANONYMOUS: std::sync::OnceLock<Arc<Subject>> = std::sync::OnceLock::new();
    ANONYMOUS
        .get_or_init(|| Arc::new(Subject::Anonymous))
        .clone()
}

/// The realm and service of a challenge, formatted only when one is sent:
/// most requests send none, and formatting them for each was an
/// allocation and a copy per request.
#[derive(Debug, Clone, Default)]
struct ChallengeParts {
    /// The configured realm (None: derived from `host`).
    realm: Option<Arc<str>>,
    host: Option<axum::http::HeaderValue>,
    scheme: &'static str,
    service: Arc<str>,
}

impl ChallengeParts {
    fn of(app: &Tenant, headers: &HeaderMap) -> ChallengeParts {
        ChallengeParts {
            realm: app.auth_realm.clone(),
            host: headers.get(HOST).cloned(),
            scheme: app.scheme,
            service: app.auth_service.clone(),
        }
    }

    /// The token endpoint URL clients are sent to.
    fn realm(&self) -> String {
        if let Some(r) = &self.realm {
            return r.to_string();
        }
        let host = self
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("{}://{host}/auth/token", self.scheme)
    }
}

/// Credentials as sent in an Authorization header.
pub enum Credentials {
    Basic { user: String, password: String },
    Bearer(String),
}

pub fn credentials(headers: &HeaderMap) -> Result<Option<Credentials>, AuthError> {
    let Some(v) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| AuthError::BadRequest("Authorization is not text".into()))?;
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = STANDARD
            .decode(rest.trim())
            .map_err(|_| AuthError::BadRequest("Basic credentials are not base64".into()))?;
        let text = String::from_utf8(raw)
            .map_err(|_| AuthError::BadRequest("Basic credentials are not UTF-8".into()))?;
        let (user, password) = text
            .split_once(':')
            .ok_or_else(|| AuthError::BadRequest("Basic credentials need user:password".into()))?;
        return Ok(Some(Credentials::Basic {
            user: user.into(),
            password: password.into(),
        }));
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Some(Credentials::Bearer(rest.trim().to_string())));
    }
    Err(AuthError::BadRequest(format!(
        "unsupported authorization scheme {scheme:?}"
    )))
}

pub fn source_of(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

/// The registry's access settings, from the authority's cached view.
pub fn access_settings(app: &Tenant) -> ApiResult<wharf_meta::AccessSettings> {
    app.auth
        .access(&app.meta())
        .map_err(|e| auth_error(e, None))
}

/// Count a refused authentication, then answer it.
pub fn refused(app: &Tenant, e: AuthError, challenge: Option<String>) -> ApiError {
    match e {
        AuthError::RateLimited { .. } => Metrics::add(&app.metrics.auth_throttled, 1),
        AuthError::Store(_) | AuthError::Key(_) => {}
        _ => Metrics::add(&app.metrics.auth_failures, 1),
    }
    auth_error(e, challenge)
}

/// Map an authentication failure to its answer on the wire.
pub fn auth_error(e: AuthError, challenge: Option<String>) -> ApiError {
    let err = match e {
        AuthError::RateLimited { retry_after_s } => {
            return ApiError::new(ErrorCode::TooManyRequests, e.to_string())
                .with_header("retry-after", retry_after_s.to_string())
        }
        AuthError::Store(s) => return ApiError::from(s),
        AuthError::Key(_) => return ApiError::internal(e),
        _ => ApiError::new(ErrorCode::Unauthorized, e.to_string()),
    };
    match challenge {
        Some(c) => err.with_header("www-authenticate", c),
        None => err,
    }
}

impl Caller {
    fn challenge(&self, scope: Option<&str>, error: Option<&str>) -> String {
        let mut c = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            self.challenge.realm(),
            self.challenge.service
        );
        if let Some(s) = scope {
            c.push_str(&format!(",scope=\"{s}\""));
        }
        if let Some(e) = error {
            c.push_str(&format!(",error=\"{e}\""));
        }
        c
    }

    /// 401 telling the client where to get a token for `scope`; for a
    /// valid token that lacks the scope, 403 with the challenge and
    /// `error="insufficient_scope"` (RFC 6750 section 3.1), which clients
    /// such as oras answer by fetching a token for that scope.
    pub fn unauthorized(&self, scope: Option<&str>, message: &str) -> ApiError {
        if matches!(self.proof, Proof::Bearer(_)) {
            return ApiError::new(ErrorCode::Denied, message).with_header(
                "www-authenticate",
                self.challenge(scope, Some("insufficient_scope")),
            );
        }
        ApiError::new(ErrorCode::Unauthorized, message)
            .with_header("www-authenticate", self.challenge(scope, None))
    }

    /// Refuse unless the caller proved an identity (or anonymous pull is on
    /// and `anonymous_ok`).
    pub fn require_identity(&self, app: &Tenant, anonymous_ok: bool) -> ApiResult<()> {
        if !self.subject.is_anonymous() {
            return Ok(());
        }
        if anonymous_ok && access_settings(app)?.anonymous_pull {
            return Ok(());
        }
        Err(self.unauthorized(None, "authentication required"))
    }

    /// Whether the caller may do `action` on `repo` (no error built).
    pub fn may(&self, app: &Tenant, repo: &str, action: Action) -> ApiResult<bool> {
        let access = access_settings(app)?;
        Ok(self.subject.may(repo, action, &access) && self.token_allows(repo, action))
    }

    /// Whether the caller's token (if it came with one) grants `action`
    /// on `repo`: an access token only for the scopes in it; a console
    /// session, like a password, for everything its subject may do.
    fn token_allows(&self, repo: &str, action: Action) -> bool {
        let Proof::Bearer(claims) = &self.proof else {
            return true;
        };
        if claims.token_use == TokenUse::Session {
            return true;
        }
        let needed = match action {
            Action::Pull | Action::MetadataRead => "pull",
            Action::Push | Action::MetadataWrite => "push",
            Action::Delete => "delete",
        };
        claims.access.iter().any(|g| {
            g.kind == "repository"
                && g.name == repo
                && g.actions.iter().any(|a| a == needed || a == "*")
        })
    }

    /// Allow `action` on `repo`, or answer 401 (no or insufficient token:
    /// the client should fetch one) or 403 DENIED (the identity lacks it).
    pub fn require(&self, app: &Tenant, repo: &str, action: Action) -> ApiResult<()> {
        self.require_with_mount(app, repo, action, None)
    }

    /// `require`, for a request that also mounts a blob from `mount_from`:
    /// the challenge asks for pull on the source too (as the reference
    /// registry does), so a client following it gets a token that can
    /// mount; a token that lacks it while the caller could pull the source
    /// is answered like any insufficient token. A caller that may not pull
    /// the source is not told about it (the mount becomes an upload).
    pub fn require_with_mount(
        &self,
        app: &Tenant,
        repo: &str,
        action: Action,
        mount_from: Option<&str>,
    ) -> ApiResult<()> {
        let access = access_settings(app)?;
        // Built only for refusals: this runs on every request.
        let scope = || {
            let actions = match action {
                Action::Pull | Action::MetadataRead => "pull",
                Action::Push | Action::MetadataWrite => "pull,push",
                Action::Delete => "delete",
            };
            match mount_from {
                Some(from) => format!("repository:{repo}:{actions} repository:{from}:pull"),
                None => format!("repository:{repo}:{actions}"),
            }
        };
        if self.subject.may(repo, action, &access) {
            let source_ok = mount_from.is_none_or(|from| {
                !self.subject.may(from, Action::Pull, &access)
                    || self.token_allows(from, Action::Pull)
            });
            if self.token_allows(repo, action) && source_ok {
                return Ok(());
            }
            return Err(self.unauthorized(Some(&scope()), "the token does not grant this access"));
        }
        if self.subject.is_anonymous() {
            return Err(self.unauthorized(Some(&scope()), "authentication required"));
        }
        Err(ApiError::new(
            ErrorCode::Denied,
            format!(
                "{} may not {} repository {repo}",
                self.subject.name(),
                action.scope_map_name()
            ),
        ))
    }

    /// Registry-wide administration (identities, roles, replication, keys).
    pub fn require_owner(&self) -> ApiResult<()> {
        if self.subject.is_registry_owner() {
            return Ok(());
        }
        if self.subject.is_anonymous() {
            return Err(self.unauthorized(None, "authentication required"));
        }
        Err(ApiError::new(
            ErrorCode::Denied,
            format!("{} is not an owner of the registry", self.subject.name()),
        ))
    }

    /// A catalog listing needs `registry:catalog:*` in a Bearer token.
    pub fn require_catalog(&self, app: &Tenant) -> ApiResult<()> {
        self.require_identity(app, true)?;
        if let Proof::Bearer(claims) = &self.proof {
            let granted = claims.token_use == TokenUse::Session
                || claims
                    .access
                    .iter()
                    .any(|g| g.kind == "registry" && g.name == "catalog");
            if !granted {
                return Err(self.unauthorized(
                    Some("registry:catalog:*"),
                    "catalog access needs a token for registry:catalog:*",
                ));
            }
        }
        Ok(())
    }
}

/// Authenticate the request and attach its `Caller`. Bad credentials are
/// refused here; a missing Authorization header makes an anonymous caller
/// that handlers refuse unless anonymous pull allows it. Then the rate
/// limits, which count by caller (in this layer rather than their own:
/// each `from_fn` layer boxes the request's future and clones the routes).
pub async fn authenticate(State(node): State<App>, mut req: Request, next: Next) -> Response {
    let app = crate::tenant::of(&req, &node);
    let bare = Caller {
        subject: anonymous(),
        proof: Proof::None,
        challenge: ChallengeParts::of(&app, req.headers()),
    };
    let source = source_of(&req);
    let caller = match credentials(req.headers()) {
        Err(e) => return auth_error(e, Some(bare.challenge(None, None))).into_response(),
        Ok(None) => match crate::http::console::session_of(&app, req.headers()) {
            None => bare,
            Some(Err(e)) => return refused(&app, e, None).into_response(),
            Some(Ok(crate::http::console::Session {
                token,
                subject,
                claims,
            })) => {
                // A browser sends the cookie with requests other sites
                // cause: a change needs the CSRF token only a console page
                // of this origin can have.
                if !req.method().is_safe() {
                    if let Err(refusal) = crate::http::console::check_csrf(&token, req.headers()) {
                        return refusal.into_response();
                    }
                }
                // Nodes asked on the caller's behalf (the replication
                // view's status probes) are sent its credentials.
                if let Ok(v) = axum::http::HeaderValue::from_str(&format!("Bearer {token}")) {
                    req.headers_mut().insert(AUTHORIZATION, v);
                }
                Caller {
                    subject: Arc::new(subject),
                    proof: Proof::Bearer(claims),
                    ..bare
                }
            }
        },
        Ok(Some(Credentials::Basic { user, password })) => {
            match app
                .auth
                .login(&app.meta(), &user, &password, source, now_ms())
            {
                Ok(subject) => Caller {
                    subject: Arc::new(subject),
                    proof: Proof::Basic,
                    ..bare
                },
                Err(e) => {
                    let c = bare.challenge(None, None);
                    return refused(&app, e, Some(c)).into_response();
                }
            }
        }
        Ok(Some(Credentials::Bearer(token))) => {
            match app
                .auth
                .verify(&app.meta(), &token, TokenUse::Access, now_ms())
            {
                Ok((subject, claims)) => Caller {
                    subject: Arc::new(subject),
                    proof: Proof::Bearer(claims),
                    ..bare
                },
                Err(e) => {
                    let c = bare.challenge(None, Some("invalid_token"));
                    return refused(&app, e, Some(c)).into_response();
                }
            }
        }
    };
    req.extensions_mut().insert(caller);
    crate::ratelimit::limit_oci(State(node), req, next).await
}

/// The caller attached by `authenticate` (anonymous if absent).
pub fn caller_of(req: &Request) -> Caller {
    req.extensions().get::<Caller>().cloned().unwrap_or(Caller {
        subject: anonymous(),
        proof: Proof::None,
        challenge: ChallengeParts::default(),
    })
}
