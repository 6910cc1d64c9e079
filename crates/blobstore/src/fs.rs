//! The filesystem backend: blobs under `blobs/<algorithm>/<xx>/<hex>`,
//! upload sessions one directory each under `uploads/`. A blob becomes
//! visible only after its bytes were hashed, verified, fsynced, and renamed
//! into place; sessions survive a restart and are swept when idle.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use wharf_oci::digest::Algorithm;
use wharf_oci::{Digest, Hasher};

use crate::backend::{Backend, ByteStream, CopyId, Opened, Removal, Source};
use crate::error::BlobError;
use crate::layout::{self, blob_path, session_dir, sync_dir};
use crate::session::{Session, SessionInfo, SessionState};
use crate::sums::{BlockSums, SumsBuilder};
use crate::writer;
use crate::StoreLimits;

type SessionRef = Arc<tokio::sync::Mutex<Session>>;

pub struct FsBackend {
    root: PathBuf,
    /// Prefix of session ids naming this node.
    node_tag: String,
    limits: StoreLimits,
    sessions: Mutex<HashMap<String, SessionRef>>,
    /// Held around every rename into `blobs/` and every GC removal from
    /// it, so a removal decided on a file's age never deletes a copy that
    /// an upload or the mover put in place meanwhile.
    commits: Arc<Mutex<()>>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn blocking_err(e: tokio::task::JoinError) -> BlobError {
    BlobError::Io(std::io::Error::other(e.to_string()))
}

/// Make every write to the filesystem holding `path` durable (data and
/// directory entries): `syncfs(2)`, one call for many files.
pub(crate) fn sync_filesystem(path: &Path) -> std::io::Result<()> {
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
/// Reads of blobs stream from start to end: let the kernel read ahead
/// further than it would for random access.
fn advise_sequential(f: &std::fs::File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on a descriptor we own; only a hint.
        unsafe {
            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
        }
    }
}

pub(crate) fn hash_file(
    path: &Path,
    algorithm: Algorithm,
) -> std::io::Result<(Hasher, SumsBuilder)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Hasher::new(algorithm);
    let mut sums = SumsBuilder::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((h, sums));
        }
        h.update(&buf[..n]);
        sums.update(&buf[..n]);
    }
}

/// The block sums of the file at `path`.
fn blob_sums(path: &Path) -> std::io::Result<BlockSums> {
    let mut f = std::fs::File::open(path)?;
    let mut sums = SumsBuilder::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(sums.finish()),
            n => sums.update(&buf[..n]),
        }
    }
}

/// Keep `sums` with the file at `path` if it is still the copy `copy`.
/// A filesystem without user attributes is not an error: reads of the copy
/// then verify with SHA-256, as they did before block sums.
fn store_sums(path: &Path, copy: Option<&CopyId>, sums: &BlockSums) -> std::io::Result<bool> {
    let f = std::fs::File::open(path)?;
    let m = f.metadata()?;
    if copy.is_some_and(|c| *c != CopyId::of(&m)) || m.len() != sums.size() {
        return Ok(false);
    }
    match sums.store(&f) {
        Ok(()) => Ok(true),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "block sums not kept");
            Ok(false)
        }
    }
}

impl FsBackend {
    /// Open (or create) a store under `root`, resuming upload sessions
    /// left on disk.
    pub fn open(root: &Path, node_tag: &str, limits: StoreLimits) -> Result<FsBackend, BlobError> {
        std::fs::create_dir_all(root.join(layout::BLOBS_DIR))?;
        std::fs::create_dir_all(root.join(layout::UPLOADS_DIR))?;
        std::fs::create_dir_all(root.join(layout::INCOMING_DIR))?;
        let store = FsBackend {
            root: root.to_path_buf(),
            node_tag: node_tag.to_string(),
            limits,
            sessions: Mutex::new(HashMap::new()),
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

    /// Where a held blob lives (tests corrupt copies through it).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        blob_path(&self.root, digest)
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

    async fn append_locked(&self, g: &mut Session, body: ByteStream) -> Result<(), BlobError> {
        let data = g.dir.join(layout::SESSION_DATA);
        let (hasher, sums) = match g.hasher.take() {
            Some(h) => h,
            None => {
                let d = data.clone();
                tokio::task::spawn_blocking(move || hash_file(&d, Algorithm::Sha256))
                    .await
                    .map_err(blocking_err)??
            }
        };
        let file = OpenOptions::new().write(true).open(&data)?;
        let room = self.limits.blob_max_bytes.saturating_sub(g.offset);
        let idle = self.limits.body_idle_timeout;
        let direct = self.limits.direct_io;
        let w = writer::append(file, direct, hasher, sums, body, idle, room).await?;
        tracing::debug!(
            bytes = w.bytes,
            direct = w.direct_bytes,
            "appended to an upload"
        );
        // Make the acknowledged offset durable before answering.
        let file = w.file;
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(blocking_err)??;
        g.offset += w.bytes;
        g.hasher = Some((w.hasher, w.sums));
        g.last_active = Instant::now();
        match w.stream_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl Backend for FsBackend {
    fn describe(&self) -> String {
        format!("filesystem {}", self.root.display())
    }

    async fn check(&self) -> Result<(), BlobError> {
        tokio::fs::metadata(self.root.join(layout::BLOBS_DIR)).await?;
        Ok(())
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        match tokio::fs::metadata(blob_path(&self.root, digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn open(&self, digest: &Digest) -> Result<Option<Opened>, BlobError> {
        let path = blob_path(&self.root, digest);
        tokio::task::spawn_blocking(move || match std::fs::File::open(path) {
            Ok(f) => {
                let m = f.metadata()?;
                advise_sequential(&f);
                Ok(Some(Opened {
                    size: m.len(),
                    copy: CopyId::of(&m),
                    sums: BlockSums::load(&f, m.len()),
                    source: Source::File(Arc::new(f)),
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        })
        .await
        .map_err(blocking_err)?
    }

    async fn list(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<(Digest, u64)>, BlobError> {
        let root = self.root.join(layout::BLOBS_DIR);
        let after = after.map(|d| d.to_string());
        tokio::task::spawn_blocking(move || -> std::io::Result<Vec<(Digest, u64)>> {
            let mut all = Vec::new();
            for algo in std::fs::read_dir(&root)?.flatten() {
                let algo_name = algo.file_name().to_string_lossy().into_owned();
                for fan in std::fs::read_dir(algo.path())?.flatten() {
                    for f in std::fs::read_dir(fan.path())?.flatten() {
                        let name = f.file_name().to_string_lossy().into_owned();
                        let Ok(d) = format!("{algo_name}:{name}").parse::<Digest>() else {
                            continue;
                        };
                        if after.as_deref().is_some_and(|a| d.as_str() <= a) {
                            continue;
                        }
                        all.push((d, f.metadata()?.len()));
                    }
                }
            }
            all.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
            all.truncate(limit);
            Ok(all)
        })
        .await
        .map_err(blocking_err)?
        .map_err(BlobError::from)
    }

    async fn presigned_url(&self, _: &Digest, _: Duration) -> Result<Option<String>, BlobError> {
        Ok(None)
    }

    async fn adopt(&self, digest: &Digest, staged: &Path) -> Result<(), BlobError> {
        let target = blob_path(&self.root, digest);
        let received = staged.to_path_buf();
        let commits = self.commits.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            // The mover verified the digest as the bytes arrived; one more
            // pass over them (in the page cache) for CRCs is cheap.
            let sums = blob_sums(&received)?;
            store_sums(&received, None, &sums)?;
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

    /// Every file is written, the filesystem synced once, every file
    /// renamed into place (under the commit lock, as `adopt`), and synced
    /// once more so the renames are durable too. Two syncs per batch
    /// instead of two per blob is what lets a region take a backlog of
    /// small blobs at more than a thousand a second. On `Err` some may be
    /// in place, which a rescan finds and records.
    async fn adopt_many(&self, blobs: Vec<(Digest, Bytes)>) -> Result<(), BlobError> {
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
                store_sums(&partial, None, &BlockSums::of(bytes))?;
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

    async fn create_session(&self, repo: &str, hidden: bool) -> Result<SessionInfo, BlobError> {
        let id = crate::session::new_id(&self.node_tag, self.sessions_in_progress(), &self.limits)?;
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
            hasher: Some((Hasher::new(Algorithm::Sha256), SumsBuilder::default())),
            last_active: Instant::now(),
        };
        let info = session.info();
        self.lock_sessions()
            .insert(id, Arc::new(tokio::sync::Mutex::new(session)));
        Ok(info)
    }

    async fn session_info(&self, id: &str, repo: &str) -> Result<SessionInfo, BlobError> {
        let s = self.session(id, repo)?;
        let g = s.lock().await;
        if g.repo != repo {
            return Err(BlobError::UploadUnknown);
        }
        Ok(g.info())
    }

    async fn append(
        &self,
        id: &str,
        repo: &str,
        start: Option<u64>,
        body: ByteStream,
    ) -> Result<SessionInfo, BlobError> {
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

    async fn finish(
        &self,
        id: &str,
        repo: &str,
        digest: &Digest,
        body: Option<ByteStream>,
    ) -> Result<u64, BlobError> {
        let s = self.session(id, repo)?;
        let mut g = s.lock().await;
        if g.repo != repo || !self.lock_sessions().contains_key(id) {
            return Err(BlobError::UploadUnknown);
        }
        if let Some(body) = body {
            self.append_locked(&mut g, body).await?;
        }
        let data = g.dir.join(layout::SESSION_DATA);
        let (actual, sums) = match g.hasher.take() {
            Some((h, sums)) if h.algorithm() == digest.algorithm() => (h.finish(), sums),
            _ => {
                let (d, algo) = (data.clone(), digest.algorithm());
                let (h, sums) = tokio::task::spawn_blocking(move || hash_file(&d, algo))
                    .await
                    .map_err(blocking_err)??;
                (h.finish(), sums)
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
            // The sums travel with the file; the directory sync below makes
            // them durable with the rename (and a copy that lost them is
            // verified with SHA-256 until a full hash puts them back).
            store_sums(&data, None, &sums.finish())?;
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

    async fn cancel(&self, id: &str, repo: &str) -> Result<(), BlobError> {
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

    async fn sweep_expired(&self) -> usize {
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

    fn sessions_in_progress(&self) -> usize {
        self.lock_sessions().len()
    }

    async fn remove_if_idle(&self, digest: &Digest, idle: Duration) -> Result<Removal, BlobError> {
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

    async fn quarantine(
        &self,
        digest: &Digest,
        seen: CopyId,
        at_ms: u64,
    ) -> Result<Option<String>, BlobError> {
        let target = blob_path(&self.root, digest);
        let to = layout::quarantine_path(&self.root, digest, at_ms);
        let commits = self.commits.clone();
        let moved = tokio::task::spawn_blocking(move || -> std::io::Result<Option<String>> {
            let _held = commits.lock().unwrap_or_else(|p| p.into_inner());
            match std::fs::metadata(&target) {
                Ok(m) if CopyId::of(&m) == seen => {}
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
            Ok(Some(to.display().to_string()))
        })
        .await
        .map_err(blocking_err)??;
        Ok(moved)
    }

    async fn touch(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
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

    async fn attach_sums(
        &self,
        digest: &Digest,
        copy: &CopyId,
        sums: BlockSums,
    ) -> Result<bool, BlobError> {
        let (path, copy) = (blob_path(&self.root, digest), copy.clone());
        match tokio::task::spawn_blocking(move || store_sums(&path, Some(&copy), &sums))
            .await
            .map_err(blocking_err)?
        {
            Ok(kept) => Ok(kept),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
