//! The blob store a node works with: a backend holding the region's
//! blobs and upload sessions, plus what stays on this node's own disk
//! whatever the backend (acknowledged uploads awaiting registration, and
//! the staging area where the mover's transfers accumulate).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use wharf_oci::Digest;

use crate::backend::{Backend, ByteStream, CopyId, Opened, Removal};
use crate::error::BlobError;
use crate::fs::{blocking_err, FsBackend};
use crate::layout;
use crate::pending::Pending;
use crate::session::SessionInfo;

/// Bounds on upload work, all configurable.
#[derive(Debug, Clone)]
pub struct StoreLimits {
    /// Concurrent upload sessions (beyond: TOOMANYREQUESTS).
    pub sessions_max: usize,
    /// A request body that sends nothing for this long is abandoned.
    pub body_idle_timeout: Duration,
    /// A session with no request for this long is deleted.
    pub session_expiry: Duration,
    /// Largest blob accepted.
    pub blob_max_bytes: u64,
    /// Write uploads around the page cache (`O_DIRECT`) where the
    /// filesystem allows it (see `direct.rs` for when that pays).
    pub direct_io: bool,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            sessions_max: 1024,
            body_idle_timeout: Duration::from_secs(60),
            session_expiry: Duration::from_secs(3600),
            blob_max_bytes: 64 << 30,
            // Off: the first read of a blob written around the cache
            // pays the cache fill the push saved (direct.rs).
            direct_io: false,
        }
    }
}

pub struct BlobStore {
    /// This node's own directory: pending links and staged transfers.
    local: PathBuf,
    backend: Arc<dyn Backend>,
    /// Uploaded and acknowledged, not yet linked in the metadata.
    pending: Arc<Pending>,
    /// What the last probe of the backend found: None when it answered.
    health: Mutex<Option<String>>,
}

fn boxed<S, E>(body: S) -> ByteStream
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display,
{
    body.map(|r| r.map_err(|e| e.to_string())).boxed()
}

impl BlobStore {
    /// A store on the local filesystem under `root` (blobs, sessions,
    /// pending links and staging all there).
    pub fn open(root: &Path, node_tag: &str, limits: StoreLimits) -> Result<BlobStore, BlobError> {
        let backend = FsBackend::open(root, node_tag, limits)?;
        BlobStore::with_backend(root, Arc::new(backend))
    }

    /// A store whose blobs live in `backend`; `local` is this node's own
    /// directory for what never leaves it.
    pub fn with_backend(local: &Path, backend: Arc<dyn Backend>) -> Result<BlobStore, BlobError> {
        std::fs::create_dir_all(local.join(layout::INCOMING_DIR))?;
        Ok(BlobStore {
            local: local.to_path_buf(),
            pending: Arc::new(Pending::open(local)?),
            backend,
            health: Mutex::new(None),
        })
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// Ask the backend whether it answers, and remember the answer for
    /// `unavailable` (a node probes every few seconds).
    pub async fn probe(&self) -> Result<(), BlobError> {
        let result = self.backend.check().await;
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        *health = result.as_ref().err().map(|e| e.to_string());
        result
    }

    /// Why the last probe failed, if it did.
    pub fn unavailable(&self) -> Option<String> {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Requests to the backend that failed after retries, since start.
    pub fn errors_total(&self) -> u64 {
        self.backend.errors_total()
    }

    pub fn sessions_in_progress(&self) -> usize {
        self.backend.sessions_in_progress()
    }

    // ---- reads ----------------------------------------------------------

    /// The size of a blob held in this region.
    pub async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        self.backend.stat(digest).await
    }

    /// Open a blob held in this region for reading.
    pub async fn open_blob(&self, digest: &Digest) -> Result<Option<Opened>, BlobError> {
        self.backend.open(digest).await
    }

    pub async fn list(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<(Digest, u64)>, BlobError> {
        self.backend.list(after, limit).await
    }

    pub async fn presigned_url(
        &self,
        digest: &Digest,
        ttl: Duration,
    ) -> Result<Option<String>, BlobError> {
        self.backend.presigned_url(digest, ttl).await
    }

    // ---- links awaiting registration -------------------------------------

    /// Record, durably, that `repo` links `digest` (uploaded here) while the
    /// metadata does not know it yet.
    pub async fn add_pending(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), BlobError> {
        let (pending, repo, digest) = (self.pending.clone(), repo.to_string(), digest.to_string());
        tokio::task::spawn_blocking(move || pending.add(&repo, &digest, size))
            .await
            .map_err(blocking_err)??;
        Ok(())
    }

    /// The size of `digest` if `repo` links it pending registration.
    pub fn pending(&self, repo: &str, digest: &Digest) -> Option<u64> {
        self.pending.get(repo, digest.as_str())
    }

    /// Pending links older than `age`: (repository, digest, size).
    pub fn pending_due(&self, age: Duration) -> Vec<(String, String, u64)> {
        self.pending.due(age)
    }

    /// Repositories with links pending registration on this node.
    pub fn pending_repositories(&self) -> std::collections::BTreeSet<String> {
        self.pending.repositories()
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Forget a pending link (registered in the metadata, or deleted).
    pub fn remove_pending(&self, repo: &str, digest: &str) -> Result<bool, BlobError> {
        Ok(self.pending.remove(repo, digest)?)
    }

    /// Whether an acknowledged upload of `digest` (into any repository)
    /// waits to be linked in the metadata.
    pub fn is_pending(&self, digest: &Digest) -> bool {
        self.pending.has_digest(digest.as_str())
    }

    // ---- the mover's transfers -------------------------------------------

    /// Where a blob copied from another region accumulates, on this node's
    /// disk. The partial file survives restarts, so a transfer resumes
    /// from its length.
    pub fn staging_path(&self, digest: &Digest) -> PathBuf {
        layout::incoming_path(&self.local, digest)
    }

    /// Keep a staged file, fully received, verified against `digest` and
    /// fsynced by the caller.
    pub async fn adopt(&self, digest: &Digest, staged: &Path) -> Result<(), BlobError> {
        self.backend.adopt(digest, staged).await
    }

    /// Keep many small blobs received whole and verified by the caller,
    /// with one commit for all where the backend has one. `Err`: none may
    /// be counted as kept.
    pub async fn adopt_many(&self, blobs: Vec<(Digest, Bytes)>) -> Result<(), BlobError> {
        self.backend.adopt_many(blobs).await
    }

    // ---- uploads --------------------------------------------------------

    pub async fn create_session(&self, repo: &str) -> Result<SessionInfo, BlobError> {
        self.backend.create_session(repo, false).await
    }

    pub async fn session_info(&self, id: &str, repo: &str) -> Result<SessionInfo, BlobError> {
        self.backend.session_info(id, repo).await
    }

    /// Append a chunk. `start` is the first byte's offset from the client's
    /// Content-Range, which must continue the upload exactly.
    pub async fn append<S, E>(
        &self,
        id: &str,
        repo: &str,
        start: Option<u64>,
        body: S,
    ) -> Result<SessionInfo, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        self.backend.append(id, repo, start, boxed(body)).await
    }

    /// Complete an upload: append the final body if any, verify the digest,
    /// and make the blob visible. Returns the blob's size. On a digest
    /// mismatch the session is discarded and nothing is stored.
    pub async fn finish<S, E>(
        &self,
        id: &str,
        repo: &str,
        digest: &Digest,
        body: Option<S>,
    ) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        self.backend.finish(id, repo, digest, body.map(boxed)).await
    }

    /// A monolithic upload (POST ?digest= or a single PUT): the whole blob
    /// in one request body.
    pub async fn put<S, E>(&self, repo: &str, digest: &Digest, body: S) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let info = self.backend.create_session(repo, true).await?;
        let result = self
            .backend
            .finish(&info.id, repo, digest, Some(boxed(body)))
            .await;
        if result.is_err() {
            self.backend.cancel(&info.id, repo).await.ok();
        }
        result
    }

    pub async fn cancel(&self, id: &str, repo: &str) -> Result<(), BlobError> {
        self.backend.cancel(id, repo).await
    }

    /// Delete sessions idle for longer than the expiry. Returns how many.
    pub async fn sweep_expired(&self) -> usize {
        self.backend.sweep_expired().await
    }

    // ---- removal --------------------------------------------------------

    /// Delete the stored copy of `digest` unless it was written less than
    /// `idle` ago (garbage collection's sweep of this region).
    pub async fn remove_if_idle(
        &self,
        digest: &Digest,
        idle: Duration,
    ) -> Result<Removal, BlobError> {
        self.backend.remove_if_idle(digest, idle).await
    }

    /// Move the stored copy of `digest` to the quarantine, if it is still
    /// the copy `seen` (the one found corrupt: not a good copy an upload
    /// or the mover put in place since). Returns where it went.
    pub async fn quarantine(
        &self,
        digest: &Digest,
        seen: CopyId,
        at_ms: u64,
    ) -> Result<Option<String>, BlobError> {
        self.backend.quarantine(digest, seen, at_ms).await
    }

    /// Mark the stored copy of `digest` as just written (a mount links it
    /// anew), so GC's age guard keeps it; its size, or None if absent.
    pub async fn touch(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        self.backend.touch(digest).await
    }

    /// See [`Backend::attach_sums`].
    pub async fn attach_sums(
        &self,
        digest: &Digest,
        copy: &CopyId,
        sums: crate::sums::BlockSums,
    ) -> Result<bool, BlobError> {
        self.backend.attach_sums(digest, copy, sums).await
    }
}
