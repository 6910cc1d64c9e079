//! The background mover: copies every blob this region lacks, those with
//! the fewest holders first, with bounded concurrency. Its work list is
//! recomputed from the replicated blob index, so nothing queued only in
//! memory is lost on a restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};
use wharf_oci::Digest;

use crate::directory::Directory;
use crate::fetcher::{Fetcher, Priority};

#[derive(Debug, Clone)]
pub struct ReplicatorConfig {
    /// Background transfers at once (on-demand fetches come on top).
    pub concurrency: usize,
    /// Rescan at least this often even without new metadata.
    pub rescan: Duration,
    /// Blobs considered per scan.
    pub scan_limit: usize,
    /// How long a blob that failed to copy waits before another try.
    pub retry_after: Duration,
    /// Copy only while this is true: the region's other nodes share its
    /// store, and one of them at a time (the holder of the region's role)
    /// copies into it. None: always.
    pub active: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Default for ReplicatorConfig {
    fn default() -> Self {
        ReplicatorConfig {
            concurrency: 4,
            rescan: Duration::from_secs(5),
            scan_limit: 10_000,
            retry_after: Duration::from_secs(10),
            active: None,
        }
    }
}

/// Smallest pause between two scans, so bursts of applied entries do not
/// turn into a scan each.
const SCAN_SPACING_MS: u64 = 200;

/// How long one scan's list keeps feeding transfer slots as they free up.
/// Older than this, it is scanned again: what became urgent since (blobs
/// a lost disk left with one holder) goes to the front, and what was done
/// meanwhile drops out.
const LIST_MAX_AGE: Duration = Duration::from_secs(2);

/// Blobs up to this size are copied in batches (one stream, one commit
/// for many): below it a transfer's cost is its round trip and fsyncs,
/// not its bytes.
pub const BATCH_BLOB_MAX: u64 = 1 << 20;
/// Blobs per batch, at most.
const BATCH_BLOBS: usize = 256;
/// Bytes per batch, at most (a batch is held in memory until committed).
const BATCH_BYTES: u64 = 8 << 20;

/// How long a stopping replicator waits for its transfers in flight; one
/// cut short resumes from its partial file at the next start.
const STOP_DRAIN: Duration = Duration::from_secs(4);

/// Copy what this region lacks until `stop` turns true; then start nothing
/// new and give the transfers in flight a moment to finish.
pub async fn run_replicator<D: Directory>(
    fetcher: Arc<Fetcher<D>>,
    mut applied: watch::Receiver<u64>,
    cfg: ReplicatorConfig,
    queue_depth: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    // Blobs started recently are not started again until their cooldown
    // ends: a failing blob is retried, but not in a tight loop.
    let mut cooldown: HashMap<Digest, Instant> = HashMap::new();
    'scans: loop {
        let active = !matches!(&cfg.active, Some(a) if !a.load(Ordering::Relaxed));
        if !active {
            queue_depth.store(0, Ordering::Relaxed);
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        }
        // A blocking index walk (and, after heavy churn, a compaction of
        // the churned range): off the async workers.
        let wants = {
            let f = fetcher.clone();
            let limit = cfg.scan_limit;
            tokio::task::spawn_blocking(move || f.dir.missing(limit))
                .await
                .unwrap_or_default()
        };
        let scanned = Instant::now();
        queue_depth.store(wants.len() as u64, Ordering::Relaxed);
        cooldown.retain(|_, until| *until > Instant::now());
        let mut stale = false;
        // Small blobs gathered per holder until a batch is full.
        let mut batches: HashMap<String, Batch> = HashMap::new();
        for (digest, size) in wants {
            if fetcher.is_inflight(&digest)
                || fetcher.recorder().is_pending(&digest)
                || cooldown.contains_key(&digest)
            {
                continue;
            }
            // Held but not recorded (a crash between rename and record).
            if matches!(fetcher.blobs.stat(&digest).await, Ok(Some(_))) {
                fetcher.recorder().add(digest, size);
                continue;
            }
            cooldown.insert(digest.clone(), Instant::now() + cfg.retry_after);
            if size <= BATCH_BLOB_MAX {
                let Some(holder) = fetcher.holders(&digest).into_iter().next() else {
                    continue;
                };
                let addr = holder.addr.clone();
                let b = batches.entry(addr.clone()).or_insert_with(|| Batch {
                    holder,
                    blobs: Vec::new(),
                    bytes: 0,
                });
                b.blobs.push((digest, size));
                b.bytes += size;
                let full = b.blobs.len() >= BATCH_BLOBS || b.bytes >= BATCH_BYTES;
                if let Some(full) = full.then(|| batches.remove(&addr)).flatten() {
                    if !start_batch(&fetcher, &permits, &mut stop, full).await {
                        break 'scans;
                    }
                }
            } else {
                // Wait for a slot rather than for the next scan: a scan
                // costs a pass over the blob index, a slot frees up in one
                // transfer.
                let Some(permit) = permit(&permits, &mut stop).await else {
                    break 'scans;
                };
                let t = fetcher.fetch(&digest, size, Priority::Background);
                tokio::spawn(async move {
                    let _ = t.finished().await;
                    drop(permit);
                });
            }
            if scanned.elapsed() >= LIST_MAX_AGE {
                stale = true;
                break;
            }
        }
        for (_, b) in batches.drain() {
            if !start_batch(&fetcher, &permits, &mut stop, b).await {
                break 'scans;
            }
        }
        if stale {
            continue; // more work waits: scan again at once
        }
        // Space scans out first: changes applied meanwhile are not missed
        // (the watch remembers them), and an idle mover reacts at once.
        tokio::time::sleep(Duration::from_millis(SCAN_SPACING_MS)).await;
        tokio::select! {
            changed = applied.changed() => {
                if changed.is_err() {
                    break; // the state machine is gone: the node is stopping
                }
            }
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(cfg.rescan) => {}
        }
    }
    let all = u32::try_from(cfg.concurrency.max(1)).unwrap_or(u32::MAX);
    if tokio::time::timeout(STOP_DRAIN, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::info!("stopping with transfers in flight; they resume at the next start");
    }
}

/// Small blobs to copy from one holder in one stream.
struct Batch {
    holder: crate::directory::Holder,
    blobs: Vec<(Digest, u64)>,
    bytes: u64,
}

/// A transfer slot, or `None` once the replicator stops.
async fn permit(
    permits: &Arc<Semaphore>,
    stop: &mut watch::Receiver<bool>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    tokio::select! {
        p = permits.clone().acquire_owned() => p.ok(),
        _ = stop.wait_for(|s| *s) => None,
    }
}

/// Start copying `b` in a slot of its own; false once stopping.
async fn start_batch<D: Directory>(
    fetcher: &Arc<Fetcher<D>>,
    permits: &Arc<Semaphore>,
    stop: &mut watch::Receiver<bool>,
    b: Batch,
) -> bool {
    let Some(permit) = permit(permits, stop).await else {
        return false;
    };
    let fetcher = fetcher.clone();
    tokio::spawn(async move {
        fetcher.fetch_batch(b.holder, b.blobs).await;
        drop(permit);
    });
    true
}
