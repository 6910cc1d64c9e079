use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::Stream;
use rand::RngCore;
use wharf_oci::digest::Algorithm;
use wharf_oci::{Digest, Hasher};

use crate::error::BlobError;
use crate::layout::{self, blob_path, session_dir, sync_dir};
use crate::pending::Pending;
use crate::session::{Session, SessionInfo, SessionState};
use crate::writer;

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
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            sessions_max: 1024,
            body_idle_timeout: Duration::from_secs(60),
            session_expiry: Duration::from_secs(3600),
            blob_max_bytes: 64 << 30,
        }
    }
}

type SessionRef = Arc<tokio::sync::Mutex<Session>>;

pub struct BlobStore {
    root: PathBuf,
    /// Prefix of session ids naming this node, so peers can route to it.
    node_tag: String,
    limits: StoreLimits,
    sessions: Mutex<HashMap<String, SessionRef>>,
    /// Uploaded and acknowledged, not yet linked in the metadata.
    pending: Arc<Pending>,
    /// Held around every rename into `blobs/` and every GC removal from
    /// it, so a removal decided on a file's age never deletes a copy that
    /// an upload or the mover put in place meanwhile.
    commits: Arc<Mutex<()>>,
}

/// Which file a path named when it was opened (device and inode), so a
/// decision about its content applies to that file only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub fn of(m: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// What `remove_if_idle` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Deleted; its size.
    Removed(u64),
    /// There was no such file.
    Missing,
    /// Written (or rewritten) less than the idle time ago: kept.
    Recent,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn blocking_err(e: tokio::task::JoinError) -> BlobError {
    BlobError::Io(std::io::Error::other(e.to_string()))
}

/// Make every write to the filesystem holding `path` durable (data and
/// directory entries): `syncfs(2)`, one call for many files.
fn sync_filesystem(path: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = std::fs::File::open(path)?;
    // SAFETY: syncfs only reads the descriptor, which `dir` keeps open for
    // the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Hash a whole file with the given algorithm (after a restart, or when the
/// client's digest uses another algorithm than the running hash).
fn hash_file(path: &Path, algorithm: Algorithm) -> std::io::Result<Hasher> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Hasher::new(algorithm);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h);
        }
        h.update(&buf[..n]);
    }
}

impl BlobStore {
    /// Open (or create) a store, resuming upload sessions left on disk.
    pub fn open(root: &Path, node_tag: &str, limits: StoreLimits) -> Result<BlobStore, BlobError> {
        std::fs::create_dir_all(root.join(layout::BLOBS_DIR))?;
        std::fs::create_dir_all(root.join(layout::UPLOADS_DIR))?;
        std::fs::create_dir_all(root.join(layout::INCOMING_DIR))?;
        let store = BlobStore {
            root: root.to_path_buf(),
            node_tag: node_tag.to_string(),
            limits,
            sessions: Mutex::new(HashMap::new()),
            pending: Arc::new(Pending::open(root)?),
            commits: Arc::new(Mutex::new(())),
        };
        store.recover()?;
        Ok(store)
    }

    fn recover(&self) -> Result<(), BlobError> {
        let mut resumed = 0;
        for entry in std::fs::read_dir(self.root.join(layout::UPLOADS_DIR))?.flatten() {
            let dir = entry.path();
            let id = entry.file_name().to_string_lossy().into_owned();
            let state: Option<SessionState> = std::fs::read(dir.join(layout::SESSION_STATE))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let offset = std::fs::metadata(dir.join(layout::SESSION_DATA)).map(|m| m.len());
            match (state, offset) {
                (Some(s), Ok(offset)) if !s.hidden => {
                    let session = Session {
                        id: id.clone(),
                        repo: s.repo,
                        dir,
                        offset,
                        hasher: None,
                        last_active: Instant::now(),
                    };
                    self.lock_sessions()
                        .insert(id, Arc::new(tokio::sync::Mutex::new(session)));
                    resumed += 1;
                }
                // Half-created, or internal to a monolithic upload whose
                // client has long gone: nothing can resume it.
                _ => std::fs::remove_dir_all(&dir)?,
            }
        }
        if resumed > 0 {
            tracing::info!(resumed, "resumed upload sessions");
        }
        Ok(())
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionRef>> {
        // A panic while holding this lock leaves the map itself intact.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn sessions_in_progress(&self) -> usize {
        self.lock_sessions().len()
    }

    // ---- reads ----------------------------------------------------------

    /// The size of a locally held blob.
    pub async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        match tokio::fs::metadata(blob_path(&self.root, digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Open a locally held blob for reading, with its size and identity
    /// (for `quarantine`).
    pub async fn open_identified(
        &self,
        digest: &Digest,
    ) -> Result<Option<(tokio::fs::File, u64, FileId)>, BlobError> {
        match tokio::fs::File::open(blob_path(&self.root, digest)).await {
            Ok(f) => {
                let m = f.metadata().await?;
                Ok(Some((f, m.len(), FileId::of(&m))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Open a locally held blob for reading, with its size.
    pub async fn open_blob(
        &self,
        digest: &Digest,
    ) -> Result<Option<(tokio::fs::File, u64)>, BlobError> {
        Ok(self
            .open_identified(digest)
            .await?
            .map(|(f, len, _)| (f, len)))
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

    /// The size of `digest` if `repo` links it pending registration and
    /// the blob is held here.
    pub fn pending(&self, repo: &str, digest: &Digest) -> Option<u64> {
        self.pending.get(repo, digest.as_str())
    }

    /// Pending links older than `age`: (repository, digest, size).
    pub fn pending_due(&self, age: std::time::Duration) -> Vec<(String, String, u64)> {
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

    /// Where a held blob lives (whether or not it exists yet).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        blob_path(&self.root, digest)
    }

    /// Where a blob copied from another region accumulates. The partial
    /// file survives restarts, so a transfer resumes from its length.
    pub fn incoming_path(&self, digest: &Digest) -> PathBuf {
        layout::incoming_path(&self.root, digest)
    }

    /// Move a fully received file, already verified against `digest` and
    /// fsynced by the caller, into place.
    pub async fn adopt(&self, digest: &Digest, received: &Path) -> Result<(), BlobError> {
        let target = blob_path(&self.root, digest);
        let received = received.to_path_buf();
        let commits = self.commits.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let parent = target.parent().expect("blob paths have a parent");
            std::fs::create_dir_all(parent)?;
            let _held = commits.lock().unwrap_or_else(|p| p.into_inner());
            std::fs::rename(&received, &target)?;
            sync_dir(parent)
        })
        .await
        .map_err(blocking_err)??;
        Ok(())
    }

    /// Keep many small blobs received whole and verified by the caller
    /// against their digests, with one commit for all: every file is
    /// written, the filesystem synced once, every file renamed into place
    /// (under the commit lock, as `adopt`), and synced once more so the
    /// renames are durable too. Two syncs per batch instead of two per
    /// blob is what lets a region take a backlog of small blobs at more
    /// than a thousand a second. `Err`: none may be counted as kept (some
    /// may be in place, which a rescan finds and records).
    pub async fn adopt_many(&self, blobs: Vec<(Digest, Bytes)>) -> Result<(), BlobError> {
        if blobs.is_empty() {
            return Ok(());
        }
        let root = self.root.clone();
        let commits = self.commits.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut placed = Vec::with_capacity(blobs.len());
            for (digest, bytes) in &blobs {
                let partial = layout::incoming_path(&root, digest);
                std::fs::write(&partial, bytes)?;
                placed.push((partial, blob_path(&root, digest)));
            }
            sync_filesystem(&root)?;
            {
                let _held = commits.lock().unwrap_or_else(|p| p.into_inner());
                for (partial, target) in &placed {
                    let parent = target.parent().expect("blob paths have a parent");
                    std::fs::create_dir_all(parent)?;
                    std::fs::rename(partial, target)?;
                }
            }
            sync_filesystem(&root)
        })
        .await
        .map_err(blocking_err)??;
        Ok(())
    }

    // ---- uploads --------------------------------------------------------

    pub async fn create_session(&self, repo: &str) -> Result<SessionInfo, BlobError> {
        self.new_session(repo, false).await
    }

    async fn new_session(&self, repo: &str, hidden: bool) -> Result<SessionInfo, BlobError> {
        if self.sessions_in_progress() >= self.limits.sessions_max {
            return Err(BlobError::TooManySessions(self.limits.sessions_max));
        }
        let mut rnd = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut rnd);
        let id = format!("{}-{}", self.node_tag, hex::encode(rnd));
        let dir = session_dir(&self.root, &id);
        let state = SessionState {
            repo: repo.to_string(),
            created_ms: now_ms(),
            hidden,
        };
        let dir2 = dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir(&dir2)?;
            std::fs::File::create(dir2.join(layout::SESSION_DATA))?;
            // The state file goes last: a directory without it is a
            // half-created session and is removed at restart.
            let tmp = dir2.join("state.tmp");
            std::fs::write(
                &tmp,
                serde_json::to_vec(&state).map_err(std::io::Error::other)?,
            )?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, dir2.join(layout::SESSION_STATE))?;
            sync_dir(&dir2)?;
            sync_dir(dir2.parent().unwrap_or(&dir2))
        })
        .await
        .map_err(blocking_err)??;
        let session = Session {
            id: id.clone(),
            repo: repo.to_string(),
            dir,
            offset: 0,
            hasher: Some(Hasher::new(Algorithm::Sha256)),
            last_active: Instant::now(),
        };
        let info = session.info();
        self.lock_sessions()
            .insert(id, Arc::new(tokio::sync::Mutex::new(session)));
        Ok(info)
    }

    fn session(&self, id: &str, repo: &str) -> Result<SessionRef, BlobError> {
        let s = self
            .lock_sessions()
            .get(id)
            .cloned()
            .ok_or(BlobError::UploadUnknown)?;
        // try_lock is only a cheap pre-check; the repo never changes.
        if let Ok(g) = s.try_lock() {
            if g.repo != repo {
                return Err(BlobError::UploadUnknown);
            }
        }
        Ok(s)
    }

    pub async fn session_info(&self, id: &str, repo: &str) -> Result<SessionInfo, BlobError> {
        let s = self.session(id, repo)?;
        let g = s.lock().await;
        if g.repo != repo {
            return Err(BlobError::UploadUnknown);
        }
        Ok(g.info())
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
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let s = self.session(id, repo)?;
        let mut g = s.lock().await;
        if g.repo != repo {
            return Err(BlobError::UploadUnknown);
        }
        if let Some(start) = start {
            if start != g.offset {
                return Err(BlobError::RangeInvalid {
                    expected: g.offset,
                    got: start,
                });
            }
        }
        self.append_locked(&mut g, body).await?;
        Ok(g.info())
    }

    async fn append_locked<S, E>(&self, g: &mut Session, body: S) -> Result<(), BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let data = g.dir.join(layout::SESSION_DATA);
        let hasher = match g.hasher.take() {
            Some(h) => h,
            None => {
                let d = data.clone();
                tokio::task::spawn_blocking(move || hash_file(&d, Algorithm::Sha256))
                    .await
                    .map_err(blocking_err)??
            }
        };
        let file = OpenOptions::new().append(true).open(&data)?;
        let room = self.limits.blob_max_bytes.saturating_sub(g.offset);
        let w = writer::append(file, hasher, body, self.limits.body_idle_timeout, room).await?;
        // Make the acknowledged offset durable before answering.
        let file = w.file;
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(blocking_err)??;
        g.offset += w.bytes;
        g.hasher = Some(w.hasher);
        g.last_active = Instant::now();
        match w.stream_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Complete an upload: append the final body if any, verify the digest,
    /// and move the blob into place. Returns the blob's size. On a digest
    /// mismatch the session is discarded and nothing is stored.
    pub async fn finish<S, E>(
        &self,
        id: &str,
        repo: &str,
        digest: &Digest,
        body: Option<S>,
    ) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let s = self.session(id, repo)?;
        let mut g = s.lock().await;
        if g.repo != repo || !self.lock_sessions().contains_key(id) {
            return Err(BlobError::UploadUnknown);
        }
        if let Some(body) = body {
            self.append_locked(&mut g, body).await?;
        }
        let data = g.dir.join(layout::SESSION_DATA);
        let actual = match g.hasher.take() {
            Some(h) if h.algorithm() == digest.algorithm() => h.finish(),
            _ => {
                let (d, algo) = (data.clone(), digest.algorithm());
                tokio::task::spawn_blocking(move || hash_file(&d, algo))
                    .await
                    .map_err(blocking_err)??
                    .finish()
            }
        };
        let size = g.offset;
        let dir = g.dir.clone();
        self.lock_sessions().remove(id);
        if actual != *digest {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(BlobError::DigestMismatch {
                claimed: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        let target = blob_path(&self.root, digest);
        let commits = self.commits.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let parent = target.parent().expect("blob paths have a parent");
            std::fs::create_dir_all(parent)?;
            // Even over an existing copy (the same bytes): the file is then
            // as new as this upload, which GC's age guard relies on. The
            // data was fsynced when appended; the rename is made durable by
            // syncing the directory it lands in.
            {
                let _held = commits.lock().unwrap_or_else(|p| p.into_inner());
                std::fs::rename(&data, &target)?;
            }
            sync_dir(parent)?;
            std::fs::remove_dir_all(&dir)
        })
        .await
        .map_err(blocking_err)??;
        Ok(size)
    }

    /// A monolithic upload (POST ?digest= or a single PUT): the whole blob
    /// in one request body.
    pub async fn put<S, E>(&self, repo: &str, digest: &Digest, body: S) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let info = self.new_session(repo, true).await?;
        let result = self.finish(&info.id, repo, digest, Some(body)).await;
        if result.is_err() {
            self.cancel(&info.id, repo).await.ok();
        }
        result
    }

    /// Delete the stored copy of `digest` unless it was written less than
    /// `idle` ago (garbage collection's sweep of this region).
    pub async fn remove_if_idle(
        &self,
        digest: &Digest,
        idle: std::time::Duration,
    ) -> Result<Removal, BlobError> {
        let target = blob_path(&self.root, digest);
        let commits = self.commits.clone();
        let removal = tokio::task::spawn_blocking(move || -> std::io::Result<Removal> {
            let _held = commits.lock().unwrap_or_else(|p| p.into_inner());
            let meta = match std::fs::metadata(&target) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Removal::Missing),
                Err(e) => return Err(e),
            };
            // A clock step backwards makes a file look new: kept, which is safe.
            let age = meta.modified()?.elapsed().unwrap_or_default();
            if age < idle {
                return Ok(Removal::Recent);
            }
            // No fsync of the directory: a deletion a crash undoes leaves
            // a file the index no longer names (space, not correctness: an
            // upload of it renames over it), and one directory fsync per
            // freed file was what pushes waited behind while GC swept.
            std::fs::remove_file(&target)?;
            Ok(Removal::Removed(meta.len()))
        })
        .await
        .map_err(blocking_err)??;
        Ok(removal)
    }

    /// Move the stored copy of `digest` to the quarantine, if it is still
    /// the file `seen` (the one found corrupt: not a good copy an upload
    /// or the mover put in place since). Returns where it went.
    pub async fn quarantine(
        &self,
        digest: &Digest,
        seen: FileId,
        at_ms: u64,
    ) -> Result<Option<PathBuf>, BlobError> {
        let target = blob_path(&self.root, digest);
        let to = layout::quarantine_path(&self.root, digest, at_ms);
        let commits = self.commits.clone();
        let moved = tokio::task::spawn_blocking(move || -> std::io::Result<Option<PathBuf>> {
            let _held = commits.lock().unwrap_or_else(|p| p.into_inner());
            match std::fs::metadata(&target) {
                Ok(m) if FileId::of(&m) == seen => {}
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
            let dir = to.parent().expect("quarantine paths have a parent");
            std::fs::create_dir_all(dir)?;
            std::fs::rename(&target, &to)?;
            sync_dir(dir)?;
            if let Some(parent) = target.parent() {
                sync_dir(parent)?;
            }
            Ok(Some(to))
        })
        .await
        .map_err(blocking_err)??;
        Ok(moved)
    }

    /// Mark the stored copy of `digest` as just written (a mount links it
    /// anew), so GC's age guard keeps it; its size, or None if absent.
    pub async fn touch(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        let target = blob_path(&self.root, digest);
        let commits = self.commits.clone();
        let size = tokio::task::spawn_blocking(move || -> std::io::Result<Option<u64>> {
            let _held = commits.lock().unwrap_or_else(|p| p.into_inner());
            match std::fs::File::options().append(true).open(&target) {
                Ok(f) => {
                    f.set_modified(SystemTime::now())?;
                    Ok(Some(f.metadata()?.len()))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(blocking_err)??;
        Ok(size)
    }

    /// Whether an acknowledged upload of `digest` (into any repository)
    /// waits to be linked in the metadata.
    pub fn is_pending(&self, digest: &Digest) -> bool {
        self.pending.has_digest(digest.as_str())
    }

    pub async fn cancel(&self, id: &str, repo: &str) -> Result<(), BlobError> {
        let s = self.session(id, repo)?;
        let g = s.lock().await;
        if g.repo != repo {
            return Err(BlobError::UploadUnknown);
        }
        self.lock_sessions().remove(id);
        match tokio::fs::remove_dir_all(&g.dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Delete sessions idle for longer than the expiry. Returns how many.
    pub async fn sweep_expired(&self) -> usize {
        let expired: Vec<(String, SessionRef)> = self
            .lock_sessions()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut removed = 0;
        for (id, s) in expired {
            // A session busy with a request is not idle.
            let Ok(g) = s.try_lock() else { continue };
            if g.last_active.elapsed() < self.limits.session_expiry {
                continue;
            }
            self.lock_sessions().remove(&id);
            if let Err(e) = tokio::fs::remove_dir_all(&g.dir).await {
                tracing::warn!(session = %id, error = %e, "removing expired upload");
            }
            removed += 1;
        }
        removed
    }
}
