//! Management of identities: users and service principals, role
//! assignments, scope maps and repository-scoped tokens, the admin
//! account, signing-key rotation and anonymous pull. Registry owners only.
//! Generated secrets are returned once, in the answer that creates them.

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use wharf_auth::{secret, validate_pattern, Action, ADMIN_NAME};
use wharf_meta::{
    AccessSettings, Command, IdentityCommand, PrincipalChange, PrincipalKind, PrincipalRecord,
    Role, RoleAssignment, ScopeMapRecord, ScopeRule, TokenRecord,
};
use wharf_oci::ErrorCode;

use crate::http::access::Caller;
use crate::http::error::{ApiError, ApiResult};
use crate::state::now_ms;
use crate::tenant::Tenant;

/// Signing keys kept after a rotation: the new one and its predecessor,
/// so tokens issued just before a rotation keep working until they expire.
const KEYS_KEPT: usize = 2;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::NameInvalid, msg).with_status(StatusCode::BAD_REQUEST)
}

fn auth_bad(e: wharf_auth::AuthError) -> ApiError {
    bad(e.to_string())
}

/// Names of users, service principals, tokens and scope maps.
fn check_name(name: &str) -> ApiResult<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if !ok {
        return Err(bad(format!(
            "{name:?}: names are 1-64 letters, digits, '-', '_', '.', '@'"
        )));
    }
    if name == ADMIN_NAME {
        return Err(bad("\"admin\" is the registry's admin account"));
    }
    Ok(())
}

async fn propose(app: &Tenant, c: IdentityCommand) -> ApiResult<u64> {
    app.write(Command::Identity(Box::new(c))).await
}

async fn owner(app: &Tenant, caller: &Caller) -> ApiResult<()> {
    caller.require_owner()?;
    app.consensus.read_barrier().await?;
    Ok(())
}

// ---- users and service principals -----------------------------------------

#[derive(Serialize)]
struct PrincipalRow {
    name: String,
    kind: &'static str,
    enabled: bool,
    roles: Vec<Value>,
    created_ms: u64,
}

fn kind_name(k: PrincipalKind) -> &'static str {
    match k {
        PrincipalKind::User => "user",
        PrincipalKind::ServicePrincipal => "service-principal",
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Reader => "reader",
        Role::Contributor => "contributor",
        Role::Owner => "owner",
        Role::Delete => "delete",
    }
}

fn parse_role(s: &str) -> ApiResult<Role> {
    Ok(match s {
        "reader" => Role::Reader,
        "contributor" => Role::Contributor,
        "owner" => Role::Owner,
        "delete" => Role::Delete,
        _ => {
            return Err(bad(format!(
                "role {s:?}: reader, contributor, owner or delete"
            )))
        }
    })
}

pub async fn list_users(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<Value>>> {
    owner(&app, &caller).await?;
    let rows = app
        .meta()
        .principals()?
        .into_iter()
        .map(|p| {
            json!(PrincipalRow {
                kind: kind_name(p.kind),
                enabled: p.enabled,
                roles: p
                    .roles
                    .iter()
                    .map(|r| json!({"scope": r.scope, "role": role_name(r.role)}))
                    .collect(),
                created_ms: p.created_ms,
                name: p.name,
            })
        })
        .collect();
    Ok(Json(rows))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    /// "user" (default) or "service-principal".
    #[serde(default)]
    kind: Option<String>,
    /// Users: required. Service principals: generated.
    #[serde(default)]
    password: Option<String>,
}

pub async fn create_user(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<NewUser>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    owner(&app, &caller).await?;
    check_name(&req.name)?;
    let (kind, secret_hash, shown) = match req.kind.as_deref().unwrap_or("user") {
        "user" => {
            let pw = req.password.ok_or_else(|| bad("a user needs a password"))?;
            secret::check_password_strength(&pw).map_err(auth_bad)?;
            (
                PrincipalKind::User,
                secret::hash_password(&pw).map_err(ApiError::internal)?,
                None,
            )
        }
        "service-principal" => {
            let s = secret::new_secret();
            (
                PrincipalKind::ServicePrincipal,
                secret::hash_secret(&s),
                Some(s),
            )
        }
        k => return Err(bad(format!("kind {k:?}: user or service-principal"))),
    };
    propose(
        &app,
        IdentityCommand::PutPrincipal {
            record: PrincipalRecord {
                name: req.name.clone(),
                kind,
                secrets: vec![secret_hash],
                enabled: true,
                generation: secret::new_generation(),
                roles: vec![],
                created_ms: now_ms(),
            },
            create: true,
        },
    )
    .await?;
    let mut body = json!({"name": req.name, "kind": kind_name(kind)});
    if let Some(s) = shown {
        body["secret"] = json!(s);
    }
    Ok((StatusCode::CREATED, Json(body)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    #[serde(default)]
    enabled: Option<bool>,
    /// A new password (users).
    #[serde(default)]
    password: Option<String>,
    /// Generate a new secret (service principals); the old one stops working.
    #[serde(default)]
    regenerate: bool,
}

pub async fn update_user(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(req): Json<UserChange>,
) -> ApiResult<Json<Value>> {
    owner(&app, &caller).await?;
    // The kind never changes, so reading it here decides nothing that an
    // update applied in between could change.
    let kind = app
        .meta()
        .principal(&name)?
        .ok_or_else(|| ApiError::from(wharf_meta::ApplyError::IdentityUnknown(name.clone())))?
        .kind;
    let mut body = json!({"name": name});
    let mut change = PrincipalChange {
        enabled: req.enabled,
        secrets: None,
    };
    if let Some(pw) = req.password {
        if kind != PrincipalKind::User {
            return Err(bad(
                "service principals get generated secrets: use regenerate",
            ));
        }
        secret::check_password_strength(&pw).map_err(auth_bad)?;
        change.secrets = Some(vec![secret::hash_password(&pw).map_err(ApiError::internal)?]);
    }
    if req.regenerate {
        if kind != PrincipalKind::ServicePrincipal {
            return Err(bad("users choose their password: use password"));
        }
        let s = secret::new_secret();
        change.secrets = Some(vec![secret::hash_secret(&s)]);
        body["secret"] = json!(s);
    }
    // Any change (applied to the principal as it is then) bumps its
    // generation, retiring the tokens issued before it.
    propose(
        &app,
        IdentityCommand::UpdatePrincipal {
            name: name.clone(),
            change,
        },
    )
    .await?;
    Ok(Json(body))
}

pub async fn delete_user(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    owner(&app, &caller).await?;
    if name == caller.subject.name() {
        return Err(bad("an owner cannot delete itself"));
    }
    propose(
        &app,
        IdentityCommand::DeletePrincipal { name: name.clone() },
    )
    .await?;
    Ok(Json(json!({"deleted": name})))
}

// ---- roles ------------------------------------------------------------------

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    principal: String,
    /// "" or "*" for the registry, a repository, or "prefix/*".
    #[serde(default)]
    scope: String,
    role: String,
}

async fn set_role(
    app: &Tenant,
    caller: &Caller,
    req: RoleChange,
    grant: bool,
) -> ApiResult<Json<Value>> {
    owner(app, caller).await?;
    validate_pattern(&req.scope).map_err(auth_bad)?;
    let scope = if req.scope == "*" {
        String::new()
    } else {
        req.scope.clone()
    };
    let changed = propose(
        app,
        IdentityCommand::SetRole {
            principal: req.principal.clone(),
            assignment: RoleAssignment {
                scope,
                role: parse_role(&req.role)?,
            },
            grant,
        },
    )
    .await?;
    Ok(Json(
        json!({"principal": req.principal, "scope": req.scope, "role": req.role, "granted": grant, "changed": changed > 0}),
    ))
}

pub async fn assign_role(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<RoleChange>,
) -> ApiResult<Json<Value>> {
    set_role(&app, &caller, req, true).await
}

pub async fn remove_role(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Query(req): Query<RoleChange>,
) -> ApiResult<Json<Value>> {
    set_role(&app, &caller, req, false).await
}

// ---- scope maps ---------------------------------------------------------------

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeMapBody {
    name: String,
    #[serde(default)]
    description: String,
    rules: Vec<ScopeRuleBody>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeRuleBody {
    repository: String,
    actions: Vec<String>,
}

fn scope_map_json(m: &ScopeMapRecord) -> Value {
    json!({
        "name": m.name,
        "description": m.description,
        "rules": m.rules.iter().map(|r| json!({"repository": r.repository, "actions": r.actions})).collect::<Vec<_>>(),
        "created_ms": m.created_ms,
    })
}

fn rules(body: &[ScopeRuleBody]) -> ApiResult<Vec<ScopeRule>> {
    if body.is_empty() {
        return Err(bad("a scope map needs at least one rule"));
    }
    body.iter()
        .map(|r| {
            validate_pattern(&r.repository).map_err(auth_bad)?;
            for a in &r.actions {
                if Action::from_scope_map_name(a).is_none() {
                    return Err(bad(format!(
                        "action {a:?}: content/read, content/write, content/delete, metadata/read or metadata/write"
                    )));
                }
            }
            Ok(ScopeRule {
                repository: r.repository.clone(),
                actions: r.actions.clone(),
            })
        })
        .collect()
}

pub async fn list_scope_maps(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<Value>>> {
    owner(&app, &caller).await?;
    Ok(Json(
        app.meta()
            .scope_maps()?
            .iter()
            .map(scope_map_json)
            .collect(),
    ))
}

pub async fn put_scope_map(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<CreateFlag>,
    Json(req): Json<ScopeMapBody>,
) -> ApiResult<Json<Value>> {
    owner(&app, &caller).await?;
    check_name(&req.name)?;
    let record = ScopeMapRecord {
        name: req.name.clone(),
        description: req.description.clone(),
        rules: rules(&req.rules)?,
        created_ms: app
            .meta()
            .scope_map(&req.name)?
            .map_or_else(now_ms, |m| m.created_ms),
    };
    let json = scope_map_json(&record);
    propose(
        &app,
        IdentityCommand::PutScopeMap {
            record,
            create: !q.update,
        },
    )
    .await?;
    Ok(Json(json))
}

#[derive(Deserialize)]
pub struct CreateFlag {
    /// Replace an existing record instead of creating a new one.
    #[serde(default)]
    update: bool,
}

pub async fn delete_scope_map(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    owner(&app, &caller).await?;
    propose(&app, IdentityCommand::DeleteScopeMap { name: name.clone() }).await?;
    Ok(Json(json!({"deleted": name})))
}

// ---- repository-scoped tokens -----------------------------------------------

fn token_json(t: &TokenRecord) -> Value {
    json!({
        "name": t.name,
        "scope_map": t.scope_map,
        "enabled": t.enabled,
        "expiry_ms": t.expiry_ms,
        "passwords": t.secrets.iter().enumerate().filter(|(_, s)| s.is_some()).map(|(i, _)| i + 1).collect::<Vec<_>>(),
        "created_ms": t.created_ms,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    name: String,
    scope_map: String,
    /// Expiry, milliseconds since the epoch (absent: never).
    #[serde(default)]
    expiry_ms: Option<u64>,
    #[serde(default)]
    enabled: Option<bool>,
}

pub async fn list_tokens(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<Value>>> {
    owner(&app, &caller).await?;
    Ok(Json(app.meta().tokens()?.iter().map(token_json).collect()))
}

pub async fn create_token(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<TokenBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    owner(&app, &caller).await?;
    check_name(&req.name)?;
    let (p1, p2) = (secret::new_secret(), secret::new_secret());
    let record = TokenRecord {
        name: req.name,
        scope_map: req.scope_map,
        enabled: req.enabled.unwrap_or(true),
        expiry_ms: req.expiry_ms,
        secrets: [
            Some(secret::hash_secret(&p1)),
            Some(secret::hash_secret(&p2)),
        ],
        generation: secret::new_generation(),
        created_ms: now_ms(),
    };
    let mut body = token_json(&record);
    propose(
        &app,
        IdentityCommand::PutToken {
            record,
            create: true,
        },
    )
    .await?;
    body["password1"] = json!(p1);
    body["password2"] = json!(p2);
    Ok((StatusCode::CREATED, Json(body)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenChange {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    scope_map: Option<String>,
    /// New expiry in ms since the epoch; 0 removes the expiry.
    #[serde(default)]
    expiry_ms: Option<u64>,
    /// Regenerate password 1 or 2.
    #[serde(default)]
    regenerate: Option<u8>,
}

pub async fn update_token(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(req): Json<TokenChange>,
) -> ApiResult<Json<Value>> {
    owner(&app, &caller).await?;
    let mut change = wharf_meta::TokenChange {
        enabled: req.enabled,
        scope_map: req.scope_map,
        expiry_ms: req.expiry_ms.map(|x| (x > 0).then_some(x)),
        secret: None,
    };
    let mut shown = None;
    if let Some(slot) = req.regenerate {
        if !(1..=2).contains(&slot) {
            return Err(bad("regenerate password 1 or 2"));
        }
        let s = secret::new_secret();
        change.secret = Some((slot, secret::hash_secret(&s)));
        shown = Some((slot, s));
    }
    propose(
        &app,
        IdentityCommand::UpdateToken {
            name: name.clone(),
            change,
        },
    )
    .await?;
    // Applied here before the write returned: the token as it is now.
    let t = app
        .meta()
        .token(&name)?
        .ok_or_else(|| ApiError::from(wharf_meta::ApplyError::IdentityUnknown(name.clone())))?;
    let mut body = token_json(&t);
    if let Some((slot, s)) = shown {
        body[format!("password{slot}")] = json!(s);
    }
    Ok(Json(body))
}

pub async fn delete_token(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    owner(&app, &caller).await?;
    propose(&app, IdentityCommand::DeleteToken { name: name.clone() }).await?;
    Ok(Json(json!({"deleted": name})))
}

// ---- admin account, signing keys, anonymous pull ---------------------------

fn credential_json(app: &Tenant) -> ApiResult<Value> {
    let rec = app.meta().admin()?;
    let passwords = app.auth.admin_passwords(&rec).map_err(ApiError::internal)?;
    Ok(json!({"username": ADMIN_NAME, "enabled": rec.enabled, "passwords": passwords}))
}

pub async fn show_credential(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    owner(&app, &caller).await?;
    Ok(Json(credential_json(&app)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialChange {
    #[serde(default)]
    enabled: Option<bool>,
    /// Renew password 1 or 2; both are generated on first enable.
    #[serde(default)]
    renew: Option<u8>,
}

pub async fn update_credential(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<CredentialChange>,
) -> ApiResult<Json<Value>> {
    owner(&app, &caller).await?;
    if req.renew.is_some_and(|n| !(1..=2).contains(&n)) {
        return Err(bad("renew password 1 or 2"));
    }
    let change = app.auth.admin_change(req.enabled, req.renew.map(|n| n - 1));
    propose(&app, IdentityCommand::UpdateAdmin(change)).await?;
    Ok(Json(credential_json(&app)?))
}

pub async fn rotate_signing_key(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    owner(&app, &caller).await?;
    let key = app.auth.new_signing_key(now_ms());
    let kid = key.kid.clone();
    propose(
        &app,
        IdentityCommand::RotateSigningKey {
            key,
            keep: KEYS_KEPT,
        },
    )
    .await?;
    Ok(Json(json!({"kid": kid, "kept": KEYS_KEPT})))
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessBody {
    anonymous_pull: bool,
}

pub async fn get_access(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    owner(&app, &caller).await?;
    let a = app.meta().access_settings()?;
    Ok(Json(json!({"anonymous_pull": a.anonymous_pull})))
}

pub async fn put_access(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<AccessBody>,
) -> ApiResult<Json<Value>> {
    owner(&app, &caller).await?;
    propose(
        &app,
        IdentityCommand::SetAccess(AccessSettings {
            anonymous_pull: req.anonymous_pull,
        }),
    )
    .await?;
    Ok(Json(json!({"anonymous_pull": req.anonymous_pull})))
}
