//! Shared state of a serving node and the reads that follow the
//! consistency rules (local hit, or read-index before a miss is final).

use std::sync::Arc;

use wharf_blobstore::BlobStore;
use wharf_consensus::Consensus;
use wharf_meta::{Command, Envelope, ManifestRecord, Registry, StoreError, DEFAULT_REGISTRY};
use wharf_oci::{ErrorCode, Reference};

use crate::config::ReadConsistency;
use crate::directory::NodeDirectory;
use crate::http::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use wharf_mover::Fetcher;

pub struct AppState {
    pub consensus: Arc<Consensus>,
    pub blobs: Arc<BlobStore>,
    pub fetcher: Arc<Fetcher<NodeDirectory>>,
    /// Blobs this region still has to copy (the replicator's last scan).
    pub mover_queue: Arc<std::sync::atomic::AtomicU64>,
    pub region: String,
    /// This node's data directory (its fence is recorded there).
    pub data_dir: std::path::PathBuf,
    pub reads: ReadConsistency,
    /// When a manifest push is acknowledged (copies of its blobs).
    pub ack: crate::copies::AckPolicy,
    pub metrics: Metrics,
    pub auth: wharf_auth::Authority,
    /// Token endpoint URL for challenges; None: derived from Host.
    pub auth_realm: Option<String>,
    /// "http" or "https", for URLs derived from Host.
    pub scheme: &'static str,
    /// For calls to peers' HTTP APIs (trusts the cluster CA).
    pub http: reqwest::Client,
}

pub type App = Arc<AppState>;

pub fn now_ms() -> u64 {
    wharf_consensus::now_unix_ms()
}

/// `cmd` for the default registry, under `request_id` or a fresh one.
pub fn envelope(cmd: Command, request_id: Option<String>) -> Envelope {
    let id = request_id.unwrap_or_else(crate::request_id::random);
    Envelope::new(DEFAULT_REGISTRY, cmd, now_ms()).with_request_id(id)
}

impl AppState {
    /// The registry this node serves: every request addresses the default
    /// registry until login servers name others.
    pub fn meta(&self) -> Registry<'_> {
        self.consensus.meta().registry(DEFAULT_REGISTRY)
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
        if let Some(size) = self.blobs.pending(repo, digest) {
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
        let env = envelope(cmd, request_id);
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
