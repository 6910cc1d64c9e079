//! Copying blobs from other regions: one transfer per blob at a time
//! (single-flight), resumed from the partial file, other holders tried on
//! failure, nearest (lowest observed latency) holder first, verified
//! against the digest before the copy is kept.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tonic::transport::Channel;
use wharf_blobstore::BlobStore;
use wharf_oci::{Digest, Hasher};

use crate::directory::{Directory, Holder};
use crate::pb::blob_transfer_client::BlobTransferClient;
use crate::pb::{FetchManyRequest, FetchRequest};
use crate::recorder::Recorder;
use crate::server::MESSAGE_MAX_BYTES;
use crate::transfer::{Transfer, TransferState};
use wharf_netem::RateLimiter;

/// HTTP/2 flow-control window of a blob transfer.
const WINDOW_BYTES: u32 = 16 << 20;

#[derive(Debug, Clone)]
pub struct FetchLimits {
    /// Rounds over all holders before a transfer fails.
    pub attempts: u32,
    /// First pause between rounds; doubles each round.
    pub backoff: Duration,
    /// Background (replicator) bytes per second; 0 = unlimited. On-demand
    /// fetches are never throttled: a client is waiting.
    pub background_bytes_per_s: u64,
    /// Background bytes per second from each source region (a link's
    /// cap, on top of the node's); regions not named are not capped.
    pub link_bytes_per_s: HashMap<String, u64>,
    pub connect_timeout: Duration,
    /// Mutual TLS to peers (None: plain text).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            attempts: 3,
            backoff: Duration::from_millis(500),
            background_bytes_per_s: 0,
            link_bytes_per_s: HashMap::new(),
            connect_timeout: Duration::from_secs(3),
            tls: None,
        }
    }
}

#[derive(Default)]
pub struct FetcherStats {
    pub bytes_moved: AtomicU64,
    pub blobs_moved: AtomicU64,
    pub failures: AtomicU64,
    /// Batches of small blobs streamed (each one round trip, one commit).
    pub batches: AtomicU64,
}

pub struct Fetcher<D> {
    pub(crate) dir: Arc<D>,
    pub(crate) blobs: Arc<BlobStore>,
    limits: FetchLimits,
    limiter: RateLimiter,
    /// Caps of links by source region (`link_bytes_per_s`).
    links: HashMap<String, RateLimiter>,
    inflight: Mutex<HashMap<Digest, Arc<Transfer>>>,
    /// Observed time to first byte per region, to try the nearest first.
    latency: Mutex<HashMap<String, Duration>>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Copies made and not yet in the blob index (`run_recorder` writes
    /// them).
    recorder: Recorder,
    pub stats: FetcherStats,
}

/// Whether a transfer is paced (background) or not (a client waits).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    OnDemand,
    Background,
}

fn io_err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl<D: Directory> Fetcher<D> {
    pub fn new(dir: Arc<D>, blobs: Arc<BlobStore>, limits: FetchLimits) -> Arc<Fetcher<D>> {
        Arc::new(Fetcher {
            limiter: RateLimiter::new(limits.background_bytes_per_s),
            links: limits
                .link_bytes_per_s
                .iter()
                .filter(|(_, rate)| **rate > 0)
                .map(|(region, rate)| (region.clone(), RateLimiter::new(*rate)))
                .collect(),
            dir,
            blobs,
            limits,
            inflight: Mutex::new(HashMap::new()),
            latency: Mutex::new(HashMap::new()),
            channels: Mutex::new(HashMap::new()),
            recorder: Recorder::default(),
            stats: FetcherStats::default(),
        })
    }

    pub fn directory(&self) -> &D {
        &self.dir
    }

    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    fn lock_inflight(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Transfer>>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn inflight(&self) -> usize {
        self.lock_inflight().len()
    }

    pub fn is_inflight(&self, digest: &Digest) -> bool {
        self.lock_inflight().contains_key(digest)
    }

    /// One HTTP/2 connection per holder, reused by every transfer from it
    /// (a new connection costs a round trip before the first byte).
    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = match &self.limits.tls {
            Some(tls) => tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
                .and_then(|e| e.tls_config(tls.clone()))
                .map_err(io_err)?,
            None => {
                tonic::transport::Endpoint::from_shared(format!("http://{addr}")).map_err(io_err)?
            }
        };
        let channel = endpoint
            .connect_timeout(self.limits.connect_timeout)
            .tcp_nodelay(true)
            // Windows above a WAN link's bandwidth-delay product, or the
            // default 64 KiB caps a long link at a few Mbit/s.
            .initial_stream_window_size(Some(WINDOW_BYTES))
            .initial_connection_window_size(Some(WINDOW_BYTES))
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// The transfer of `digest` into this region, started if none runs.
    pub fn fetch(
        self: &Arc<Self>,
        digest: &Digest,
        size: u64,
        priority: Priority,
    ) -> Arc<Transfer> {
        let mut inflight = self.lock_inflight();
        if let Some(t) = inflight.get(digest) {
            return t.clone();
        }
        let (state, _) = watch::channel(TransferState::Running(0));
        let t = Arc::new(Transfer {
            digest: digest.clone(),
            size,
            partial: self.blobs.staging_path(digest),
            store: self.blobs.clone(),
            state,
            restarts: Default::default(),
        });
        inflight.insert(digest.clone(), t.clone());
        drop(inflight);
        let me = self.clone();
        let job = t.clone();
        tokio::spawn(async move {
            let result = me.copy(&job, priority).await;
            me.settle(&job, result);
            me.lock_inflight().remove(&job.digest);
        });
        t
    }

    /// End a transfer: kept (queued for the index, then `Done`) or failed.
    /// Pending in the recorder before it leaves the in-flight map: a scan
    /// never sees it as neither.
    fn settle(&self, t: &Transfer, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.recorder.add(t.digest.clone(), t.size);
                t.state.send_replace(TransferState::Done);
                self.stats.blobs_moved.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(digest = %t.digest, error = %e, "blob transfer failed");
                t.state.send_replace(TransferState::Failed(e));
            }
        }
    }

    /// Copy `blobs` (small ones, each held by `holder`) in one stream and
    /// keep them with one commit; blobs already in flight are left to
    /// their transfer. Each gets a `Transfer` as a single fetch would, so
    /// an on-demand read of one joins the batch. What the holder does not
    /// have, or sends corrupt, fails alone (the replicator retries it
    /// later, one by one); a stream that breaks sends the rest through
    /// the one-blob path, which tries every holder.
    pub async fn fetch_batch(self: &Arc<Self>, holder: Holder, blobs: Vec<(Digest, u64)>) {
        let mut batch = Vec::with_capacity(blobs.len());
        {
            let mut inflight = self.lock_inflight();
            for (digest, size) in blobs {
                if inflight.contains_key(&digest) {
                    continue;
                }
                let (state, _) = watch::channel(TransferState::Running(0));
                let t = Arc::new(Transfer {
                    partial: self.blobs.staging_path(&digest),
                    store: self.blobs.clone(),
                    digest: digest.clone(),
                    size,
                    state,
                    restarts: Default::default(),
                });
                inflight.insert(digest, t.clone());
                batch.push(t);
            }
        }
        if batch.is_empty() {
            return;
        }
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        let outcome = self.copy_batch(&holder, &batch).await;
        let (kept, failed, broken) = match outcome {
            Ok((kept, failed)) => (kept, failed, None),
            Err((kept, e)) => (kept, Vec::new(), Some(e)),
        };
        let mut done: std::collections::HashSet<&Digest> = kept.iter().map(|t| &t.digest).collect();
        done.extend(failed.iter().map(|(t, _)| &t.digest));
        for t in &kept {
            self.settle(t, Ok(()));
        }
        for (t, why) in failed.iter() {
            self.settle(t, Err(format!("from {}: {why}", holder.region)));
        }
        if let Some(e) = broken {
            tracing::info!(region = %holder.region, error = %e, blobs = batch.len() - done.len(), "batch stream failed; copying the rest one by one");
            for t in batch.iter().filter(|t| !done.contains(&t.digest)) {
                let result = self.copy(t, Priority::Background).await;
                self.settle(t, result);
            }
        }
        let mut inflight = self.lock_inflight();
        for t in &batch {
            inflight.remove(&t.digest);
        }
    }

    /// The stream of one batch: the blobs kept (verified, committed) and
    /// those that failed alone; or, if the stream itself failed, the
    /// blobs kept before it did and why.
    #[allow(clippy::type_complexity)]
    async fn copy_batch(
        &self,
        h: &Holder,
        batch: &[Arc<Transfer>],
    ) -> Result<(Vec<Arc<Transfer>>, Vec<(Arc<Transfer>, String)>), (Vec<Arc<Transfer>>, String)>
    {
        let channel = self.channel(&h.addr).map_err(|e| (Vec::new(), e))?;
        let mut client =
            BlobTransferClient::new(channel).max_decoding_message_size(MESSAGE_MAX_BYTES);
        let started = Instant::now();
        let mut stream = client
            .fetch_many(FetchManyRequest {
                digests: batch.iter().map(|t| t.digest.to_string()).collect(),
            })
            .await
            .map_err(|s| (Vec::new(), s.message().to_string()))?
            .into_inner();
        let mut verified: Vec<(Arc<Transfer>, bytes::Bytes)> = Vec::new();
        let mut failed = Vec::new();
        // The sender streams every blob asked for, in order, each whole
        // before the next: `next` is the one due.
        let mut next = 0usize;
        let mut buf: Vec<u8> = Vec::new();
        // The blob due failed before its last part: the rest is skipped.
        let mut bad = false;
        let mut first = true;
        let result: Result<(), String> = async {
            while let Some(part) = stream
                .message()
                .await
                .map_err(|s| s.message().to_string())?
            {
                if first {
                    self.note_latency(&h.region, started);
                    first = false;
                }
                let index = part.index as usize;
                let Some(t) = batch.get(index).filter(|_| index == next) else {
                    return Err(format!("peer sent blob {index} where {next} was due"));
                };
                if part.missing {
                    failed.push((t.clone(), format!("{} does not hold it", h.region)));
                    next += 1;
                    continue;
                }
                let n = part.data.len() as u64;
                self.pace(&h.region, n).await;
                self.stats.bytes_moved.fetch_add(n, Ordering::Relaxed);
                if !bad && buf.len() as u64 + n > t.size {
                    failed.push((
                        t.clone(),
                        format!("peer sent more than its {} bytes", t.size),
                    ));
                    bad = true;
                    buf = Vec::new();
                }
                if !bad {
                    buf.extend_from_slice(&part.data);
                }
                if part.last {
                    if !bad {
                        let bytes = std::mem::take(&mut buf);
                        let mut hasher = Hasher::new(t.digest.algorithm());
                        hasher.update(&bytes);
                        let actual = hasher.finish();
                        if bytes.len() as u64 != t.size || actual != t.digest {
                            failed.push((
                                t.clone(),
                                format!("content hashes to {actual} ({} bytes)", bytes.len()),
                            ));
                        } else {
                            verified.push((t.clone(), bytes::Bytes::from(bytes)));
                        }
                    }
                    bad = false;
                    next += 1;
                }
            }
            Ok(())
        }
        .await;
        // Whatever arrived whole and verified is kept, stream broken or not.
        let kept: Vec<Arc<Transfer>> = verified.iter().map(|(t, _)| t.clone()).collect();
        let files = verified
            .into_iter()
            .map(|(t, b)| (t.digest.clone(), b))
            .collect();
        if let Err(e) = self.blobs.adopt_many(files).await {
            return Err((Vec::new(), format!("keeping the batch: {e}")));
        }
        match result {
            Ok(()) if next < batch.len() => Err((
                kept,
                format!("stream ended after {next} of {} blobs", batch.len()),
            )),
            Ok(()) => Ok((kept, failed)),
            Err(e) => Err((kept, e)),
        }
    }

    /// Holders of `digest`, the nearest (lowest observed latency) first.
    pub fn holders(&self, digest: &Digest) -> Vec<Holder> {
        self.ordered_holders(digest)
    }

    fn ordered_holders(&self, digest: &Digest) -> Vec<Holder> {
        let mut holders = self.dir.holders(digest);
        let latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        // Uncapped links first (a capped one is what the operator wants
        // the mover off); then unknown latency first, so every region gets
        // measured once.
        holders.sort_by_key(|h| {
            (
                self.links.contains_key(&h.region),
                latency.get(&h.region).copied().unwrap_or_default(),
            )
        });
        holders
    }

    /// `region` answered its first byte `started.elapsed()` after asking.
    fn note_latency(&self, region: &str, started: Instant) {
        self.latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(region.to_string(), started.elapsed());
    }

    /// Wait until `n` more background bytes from `region` may be moved.
    async fn pace(&self, region: &str, n: u64) {
        self.limiter.take(n).await;
        if let Some(link) = self.links.get(region) {
            link.take(n).await;
        }
    }

    async fn copy(&self, t: &Transfer, priority: Priority) -> Result<(), String> {
        if self.blobs.stat(&t.digest).await.map_err(io_err)?.is_some() {
            return Ok(());
        }
        let mut last = String::from("no region holds this blob");
        let mut pause = self.limits.backoff;
        for round in 0..self.limits.attempts {
            let holders = self.ordered_holders(&t.digest);
            // Nobody to ask (freed by GC since it was queued, or lost):
            // waiting out the backoff would only hold a transfer slot
            // that the rest of the backlog needs. A rescan asks again.
            if holders.is_empty() {
                return Err(last);
            }
            for h in holders {
                match self.copy_from(&h, t, priority).await {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        tracing::info!(digest = %t.digest, region = %h.region, error = %e, "copy attempt failed");
                        last = format!("from {}: {e}", h.region);
                    }
                }
            }
            if round + 1 < self.limits.attempts {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
        Err(last)
    }

    /// Copy from one holder, resuming after the bytes already received.
    async fn copy_from(&self, h: &Holder, t: &Transfer, priority: Priority) -> Result<(), String> {
        let partial = t.partial.clone();
        let size = t.size;
        let algorithm = t.digest.algorithm();
        let (mut file, mut hasher, mut offset) =
            tokio::task::spawn_blocking(move || resume(&partial, size, algorithm))
                .await
                .map_err(io_err)?
                .map_err(io_err)?;
        t.state
            .send_replace(TransferState::Running(visible(offset, size)));

        let channel = self.channel(&h.addr)?;
        let mut client =
            BlobTransferClient::new(channel).max_decoding_message_size(MESSAGE_MAX_BYTES);
        let started = Instant::now();
        let mut stream = client
            .fetch(FetchRequest {
                digest: t.digest.to_string(),
                offset,
            })
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        let mut first = true;
        while offset < size {
            let Some(chunk) = stream
                .message()
                .await
                .map_err(|s| s.message().to_string())?
            else {
                break;
            };
            if first {
                self.note_latency(&h.region, started);
                first = false;
            }
            let n = chunk.data.len() as u64;
            if offset + n > size {
                return Err(format!("peer sent more than the blob's {size} bytes"));
            }
            if priority == Priority::Background {
                self.pace(&h.region, n).await;
            }
            (file, hasher) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                file.write_all(&chunk.data)?;
                hasher.update(&chunk.data);
                Ok((file, hasher))
            })
            .await
            .map_err(io_err)?
            .map_err(io_err)?;
            offset += n;
            self.stats.bytes_moved.fetch_add(n, Ordering::Relaxed);
            t.state
                .send_replace(TransferState::Running(visible(offset, size)));
        }
        if offset != size {
            return Err(format!("stream ended at {offset} of {size} bytes"));
        }
        let actual = hasher.finish();
        if actual != t.digest {
            // A corrupt copy is never kept; the next attempt starts over,
            // and readers of this one give up (they may hold its bytes).
            t.restarts.fetch_add(1, Ordering::AcqRel);
            let _ = tokio::fs::remove_file(&t.partial).await;
            return Err(format!("content hashes to {actual}"));
        }
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(io_err)?
            .map_err(io_err)?;
        self.blobs
            .adopt(&t.digest, &t.partial)
            .await
            .map_err(io_err)
    }
}

/// How much of a transfer readers may read: all it holds but the last
/// byte, which waits for the digest check (readers see `Done`).
fn visible(offset: u64, size: u64) -> u64 {
    if offset >= size {
        size.saturating_sub(1)
    } else {
        offset
    }
}

/// Open the partial file for appending and hash what it already holds.
fn resume(
    path: &Path,
    size: u64,
    algorithm: wharf_oci::digest::Algorithm,
) -> std::io::Result<(std::fs::File, Hasher, u64)> {
    let mut hasher = Hasher::new(algorithm);
    let mut offset = 0;
    if let Ok(mut f) = std::fs::File::open(path) {
        let len = f.metadata()?.len();
        if len <= size {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                offset += n as u64;
            }
        } else {
            std::fs::remove_file(path)?;
        }
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    if offset > 0 {
        tracing::info!(path = %path.display(), offset, "resuming blob transfer");
    }
    Ok((file, hasher, offset))
}
