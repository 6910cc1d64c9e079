//! `POST /api/v1/gc/runs` and `GET /api/v1/gc`: collect garbage now, and
//! what collection has done. The operator collects any registry (or all);
//! a registry's owner collects that registry, through its login server.

use axum::http::StatusCode;
use axum::{Extension, Json};
use wharf_api::{GcRegionFreed, GcRegionStatus, GcReport, GcRequest, GcRunSummary, GcStatus};
use wharf_meta::{GcRun, DEFAULT_REGISTRY};
use wharf_oci::ErrorCode;

use crate::http::access::Caller;
use crate::http::error::{ApiError, ApiResult};
use crate::tenant::Tenant;

fn summary(r: GcRun) -> GcRunSummary {
    GcRunSummary {
        id: r.id,
        registry: r.registry,
        started_ms: r.started_ms,
        finished_ms: r.finished_ms,
        links_marked: r.links_marked,
        links_removed: r.links_removed,
        blobs_freed: r.blobs_freed,
        bytes_freed: r.bytes_freed,
        manifests_expired: r.manifests_expired,
        tags_expired: r.tags_expired,
        bin_purged: r.bin_purged,
    }
}

pub async fn run(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<GcRequest>,
) -> ApiResult<Json<GcReport>> {
    caller.require_owner()?;
    let only = match (app.name(), req.registry) {
        (DEFAULT_REGISTRY, named) => named.map(|n| n.to_ascii_lowercase()),
        (mine, Some(n)) if !n.eq_ignore_ascii_case(mine) => {
            return Err(ApiError::new(
                ErrorCode::Denied,
                format!("an owner of {mine} collects {mine} only; the operator collects {n}"),
            ))
        }
        (mine, _) => Some(mine.to_string()),
    };
    app.consensus.read_barrier().await?;
    if let Some(name) = &only {
        if app.consensus.meta().registry_record(name)?.is_none() {
            return Err(
                ApiError::new(ErrorCode::NameUnknown, format!("no registry named {name}"))
                    .with_status(StatusCode::NOT_FOUND),
            );
        }
    }
    let report = wharf_gc::run(&app.service, only.as_deref(), app.gc, req.dry_run).await?;
    Ok(Json(GcReport {
        run: summary(report.run),
        dry_run: report.dry_run,
        regions: report
            .regions
            .into_iter()
            .map(|(region, f)| GcRegionFreed {
                region,
                blobs: f.blobs,
                bytes: f.bytes,
            })
            .collect(),
        expired: report.expired,
    }))
}

pub async fn status(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<GcStatus>> {
    super::registries::operator(&app, &caller).await?;
    let meta = app.consensus.meta();
    let pending = meta.sweeps_pending()?;
    let regions = regions(&app, pending.keys().cloned())
        .into_iter()
        .map(|region| {
            let s = meta.region_sweeps(&region)?;
            Ok(GcRegionStatus {
                sweeps_pending: pending.get(&region).copied().unwrap_or(0),
                files_deleted: s.files_deleted,
                bytes_freed: s.bytes_freed,
                files_kept: s.files_kept,
                last_sweep_ms: s.last_ms,
                region,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let mut runs: Vec<GcRunSummary> = meta.gc_runs()?.into_iter().map(summary).collect();
    runs.reverse();
    Ok(Json(GcStatus { runs, regions }))
}

/// The cluster's regions, and `also` (regions that left but have work).
fn regions(app: &Tenant, also: impl Iterator<Item = String>) -> Vec<String> {
    let mut regions: Vec<String> = app.consensus.regions().into_iter().chain(also).collect();
    regions.sort();
    regions.dedup();
    regions
}

/// `wharf scrub status`: what each region's scrub verified and found.
pub async fn scrub_status(
    Extension(app): Extension<Tenant>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<wharf_api::ScrubStatus>> {
    super::registries::operator(&app, &caller).await?;
    let meta = app.consensus.meta();
    let regions = regions(&app, std::iter::empty())
        .into_iter()
        .map(|region| {
            let s = meta.region_scrub(&region)?;
            Ok(wharf_api::ScrubRegionStatus {
                region,
                blobs_verified: s.blobs_verified,
                bytes_verified: s.bytes_verified,
                passes: s.passes,
                last_pass_ms: s.last_pass_ms,
                corrupt_found: s.corrupt_found,
                recent: s
                    .recent
                    .into_iter()
                    .map(|c| wharf_api::CorruptFinding {
                        digest: c.digest,
                        actual: c.actual,
                        found_by: c.found_by,
                        at_ms: c.at_ms,
                    })
                    .collect(),
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(wharf_api::ScrubStatus { regions }))
}
