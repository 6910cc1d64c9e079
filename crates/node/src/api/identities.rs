//! Management of identities: users and service principals, role
//! assignments, scope maps and repository-scoped tokens, the admin
//! account, signing-key rotation and anonymous pull. Registry owners only.
//! The handlers parse and answer; the rules and the commands are the
//! service layer's (`wharf_registry`'s identities). Generated secrets are
//! returned once, in the answer that creates them.

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use wharf_api::{
    Access, Credential, CredentialChange, Deleted, NewPrincipal, NewToken, Principal,
    PrincipalChange, PrincipalSecret, RoleChange, RoleChanged, RoleGrant, ScopeMap, ScopeRule,
    SigningKey, Token, TokenChange, TokenSecrets,
};
use wharf_auth::ADMIN_NAME;
use wharf_meta::{ScopeMapRecord, TokenRecord};
use wharf_registry::{check_admin_slot, kind_name, role_name, SIGNING_KEYS_KEPT};

use crate::http::access::Caller;
use crate::http::error::{ApiError, ApiResult};
use crate::state::now_ms;
use crate::tenant::Tenant;

async fn owner(app: &Tenant, caller: &Caller) -> ApiResult<()> {
    caller.require_owner()?;
    app.consensus.read_barrier().await?;
    Ok(())
}

fn deleted(name: String) -> Deleted {
    Deleted {
        deleted: name,
        repositories: 0,
    }
}

// ---- users and service principals -----------------------------------------

pub async fn list_users(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<Principal>>> {
    owner(&app, &caller).await?;
    let rows = app
        .meta()
        .principals()?
        .into_iter()
        .map(|p| Principal {
            kind: kind_name(p.kind).into(),
            enabled: p.enabled,
            roles: p
                .roles
                .iter()
                .map(|r| RoleGrant {
                    scope: r.scope.clone(),
                    role: role_name(r.role).into(),
                })
                .collect(),
            created_ms: p.created_ms,
            name: p.name,
        })
        .collect();
    Ok(Json(rows))
}

pub async fn create_user(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<NewPrincipal>,
) -> ApiResult<(StatusCode, Json<PrincipalSecret>)> {
    owner(&app, &caller).await?;
    let kind = req.kind.as_deref().unwrap_or("user");
    let (kind, secret) = app
        .registry()
        .create_principal(&req.name, kind, req.password, now_ms())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(PrincipalSecret {
            name: req.name,
            kind: Some(kind_name(kind).into()),
            secret,
        }),
    ))
}

pub async fn update_user(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(req): Json<PrincipalChange>,
) -> ApiResult<Json<PrincipalSecret>> {
    owner(&app, &caller).await?;
    let secret = app
        .registry()
        .update_principal(&name, req.enabled, req.password, req.regenerate)
        .await?;
    Ok(Json(PrincipalSecret {
        name,
        kind: None,
        secret,
    }))
}

pub async fn delete_user(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Deleted>> {
    owner(&app, &caller).await?;
    app.registry()
        .delete_principal(&name, caller.subject.name())
        .await?;
    Ok(Json(deleted(name)))
}

// ---- roles ------------------------------------------------------------------

async fn set_role(
    app: &Tenant,
    caller: &Caller,
    req: RoleChange,
    grant: bool,
) -> ApiResult<Json<RoleChanged>> {
    owner(app, caller).await?;
    let changed = app
        .registry()
        .set_role(&req.principal, &req.scope, &req.role, grant)
        .await?;
    Ok(Json(RoleChanged {
        principal: req.principal,
        scope: req.scope,
        role: req.role,
        granted: grant,
        changed,
    }))
}

pub async fn assign_role(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<RoleChange>,
) -> ApiResult<Json<RoleChanged>> {
    set_role(&app, &caller, req, true).await
}

pub async fn remove_role(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Query(req): Query<RoleChange>,
) -> ApiResult<Json<RoleChanged>> {
    set_role(&app, &caller, req, false).await
}

// ---- scope maps ---------------------------------------------------------------

fn scope_map_view(m: &ScopeMapRecord) -> ScopeMap {
    ScopeMap {
        name: m.name.clone(),
        description: m.description.clone(),
        rules: m
            .rules
            .iter()
            .map(|r| ScopeRule {
                repository: r.repository.clone(),
                actions: r.actions.clone(),
            })
            .collect(),
        created_ms: m.created_ms,
    }
}

pub async fn list_scope_maps(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<ScopeMap>>> {
    owner(&app, &caller).await?;
    Ok(Json(
        app.meta()
            .scope_maps()?
            .iter()
            .map(scope_map_view)
            .collect(),
    ))
}

#[derive(Deserialize)]
pub struct CreateFlag {
    /// Replace an existing record instead of creating a new one.
    #[serde(default)]
    update: bool,
}

pub async fn put_scope_map(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<CreateFlag>,
    Json(req): Json<ScopeMap>,
) -> ApiResult<Json<ScopeMap>> {
    owner(&app, &caller).await?;
    let rules = req
        .rules
        .into_iter()
        .map(|r| (r.repository, r.actions))
        .collect();
    let record = app
        .registry()
        .put_scope_map(&req.name, &req.description, rules, !q.update, now_ms())
        .await?;
    Ok(Json(scope_map_view(&record)))
}

pub async fn delete_scope_map(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Deleted>> {
    owner(&app, &caller).await?;
    app.registry().delete_scope_map(&name).await?;
    Ok(Json(deleted(name)))
}

// ---- repository-scoped tokens -----------------------------------------------

fn token_view(t: &TokenRecord) -> Token {
    Token {
        name: t.name.clone(),
        scope_map: t.scope_map.clone(),
        enabled: t.enabled,
        expiry_ms: t.expiry_ms,
        passwords: (1u8..)
            .zip(&t.secrets)
            .filter(|(_, s)| s.is_some())
            .map(|(slot, _)| slot)
            .collect(),
        created_ms: t.created_ms,
    }
}

pub async fn list_tokens(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<Token>>> {
    owner(&app, &caller).await?;
    Ok(Json(app.meta().tokens()?.iter().map(token_view).collect()))
}

pub async fn create_token(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<NewToken>,
) -> ApiResult<(StatusCode, Json<TokenSecrets>)> {
    owner(&app, &caller).await?;
    let (record, [p1, p2]) = app
        .registry()
        .create_token(
            &req.name,
            &req.scope_map,
            req.expiry_ms,
            req.enabled.unwrap_or(true),
            now_ms(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenSecrets {
            token: token_view(&record),
            password1: Some(p1),
            password2: Some(p2),
        }),
    ))
}

pub async fn update_token(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(req): Json<TokenChange>,
) -> ApiResult<Json<TokenSecrets>> {
    owner(&app, &caller).await?;
    let (record, shown) = app
        .registry()
        .update_token(
            &name,
            req.enabled,
            req.scope_map,
            req.expiry_ms,
            req.regenerate,
        )
        .await?;
    let (mut password1, mut password2) = (None, None);
    match shown {
        Some((1, s)) => password1 = Some(s),
        Some((_, s)) => password2 = Some(s),
        None => {}
    }
    Ok(Json(TokenSecrets {
        token: token_view(&record),
        password1,
        password2,
    }))
}

pub async fn delete_token(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Deleted>> {
    owner(&app, &caller).await?;
    app.registry().delete_token(&name).await?;
    Ok(Json(deleted(name)))
}

// ---- admin account, signing keys, anonymous pull ---------------------------

fn credential_view(app: &Tenant) -> ApiResult<Credential> {
    let rec = app.meta().admin()?;
    let passwords = app.auth.admin_passwords(&rec).map_err(ApiError::internal)?;
    Ok(Credential {
        username: ADMIN_NAME.into(),
        enabled: rec.enabled,
        passwords,
    })
}

pub async fn show_credential(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Credential>> {
    owner(&app, &caller).await?;
    Ok(Json(credential_view(&app)?))
}

pub async fn update_credential(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<CredentialChange>,
) -> ApiResult<Json<Credential>> {
    owner(&app, &caller).await?;
    check_admin_slot(req.renew)?;
    // The authority seals any password it generates with the cluster key.
    let change = app.auth.admin_change(req.enabled, req.renew.map(|n| n - 1));
    app.registry().update_admin(change).await?;
    Ok(Json(credential_view(&app)?))
}

pub async fn rotate_signing_key(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<SigningKey>> {
    owner(&app, &caller).await?;
    let key = app.auth.new_signing_key(now_ms());
    let kid = key.kid.clone();
    app.registry().rotate_signing_key(key).await?;
    Ok(Json(SigningKey {
        kid,
        kept: SIGNING_KEYS_KEPT,
    }))
}

pub async fn get_access(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Access>> {
    owner(&app, &caller).await?;
    let a = app.meta().access_settings()?;
    Ok(Json(Access {
        anonymous_pull: a.anonymous_pull,
    }))
}

pub async fn put_access(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<Access>,
) -> ApiResult<Json<Access>> {
    owner(&app, &caller).await?;
    app.registry().set_access(req.anonymous_pull).await?;
    Ok(Json(req))
}
