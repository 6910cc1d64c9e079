//! The registry a request addresses, and the reads and writes scoped to it.
//!
//! A request's registry comes from its `Host`: `N.<registry_domain>` names
//! registry N; any other host (an IP address, a name outside the domain)
//! addresses the default registry, so every URL that worked before
//! registries existed still does. `resolve` is the middleware that decides
//! it; handlers then work through a `Tenant`, which dereferences to the
//! node's shared state and scopes every metadata read and write.

use std::ops::Deref;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use wharf_meta::{Command, ManifestRecord, Registry, DEFAULT_REGISTRY};
use wharf_oci::{ErrorCode, Reference, RegistryName};
use wharf_registry::Handle;

use crate::http::error::{ApiError, ApiResult};
use crate::state::{App, AppState};

/// One registry of the cluster, as a request (or a background task) sees
/// it: the node's shared state, and the registry's service handle.
#[derive(Clone)]
pub struct Tenant {
    app: App,
    reg: Handle,
}

impl Deref for Tenant {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.app
    }
}

pub use wharf_registry::{envelope, split_pending_key};

/// The registry named by `host` (port removed), if it names one: a single
/// label in front of `domain`.
pub fn registry_of_host(host: &str, domain: Option<&str>) -> Option<Result<RegistryName, String>> {
    let domain = domain?;
    let host = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let label = host
        .to_ascii_lowercase()
        .strip_suffix(&format!(".{}", domain.to_ascii_lowercase()))?
        .to_string();
    if label.contains('.') {
        return None;
    }
    Some(RegistryName::parse(&label).map_err(|_| label))
}

/// Middleware: find the request's registry and attach its `Tenant`.
pub async fn resolve(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("")
        .to_string();
    // The admin CLI's `--registry N` names the registry in a header, as
    // the host would (which the CLI cannot know): on the management API,
    // and on the registry API for what the CLI and the task agents push
    // and pull themselves (build contexts, run logs). The credentials are
    // checked against the registry named either way.
    let named = req
        .headers()
        .get(wharf_api::REGISTRY_HEADER)
        .filter(|_| {
            let path = req.uri().path();
            path.starts_with("/api/") || path.starts_with("/v2/")
        })
        .map(|h| RegistryName::parse(h.to_str().unwrap_or("")).map_err(|_| format!("{h:?}")));
    let addressed = match (
        named,
        registry_of_host(&host, app.registry_domain.as_deref()),
    ) {
        (Some(Ok(a)), Some(Ok(b))) if a.as_str() != b.as_str() => {
            return ApiError::new(
                ErrorCode::Denied,
                format!(
                    "the host names registry {b} but {h} names {a}",
                    a = a.as_str(),
                    b = b.as_str(),
                    h = wharf_api::REGISTRY_HEADER
                ),
            )
            .with_status(StatusCode::BAD_REQUEST)
            .into_response()
        }
        (Some(n), _) => Some(n),
        (None, h) => h,
    };
    let (name, replicas) = match addressed {
        None => (DEFAULT_REGISTRY.to_string(), Vec::new()),
        Some(Ok(n)) => match app.consensus.meta().registry_record(n.as_str()) {
            Ok(Some(r)) => (r.name, r.replicas),
            Ok(None) => return unknown_registry(n.as_str()),
            Err(e) => return ApiError::from(e).into_response(),
        },
        Some(Err(label)) => return unknown_registry(&label),
    };
    // Network rules first: the client's own address is known only here
    // (a proxied request reaches the replica from this node).
    let path = req.uri().path();
    if path.starts_with("/v2") || path == "/auth/token" {
        let rules = match app.network_rules.rules(app.consensus.meta(), &name) {
            Ok(r) => r,
            Err(e) => return ApiError::from(e).into_response(),
        };
        let peer = crate::http::access::source_of(&req);
        let ip = crate::network::client_ip(peer, req.headers(), &app.trusted_proxies);
        if let Err(e) = crate::network::check(&rules, &name, ip) {
            return e.into_response();
        }
    }
    // A registry kept out of this region: its clients' registry requests
    // are served by a region that holds its blobs.
    if !replicas.is_empty()
        && !replicas.contains(&app.region)
        && req.uri().path().starts_with("/v2/")
    {
        return crate::proxy::to_replica(&app, &replicas, req).await;
    }
    req.extensions_mut().insert(Tenant::new(app, name));
    next.run(req).await
}

fn unknown_registry(name: &str) -> Response {
    ApiError::new(
        ErrorCode::NameUnknown,
        format!("no registry {name:?} in this cluster"),
    )
    .with_status(StatusCode::NOT_FOUND)
    .into_response()
}

/// The tenant `resolve` attached (the default registry if none was).
pub fn of(req: &Request, app: &App) -> Tenant {
    req.extensions()
        .get::<Tenant>()
        .cloned()
        .unwrap_or_else(|| Tenant::default_registry(app.clone()))
}

impl Tenant {
    pub fn new(app: App, name: String) -> Tenant {
        let reg = app.service.registry(&name);
        Tenant { app, reg }
    }

    pub fn default_registry(app: App) -> Tenant {
        Tenant::new(app, DEFAULT_REGISTRY.to_string())
    }

    pub fn name(&self) -> &str {
        self.reg.name()
    }

    /// The registry's service handle: pushes, deletes, lookups.
    pub fn registry(&self) -> &Handle {
        &self.reg
    }

    /// This registry's metadata, as applied on this node.
    pub fn meta(&self) -> Registry<'_> {
        self.reg.meta()
    }

    pub fn pending_key(&self, repo: &str) -> String {
        self.reg.pending_key(repo)
    }

    pub async fn blob_in_repo(
        &self,
        repo: &str,
        digest: &wharf_oci::Digest,
    ) -> ApiResult<Option<u64>> {
        Ok(self.reg.blob_in_repo(repo, digest).await?)
    }

    /// Propose a command under a fresh request id; refusals become the
    /// matching spec error.
    pub async fn write(&self, cmd: Command) -> ApiResult<u64> {
        Ok(self.reg.write(cmd).await?)
    }

    pub async fn manifest(
        &self,
        repo: &str,
        reference: &Reference,
    ) -> ApiResult<(String, ManifestRecord)> {
        Ok(self.reg.manifest(repo, reference).await?)
    }

    pub async fn require_repository(&self, repo: &str) -> ApiResult<()> {
        Ok(self.reg.require_repository(repo).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_registries_inside_the_domain_only() {
        let d = Some("wharf.test");
        let name = |h: &str| registry_of_host(h, d).map(|r| r.map(|n| n.to_string()));
        assert_eq!(name("teamone.wharf.test"), Some(Ok("teamone".into())));
        assert_eq!(name("TeamOne.Wharf.Test:5001"), Some(Ok("teamone".into())));
        assert_eq!(
            name("127.0.0.1:5001"),
            None,
            "an address: the default registry"
        );
        assert_eq!(name("wharf.test"), None);
        assert_eq!(name("a.b.wharf.test"), None, "one label only");
        assert_eq!(
            name("abc.wharf.test"),
            Some(Err("abc".into())),
            "too short a name"
        );
        assert_eq!(registry_of_host("teamone.wharf.test", None), None);
        assert_eq!(
            split_pending_key("team/app"),
            (DEFAULT_REGISTRY, "team/app")
        );
        assert_eq!(
            split_pending_key("teamone:team/app"),
            ("teamone", "team/app")
        );
    }
}
