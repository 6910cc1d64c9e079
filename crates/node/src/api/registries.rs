//! `/api/v1/registries`: the cluster operator's verbs. The operator is an
//! owner of the default registry (the bootstrap owner); it creates
//! registries with their first owner, changes their tier and deletes them.
//! A registry's own owner manages that registry alone, through its login
//! server, and cannot reach these.

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use wharf_auth::secret;
use wharf_meta::{
    Command, IdentityCommand, RegistryCommand, RegistryRecord, Sku, DEFAULT_REGISTRY,
};
use wharf_oci::{ErrorCode, RegistryName};

use crate::http::access::Caller;
use crate::http::error::{ApiError, ApiResult};
use crate::state::now_ms;
use crate::tenant::Tenant;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unsupported, msg).with_status(StatusCode::BAD_REQUEST)
}

/// Only the operator: an owner of the default registry, through it.
pub(crate) async fn operator(app: &Tenant, caller: &Caller) -> ApiResult<()> {
    caller.require_owner()?;
    if app.name() != DEFAULT_REGISTRY {
        return Err(ApiError::new(
            ErrorCode::Denied,
            "registries are managed by the cluster operator, through the default registry",
        ));
    }
    app.consensus.read_barrier().await?;
    Ok(())
}

fn row(app: &Tenant, r: &RegistryRecord) -> wharf_api::Registry {
    let login_server = match (&app.registry_domain, r.name.as_str()) {
        (_, DEFAULT_REGISTRY) | (None, _) => String::new(),
        (Some(d), n) => format!("{n}.{d}"),
    };
    wharf_api::Registry {
        name: r.name.clone(),
        sku: r.sku.as_str().to_string(),
        login_server,
        replicas: r.replicas.clone(),
        created_ms: r.created_ms,
    }
}

fn parse_sku(s: &str) -> ApiResult<Sku> {
    Sku::parse(s).ok_or_else(|| bad(format!("sku {s:?}: basic, standard or premium")))
}

pub async fn list(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<wharf_api::Registry>>> {
    operator(&app, &caller).await?;
    let rows = app.consensus.meta().registries()?;
    Ok(Json(rows.iter().map(|r| row(&app, r)).collect()))
}

pub async fn show(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<wharf_api::Registry>> {
    operator(&app, &caller).await?;
    Ok(Json(row(&app, &record(&app, &name)?)))
}

#[derive(Deserialize)]
pub struct CheckName {
    name: String,
}

/// The cloud CLI's `check-name` answer.
pub async fn check_name(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<CheckName>,
) -> ApiResult<Json<wharf_api::NameCheck>> {
    operator(&app, &caller).await?;
    let unavailable = |reason: &str, message: String| wharf_api::NameCheck {
        name_available: false,
        reason: Some(reason.to_string()),
        message: Some(message),
    };
    let answer = match RegistryName::parse(&q.name) {
        Err(e) => unavailable("Invalid", e.to_string()),
        Ok(n) if app.consensus.meta().registry_record(n.as_str())?.is_some() => unavailable(
            "AlreadyExists",
            format!("The registry {n} is already in use."),
        ),
        Ok(_) => wharf_api::NameCheck {
            name_available: true,
            reason: None,
            message: None,
        },
    };
    Ok(Json(answer))
}

/// Enable or disable `registry`'s admin account (both passwords are made
/// the first time).
async fn set_admin(app: &Tenant, registry: &str, enabled: bool) -> ApiResult<()> {
    let change = app.auth.admin_change(Some(enabled), None);
    Tenant::new(app.app().clone(), registry.to_string())
        .write(Command::Identity(Box::new(IdentityCommand::UpdateAdmin(
            change,
        ))))
        .await?;
    Ok(())
}

pub async fn create(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<wharf_api::NewRegistry>,
) -> ApiResult<(StatusCode, Json<wharf_api::CreatedRegistry>)> {
    operator(&app, &caller).await?;
    let name = RegistryName::parse(&req.name)?;
    let sku = parse_sku(req.sku.as_deref().unwrap_or("standard"))?;
    let owner = req.owner.unwrap_or_else(|| "owner".to_string());
    let (password, shown) = match req.owner_password {
        Some(p) => {
            secret::check_password_strength(&p).map_err(|e| bad(e.to_string()))?;
            (p, None)
        }
        None => {
            let p = secret::new_secret();
            (p.clone(), Some(p))
        }
    };
    let now = now_ms();
    let record = RegistryRecord {
        name: name.as_str().to_string(),
        sku,
        created_ms: now,
        replicas: Vec::new(),
    };
    let cmd = app
        .auth
        .create_registry_command(record.clone(), &owner, &password, now)
        .map_err(ApiError::internal)?;
    app.write(Command::Registry(cmd)).await?;
    let created = Tenant::new(app.app().clone(), name.as_str().to_string());
    if req.admin_enabled {
        let mut change = wharf_meta::AdminChange {
            enabled: Some(true),
            ..Default::default()
        };
        for slot in 0..2u8 {
            change
                .fill_empty
                .push((slot, app.auth.new_admin_password(usize::from(slot))));
        }
        created
            .write(Command::Identity(Box::new(IdentityCommand::UpdateAdmin(
                change,
            ))))
            .await?;
    }
    Ok((
        StatusCode::CREATED,
        Json(wharf_api::CreatedRegistry {
            registry: row(&app, &record),
            owner,
            owner_password: shown,
            admin_enabled: req.admin_enabled,
        }),
    ))
}

pub async fn update(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(req): Json<wharf_api::RegistryChange>,
) -> ApiResult<Json<wharf_api::Registry>> {
    operator(&app, &caller).await?;
    let sku = req.sku.as_deref().map(parse_sku).transpose()?;
    let name = name.to_ascii_lowercase();
    record(&app, &name)?;
    if sku.is_some() {
        app.write(Command::Registry(RegistryCommand::Update {
            name: name.clone(),
            sku,
        }))
        .await?;
    }
    if let Some(enabled) = req.admin_enabled {
        set_admin(&app, &name, enabled).await?;
    }
    Ok(Json(row(&app, &record(&app, &name)?)))
}

pub async fn delete(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<wharf_api::Deleted>> {
    operator(&app, &caller).await?;
    let removed = app
        .write(Command::Registry(RegistryCommand::Delete {
            name: name.clone(),
        }))
        .await?;
    Ok(Json(wharf_api::Deleted {
        deleted: name,
        repositories: removed,
    }))
}

// ---- a registry's replica regions ------------------------------------------

/// The operator, or the registry's own owner through its login server.
async fn operator_or_owner(app: &Tenant, caller: &Caller, registry: &str) -> ApiResult<()> {
    caller.require_owner()?;
    if app.name() != DEFAULT_REGISTRY && app.name() != registry {
        return Err(ApiError::new(
            ErrorCode::Denied,
            format!(
                "{} may not manage registry {registry}",
                caller.subject.name()
            ),
        ));
    }
    app.consensus.read_barrier().await?;
    Ok(())
}

fn replica_rows(app: &Tenant, r: &RegistryRecord) -> Vec<wharf_api::Replica> {
    app.service
        .replica_regions(r)
        .into_iter()
        .map(|location| wharf_api::Replica {
            registry: r.name.clone(),
            location,
            // Every region, until a replica set is chosen.
            explicit: !r.replicas.is_empty(),
        })
        .collect()
}

fn record(app: &Tenant, name: &str) -> ApiResult<RegistryRecord> {
    app.consensus
        .meta()
        .registry_record(name)?
        .ok_or_else(|| ApiError::from(wharf_meta::ApplyError::RegistryUnknown(name.to_string())))
}

pub async fn list_replications(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<wharf_api::Replica>>> {
    let name = name.to_ascii_lowercase();
    operator_or_owner(&app, &caller, &name).await?;
    Ok(Json(replica_rows(&app, &record(&app, &name)?)))
}

/// Add (`add`) or remove a replica region. The first one added makes the
/// set explicit: from then on the registry's blobs belong in its
/// replica regions only.
async fn set_replica(
    app: &Tenant,
    caller: &Caller,
    name: &str,
    location: &str,
    add: bool,
) -> ApiResult<Json<Vec<wharf_api::Replica>>> {
    let name = name.to_ascii_lowercase();
    operator_or_owner(app, caller, &name).await?;
    let known = app
        .consensus
        .members()
        .into_iter()
        .any(|(_, n)| n.region == location);
    if add && !known {
        return Err(bad(format!(
            "{location:?} is not a region of this cluster (wharf replication list shows them)"
        )));
    }
    let current = record(app, &name)?;
    if !add && current.replicas.len() == 1 && current.replicas[0] == location {
        return Err(bad(
            "a registry keeps at least one replica region: add another first",
        ));
    }
    app.write(Command::Registry(RegistryCommand::SetReplica {
        name: name.clone(),
        region: location.to_string(),
        add,
    }))
    .await?;
    Ok(Json(replica_rows(app, &record(app, &name)?)))
}

pub async fn create_replication(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(req): Json<wharf_api::Location>,
) -> ApiResult<Json<Vec<wharf_api::Replica>>> {
    set_replica(&app, &caller, &name, &req.location, true).await
}

pub async fn delete_replication(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(req): Query<wharf_api::Location>,
) -> ApiResult<Json<Vec<wharf_api::Replica>>> {
    set_replica(&app, &caller, &name, &req.location, false).await
}
