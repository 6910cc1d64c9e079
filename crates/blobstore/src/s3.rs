//! The object-store backend: a region's blobs and upload sessions in an
//! S3-compatible bucket, shared by every node of the region.
//!
//! Keys (under an optional prefix):
//! - `blobs/<algorithm>/<xx>/<hex>`: a blob, written only after its bytes
//!   matched the digest (a multipart upload completed only then; aborted
//!   otherwise, so a half-written blob is never visible);
//! - `touched/<algorithm>/<hex>`: an empty marker a cross-repository mount
//!   writes, because an object's modification time cannot be set: GC's age
//!   guard takes the newer of the two;
//! - `uploads/<id>/state` and `uploads/<id>/chunk-<offset>`: an upload
//!   session, one object per chunk a client sent, so any node of the
//!   region can continue a session another node started;
//! - `quarantine/<algorithm>-<hex>.<unix ms>`: copies found corrupt.
//!
//! Requests are retried with backoff inside the client (object_store's
//! retry layer); what still fails is `BlobError::Unavailable`, which
//! clients see as 503 UNAVAILABLE, never as a stored blob.

use std::collections::HashMap;
use std::path::Path as FsPath;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{ObjectStore, PutPayload};
use wharf_oci::digest::Algorithm;
use wharf_oci::{Digest, Hasher};

use crate::backend::{Backend, ByteStream, CopyId, Opened, Removal, Source};
use crate::error::BlobError;
use crate::fs::{blocking_err, now_ms};
use crate::session::{SessionInfo, SessionState};
use crate::writer::next_chunk;
use crate::StoreLimits;

/// Bytes per multipart part (S3's minimum is 5 MiB but for the last).
const PART_BYTES: usize = 8 << 20;
/// Parts of one upload in flight at once: two keep the link busy while
/// the next part fills, and bound an upload's memory to three parts.
const PARTS_IN_FLIGHT: usize = 2;
/// Blobs of one `adopt_many` written at once.
const ADOPT_CONCURRENCY: usize = 16;
/// Largest object S3's CopyObject takes; a longer single chunk is
/// committed by streaming it through the node.
const COPY_MAX_BYTES: u64 = 5 << 30;

/// Where the bucket is and how to talk to it.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// `http://host:port` for S3-compatible servers; empty for AWS.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// Both or neither; neither: the environment's `AWS_*` variables.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Keys start with this (`""`, or `"region-a/"`), so regions may share
    /// a bucket.
    pub prefix: String,
    /// One request (connect to last byte) may take this long.
    pub request_timeout: Duration,
    /// Retries of one request with backoff stop after this long.
    pub retry_timeout: Duration,
    pub max_retries: usize,
}

/// Map a store error to the blob store's: absent keys are the caller's
/// business, everything else is the store being unavailable.
pub(crate) fn unavailable(e: object_store::Error) -> BlobError {
    BlobError::Unavailable(e.to_string())
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

/// What a session holds, as far as this node knows.
struct S3Session {
    repo: String,
    hidden: bool,
    /// (offset, length) of every chunk, contiguous from 0.
    chunks: Vec<(u64, u64)>,
    /// Running hash of every chunk in `chunks`, if this node saw them all.
    hasher: Option<Hasher>,
    last_active: Instant,
}

impl S3Session {
    fn offset(&self) -> u64 {
        self.chunks.last().map_or(0, |(o, l)| o + l)
    }
}

type SessionRef = Arc<tokio::sync::Mutex<S3Session>>;

pub struct S3Backend {
    store: Arc<dyn ObjectStore>,
    signer: Arc<AmazonS3>,
    settings: S3Settings,
    node_tag: String,
    limits: StoreLimits,
    sessions: Mutex<HashMap<String, SessionRef>>,
    /// Commits (shared) against removals (exclusive) on this node: a
    /// removal decided on an object's age never deletes a copy this node
    /// committed meanwhile.
    commits: tokio::sync::RwLock<()>,
    /// Requests that failed after the client's retries.
    errors: AtomicU64,
}

/// What `write` did with a body.
struct Written {
    bytes: u64,
    hasher: Hasher,
    /// The body broke off or ran over (what arrived before is stored).
    stream_error: Option<BlobError>,
}

impl S3Backend {
    pub fn connect(
        settings: S3Settings,
        node_tag: &str,
        limits: StoreLimits,
    ) -> Result<S3Backend, BlobError> {
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_retry(object_store::RetryConfig {
                backoff: object_store::BackoffConfig::default(),
                max_retries: settings.max_retries,
                retry_timeout: settings.retry_timeout,
            })
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_timeout(settings.request_timeout)
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_allow_http(settings.endpoint.starts_with("http://")),
            );
        if !settings.endpoint.is_empty() {
            // S3-compatible servers are addressed by path, not by a
            // bucket subdomain.
            b = b
                .with_endpoint(&settings.endpoint)
                .with_virtual_hosted_style_request(false);
        }
        if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        let s3 = Arc::new(
            b.build()
                .map_err(|e| BlobError::Config(format!("object store: {e}")))?,
        );
        Ok(S3Backend {
            store: s3.clone(),
            signer: s3,
            settings,
            node_tag: node_tag.to_string(),
            limits,
            sessions: Mutex::new(HashMap::new()),
            commits: tokio::sync::RwLock::new(()),
            errors: AtomicU64::new(0),
        })
    }

    fn key(&self, rest: &str) -> Path {
        Path::from(format!("{}{rest}", self.settings.prefix))
    }

    fn blob_key(&self, d: &Digest) -> Path {
        let hex = d.hex();
        self.key(&format!(
            "blobs/{}/{}/{hex}",
            d.algorithm().name(),
            &hex[..2]
        ))
    }

    fn touched_key(&self, d: &Digest) -> Path {
        self.key(&format!("touched/{}/{}", d.algorithm().name(), d.hex()))
    }

    fn session_prefix(&self, id: &str) -> Path {
        self.key(&format!("uploads/{id}"))
    }

    fn chunk_key(&self, id: &str, offset: u64) -> Path {
        self.key(&format!("uploads/{id}/chunk-{offset:020}"))
    }

    fn state_key(&self, id: &str) -> Path {
        self.key(&format!("uploads/{id}/state"))
    }

    /// Count a failure that survived the retries, and pass it on.
    fn failed(&self, e: object_store::Error) -> BlobError {
        self.errors.fetch_add(1, Ordering::Relaxed);
        unavailable(e)
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionRef>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn head(&self, key: &Path) -> Result<Option<object_store::ObjectMeta>, BlobError> {
        match self.store.head(key).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.failed(e)),
        }
    }

    async fn delete_if_present(&self, key: &Path) -> Result<(), BlobError> {
        match self.store.delete(key).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Write `body` to `key`, hashing it on the way. With `expect`, the
    /// object is kept only if the bytes hash to it (the multipart upload
    /// is aborted otherwise, so nothing becomes visible). A body that
    /// breaks off keeps what arrived (a chunk a client can resume after),
    /// unless `expect` is set. Without `expect`, an empty body writes
    /// nothing.
    async fn write(
        &self,
        key: &Path,
        mut hasher: Hasher,
        mut body: ByteStream,
        max_bytes: u64,
        expect: Option<&Digest>,
    ) -> Result<Written, BlobError> {
        let idle = self.limits.body_idle_timeout;
        let mut buf: Vec<u8> = Vec::with_capacity(PART_BYTES);
        let mut upload: Option<Box<dyn object_store::MultipartUpload>> = None;
        let mut in_flight = FuturesUnordered::new();
        let mut bytes = 0u64;
        let stream_error = loop {
            let chunk = match next_chunk(&mut body, idle, &mut bytes, max_bytes).await {
                Err(e) => break Some(e),
                Ok(None) => break None,
                Ok(Some(c)) => c,
            };
            // Parts of exactly PART_BYTES: a buffer never grows past its
            // capacity (a reallocation would double it).
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let take = rest.len().min(PART_BYTES - buf.len());
                buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if buf.len() < PART_BYTES {
                    continue;
                }
                let part = std::mem::replace(&mut buf, Vec::with_capacity(PART_BYTES));
                let (h, part) = hash_off_thread(hasher, part).await?;
                hasher = h;
                if upload.is_none() {
                    upload = Some(
                        self.store
                            .put_multipart(key)
                            .await
                            .map_err(|e| self.failed(e))?,
                    );
                }
                let up = upload.as_mut().expect("started above");
                in_flight.push(up.put_part(PutPayload::from(Bytes::from(part))));
                while in_flight.len() >= PARTS_IN_FLIGHT {
                    if let Some(Err(e)) = in_flight.next().await {
                        return Err(self.abort(upload, e).await);
                    }
                }
            }
        };
        // A verified write keeps nothing of a body that broke off.
        if let (Some(e), Some(_)) = (&stream_error, expect) {
            let _ = self.abort_quietly(upload).await;
            return Err(clone_error(e));
        }
        let (h, rest) = hash_off_thread(hasher, buf).await?;
        hasher = h;
        let kept = bytes.min(max_bytes);
        if let Some(d) = expect {
            let actual = hasher.clone().finish();
            if actual != *d {
                let _ = self.abort_quietly(upload).await;
                return Err(BlobError::DigestMismatch {
                    claimed: d.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        match upload {
            // An empty chunk is no object (a blob, verified, may be empty).
            None if rest.is_empty() && expect.is_none() => {}
            None => {
                self.store
                    .put(key, PutPayload::from(Bytes::from(rest)))
                    .await
                    .map_err(|e| self.failed(e))?;
            }
            Some(mut up) => {
                if !rest.is_empty() {
                    in_flight.push(up.put_part(PutPayload::from(Bytes::from(rest))));
                }
                while let Some(r) = in_flight.next().await {
                    if let Err(e) = r {
                        return Err(self.abort(Some(up), e).await);
                    }
                }
                if let Err(e) = up.complete().await {
                    return Err(self.abort(Some(up), e).await);
                }
            }
        }
        Ok(Written {
            bytes: kept,
            hasher,
            stream_error,
        })
    }

    async fn abort(
        &self,
        upload: Option<Box<dyn object_store::MultipartUpload>>,
        e: object_store::Error,
    ) -> BlobError {
        let _ = self.abort_quietly(upload).await;
        self.failed(e)
    }

    /// Abort a multipart upload; if even that fails, the parts stay
    /// invisible (never completed) until the bucket's lifecycle rule for
    /// incomplete uploads removes them.
    async fn abort_quietly(
        &self,
        upload: Option<Box<dyn object_store::MultipartUpload>>,
    ) -> Result<(), object_store::Error> {
        match upload {
            Some(mut up) => up.abort().await,
            None => Ok(()),
        }
    }

    /// The session `id` of `repo`, refreshed from the store: another node
    /// may have added chunks since this one last saw it.
    async fn session(&self, id: &str, repo: &str) -> Result<SessionRef, BlobError> {
        let cached = self.lock_sessions().get(id).cloned();
        let s = match cached {
            Some(s) => s,
            None => {
                let state = match self.store.get(&self.state_key(id)).await {
                    Ok(r) => r.bytes().await.map_err(|e| self.failed(e))?,
                    Err(e) if is_not_found(&e) => return Err(BlobError::UploadUnknown),
                    Err(e) => return Err(self.failed(e)),
                };
                let state: SessionState =
                    serde_json::from_slice(&state).map_err(|_| BlobError::UploadUnknown)?;
                let s = Arc::new(tokio::sync::Mutex::new(S3Session {
                    repo: state.repo,
                    hidden: state.hidden,
                    chunks: Vec::new(),
                    hasher: None,
                    last_active: Instant::now(),
                }));
                self.lock_sessions()
                    .entry(id.to_string())
                    .or_insert(s)
                    .clone()
            }
        };
        {
            let mut g = s.lock().await;
            if g.repo != repo {
                return Err(BlobError::UploadUnknown);
            }
            if !g.hidden {
                let chunks = self.list_chunks(id).await?;
                let Some(chunks) = chunks else {
                    self.lock_sessions().remove(id);
                    return Err(BlobError::UploadUnknown);
                };
                if chunks != g.chunks {
                    g.hasher = None;
                    g.chunks = chunks;
                }
            }
        }
        Ok(s)
    }

    /// Every object of session `id` in the store (its state and chunks).
    async fn session_objects(&self, id: &str) -> Result<Vec<object_store::ObjectMeta>, BlobError> {
        self.store
            .list(Some(&self.session_prefix(id)))
            .try_collect()
            .await
            .map_err(|e| self.failed(e))
    }

    /// The chunks of a session in the store, or None if it has no state
    /// (cancelled, finished or expired).
    async fn list_chunks(&self, id: &str) -> Result<Option<Vec<(u64, u64)>>, BlobError> {
        let objects = self.session_objects(id).await?;
        let mut has_state = false;
        let mut chunks = Vec::new();
        for o in objects {
            match o.location.filename() {
                Some("state") => has_state = true,
                Some(name) => {
                    if let Some(offset) = name.strip_prefix("chunk-").and_then(|n| n.parse().ok()) {
                        chunks.push((offset, o.size));
                    }
                }
                None => {}
            }
        }
        if !has_state {
            return Ok(None);
        }
        chunks.sort_unstable();
        // Only the contiguous run from 0 counts: a chunk left by a write
        // that raced another node's is dropped with whatever follows it.
        let mut next = 0;
        chunks.retain(|&(o, l)| {
            let keep = o == next;
            if keep {
                next = o + l;
            }
            keep
        });
        Ok(Some(chunks))
    }

    async fn append_locked(
        &self,
        id: &str,
        g: &mut S3Session,
        body: ByteStream,
    ) -> Result<(), BlobError> {
        let offset = g.offset();
        // The running hash is good only if this node saw every chunk.
        let prior = g.hasher.take();
        let hasher = prior
            .clone()
            .unwrap_or_else(|| Hasher::new(Algorithm::Sha256));
        let room = self.limits.blob_max_bytes.saturating_sub(offset);
        let key = self.chunk_key(id, offset);
        let w = self.write(&key, hasher, body, room, None).await?;
        if w.bytes > 0 {
            g.chunks.push((offset, w.bytes));
        }
        g.hasher = prior.map(|_| w.hasher);
        g.last_active = Instant::now();
        match w.stream_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Hash a session's chunks from the store (another node wrote some).
    async fn hash_chunks(
        &self,
        id: &str,
        chunks: &[(u64, u64)],
        algorithm: Algorithm,
    ) -> Result<Digest, BlobError> {
        let mut hasher = Hasher::new(algorithm);
        for &(offset, _) in chunks {
            let got = self
                .store
                .get(&self.chunk_key(id, offset))
                .await
                .map_err(|e| self.failed(e))?;
            let mut s = got.into_stream();
            while let Some(piece) = s.next().await {
                let piece = piece.map_err(|e| self.failed(e))?;
                hasher = hash_off_thread(hasher, piece.to_vec()).await?.0;
            }
        }
        Ok(hasher.finish())
    }

    async fn drop_session(&self, id: &str) -> Result<(), BlobError> {
        self.lock_sessions().remove(id);
        let keys = self.session_objects(id).await?;
        // Chunks first, the state last: a session never looks complete
        // with chunks missing.
        let (state, chunks): (Vec<_>, Vec<_>) = keys
            .into_iter()
            .partition(|o| o.location.filename() == Some("state"));
        for o in chunks.into_iter().chain(state) {
            self.delete_if_present(&o.location).await?;
        }
        Ok(())
    }

    /// Copy a session's chunks, in order, into the blob's key.
    async fn concatenate(
        &self,
        id: &str,
        chunks: &[(u64, u64)],
        digest: &Digest,
    ) -> Result<(), BlobError> {
        let store = self.store.clone();
        let keys: Vec<Path> = chunks.iter().map(|&(o, _)| self.chunk_key(id, o)).collect();
        let body = futures::stream::iter(keys)
            .then(move |k| {
                let store = store.clone();
                async move { store.get(&k).await.map(|r| r.into_stream()) }
            })
            .try_flatten()
            .map_err(|e| e.to_string())
            .boxed();
        let hasher = Hasher::new(digest.algorithm());
        self.write(&self.blob_key(digest), hasher, body, u64::MAX, Some(digest))
            .await
            .map(|_| ())
    }
}

/// Hash `buf` on a blocking thread (hashing 8 MiB takes milliseconds the
/// runtime's threads should spend on the network).
async fn hash_off_thread(mut hasher: Hasher, buf: Vec<u8>) -> Result<(Hasher, Vec<u8>), BlobError> {
    if buf.len() < 64 << 10 {
        hasher.update(&buf);
        return Ok((hasher, buf));
    }
    tokio::task::spawn_blocking(move || {
        hasher.update(&buf);
        (hasher, buf)
    })
    .await
    .map_err(blocking_err)
}

/// The body errors `write` reports, again (BlobError holds an io::Error
/// and is not Clone).
fn clone_error(e: &BlobError) -> BlobError {
    match e {
        BlobError::Stalled(s) => BlobError::Stalled(*s),
        BlobError::SizeInvalid { expected, got } => BlobError::SizeInvalid {
            expected: *expected,
            got: *got,
        },
        other => BlobError::Client(other.to_string()),
    }
}

#[async_trait::async_trait]
impl Backend for S3Backend {
    fn describe(&self) -> String {
        let at = if self.settings.endpoint.is_empty() {
            format!("s3://{}", self.settings.bucket)
        } else {
            format!(
                "{}/{}",
                self.settings.endpoint.trim_end_matches('/'),
                self.settings.bucket
            )
        };
        format!("s3 {at}/{}", self.settings.prefix)
    }

    fn errors_total(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    async fn check(&self) -> Result<(), BlobError> {
        // A listing fails for a missing bucket or bad credentials, where a
        // HEAD of an absent key would only say "not found".
        self.store
            .list_with_delimiter(Some(&self.key("blobs")))
            .await
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        Ok(self.head(&self.blob_key(digest)).await?.map(|m| m.size))
    }

    async fn open(&self, digest: &Digest) -> Result<Option<Opened>, BlobError> {
        let key = self.blob_key(digest);
        let Some(m) = self.head(&key).await? else {
            return Ok(None);
        };
        Ok(Some(Opened {
            size: m.size,
            copy: CopyId::Object(m.e_tag.clone().unwrap_or_default()),
            sums: None,
            source: Source::Object {
                store: self.store.clone(),
                path: key,
                e_tag: m.e_tag,
            },
        }))
    }

    async fn list(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<(Digest, u64)>, BlobError> {
        let prefix = self.key("blobs");
        let mut s = match after {
            Some(d) => self
                .store
                .list_with_offset(Some(&prefix), &self.blob_key(d)),
            None => self.store.list(Some(&prefix)),
        };
        let mut out = Vec::new();
        while let Some(o) = s.next().await {
            let o = o.map_err(|e| self.failed(e))?;
            let parts: Vec<_> = o.location.parts().collect();
            let n = parts.len();
            if n < 3 {
                continue;
            }
            let digest = format!("{}:{}", parts[n - 3].as_ref(), parts[n - 1].as_ref());
            if let Ok(d) = digest.parse::<Digest>() {
                out.push((d, o.size));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn presigned_url(
        &self,
        digest: &Digest,
        ttl: Duration,
    ) -> Result<Option<String>, BlobError> {
        let url = self
            .signer
            .signed_url(http::Method::GET, &self.blob_key(digest), ttl)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(Some(url.to_string()))
    }

    async fn adopt(&self, digest: &Digest, staged: &FsPath) -> Result<(), BlobError> {
        let file = tokio::fs::File::open(staged).await?;
        let body = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)
            .map_err(|e| e.to_string())
            .boxed();
        {
            let _commit = self.commits.read().await;
            let hasher = Hasher::new(digest.algorithm());
            self.write(&self.blob_key(digest), hasher, body, u64::MAX, Some(digest))
                .await?;
        }
        tokio::fs::remove_file(staged).await?;
        Ok(())
    }

    async fn adopt_many(&self, blobs: Vec<(Digest, Bytes)>) -> Result<(), BlobError> {
        let _commit = self.commits.read().await;
        let mut puts = futures::stream::iter(blobs)
            .map(|(d, b)| {
                let key = self.blob_key(&d);
                async move { self.store.put(&key, PutPayload::from(b)).await }
            })
            .buffer_unordered(ADOPT_CONCURRENCY);
        while let Some(r) = puts.next().await {
            r.map_err(|e| self.failed(e))?;
        }
        Ok(())
    }

    async fn create_session(&self, repo: &str, hidden: bool) -> Result<SessionInfo, BlobError> {
        let id = crate::session::new_id(&self.node_tag, self.sessions_in_progress(), &self.limits)?;
        // A monolithic upload's session lives only in this request: its
        // body goes straight to the blob's key.
        if !hidden {
            let state = SessionState {
                repo: repo.to_string(),
                created_ms: now_ms(),
                hidden,
            };
            let json = serde_json::to_vec(&state).map_err(std::io::Error::other)?;
            self.store
                .put(&self.state_key(&id), PutPayload::from(json))
                .await
                .map_err(|e| self.failed(e))?;
        }
        let session = S3Session {
            repo: repo.to_string(),
            hidden,
            chunks: Vec::new(),
            hasher: Some(Hasher::new(Algorithm::Sha256)),
            last_active: Instant::now(),
        };
        self.lock_sessions()
            .insert(id.clone(), Arc::new(tokio::sync::Mutex::new(session)));
        Ok(SessionInfo {
            id,
            repo: repo.to_string(),
            offset: 0,
        })
    }

    async fn session_info(&self, id: &str, repo: &str) -> Result<SessionInfo, BlobError> {
        let s = self.session(id, repo).await?;
        let g = s.lock().await;
        Ok(SessionInfo {
            id: id.to_string(),
            repo: g.repo.clone(),
            offset: g.offset(),
        })
    }

    async fn append(
        &self,
        id: &str,
        repo: &str,
        start: Option<u64>,
        body: ByteStream,
    ) -> Result<SessionInfo, BlobError> {
        let s = self.session(id, repo).await?;
        let mut g = s.lock().await;
        if let Some(start) = start {
            if start != g.offset() {
                return Err(BlobError::RangeInvalid {
                    expected: g.offset(),
                    got: start,
                });
            }
        }
        self.append_locked(id, &mut g, body).await?;
        Ok(SessionInfo {
            id: id.to_string(),
            repo: g.repo.clone(),
            offset: g.offset(),
        })
    }

    async fn finish(
        &self,
        id: &str,
        repo: &str,
        digest: &Digest,
        body: Option<ByteStream>,
    ) -> Result<u64, BlobError> {
        let s = self.session(id, repo).await?;
        let mut g = s.lock().await;
        // The whole blob in this request: straight to its key, kept only
        // if it matches.
        if g.chunks.is_empty() {
            if let Some(body) = body {
                let _commit = self.commits.read().await;
                let hasher = Hasher::new(digest.algorithm());
                let max = self.limits.blob_max_bytes;
                let result = self
                    .write(&self.blob_key(digest), hasher, body, max, Some(digest))
                    .await;
                let hidden = g.hidden;
                drop(g);
                // A monolithic upload's session never reached the store.
                if hidden {
                    self.lock_sessions().remove(id);
                } else {
                    self.drop_session(id).await?;
                }
                return result.map(|w| w.bytes);
            }
        } else if let Some(body) = body {
            self.append_locked(id, &mut g, body).await?;
        }
        let chunks = g.chunks.clone();
        let size = g.offset();
        let actual = match g.hasher.take() {
            Some(h) if h.algorithm() == digest.algorithm() => h.finish(),
            _ => self.hash_chunks(id, &chunks, digest.algorithm()).await?,
        };
        drop(g);
        if actual != *digest {
            self.drop_session(id).await?;
            return Err(BlobError::DigestMismatch {
                claimed: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        {
            let _commit = self.commits.read().await;
            let key = self.blob_key(digest);
            match chunks.as_slice() {
                [] => {
                    self.store
                        .put(&key, PutPayload::default())
                        .await
                        .map_err(|e| self.failed(e))?;
                }
                // One chunk (docker's PATCH-then-PUT): copied inside the
                // store, no byte through the node.
                [(0, len)] if *len <= COPY_MAX_BYTES => {
                    self.store
                        .copy(&self.chunk_key(id, 0), &key)
                        .await
                        .map_err(|e| self.failed(e))?;
                }
                _ => self.concatenate(id, &chunks, digest).await?,
            }
        }
        self.drop_session(id).await?;
        Ok(size)
    }

    async fn cancel(&self, id: &str, repo: &str) -> Result<(), BlobError> {
        let s = self.session(id, repo).await?;
        let _g = s.lock().await;
        self.drop_session(id).await
    }

    async fn sweep_expired(&self) -> usize {
        // Sessions of every node of the region: the newest object of a
        // session says when a client last got anywhere with it.
        let listed: Result<Vec<object_store::ObjectMeta>, _> = self
            .store
            .list(Some(&self.key("uploads")))
            .try_collect()
            .await;
        let objects = match listed {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "listing upload sessions to expire");
                return 0;
            }
        };
        let mut newest: HashMap<String, chrono::DateTime<chrono::Utc>> = HashMap::new();
        for o in &objects {
            let parts: Vec<_> = o.location.parts().collect();
            let n = parts.len();
            if n < 2 {
                continue;
            }
            let id = parts[n - 2].as_ref().to_string();
            let t = newest.entry(id).or_insert(o.last_modified);
            *t = (*t).max(o.last_modified);
        }
        let expiry = chrono::Duration::from_std(self.limits.session_expiry)
            .unwrap_or(chrono::Duration::hours(1));
        let now = chrono::Utc::now();
        let mut removed = 0;
        for (id, t) in newest {
            if now - t < expiry {
                continue;
            }
            // A session busy with a request here is not idle.
            let busy = self
                .lock_sessions()
                .get(&id)
                .is_some_and(|s| s.try_lock().is_err());
            if busy {
                continue;
            }
            match self.drop_session(&id).await {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(session = %id, error = %e, "removing expired upload"),
            }
        }
        // Hidden sessions of requests that died with their task.
        self.lock_sessions().retain(|_, s| {
            s.try_lock().map_or(true, |g| {
                g.last_active.elapsed() < self.limits.session_expiry
            })
        });
        removed
    }

    fn sessions_in_progress(&self) -> usize {
        self.lock_sessions().len()
    }

    async fn remove_if_idle(&self, digest: &Digest, idle: Duration) -> Result<Removal, BlobError> {
        let _exclusive = self.commits.write().await;
        let Some(blob) = self.head(&self.blob_key(digest)).await? else {
            return Ok(Removal::Missing);
        };
        let touched = self.head(&self.touched_key(digest)).await?;
        let newest = touched.map_or(blob.last_modified, |t| {
            t.last_modified.max(blob.last_modified)
        });
        // A clock behind the store's makes a copy look new: kept, which is
        // safe.
        let age = (chrono::Utc::now() - newest).to_std().unwrap_or_default();
        if age < idle {
            return Ok(Removal::Recent);
        }
        self.delete_if_present(&self.blob_key(digest)).await?;
        self.delete_if_present(&self.touched_key(digest)).await?;
        Ok(Removal::Removed(blob.size))
    }

    async fn quarantine(
        &self,
        digest: &Digest,
        seen: CopyId,
        at_ms: u64,
    ) -> Result<Option<String>, BlobError> {
        let _exclusive = self.commits.write().await;
        let key = self.blob_key(digest);
        let Some(m) = self.head(&key).await? else {
            return Ok(None);
        };
        if CopyId::Object(m.e_tag.unwrap_or_default()) != seen {
            return Ok(None);
        }
        let to = self.key(&format!(
            "quarantine/{}-{}.{at_ms}",
            digest.algorithm().name(),
            digest.hex()
        ));
        self.store
            .copy(&key, &to)
            .await
            .map_err(|e| self.failed(e))?;
        self.delete_if_present(&key).await?;
        Ok(Some(to.to_string()))
    }

    async fn touch(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        let _commit = self.commits.read().await;
        let Some(m) = self.head(&self.blob_key(digest)).await? else {
            return Ok(None);
        };
        self.store
            .put(&self.touched_key(digest), PutPayload::default())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(Some(m.size))
    }
}
