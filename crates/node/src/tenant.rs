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
use wharf_meta::{Command, Envelope, ManifestRecord, Registry, StoreError, DEFAULT_REGISTRY};
use wharf_oci::{ErrorCode, Reference, RegistryName};

use crate::config::ReadConsistency;
use crate::http::error::{ApiError, ApiResult};
use crate::state::{now_ms, App, AppState};

/// One registry of the cluster, as a request (or a background task) sees it.
#[derive(Clone)]
pub struct Tenant {
    app: App,
    name: String,
}

impl Deref for Tenant {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.app
    }
}

/// `cmd` for `registry`, under `request_id` or a fresh one.
pub fn envelope(registry: &str, cmd: Command, request_id: Option<String>) -> Envelope {
    let id = request_id.unwrap_or_else(crate::request_id::random);
    Envelope::new(registry, cmd, now_ms()).with_request_id(id)
}

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
    let (name, replicas) = match registry_of_host(&host, app.registry_domain.as_deref()) {
        None => (DEFAULT_REGISTRY.to_string(), Vec::new()),
        Some(Ok(n)) => match app.consensus.meta().registry_record(n.as_str()) {
            Ok(Some(r)) => (r.name, r.replicas),
            Ok(None) => return unknown_registry(n.as_str()),
            Err(e) => return ApiError::from(e).into_response(),
        },
        Some(Err(label)) => return unknown_registry(&label),
    };
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
        Tenant { app, name }
    }

    pub fn default_registry(app: App) -> Tenant {
        Tenant::new(app, DEFAULT_REGISTRY.to_string())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    /// This registry's metadata, as applied on this node.
    pub fn meta(&self) -> Registry<'_> {
        self.consensus.meta().registry(&self.name)
    }

    /// The key of a pending blob link: the repository, qualified by the
    /// registry unless it is the default one (whose records predate
    /// registries and stay readable as they are).
    pub fn pending_key(&self, repo: &str) -> String {
        if self.name == DEFAULT_REGISTRY {
            repo.to_string()
        } else {
            format!("{}:{repo}", self.name)
        }
    }

    /// Read from local state; on a miss, confirm with a linearizable read
    /// before reporting "unknown" (promise 3: no false "manifest unknown").
    pub async fn read<T>(
        &self,
        f: impl Fn(&Registry<'_>) -> Result<Option<T>, StoreError>,
    ) -> ApiResult<Option<T>> {
        if self.reads == ReadConsistency::Linearizable {
            self.consensus.read_barrier().await?;
            return Ok(f(&self.meta())?);
        }
        if let Some(v) = f(&self.meta())? {
            return Ok(Some(v));
        }
        self.consensus.read_barrier().await?;
        Ok(f(&self.meta())?)
    }

    /// The size of `digest` if `repo` links it: pending registration on
    /// this node (uploaded here), or in the replicated metadata.
    pub async fn blob_in_repo(
        &self,
        repo: &str,
        digest: &wharf_oci::Digest,
    ) -> ApiResult<Option<u64>> {
        if let Some(size) = self.blobs.pending(&self.pending_key(repo), digest) {
            return Ok(Some(size));
        }
        Ok(self
            .read(|m| m.linked_blob(repo, digest.as_str()))
            .await?
            .map(|r| r.size))
    }

    /// Propose a command under a fresh request id; refusals become the
    /// matching spec error.
    pub async fn write(&self, cmd: Command) -> ApiResult<u64> {
        self.write_once(cmd, None).await
    }

    /// Propose a command under `request_id` (a client's idempotency key,
    /// see `request_id`), or a fresh id: applied once however often sent.
    pub async fn write_once(&self, cmd: Command, request_id: Option<String>) -> ApiResult<u64> {
        let env = envelope(&self.name, cmd, request_id);
        Ok(self.consensus.write(env).await?.into_result()?)
    }

    /// Resolve a tag or digest to a manifest of `repo`.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &Reference,
    ) -> ApiResult<(String, ManifestRecord)> {
        let found = self
            .read(|m| {
                let digest = match reference {
                    Reference::Digest(d) => d.to_string(),
                    Reference::Tag(t) => match m.tag(repo, t)? {
                        Some(tag) => tag.digest,
                        None => return Ok(None),
                    },
                };
                Ok(m.manifest(repo, &digest)?.map(|r| (digest, r)))
            })
            .await?;
        found.ok_or_else(|| {
            ApiError::new(
                ErrorCode::ManifestUnknown,
                format!("manifest {reference} unknown in {repo}"),
            )
        })
    }

    /// The repository must exist (for listings that 404 on unknown names).
    pub async fn require_repository(&self, repo: &str) -> ApiResult<()> {
        match self.read(|m| m.repository(repo)).await? {
            Some(_) => Ok(()),
            None => Err(ApiError::new(
                ErrorCode::NameUnknown,
                format!("repository {repo} unknown"),
            )),
        }
    }
}

/// The registry and repository of a pending link's key (see `pending_key`).
pub fn split_pending_key(key: &str) -> (&str, &str) {
    match key.split_once(':') {
        Some((registry, repo)) => (registry, repo),
        None => (DEFAULT_REGISTRY, key),
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
