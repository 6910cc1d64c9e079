//! `/api/v1/registries`: the cluster operator's verbs. The operator is an
//! owner of the default registry (the bootstrap owner); it creates
//! registries with their first owner, changes their tier and deletes them.
//! A registry's own owner manages that registry alone, through its login
//! server, and cannot reach these.

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use wharf_meta::{RegistryRecord, Sku, DEFAULT_REGISTRY};
use wharf_oci::{ErrorCode, RegistryName};

use crate::http::access::Caller;
use crate::http::error::{ApiError, ApiResult};
use crate::state::now_ms;
use crate::tenant::Tenant;

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
        storage_limit: r.storage_limit,
    }
}

fn parse_sku(s: &str) -> ApiResult<Sku> {
    Ok(wharf_registry::parse_sku(s)?)
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

pub async fn create(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<wharf_api::NewRegistry>,
) -> ApiResult<(StatusCode, Json<wharf_api::CreatedRegistry>)> {
    operator(&app, &caller).await?;
    let sku = parse_sku(req.sku.as_deref().unwrap_or("standard"))?;
    let owner = req.owner.unwrap_or_else(|| "owner".to_string());
    let (record, shown) = app
        .service
        .create_registry(
            &app.auth,
            wharf_registry::NewRegistry {
                name: &req.name,
                sku,
                owner: &owner,
                owner_password: req.owner_password,
                admin_enabled: req.admin_enabled,
            },
            now_ms(),
        )
        .await?;
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
    let deny = req
        .default_action
        .as_deref()
        .map(parse_action)
        .transpose()?;
    let storage_limit = req
        .storage_limit
        .as_deref()
        .map(parse_storage_limit)
        .transpose()?;
    let mut record = app
        .service
        .update_registry(&app.auth, &name, sku, req.admin_enabled)
        .await?;
    if let Some(deny) = deny {
        record = app.service.set_default_action(&name, deny).await?;
    }
    if let Some(limit) = storage_limit {
        record = app.service.set_storage_limit(&name, limit).await?;
    }
    Ok(Json(row(&app, &record)))
}

pub async fn delete(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<wharf_api::Deleted>> {
    operator(&app, &caller).await?;
    let removed = app.service.delete_registry(&name).await?;
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
    let record = app.service.set_replica(&name, location, add).await?;
    Ok(Json(replica_rows(app, &record)))
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

#[derive(Deserialize)]
pub struct UsageQuery {
    /// The billing period, `YYYY-MM` (UTC); the current one by default.
    period: Option<String>,
    /// List repositories with what each stores.
    #[serde(default)]
    repositories: bool,
    /// Repositories after this name (pagination).
    last: Option<String>,
    n: Option<usize>,
}

/// Repositories listed per call at most (and by default).
const USAGE_REPOSITORIES_MAX: usize = 1000;

/// `wharf registry show-usage --name N`: what the registry holds of what
/// its tier limits (the cloud CLI's `value[]`), its storage, and what it
/// was metered in a billing period.
pub async fn usage(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(q): Query<UsageQuery>,
) -> ApiResult<Json<wharf_api::Usage>> {
    let name = name.to_ascii_lowercase();
    operator_or_owner(&app, &caller, &name).await?;
    let r = record(&app, &name)?;
    let meta = app.consensus.meta();
    let limits = app.service.tiers.of(r.sku);
    let used = meta.tier_usage(&name)?;
    let storage = meta.storage_usage(&name)?;
    let item = |name: &str, limit: u32, current: u64| wharf_api::UsageItem {
        name: name.into(),
        limit: u64::from(limit),
        current_value: current,
        unit: "Count".into(),
    };
    let mut repositories = Vec::new();
    if q.repositories {
        let n =
            q.n.unwrap_or(USAGE_REPOSITORIES_MAX)
                .min(USAGE_REPOSITORIES_MAX);
        for (repo, s) in meta.repository_storage(&name, q.last.as_deref(), n)? {
            repositories.push(wharf_api::RepositoryUsage {
                unique_bytes: meta.repository_unique_bytes(&name, &repo)?,
                name: repo,
                logical_bytes: s.bytes,
                blobs: s.blobs,
            });
        }
    }
    Ok(Json(wharf_api::Usage {
        value: vec![
            wharf_api::UsageItem {
                name: "Size".into(),
                limit: limits.included_storage_gib << 30,
                current_value: storage.bytes,
                unit: "Bytes".into(),
            },
            item("Webhooks", limits.webhooks, used.webhooks),
            item("ScopeMaps", limits.scope_maps, used.scope_maps),
            item("Tokens", limits.tokens, used.tokens),
            item("Replications", limits.replications, used.replications),
            item("IPRules", limits.ip_rules, used.ip_rules),
        ],
        storage: Some(wharf_api::StorageUsage {
            bytes: storage.bytes,
            logical_bytes: storage.logical_bytes,
            blobs: storage.blobs,
            limit_bytes: r.storage_limit.or(limits.storage_limit),
            included_bytes: limits.included_storage_gib << 30,
        }),
        repositories,
        metering: Some(metering(meta, &name, q.period.as_deref())?),
    }))
}

const GIB_SECONDS_PER_GIB_DAY: f64 = (1u64 << 30) as f64 * 86_400.0;

/// GiB-days and operations of `period` (`YYYY-MM`, UTC; now's by default).
pub(crate) fn metering(
    meta: &wharf_meta::MetaStore,
    registry: &str,
    period: Option<&str>,
) -> ApiResult<wharf_api::Metering> {
    let now = now_ms();
    let period = match period {
        Some(p) => p.to_string(),
        None => date_of_day(now / wharf_meta::DAY_MS)[..7].to_string(),
    };
    let (first, last) = period_days(&period)?;
    let gib = meta.metered_days(registry, first, last, now)?;
    let ops = meta.operations(registry, first, last)?;
    let mut days: std::collections::BTreeMap<u64, wharf_api::MeteredDay> = Default::default();
    let day = |d: u64| wharf_api::MeteredDay {
        date: date_of_day(d),
        gib_days: 0.0,
        byte_seconds: 0,
        operations: Default::default(),
    };
    for (d, byte_seconds) in gib {
        let e = days.entry(d).or_insert_with(|| day(d));
        e.byte_seconds = byte_seconds;
        e.gib_days = byte_seconds as f64 / GIB_SECONDS_PER_GIB_DAY;
    }
    let mut total_ops: std::collections::BTreeMap<String, u64> = Default::default();
    for (d, o) in ops {
        let e = days.entry(d).or_insert_with(|| day(d));
        for (kind, n) in o.counts {
            e.operations.insert(kind.as_str().to_string(), n);
            *total_ops.entry(kind.as_str().to_string()).or_default() += n;
        }
    }
    let total: u64 = days.values().map(|d| d.byte_seconds).sum();
    Ok(wharf_api::Metering {
        period,
        gib_days: total as f64 / GIB_SECONDS_PER_GIB_DAY,
        operations: total_ops,
        days: days.into_values().collect(),
    })
}

/// `YYYY-MM-DD` of a day counted from the epoch.
fn date_of_day(day: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(day * 86_400);
    humantime::format_rfc3339(t).to_string()[..10].to_string()
}

/// The first and last day (from the epoch) of a `YYYY-MM` period.
fn period_days(period: &str) -> ApiResult<(u64, u64)> {
    let bad = || {
        ApiError::new(
            ErrorCode::Unsupported,
            format!("billing period {period:?}: YYYY-MM, a UTC month"),
        )
        .with_status(StatusCode::BAD_REQUEST)
    };
    let day_of = |y: u32, m: u32| -> ApiResult<u64> {
        let t =
            humantime::parse_rfc3339(&format!("{y:04}-{m:02}-01T00:00:00Z")).map_err(|_| bad())?;
        let secs = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| bad())?
            .as_secs();
        Ok(secs / 86_400)
    };
    let (y, m) = period.split_once('-').ok_or_else(bad)?;
    let (y, m): (u32, u32) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if y < 1970 || !(1..=12).contains(&m) || period.len() != 7 {
        return Err(bad());
    }
    let first = day_of(y, m)?;
    let next = if m == 12 {
        day_of(y + 1, 1)?
    } else {
        day_of(y, m + 1)?
    };
    Ok((first, next - 1))
}

/// `20GiB`, `500 MB`, a number of bytes, or `tier` (`None`: the tier's).
fn parse_storage_limit(s: &str) -> ApiResult<Option<u64>> {
    if s.eq_ignore_ascii_case("tier") {
        return Ok(None);
    }
    match wharf_api::parse_size(s) {
        Some(b) => Ok(Some(b)),
        None => Err(ApiError::new(
            ErrorCode::Unsupported,
            format!("storage limit {s:?}: a size such as 20GiB or 500MB, or tier"),
        )
        .with_status(StatusCode::BAD_REQUEST)),
    }
}

/// `Allow` or `Deny` (any case): whether clients outside the rules are denied.
fn parse_action(s: &str) -> ApiResult<bool> {
    match s.to_ascii_lowercase().as_str() {
        "allow" => Ok(false),
        "deny" => Ok(true),
        _ => Err(ApiError::new(
            ErrorCode::Unsupported,
            format!("default action {s:?}: Allow or Deny"),
        )
        .with_status(StatusCode::BAD_REQUEST)),
    }
}

fn rule_set(r: &RegistryRecord) -> wharf_api::NetworkRuleSet {
    wharf_api::NetworkRuleSet {
        default_action: if r.network.default_deny {
            "Deny"
        } else {
            "Allow"
        }
        .into(),
        ip_rules: r.network.ip_rules.clone(),
    }
}

/// `wharf network-rule list --registry N`.
pub async fn network_rules(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<wharf_api::NetworkRuleSet>> {
    let name = name.to_ascii_lowercase();
    operator_or_owner(&app, &caller, &name).await?;
    Ok(Json(rule_set(&record(&app, &name)?)))
}

pub async fn add_network_rule(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(rule): Json<wharf_api::IpRule>,
) -> ApiResult<Json<wharf_api::NetworkRuleSet>> {
    let name = name.to_ascii_lowercase();
    operator_or_owner(&app, &caller, &name).await?;
    let r = app
        .service
        .set_ip_rule(&name, &rule.ip_address, true)
        .await?;
    Ok(Json(rule_set(&r)))
}

pub async fn remove_network_rule(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(rule): Query<wharf_api::IpRule>,
) -> ApiResult<Json<wharf_api::NetworkRuleSet>> {
    let name = name.to_ascii_lowercase();
    operator_or_owner(&app, &caller, &name).await?;
    let r = app
        .service
        .set_ip_rule(&name, &rule.ip_address, false)
        .await?;
    Ok(Json(rule_set(&r)))
}
