//! A registry's reads and writes, following the consistency rules: hits
//! from the local state machine, misses confirmed by a read-index before
//! they are final (promise 3), every write under a request id (promise 11).

use std::sync::Arc;

use wharf_blobstore::BlobStore;
use wharf_consensus::{now_unix_ms, Consensus};
use wharf_meta::{Command, Envelope, ManifestRecord, Registry, StoreError, DEFAULT_REGISTRY};
use wharf_oci::{Digest, ErrorCode, Reference};

use crate::{AckPolicy, ServiceError, ServiceResult};

/// What every registry of a node shares.
pub struct Service {
    pub consensus: Arc<Consensus>,
    pub blobs: Arc<BlobStore>,
    /// This node's region (where its uploads are stored).
    pub region: String,
    /// Every read through read-index (`reads = "linearizable"`).
    pub linearizable_reads: bool,
    /// When a manifest push is acknowledged (copies of its blobs).
    pub ack: AckPolicy,
    /// By then a blob acknowledged by any live node is linked in the
    /// metadata (its uploader's registration window).
    pub registration_window: std::time::Duration,
    /// Pulls by tag since the last flush (for keep policies).
    pub pulls: crate::pulls::PullLog,
    /// Requests served since the last flush (usage metering).
    pub operations: crate::operations::OperationLog,
    /// What each tier includes (the cluster configuration's `[tiers]`).
    pub tiers: wharf_meta::TierTable,
}

impl Service {
    /// `cmd`, applied only if the registry's tier allows it then.
    pub fn gated(&self, cmd: Command) -> Command {
        Command::Gated {
            tiers: Box::new(self.tiers),
            cmd: Box::new(cmd),
        }
    }
}

impl Service {
    /// Forget blobs uploaded here under `pending_key` whose push the
    /// storage limit refused: they stop being served at once, and their
    /// files are swept like any unregistered copy (reported as held
    /// here, which they are: the index drops the ones it does not know
    /// into this region's sweep list). A failure leaves them to the
    /// registrar, which the same limit refuses.
    pub async fn discard_uploads(&self, pending_key: &str, blobs: &[wharf_meta::BlobRef]) {
        if blobs.is_empty() {
            return;
        }
        for b in blobs {
            if let Err(e) = self.blobs.remove_pending(pending_key, &b.digest) {
                tracing::warn!(digest = %b.digest, error = %e, "dropping a refused upload");
            }
        }
        let cmd = Command::BlobsReplicated {
            region: self.region.clone(),
            blobs: blobs.to_vec(),
        };
        let env = envelope(DEFAULT_REGISTRY, cmd, None);
        if let Err(e) = self.consensus.write(env).await {
            tracing::warn!(error = %e, "scheduling refused uploads for the sweeper");
        }
    }
}

/// One registry, as a request (or a background task) addresses it.
#[derive(Clone)]
pub struct Handle {
    pub(crate) service: Arc<Service>,
    name: String,
}

/// A fresh id for a write nobody named.
pub fn new_request_id() -> String {
    use rand::Rng;
    format!("r:{:032x}", rand::thread_rng().gen::<u128>())
}

/// `cmd` for `registry`, under `request_id` or a fresh one.
pub fn envelope(registry: &str, cmd: Command, request_id: Option<String>) -> Envelope {
    let id = request_id.unwrap_or_else(new_request_id);
    Envelope::new(registry, cmd, now_unix_ms()).with_request_id(id)
}

/// The registry and repository of a pending link's key (see `pending_key`).
pub fn split_pending_key(key: &str) -> (&str, &str) {
    match key.split_once(':') {
        Some((registry, repo)) => (registry, repo),
        None => (DEFAULT_REGISTRY, key),
    }
}

impl Service {
    /// The regions that should hold `registry`'s blobs: its replica set,
    /// or (with none chosen) every member's region, sorted.
    pub fn replica_regions(&self, registry: &wharf_meta::RegistryRecord) -> Vec<String> {
        if !registry.replicas.is_empty() {
            return registry.replicas.clone();
        }
        self.consensus.regions()
    }

    /// The registry named `name` (canonical, lower case).
    pub fn registry(self: &Arc<Self>, name: &str) -> Handle {
        Handle {
            service: self.clone(),
            name: name.to_string(),
        }
    }
}

impl Handle {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This registry's metadata, as applied on this node.
    pub fn meta(&self) -> Registry<'_> {
        self.service.consensus.meta().registry(&self.name)
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
    ///
    /// While that read-index runs (two round trips to the leader, one of
    /// them its heartbeat round), the entry a client is looking for is
    /// usually already on its way here: the leader sends the new commit
    /// index to every follower as soon as it commits, half a round trip
    /// after the push was acknowledged. So the miss path also watches this
    /// node's own applies and answers as soon as the value appears: that
    /// answer is a local hit like any other (the `local` mode serves hits
    /// from applied state), only found a little later. A miss still needs
    /// the read-index, so "unknown" is never answered early.
    pub async fn read<T>(
        &self,
        f: impl Fn(&Registry<'_>) -> Result<Option<T>, StoreError>,
    ) -> ServiceResult<Option<T>> {
        let consensus = &self.service.consensus;
        // Until this node caught up after starting, its state may be a
        // prefix of what it served before: every read asks the leader.
        if self.service.linearizable_reads || !consensus.caught_up() {
            consensus.read_barrier().await?;
            return Ok(f(&self.meta())?);
        }
        if let Some(v) = f(&self.meta())? {
            return Ok(Some(v));
        }
        // Subscribe only on a miss (hits stay free of it), then look once
        // more: an apply between the first look and the subscription
        // would otherwise be missed until the next one.
        let mut applied = consensus.applied_watch();
        applied.borrow_and_update();
        if let Some(v) = f(&self.meta())? {
            return Ok(Some(v));
        }
        let barrier = consensus.read_barrier();
        tokio::pin!(barrier);
        let mut watching = true;
        loop {
            tokio::select! {
                done = &mut barrier => {
                    done?;
                    return Ok(f(&self.meta())?);
                }
                changed = applied.changed(), if watching => {
                    // The state machine stopped: only the barrier is left.
                    if changed.is_err() {
                        watching = false;
                        continue;
                    }
                    if let Some(v) = f(&self.meta())? {
                        return Ok(Some(v));
                    }
                }
            }
        }
    }

    /// The size of `digest` if `repo` links it: pending registration on
    /// this node (uploaded here), or in the replicated metadata.
    pub async fn blob_in_repo(&self, repo: &str, digest: &Digest) -> ServiceResult<Option<u64>> {
        if let Some(size) = self.service.blobs.pending(&self.pending_key(repo), digest) {
            return Ok(Some(size));
        }
        Ok(self
            .read(|m| m.linked_blob(repo, digest.as_str()))
            .await?
            .map(|r| r.size))
    }

    /// Propose a command under a fresh request id.
    pub async fn write(&self, cmd: Command) -> ServiceResult<u64> {
        self.write_once(cmd, None).await
    }

    /// Propose a command under `request_id` (a client's idempotency key),
    /// or a fresh id: applied once however often sent.
    pub async fn write_once(&self, cmd: Command, request_id: Option<String>) -> ServiceResult<u64> {
        self.write_once_from(cmd, request_id, None).await
    }

    /// `write_once` of a command a client request caused: events report
    /// `origin` (its id defaults to the write's).
    pub async fn write_once_from(
        &self,
        cmd: Command,
        request_id: Option<String>,
        origin: Option<wharf_meta::Origin>,
    ) -> ServiceResult<u64> {
        let mut env = envelope(&self.name, cmd, request_id);
        let origin = origin.map(|mut o| {
            if o.id.is_empty() {
                o.id = env.request_id.clone().unwrap_or_default();
            }
            o
        });
        env = env.with_origin(origin);
        Ok(self.service.consensus.write(env).await?.into_result()?)
    }

    /// Propose a command under a fresh request id; the state machine's
    /// whole answer (a refusal is an error).
    pub async fn propose(&self, cmd: Command) -> ServiceResult<wharf_meta::Response> {
        let env = envelope(&self.name, cmd, None);
        match self.service.consensus.write(env).await? {
            wharf_meta::Response::Refused(e) => Err(e.into()),
            r => Ok(r),
        }
    }

    /// Resolve a tag or digest to a manifest of `repo`.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &Reference,
    ) -> ServiceResult<(String, ManifestRecord)> {
        let (digest, record, _) = self.manifest_and_tag(repo, reference).await?;
        Ok((digest, record))
    }

    /// `manifest`, with the locks of the tag it was reached through (read
    /// with the tag's digest, so a pull's lock check need not read it again).
    pub(crate) async fn manifest_and_tag(
        &self,
        repo: &str,
        reference: &Reference,
    ) -> ServiceResult<(String, ManifestRecord, Option<wharf_meta::Attributes>)> {
        let found = self
            .read(|m| {
                let (digest, tag) = match reference {
                    Reference::Digest(d) => (d.to_string(), None),
                    Reference::Tag(t) => match m.tag(repo, t)? {
                        Some(tag) => (tag.digest, Some(tag.attributes)),
                        None => return Ok(None),
                    },
                };
                Ok(m.manifest(repo, &digest)?.map(|r| (digest, r, tag)))
            })
            .await?;
        found.ok_or_else(|| {
            ServiceError::spec(
                ErrorCode::ManifestUnknown,
                format!("manifest {reference} unknown in {repo}"),
            )
        })
    }

    /// The repository must exist (for listings that 404 on unknown names).
    pub async fn require_repository(&self, repo: &str) -> ServiceResult<()> {
        match self.read(|m| m.repository(repo)).await? {
            Some(_) => Ok(()),
            None => Err(ServiceError::spec(
                ErrorCode::NameUnknown,
                format!("repository {repo} unknown"),
            )),
        }
    }

    /// How many regions should hold this registry's blobs.
    pub(crate) fn replica_count(&self) -> ServiceResult<usize> {
        Ok(self.replica_regions()?.len())
    }

    /// The regions that should hold this registry's blobs.
    pub(crate) fn replica_regions(&self) -> ServiceResult<Vec<String>> {
        Ok(
            match self.service.consensus.meta().registry_record(&self.name)? {
                Some(r) => self.service.replica_regions(&r),
                None => Vec::new(),
            },
        )
    }
}
